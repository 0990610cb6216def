"""The body guard's scan for JSON string escapes no stored text can hold (``api.middleware``): lone UTF-16
surrogates and NULs are found where they are; pairs, escaped backslashes and plain text are not."""

from __future__ import annotations

import pytest

from api.middleware import unstorable_escape_at

FOUND = {
    "lone_high": (rb'{"x": "\ud800"}', 7),
    "lone_low": (rb'{"x": "\udc00"}', 7),
    "high_then_text": (rb'{"x": "\ud800a\udc00"}', 7),
    "high_then_high": (rb'{"x": "\ud800\ud800\udc00"}', 7),
    "high_at_the_end": (rb'{"x": "ok", "y": "\udbff"}', 18),
    "low_after_a_pair": (rb'{"x": "\ud83d\ude00\ude00"}', 19),
    "nul": (rb'{"x": "a\u0000"}', 8),
    "escaped_backslash_then_a_lone_escape": (rb'{"x": "\\\ud800"}', 9),
    "in_a_key": (rb'{"\udfff": 1}', 2),
}
CLEAN = {
    "pair": rb'{"x": "\ud83d\ude00"}',
    "uppercase_pair": rb'{"x": "\uD83D\uDE00"}',
    "escaped_backslash": rb'{"x": "\\ud800"}',
    "other_escapes": rb'{"x": "\n\t\"\u00e9\u20ac"}',
    "plain": b'{"x": 1, "y": [true, null]}',
    "empty": b"",
}


@pytest.mark.parametrize(("body", "offset"), FOUND.values(), ids=FOUND.keys())
def test_an_unstorable_escape_is_found_at_its_offset(body: bytes, offset: int) -> None:
    found = unstorable_escape_at(body)
    assert found is not None and found[0] == offset
    assert body[offset : offset + 2] == b"\\u"


@pytest.mark.parametrize("body", CLEAN.values(), ids=CLEAN.keys())
def test_text_every_store_can_hold_passes(body: bytes) -> None:
    assert unstorable_escape_at(body) is None
