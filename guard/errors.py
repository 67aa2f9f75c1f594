"""The guard's named errors. The CLI prints each as one line (what is wrong + how to fix)."""

from __future__ import annotations


class GuardError(Exception):
    """Base class: an expected failure with a message fit for one line on stderr."""


class ConnectionFailed(GuardError):
    """The database could not be reached or refused the login."""


class MissingSchema(GuardError):
    """The HERA tables the guard protects are not in the database."""


class NotInstalled(GuardError):
    """hera-guard's SQL layer is not installed in the database."""


class InvalidConstraint(GuardError):
    """A proposed constraint expression was refused by the validator."""


class UnknownBackup(GuardError):
    """The named backup is not a registered core_relationships backup."""


class NotFound(GuardError):
    """A user or organization named on the command line does not exist."""


class BadInput(GuardError):
    """An argument is malformed (empty, wrong format, ...)."""


class Blocked(GuardError):
    """The deletion guardian refused a statement (mass change, orphaning, truncate)."""


class OperationFailed(GuardError):
    """A database operation failed for another reason."""
