"""POST /track end to end, in process, on the real default models: a clip made from the committed photos
tracked a few frames a request, the tracker state carried from reply to request, gives exactly what one
Tracker gives over all the frames; bad states and bodies are 400s (never 500s) and leave the next request
working."""

from __future__ import annotations

import base64
import copy
import io
import json

import pytest
from PIL import Image

from conftest import people_frames
from local.apigw import LambdaContext, json_event, proxy_event, response_body

FRAMES = people_frames(12)  # detection on frames 0, 5 and 10 (and after an unsure one), followed boxes between


def jpeg(rgb) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


JPEGS = [jpeg(rgb) for rgb in FRAMES]


def post(app, payload: dict) -> tuple[int, dict]:
    response = app.lambda_handler(json_event("/track", payload), LambdaContext())
    return response["statusCode"], json.loads(response_body(response))


def track_in_chunks(app, sizes: list[int], **options) -> tuple[list[dict], list[dict]]:
    """The clip through POST /track in chunks of `sizes` frames -> (every frame of the replies, each reply)."""
    frames, replies, state, at = [], [], None, 0
    for size in sizes:
        status, reply = post(app, {"frames": JPEGS[at: at + size], "state": state, **options})
        assert status == 200, reply
        frames += reply["frames"]
        replies.append(reply)
        state, at = reply["state"], at + size
    assert at == len(JPEGS)
    return frames, replies


@pytest.fixture(scope="module")
def one_tracker(app) -> list[dict]:
    """The frames (as sent: the JPEGs decoded) through one Tracker, as POST /track's reply has them."""
    from pose import image
    from pose.reply import tracked_person_json
    from pose.track import model_tracker

    models, card = app.MODELS, app.MODELS.pose.card
    tracker = model_tracker(models.pose, models.detector)
    out = []
    for index, url in enumerate(JPEGS):
        tracked = tracker.step(image.read_photo(base64.b64decode(url.split(",", 1)[1])), 0.0)
        out.append({"index": index, "detected": tracked.detected, "people":
                    [tracked_person_json(tp, card, card.threshold) for tp in tracked.people]})
    return out


@pytest.fixture(scope="module")
def chunked(app) -> tuple[list[dict], list[dict]]:
    return track_in_chunks(app, [4, 1, 3, 4])


def test_chunks_with_the_state_carried_give_exactly_one_trackers_ids_and_joints(chunked, one_tracker):
    frames, _ = chunked
    assert [{k: f[k] for k in ("index", "detected", "people")} for f in frames] == one_tracker
    assert [f["detected"] for f in frames].count(False) >= 4  # followed boxes, not all detections
    ids = {p["track_id"] for f in frames for p in f["people"]}
    assert len(ids) >= 2 and all(f["people"] for f in frames)  # several people, seen on every frame


def test_the_reply_has_each_person_as_pose_does_plus_track_id_and_colour(chunked, app):
    from pose.draw import track_color

    frames, replies = chunked
    reply = replies[0]
    assert set(reply) == {"frames", "state", "skeleton", "model", "detector", "threshold", "timings_ms"}
    assert set(reply["timings_ms"]) == {"decode", "track"}
    assert reply["threshold"] == app.MODELS.pose.card.threshold
    assert {tuple(s["pair"]) for s in reply["skeleton"]} == set(app.MODELS.pose.card.skeleton)
    height, width = FRAMES[0].shape[:2]
    for frame in frames:
        assert frame["image"] == {"width": width, "height": height}
        for person in frame["people"]:
            assert set(person) == {"score", "box", "joints", "keypoints", "region", "track_id", "color"}
            assert person["color"] == "#{:02x}{:02x}{:02x}".format(*track_color(person["track_id"]))


def test_options_apply_as_in_pose(app):
    status, reply = post(app, {"frames": JPEGS[:2], "threshold": 0.9, "max_people": 1})
    assert status == 200, reply
    assert reply["threshold"] == 0.9
    assert all(len(f["people"]) <= 1 for f in reply["frames"])
    assert all(j["visible"] == (j["score"] >= 0.9) for f in reply["frames"] for p in f["people"] for j in p["joints"])


def test_the_state_round_trips_through_json_exactly(chunked, app):
    from pose.track import model_tracker

    state = chunked[1][1]["state"]
    tracker = model_tracker(app.MODELS.pose, app.MODELS.detector)
    tracker.load_state(json.loads(json.dumps(state)), len(app.MODELS.pose.card.joints))
    assert tracker.to_state() == state
    assert state["frame"] == 5 and state["tracks"]


def bad_states(state: dict) -> list[tuple[str, object]]:
    """(what is wrong, a state that is wrong in that way), from a good `state` with at least one track."""
    def changed(edit) -> dict:
        bad = copy.deepcopy(state)
        edit(bad)
        return bad
    track = state["tracks"][0]
    return [
        ("not an object", [1, 2]),
        ("a field missing", {k: v for k, v in state.items() if k != "next_id"}),
        ("a field added", {**state, "extra": 1}),
        ("another version", {**state, "version": 1}),
        ("frame negative", {**state, "frame": -1}),
        ("frame a float", {**state, "frame": 1.5}),
        ("frame a boolean", {**state, "frame": True}),
        ("next_id huge", {**state, "next_id": 10**30}),
        ("unsure not a boolean", {**state, "unsure": "yes"}),
        ("tracks not a list", {**state, "tracks": {}}),
        ("too many tracks", {**state, "next_id": 10**6,
                             "tracks": [{**track, "id": i} for i in range(1, 300)]}),
        ("repeated id", {**state, "tracks": [track, track]}),
        ("id not below next_id", changed(lambda s: s["tracks"][0].update(id=s["next_id"]))),
        ("missing over keep_missing", changed(lambda s: s["tracks"][0].update(missing=11))),
        ("a joint too few", changed(lambda s: s["tracks"][0]["points"].pop())),
        ("a point of three", changed(lambda s: s["tracks"][0]["points"][0].append(1.0))),
        ("a score as text", changed(lambda s: s["tracks"][0]["scores"].__setitem__(0, "0.5"))),
        ("a coordinate far away", changed(lambda s: s["tracks"][0]["points"][0].__setitem__(0, 1e300))),
        ("a NaN velocity", changed(lambda s: s["tracks"][0]["velocity"].__setitem__(0, float("nan")))),
        ("an infinite score", changed(lambda s: s["tracks"][0].update(score=float("inf")))),
        ("a detected score as a list", changed(lambda s: s["tracks"][0].update(detected_score=[0.5]))),
        ("a box upside down", changed(lambda s: s["tracks"][0].update(box=[10, 50, 20, 40]))),
        ("a box of three", changed(lambda s: s["tracks"][0]["box"].pop())),
        ("a track of the wrong shape", {**state, "tracks": [[1, 2, 3]]}),
    ]


def test_a_bad_state_is_a_400_with_a_clear_message_and_the_next_request_works(chunked, app):
    good = chunked[1][0]["state"]
    assert good["tracks"]
    for what, state in bad_states(good):
        event = json_event("/track", {"frames": JPEGS[4:5]})
        # json.dumps writes NaN and Infinity as JSON does not: what a hostile client may send anyway
        event["body"] = json.dumps({"frames": JPEGS[4:5], "state": state})
        response = app.lambda_handler(event, LambdaContext())
        body = json.loads(response_body(response))
        assert response["statusCode"] == 400, (what, body)
        assert body["error"]["code"] == "bad_request" and "state" in body["error"]["message"], (what, body)
    status, reply = post(app, {"frames": JPEGS[4:5], "state": good})
    assert status == 200 and reply["frames"][0]["index"] == 4 and reply["frames"][0]["people"]


@pytest.mark.parametrize("payload, status, words", [
    ({}, 400, "'frames' must be a list"),
    ({"frames": []}, 400, "'frames' must be a list"),
    ({"frames": JPEGS[0]}, 400, "'frames' must be a list"),
    ({"frames": JPEGS[:11]}, 400, "1 to 10"),
    ({"frames": [JPEGS[0], 7]}, 400, "frame 1 must be a base64 string"),
    ({"frames": ["not base64!"]}, 400, "frame 0 is not valid base64"),
    ({"frames": [base64.b64encode(b"just some text").decode()]}, 415, ""),
    ({"frames": ["data:text/plain;base64,aGk="]}, 415, "not an image type"),
    ({"frames": JPEGS[:1], "threshold": 2}, 422, "threshold"),
    ({"frames": JPEGS[:1], "max_people": 0}, 422, "max_people"),
    ({"frames": JPEGS[:1], "state": "abc"}, 400, "the state must be an object"),
])
def test_bad_bodies(app, payload, status, words):
    got, body = post(app, payload)
    assert got == status, body
    assert words in body["error"]["message"]


def test_not_json_and_raw_images_are_refused(app):
    for event, status in [(proxy_event("POST", "/track", "{", {"Content-Type": "application/json"}), 400),
                          (proxy_event("POST", "/track", b"\xff\xd8", {"Content-Type": "image/jpeg"}), 415)]:
        response = app.lambda_handler(event, LambdaContext())
        assert response["statusCode"] == status, response_body(response)


def test_a_frame_over_the_pixel_limit_is_refused_before_tracking(app):
    from pose.service import MAX_FRAME_PIXELS

    big = Image.new("RGB", (2000, MAX_FRAME_PIXELS // 2000 + 1), (90, 90, 90))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=50)
    status, body = post(app, {"frames": [base64.b64encode(buf.getvalue()).decode()]})
    assert status == 413, body
