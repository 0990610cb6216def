"""What the order service tells a caller about a failed command: a refusal's own words, never a database error's
text (PostgreSQL's message and DETAIL quote the statement's values)."""

from __future__ import annotations

from psycopg import errors

from realtime.orders.commands import _public_error


def test_a_database_error_is_answered_without_its_text() -> None:
    failure = errors.NumericValueOutOfRange("numeric field overflow\nDETAIL:  A field with precision 38, scale 18")
    reply = _public_error(failure)
    assert reply["error"] == "DatabaseError"
    assert "numeric" not in reply["message"] and "DETAIL" not in reply["message"]


def test_a_refusal_keeps_its_own_words() -> None:
    assert _public_error(ValueError("the limit must be positive")) == {
        "error": "ValueError",
        "message": "the limit must be positive",
    }
