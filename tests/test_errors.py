"""Tests for satgan.errors: user-facing errors are one line."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from satgan.errors import DataError, SatganError, one_line


@settings(max_examples=50, deadline=None)
@given(st.text())
def test_every_satgan_error_message_is_one_line(text):
    """Whatever text a SatganError is built from (newlines, tabs, CR), its message has no line break."""
    message = str(DataError(text))
    assert "\n" not in message and "\r" not in message and message == message.strip()


def test_one_line_keeps_the_words():
    """A three-line library message keeps its words, joined by single spaces."""
    text = "HTTP Error 302: would lead to an infinite loop.\nThe last 30x error message was:\nFound"
    assert one_line(text) == "HTTP Error 302: would lead to an infinite loop. The last 30x error message was: Found"
    assert str(SatganError(text)) == one_line(text)
