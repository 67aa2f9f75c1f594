"""The replay package's own errors. The CLI maps each to one line on stderr and exit 1.

Every message says what is wrong and how to fix it; nothing has been changed when one is
raised (appliers raise before their transaction commits).
"""

from __future__ import annotations


class ReplayError(Exception):
    """Base of every error replay reports to the user."""


class BadPoint(ReplayError):
    """The requested point in time cannot be parsed (e.g. a time without a zone)."""


class NotCovered(ReplayError):
    """The archive cannot answer the point: before the oldest snapshot, or in a gap."""


class UnknownTable(ReplayError):
    """The table is not in the archive (or not in the database)."""


class UnknownTransaction(ReplayError):
    """``--before-xid`` / ``--revert-xid`` names a transaction the archive does not hold."""


class SnapshotError(ReplayError):
    """A ``--base-snapshot`` table is unknown or has no recorded LSN."""


class TargetExists(ReplayError):
    """``--into-table`` names an existing table and ``--replace`` was not given."""


class PrivilegeError(ReplayError):
    """The DSN's role lacks a privilege the operation needs."""


class ConflictsFound(ReplayError):
    """A revert met rows changed since the transaction; nothing applied."""


class GuardianRefused(ReplayError):
    """The in-database guardian blocked the restore (e.g. it would orphan users)."""


class OutputError(ReplayError):
    """The output file cannot be written (unknown suffix, unwritable path)."""
