"""The sample events in events/: what `python -m events.make_events` writes, and what the function answers."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from events import make_events

EVENTS = ROOT / "events"
STATUS = {"pose-json": 200, "pose-data-url": 200, "pose-raw-jpeg": 200, "pose-people": 200, "track": 200, "health": 200,
          "bad-json": 400, "bad-base64": 400, "bad-threshold": 422, "not-an-image": 415}


def test_committed_events_are_what_make_events_writes():
    expected = make_events.files()
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(expected), "run: make events"
    for name, text in expected.items():
        assert (EVENTS / name).read_text() == text, f"events/{name} is out of date: run make events"


@pytest.mark.parametrize("name", sorted(STATUS))
def test_each_event_gets_its_status(call, name):
    status, body, _ = call(json.loads((EVENTS / f"{name}.json").read_text()))
    assert status == STATUS[name], body


def test_the_people_event_asks_for_at_most_five_people_of_the_several_photo(call):
    event = json.loads((EVENTS / "pose-people.json").read_text())
    assert json.loads(event["body"])["max_people"] == 5
    status, body, _ = call(event)
    assert status == 200
    assert 1 <= len(body["people"]) <= 5
    if body["detector"] is not None:  # without one, every photo is one person
        assert len(body["people"]) >= 2
    assert body["annotated_image"].startswith("data:image/png;base64,")
