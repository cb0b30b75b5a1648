"""The words a teacher reads, for every catalog type."""

from __future__ import annotations

import json
import re

import pytest

from contracts.catalog import CATALOG
from contracts.taxonomy import NotificationPriority, WebSocketEventCategory
from contracts.words import CATEGORIES, EXAMPLES, PRIORITIES, WORDS, catalog_json, describe, fill


def test_every_type_has_words_and_an_example() -> None:
    assert set(WORDS) == set(CATALOG) == set(EXAMPLES)
    assert set(CATEGORIES) == set(WebSocketEventCategory)
    assert set(PRIORITIES) == set(NotificationPriority)


@pytest.mark.parametrize("notification_type", sorted(CATALOG))
def test_examples_read_as_sentences(notification_type: str) -> None:
    payload = EXAMPLES[notification_type]
    title, text = describe(notification_type, payload)
    assert text != CATALOG[notification_type].description  # the template, filled
    shown = title + " " + text
    assert notification_type not in shown and "{" not in shown and "}" not in shown
    assert "_" not in shown  # no raw keys such as batch_name or file_name
    assert all(f"{key}:" not in shown for key in payload)
    assert text.endswith(".")


@pytest.mark.parametrize("notification_type", sorted(CATALOG))
def test_missing_fields_fall_back_to_the_description(notification_type: str) -> None:
    title, text = describe(notification_type, {})
    assert (title, text) == (WORDS[notification_type].title, CATALOG[notification_type].description)
    # the service's own message, if it wrote one, comes before the description
    assert describe(notification_type, {"message": " Custom words. "})[1] == "Custom words."


def test_placeholder_values() -> None:
    assert fill("{n|file|files}", {"n": 1}) == "1 file"
    assert fill("{n|file|files}", {"n": 0}) == "0 files"
    assert fill("{n|file|files}", {"n": 2.0}) == "2 files"  # as JSON.parse reads 2.0
    for bad in (True, -1, 1.5, "2", None):
        assert fill("{n|file|files}", {"n": bad}) is None
    assert fill("{x}", {"x": 2.0}) == "2" and fill("{x}", {"x": 2.5}) == "2.5"
    for bad in ("", "   ", "x" * 121, [], {}, False, float("nan")):
        assert fill("{x}", {"x": bad}) is None
    assert fill("no placeholders", {}) == "no placeholders"


def test_unknown_type_has_plain_words() -> None:
    assert describe("not_a_type", {"a": 1}) == ("Notification", "You have a new notification.")


def test_catalog_json_is_what_the_page_reads() -> None:
    doc = json.loads(catalog_json())
    assert set(doc["types"]) == set(CATALOG)
    assert [c["id"] for c in doc["categories"]] == [c.value for c in CATEGORIES]
    assert re.compile(doc["placeholder"]).pattern == doc["placeholder"]
    assert all(set(t) >= {"title", "template", "description", "priority", "category"}
               for t in doc["types"].values())  # fmt: skip
