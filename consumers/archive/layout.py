"""The archive's errors (every message says what is wrong and how to fix it)."""

from __future__ import annotations


class ArchiveError(Exception):
    """A problem with an archive; the message says what is wrong and how to fix it."""


class NotAnArchiveError(ArchiveError):
    pass


class NewerArchiveError(ArchiveError):
    pass


class ArchiveLockedError(ArchiveError):
    """Another archiver writes the table (seen at start or as a conflicting commit)."""


class IdentityMismatchError(ArchiveError):
    """The stream the broker serves is not the one the archive was built from."""


class DamagedArchiveError(ArchiveError):
    """A data file or the Delta log cannot be read."""


class UnsupportedLocationError(ArchiveError):
    """``--archive`` names a URI scheme no object store backs (a typo such as ``s4://``)."""


class StoreUnavailableError(ArchiveError):
    """The object store (or disk) failed in a way that may pass (5xx, timeouts, refused
    connections): a running archiver waits and continues from the table's position."""
