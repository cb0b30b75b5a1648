"""What a teacher reads: a title and a sentence per notification type, the
names of categories and priorities, and the one way to fill a sentence from a
notification's payload.

The inbox page renders with the same rules from ``/catalog.json``
(:func:`catalog_json`); ``tests/unit/test_words.py`` renders every type in
Python and ``tests/e2e/test_browser.py`` checks the page shows the same text.

A template is text with placeholders: ``{name}`` is the payload's ``name`` (a
non-empty string or a number), ``{name|one|many}`` is an integer count and the
word after it ("1 file", "2 files"). If any placeholder cannot be filled, the
sentence is the payload's ``message`` when that is a non-empty string, else the
catalog's description: never a raw key, never a type id.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from contracts.catalog import CATALOG
from contracts.taxonomy import NotificationPriority as P
from contracts.taxonomy import WebSocketEventCategory as C

# One placeholder: a payload key, optionally with the singular and plural word.
PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)(?:\|([^|{}]+)\|([^|{}]+))?\}")
MAX_VALUE_CHARS = 120  # longer payload strings are not put into a sentence


@dataclass(frozen=True)
class Words:
    title: str
    template: str


WORDS: dict[str, Words] = {
    "student_matching_confirmation_required": Words(
        "Confirm student matches",
        "Confirm which students the {unmatched|unmatched essay|unmatched essays} in "
        "{batch_name} belong to."),
    "student_matching_deadline_approaching": Words(
        "Student matching closes soon",
        "Confirm the student matches for {batch_name} before the deadline."),
    "batch_validation_failed": Words(
        "Files failed validation",
        "{rejected|file|files} in {batch_name} failed validation — fix and re-upload."),
    "batch_file_corrupted": Words(
        "A file is corrupted", "{file_name} in {batch_name} is corrupted — replace it."),
    "batch_registration_failed": Words(
        "Batch could not be registered",
        "{batch_name} could not be registered — check its settings and retry."),
    "batch_processing_completed": Words(
        "Batch processed", "All {essays|essay|essays} in {batch_name} have been processed."),
    "batch_processing_failed": Words(
        "Batch processing failed",
        "Processing of {batch_name} failed — review the errors and retry."),
    "cj_assessment_results_ready": Words(
        "Results are ready",
        "Comparative-judgement results for {batch_name} are ready to view."),
    "batch_students_associated": Words(
        "Students matched", "{matched|essay|essays} in {batch_name} were matched to students."),
    "class_roster_updated": Words(
        "Class roster updated", "{added|student|students} joined {class_name}."),
    "class_created": Words("Class created", "{class_name} was created."),
    "batch_files_uploaded": Words(
        "Files uploaded", "{files|file|files} uploaded to {batch_name}."),
    "batch_file_removed": Words(
        "File removed", "{file_name} was removed from {batch_name}."),
    "batch_processing_started": Words(
        "Processing started", "Processing of {essays|essay|essays} in {batch_name} has started."),
    "batch_spellcheck_completed": Words(
        "Spellcheck complete",
        "Spellcheck of {batch_name} is complete: {corrections|correction|corrections} "
        "suggested."),
    "batch_cj_assessment_completed": Words(
        "Assessment complete",
        "Comparative-judgement assessment of {batch_name} is complete."),
    "system_maintenance_scheduled": Words(
        "Maintenance scheduled", "Planned maintenance {window} may interrupt the platform."),
}  # fmt: skip

# Payloads the words are written for (the demo sends these; the test renders them).
EXAMPLES: dict[str, dict[str, Any]] = {
    "student_matching_confirmation_required": {"unmatched": 2, "batch_name": "Essay batch 7B"},
    "student_matching_deadline_approaching": {"batch_name": "History essays 9C"},
    "batch_validation_failed": {"rejected": 2, "batch_name": "Essay batch 7B"},
    "batch_file_corrupted": {"file_name": "essay-17.docx", "batch_name": "History essays 9C"},
    "batch_registration_failed": {"batch_name": "History essays 9C"},
    "batch_processing_completed": {"essays": 24, "batch_name": "Essay batch 7B"},
    "batch_processing_failed": {"batch_name": "History essays 9C"},
    "cj_assessment_results_ready": {"batch_name": "Essay batch 7B"},
    "batch_students_associated": {"matched": 22, "batch_name": "Essay batch 7B"},
    "class_roster_updated": {"added": 1, "class_name": "8A Maths"},
    "class_created": {"class_name": "7B English"},
    "batch_files_uploaded": {"files": 24, "batch_name": "Essay batch 7B"},
    "batch_file_removed": {"file_name": "essay-17.docx", "batch_name": "History essays 9C"},
    "batch_processing_started": {"essays": 24, "batch_name": "Essay batch 7B"},
    "batch_spellcheck_completed": {"corrections": 311, "batch_name": "Essay batch 7B"},
    "batch_cj_assessment_completed": {"batch_name": "Essay batch 7B"},
    "system_maintenance_scheduled": {"window": "on Sunday 02:00 to 03:00 UTC"},
}

# The inbox shows categories in this order, with these names.
CATEGORIES: dict[C, str] = {
    C.STUDENT_WORKFLOW: "Students",
    C.FILE_OPERATIONS: "Files",
    C.BATCH_PROGRESS: "Batches",
    C.PROCESSING_RESULTS: "Results",
    C.CLASS_MANAGEMENT: "Classes",
    C.SYSTEM_ALERTS: "Platform",
}
PRIORITIES: dict[P, str] = {
    P.CRITICAL: "Critical", P.IMMEDIATE: "Urgent", P.HIGH: "High", P.STANDARD: "Normal",
    P.LOW: "Low",
}  # fmt: skip


def _value(v: Any) -> str | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):  # as JavaScript's String() writes it, for the usual range
        return (str(int(v)) if v.is_integer() else repr(v)) if math.isfinite(v) else None
    if isinstance(v, str) and v.strip() and len(v) <= MAX_VALUE_CHARS:
        return v.strip()
    return None


def fill(template: str, payload: dict[str, Any]) -> str | None:
    """``template`` with its placeholders filled from ``payload``; None if any
    cannot be."""
    missing = False

    def one(m: re.Match[str]) -> str:
        nonlocal missing
        key, singular, plural = m.group(1), m.group(2), m.group(3)
        v = payload.get(key)
        if singular is not None:
            if isinstance(v, float) and v.is_integer():
                v = int(v)  # 2.0 is 2 to JavaScript
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                missing = True
                return ""
            return f"{v} {singular if v == 1 else plural}"
        text = _value(v)
        if text is None:
            missing = True
            return ""
        return text

    out = PLACEHOLDER.sub(one, template)
    return None if missing else out


def describe(notification_type: str, payload: dict[str, Any]) -> tuple[str, str]:
    """The title and the sentence a teacher reads for a notification."""
    entry = CATALOG.get(notification_type)
    words = WORDS.get(notification_type)
    if entry is None or words is None:
        return "Notification", "You have a new notification."
    text = fill(words.template, payload)
    if text is None:
        message = payload.get("message")
        text = message.strip() if isinstance(message, str) and message.strip() else None
    return words.title, text or entry.description


def catalog_json() -> str:
    """What the inbox page needs to render, as served at ``/catalog.json``."""
    return json.dumps({
        "types": {
            t: {"title": WORDS[t].title, "template": WORDS[t].template,
                "description": e.description, "priority": e.priority.value,
                "category": e.category.value, "action_required": e.action_required}
            for t, e in CATALOG.items()
        },
        "categories": [{"id": c.value, "title": title} for c, title in CATEGORIES.items()],
        "priorities": [{"id": p.value, "label": label, "rank": p.rank}
                       for p, label in PRIORITIES.items()],
        "placeholder": PLACEHOLDER.pattern,
        "max_value_chars": MAX_VALUE_CHARS,
    }, ensure_ascii=False, sort_keys=True)  # fmt: skip
