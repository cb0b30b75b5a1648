"""The notification catalog: one entry per type, as data.

It is the single source of truth: the builder fills defaults from it, the model
validates against it, and ``sql/R__catalog.sql`` is generated from it (see
:func:`catalog_sql`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from contracts.errors import UnknownNotificationTypeError
from contracts.limits import sql_literal
from contracts.taxonomy import NotificationPriority as P
from contracts.taxonomy import WebSocketEventCategory as C


class DeadlineRule(StrEnum):
    """Whether a type's notifications carry a deadline."""

    REQUIRED = "required"  # must have one (the default applies when given)
    OPTIONAL = "optional"  # may have one
    NONE = "none"  # must not have one


@dataclass(frozen=True)
class CatalogEntry:
    type: str
    service: str
    priority: P
    category: C
    action_required: bool
    deadline: DeadlineRule
    description: str
    default_deadline: timedelta | None = None


def _e(
    type_: str,
    service: str,
    priority: P,
    category: C,
    action: bool,
    description: str,
    deadline: DeadlineRule | None = None,
    default_deadline: timedelta | None = None,
) -> CatalogEntry:
    if deadline is None:
        deadline = DeadlineRule.OPTIONAL if action else DeadlineRule.NONE
    return CatalogEntry(
        type_, service, priority, category, action, deadline, description, default_deadline
    )


_R = DeadlineRule.REQUIRED

CATALOG: dict[str, CatalogEntry] = {
    e.type: e
    for e in (
        _e("student_matching_confirmation_required", "class_management", P.CRITICAL,
           C.STUDENT_WORKFLOW, True, "Confirm which students the uploaded essays belong to.",
           _R, timedelta(hours=24)),
        _e("student_matching_deadline_approaching", "class_management", P.CRITICAL,
           C.STUDENT_WORKFLOW, True, "Student matching must be confirmed before the deadline.",
           _R),
        _e("batch_validation_failed", "file_service", P.IMMEDIATE, C.FILE_OPERATIONS, True,
           "Uploaded files failed validation; fix and re-upload."),
        _e("batch_file_corrupted", "file_service", P.IMMEDIATE, C.FILE_OPERATIONS, True,
           "A file in the batch is corrupted and must be replaced."),
        _e("batch_registration_failed", "batch_orchestrator", P.IMMEDIATE, C.BATCH_PROGRESS,
           True, "The batch could not be registered; check its settings and retry."),
        _e("batch_processing_completed", "batch_orchestrator", P.HIGH, C.BATCH_PROGRESS, False,
           "Every essay in the batch has been processed."),
        _e("batch_processing_failed", "batch_orchestrator", P.HIGH, C.BATCH_PROGRESS, True,
           "Processing of the batch failed; review the errors and retry."),
        _e("cj_assessment_results_ready", "result_aggregator", P.HIGH, C.PROCESSING_RESULTS,
           False, "Comparative-judgement results are ready to view."),
        _e("batch_students_associated", "batch_orchestrator", P.STANDARD, C.STUDENT_WORKFLOW,
           False, "Students were associated with the batch's essays."),
        _e("class_roster_updated", "class_management", P.STANDARD, C.CLASS_MANAGEMENT, False,
           "The class roster changed."),
        _e("class_created", "class_management", P.STANDARD, C.CLASS_MANAGEMENT, False,
           "A new class was created."),
        _e("batch_files_uploaded", "file_service", P.STANDARD, C.FILE_OPERATIONS, False,
           "Files were uploaded to the batch."),
        _e("batch_file_removed", "file_service", P.STANDARD, C.FILE_OPERATIONS, False,
           "A file was removed from the batch."),
        _e("batch_processing_started", "batch_orchestrator", P.LOW, C.BATCH_PROGRESS, False,
           "Processing of the batch has started."),
        _e("batch_spellcheck_completed", "spellchecker", P.LOW, C.BATCH_PROGRESS, False,
           "Spellchecking of the batch is complete."),
        _e("batch_cj_assessment_completed", "cj_assessment", P.LOW, C.BATCH_PROGRESS, False,
           "Comparative-judgement assessment of the batch is complete."),
        _e("system_maintenance_scheduled", "platform", P.STANDARD, C.SYSTEM_ALERTS, False,
           "Planned maintenance may interrupt the platform."),
    )
}  # fmt: skip


def get_entry(notification_type: str) -> CatalogEntry:
    """The catalog entry of ``notification_type``.

    Raises:
        UnknownNotificationTypeError: the type is not in the catalog.
    """
    try:
        return CATALOG[notification_type]
    except KeyError:
        raise UnknownNotificationTypeError(notification_type, sorted(CATALOG)) from None


def requires_batch_id(notification_type: str) -> bool:
    return notification_type.startswith("batch_")


def requires_class_id(notification_type: str) -> bool:
    return notification_type.startswith("class_")


def catalog_sql() -> str:
    """The SQL that makes ``outbox.notification_catalog`` equal to :data:`CATALOG`."""
    rows = []
    for e in CATALOG.values():
        interval = (
            sql_literal(f"{int(e.default_deadline.total_seconds())} seconds")
            if e.default_deadline
            else "NULL"
        )
        rows.append(
            f"    ({sql_literal(e.type)}, {sql_literal(e.service)}, "
            f"{sql_literal(e.priority.value)}, {e.priority.rank}, "
            f"{sql_literal(e.category.value)}, {'true' if e.action_required else 'false'}, "
            f"{sql_literal(e.deadline.value)}, {interval}::interval, "
            f"{sql_literal(e.description)})"
        )
    return (
        "-- Generated from contracts/catalog.py by `outbox db catalog-sql`; do not edit.\n"
        "-- A repeatable migration: re-applied whenever its content changes.\n"
        "DELETE FROM outbox.notification_catalog\n"
        "WHERE type NOT IN (" + ", ".join(sql_literal(t) for t in CATALOG) + ");\n"
        "INSERT INTO outbox.notification_catalog\n"
        "    (type, service, priority, priority_rank, category, action_required,\n"
        "     deadline_rule, default_deadline, description)\nVALUES\n"
        + ",\n".join(rows)
        + "\nON CONFLICT (type) DO UPDATE SET\n"
        "    service = EXCLUDED.service, priority = EXCLUDED.priority,\n"
        "    priority_rank = EXCLUDED.priority_rank, category = EXCLUDED.category,\n"
        "    action_required = EXCLUDED.action_required,\n"
        "    deadline_rule = EXCLUDED.deadline_rule,\n"
        "    default_deadline = EXCLUDED.default_deadline,\n"
        "    description = EXCLUDED.description;\n"
    )
