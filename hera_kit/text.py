"""The one-line message of an exception, the way every command and log line shows it."""

from __future__ import annotations


def first_line(exc: BaseException | str, default: str | None = None) -> str:
    """The first non-empty line of ``exc``'s text; ``default`` (or the exception's type name)
    when it has none, so an empty message never raises IndexError."""
    text = exc if isinstance(exc, str) else str(exc)
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    if default is not None:
        return default
    return "no message" if isinstance(exc, str) else type(exc).__name__
