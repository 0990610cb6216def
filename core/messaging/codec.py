"""Wire format of events: a small JSON envelope naming the event type around the event's own fields.

The same bytes go into the outbox, onto the stream and (the inner event) into ``event_store.event_data``.
msgspec encodes dataclasses directly: Decimal as a string, datetimes ISO-8601, UUIDs as text.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from core.domain.messages import Command, Event, command_class, event_class


class MalformedMessage(ValueError):
    """A payload that cannot be decoded into a known event; consumers dead-letter it."""


class _Envelope(msgspec.Struct, frozen=True):
    type: str
    aggregate_type: str
    event: msgspec.Raw


class _CommandEnvelope(msgspec.Struct, frozen=True):
    type: str
    command: msgspec.Raw


@dataclass(frozen=True, slots=True)
class Codec:
    """Stateless encoder/decoder pair; one per process is enough."""

    encoder: msgspec.json.Encoder
    envelope_decoder: msgspec.json.Decoder[_Envelope]

    @classmethod
    def create(cls) -> Codec:
        return cls(msgspec.json.Encoder(decimal_format="string"), msgspec.json.Decoder(_Envelope))

    def encode_event(self, event: Event) -> bytes:
        """The event alone: what the event store keeps as ``event_data``."""
        return self.encoder.encode(event)

    def encode_envelope(self, event: Event) -> bytes:
        return self.wrap_envelope(event, self.encoder.encode(event))

    @staticmethod
    def wrap_envelope(event: Event, event_json: bytes) -> bytes:
        """The envelope around an already encoded event (type names are identifiers: nothing to escape)."""
        return b'{"type":"%s","aggregate_type":"%s","event":%s}' % (
            event.event_type.encode(),
            event.aggregate_type.encode(),
            event_json,
        )

    def decode_event(self, event_type: str, data: bytes | str) -> Event:
        try:
            cls = event_class(event_type)
            return msgspec.json.decode(data, type=cls, strict=False)
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
            raise MalformedMessage(f"cannot decode {event_type!r}: {exc}") from exc

    def encode_command(self, command: Command) -> bytes:
        return b'{"type":"%s","command":%s}' % (type(command).__name__.encode(), self.encoder.encode(command))

    def decode_command(self, payload: bytes | str) -> Command:
        """A command from the command stream; MalformedMessage names what is wrong."""
        try:
            envelope = msgspec.json.decode(payload, type=_CommandEnvelope)
            return msgspec.json.decode(envelope.command, type=command_class(envelope.type), strict=False)
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
            raise MalformedMessage(f"not a command: {exc}") from exc

    def decode_envelope(self, payload: bytes | str) -> Event:
        try:
            envelope = self.envelope_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MalformedMessage(f"not an event envelope: {exc}") from exc
        return self.decode_event(envelope.type, envelope.event)
