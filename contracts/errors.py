"""Errors of the contracts (tree drawn in :mod:`contracts`).

Each rule has a SQLSTATE so that the SQL outbox and the Python API report the
same failure the same way; services branch on the code, never on the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Custom SQLSTATE class "OB" (outbox); raised by sql/ as well.
SQLSTATE_UNKNOWN_TYPE = "OB001"
SQLSTATE_CATALOG_MISMATCH = "OB002"
SQLSTATE_DEADLINE = "OB003"
SQLSTATE_MISSING_FIELD = "OB004"
SQLSTATE_PAYLOAD = "OB005"
SQLSTATE_MALFORMED = "OB006"  # wrong JSON type, too long, forbidden characters, extra key
SQLSTATE_UNKNOWN_TOPIC = "OB007"  # a domain event for a topic not in the registry


@dataclass(frozen=True)
class Violation:
    """One broken rule: which field, what is wrong and how to fix it."""

    field: str
    message: str
    sqlstate: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ContractError(ValueError):
    """Root of every contract error. A ``ValueError`` so pydantic reports it too."""


class UnknownNotificationTypeError(ContractError):
    sqlstate = SQLSTATE_UNKNOWN_TYPE

    def __init__(self, notification_type: str, known: Sequence[str]) -> None:
        super().__init__(notification_type)
        self.notification_type = notification_type
        self.known = tuple(known)

    def __str__(self) -> str:
        return (
            f"unknown notification_type {self.notification_type!r}; add it to "
            f"contracts/catalog.py or use one of: {', '.join(self.known)}"
        )


class InvalidNotificationError(ContractError):
    def __init__(self, violations: Sequence[Violation]) -> None:
        super().__init__(*violations)
        self.violations = tuple(violations)

    @property
    def sqlstate(self) -> str:
        return self.violations[0].sqlstate if self.violations else SQLSTATE_PAYLOAD

    def __str__(self) -> str:
        return "invalid notification: " + "; ".join(str(v) for v in self.violations)


class InvalidEventError(InvalidNotificationError):
    """A domain event breaks a rule (contracts/events.py); same shape as for
    notifications."""

    def __str__(self) -> str:
        return "invalid domain event: " + "; ".join(str(v) for v in self.violations)
