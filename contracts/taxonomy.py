"""Priorities and categories of teacher notifications."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class NotificationPriority(StrEnum):
    """How urgent a notification is; ordered CRITICAL > IMMEDIATE > HIGH > STANDARD > LOW."""

    CRITICAL = "critical"
    IMMEDIATE = "immediate"
    HIGH = "high"
    STANDARD = "standard"
    LOW = "low"

    @property
    def rank(self) -> int:
        """5 for CRITICAL down to 1 for LOW."""
        return _RANK[self]

    def __lt__(self, other: Any) -> bool:
        if not isinstance(other, NotificationPriority):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: Any) -> bool:
        if not isinstance(other, NotificationPriority):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: Any) -> bool:
        if not isinstance(other, NotificationPriority):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: Any) -> bool:
        if not isinstance(other, NotificationPriority):
            return NotImplemented
        return self.rank >= other.rank

    __hash__ = StrEnum.__hash__


_RANK = {
    NotificationPriority.CRITICAL: 5,
    NotificationPriority.IMMEDIATE: 4,
    NotificationPriority.HIGH: 3,
    NotificationPriority.STANDARD: 2,
    NotificationPriority.LOW: 1,
}


class WebSocketEventCategory(StrEnum):
    """The area of the teacher's work a notification belongs to (groups the inbox)."""

    BATCH_PROGRESS = "batch_progress"
    PROCESSING_RESULTS = "processing_results"
    FILE_OPERATIONS = "file_operations"
    CLASS_MANAGEMENT = "class_management"
    STUDENT_WORKFLOW = "student_workflow"
    SYSTEM_ALERTS = "system_alerts"
