"""Wire-level types shared by the venue parsers: validated floats for prices and sizes, and their decimal text."""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Annotated

import msgspec
from msgspec import Meta

# Lax msgspec decoding turns "nan"/"inf" strings into floats; bounds reject them (a NaN level would poison a book)
Price = Annotated[float, Meta(gt=0.0, le=sys.float_info.max)]
Size = Annotated[float, Meta(ge=0.0, le=sys.float_info.max)]
WireLevel = tuple[Price, Size]


def decimal_text(value: float) -> str:
    """The shortest decimal text that reads back as ``value``, never in exponent form (venues send plain decimals)."""
    text = repr(value)
    if "e" in text or "E" in text:
        return format(Decimal(text), "f")
    return text


# What msgspec raises on bad input: DecodeError/ValidationError, but invalid UTF-8 inside a string surfaces as
# UnicodeDecodeError and very deep nesting as RecursionError (both found by fuzzing the real capture)
DECODE_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
