"""The Lambda function end to end, in process, on the real default model and a real photo."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, served_model
from local.apigw import json_event, proxy_event, response_headers


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def pose_reply(app, pose_jpg):
    from local.apigw import LambdaContext, response_body

    response = app.lambda_handler(json_event("/pose", {"image": b64(pose_jpg)}), LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    return json.loads(response_body(response))


def test_pose_reply_has_every_documented_field(pose_reply, app):
    card = app.MODELS.pose.card
    assert set(pose_reply) == {"people", "joints", "keypoints", "skeleton", "image", "model", "detector",
                               "threshold", "timings_ms", "region", "annotated_image"}
    assert set(pose_reply["people"][0]) == {"score", "box", "joints", "keypoints", "region"}
    first = pose_reply["people"][0]
    assert (first["joints"], first["keypoints"], first["region"]) == \
        (pose_reply["joints"], pose_reply["keypoints"], pose_reply["region"])
    assert [j["name"] for j in pose_reply["joints"]] == list(card.joints)
    assert [j["id"] for j in pose_reply["joints"]] == list(range(len(card.joints)))
    assert len(pose_reply["keypoints"]) == 3 * len(card.joints)
    assert pose_reply["image"] == dict(zip(("width", "height"), Image.open(DATA / "pose.jpg").size))
    assert pose_reply["threshold"] == card.threshold == 0.6
    assert pose_reply["model"]["sha256"] == hashlib.sha256(served_model().read_bytes()).hexdigest()
    assert pose_reply["model"]["name"] == card.name and pose_reply["model"]["quantization"] == card.quantization
    assert set(pose_reply["timings_ms"]) == {"decode", "detect", "preprocess", "inference", "postprocess", "render"}
    assert {tuple(s["pair"]) for s in pose_reply["skeleton"]} == set(card.skeleton)


def test_the_pose_model_looks_at_the_detected_person_box_widened_to_its_input(pose_reply, app):
    """pose.jpg: one person; the region is their box, 1.25x larger, widened to the model input's aspect
    (PP-TinyPose: 192 wide x 256 high, so his wide box, arms stretched out, sets the width)."""
    spec = app.MODELS.pose.card.input
    aspect = spec.width / spec.height
    assert len(pose_reply["people"]) == 1
    box, region = pose_reply["people"][0]["box"], pose_reply["region"]
    assert region["width"] == pytest.approx(aspect * region["height"], abs=1)
    assert region["height"] == pytest.approx(1.25 * max(box["height"], box["width"] / aspect), abs=1)
    assert region["left"] <= box["left"] and region["top"] <= box["top"]
    assert region["left"] + region["width"] >= box["left"] + box["width"]
    assert region["top"] + region["height"] >= box["top"] + box["height"]


def test_a_person_small_in_the_photo_is_looked_at_closely(app, pose_reply):
    """pose.jpg pasted small into a wide empty scene: the joints come from a look at a box around
    the person and land where they do in pose.jpg itself, closer than one pass on the whole photo."""
    from local.apigw import LambdaContext, response_body

    photo = Image.open(DATA / "pose.jpg").convert("RGB")
    k, (left, top) = 0.5, (1700, 900)
    scene = Image.new("RGB", (3000, 1800), (128, 128, 128))
    scene.paste(photo.resize((round(photo.width * k), round(photo.height * k)), Image.Resampling.LANCZOS), (left, top))
    buf = io.BytesIO()
    scene.save(buf, format="JPEG", quality=92)
    response = app.lambda_handler(json_event("/pose", {"image": b64(buf.getvalue()), "return_image": False}),
                                  LambdaContext())
    reply = json.loads(response_body(response))
    region = reply["region"]
    spec = app.MODELS.pose.card.input
    assert region is not None and region["width"] == pytest.approx(region["height"] * spec.width / spec.height, abs=1)
    assert 3000 / region["width"] >= 2  # at least twice as close as the whole scene

    expected = {j["name"]: ((j["x"] + 0.5) * k - 0.5 + left, (j["y"] + 0.5) * k - 0.5 + top)
                for j in pose_reply["joints"] if j["visible"]}
    found = {j["name"]: (j["x"], j["y"]) for j in reply["joints"]}
    closer = np.array([np.hypot(*np.subtract(found[n], xy)) for n, xy in expected.items()])
    one_pass = app.MODELS.pose.estimate(np.asarray(scene))
    index = {name: i for i, name in enumerate(app.MODELS.pose.card.joints)}
    single = np.array([np.hypot(*np.subtract(one_pass.points[index[n]], xy)) for n, xy in expected.items()])
    print(f"median error vs pose.jpg's joints: closer look {np.median(closer):.1f} px, one pass {np.median(single):.1f} px")
    assert np.median(closer) < 0.03 * photo.height * k  # about where the full-size photo puts them
    assert np.median(closer) < np.median(single)


def test_visible_means_score_at_least_threshold(pose_reply):
    for j, (x, y, v) in zip(pose_reply["joints"], np.reshape(pose_reply["keypoints"], (-1, 3))):
        assert j["visible"] == (j["score"] >= pose_reply["threshold"])
        assert (v == 2 and (x, y) == (j["x"], j["y"])) if j["visible"] else (v == 0 and x == y == 0)


def test_the_person_in_pose_jpg_is_found_where_a_person_stands(pose_reply):
    """pose.jpg: one person standing, full body; head at the top, ankles at the bottom, inside the photo."""
    joints = {j["name"]: j for j in pose_reply["joints"]}
    w, h = pose_reply["image"]["width"], pose_reply["image"]["height"]
    visible = [j for j in pose_reply["joints"] if j["visible"]]
    assert len(visible) >= 12
    for j in visible:
        assert 0 <= j["x"] < w and 0 <= j["y"] < h
    head = min(j["y"] for j in pose_reply["joints"] if j["name"] in ("nose", "head_top", "upper_neck"))
    ankles = min(joints[n]["y"] for n in ("l_ankle", "r_ankle"))
    hips = max(joints[n]["y"] for n in ("l_hip", "r_hip"))
    assert head < hips < ankles


def test_annotated_image_is_a_png_of_the_photo(pose_reply):
    header, data = pose_reply["annotated_image"].split(",", 1)
    assert header == "data:image/png;base64"
    png = Image.open(io.BytesIO(base64.b64decode(data)))
    assert png.format == "PNG" and png.size == (pose_reply["image"]["width"], pose_reply["image"]["height"])


def test_raw_jpeg_body_and_data_url_give_the_same_joints(call, pose_jpg, pose_reply):
    status, raw, _ = call(proxy_event("POST", "/pose", pose_jpg, {"Content-Type": "image/jpeg"}))
    assert status == 200
    status, url, _ = call(json_event("/pose", {"image": "data:image/jpeg;base64," + b64(pose_jpg),
                                               "return_image": False}))
    assert status == 200 and "annotated_image" not in url
    for reply in (raw, url):
        assert [(j["x"], j["y"]) for j in reply["joints"]] == [(j["x"], j["y"]) for j in pose_reply["joints"]]


def test_threshold_per_request_changes_only_visibility(call, pose_jpg, pose_reply):
    counts = {}
    for t in (0.0, 0.3, 0.6, 1.0):
        status, reply, _ = call(json_event("/pose", {"image": b64(pose_jpg), "threshold": t, "return_image": False}))
        assert status == 200 and reply["threshold"] == t
        assert [j["score"] for j in reply["joints"]] == [j["score"] for j in pose_reply["joints"]]
        counts[t] = sum(j["visible"] for j in reply["joints"])
    assert counts[0.0] == len(pose_reply["joints"]) >= counts[0.3] >= counts[0.6] >= counts[1.0]
    status, reply, _ = call(proxy_event("POST", "/pose", pose_jpg, {"Content-Type": "image/jpeg"},
                                        {"threshold": "0", "return_image": "false"}))
    assert status == 200 and all(j["visible"] for j in reply["joints"]) and "annotated_image" not in reply


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_upload_gives_the_upright_pose(call, pose_jpg, pose_reply, orientation):
    upright = Image.open(io.BytesIO(pose_jpg))
    stored = upright.transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
                                8: Image.Transpose.ROTATE_270}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif)
    reference = io.BytesIO()
    upright.save(reference, format="PNG")
    _, expected, _ = call(json_event("/pose", {"image": b64(reference.getvalue()), "return_image": False}))
    status, reply, _ = call(json_event("/pose", {"image": b64(buf.getvalue()), "return_image": False}))
    assert status == 200 and reply["image"] == expected["image"]
    assert [(j["x"], j["y"]) for j in reply["joints"]] == [(j["x"], j["y"]) for j in expected["joints"]]


BAD = {
    "empty body": (proxy_event("POST", "/pose", "", {"Content-Type": "application/json"}), 400),
    "invalid JSON": (proxy_event("POST", "/pose", '{"image": ', {"Content-Type": "application/json"}), 400),
    "JSON not an object": (json_event("/pose", ["image"]), 400),
    "no image field": (json_event("/pose", {"threshold": 0.5}), 400),
    "image not a string": (json_event("/pose", {"image": 12}), 400),
    "invalid base64": (json_event("/pose", {"image": "not base64!"}), 400),
    "data URL of text": (json_event("/pose", {"image": "data:text/plain;base64," + b64(b"hello")}), 415),
    "text, not an image": (json_event("/pose", {"image": b64(b"just text")}), 415),
    "zero bytes": (json_event("/pose", {"image": ""}), 400),
    "raw gif content type": (proxy_event("POST", "/pose", b"GIF89a", {"Content-Type": "image/x-icon"}), 415),
    "too large": (json_event("/pose", {"image": "A" * (6_100_000)}), 413),
    "threshold above 1": (json_event("/pose", {"image": "AAAA", "threshold": 1.5}), 422),
    "threshold negative": (json_event("/pose", {"image": "AAAA", "threshold": -0.1}), 422),
    "threshold not a number": (json_event("/pose", {"image": "AAAA", "threshold": "high"}), 422),
    "threshold boolean": (json_event("/pose", {"image": "AAAA", "threshold": True}), 422),
    "return_image not boolean": (json_event("/pose", {"image": "AAAA", "return_image": "maybe"}), 422),
    "unknown route": (proxy_event("GET", "/nothing"), 404),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_request_gets_its_status_and_the_next_request_still_works(call, pose_jpg, name):
    event, status = BAD[name]
    got, body, response = call(event)
    assert got == status, body
    assert set(body["error"]) >= {"code", "message"} and body["error"]["message"]
    assert "Traceback" not in response["body"] and "File \"" not in response["body"]
    assert response_headers(response)["content-type"] == "application/json"
    ok, reply, _ = call(json_event("/pose", {"image": b64(pose_jpg), "return_image": False}))
    assert ok == 200 and len(reply["joints"]) > 0


def test_health_describes_the_model_and_says_warm_after_a_request(call, app, pose_reply):
    status, health, _ = call(proxy_event("GET", "/health"))
    assert status == 200 and health["warm"] is True
    assert health["sha256"] == app.MODELS.pose.sha256 and health["model"]["name"] == app.MODELS.pose.card.name
    assert health["model"]["joints"] == list(app.MODELS.pose.card.joints)


def test_cors_preflight_allows_the_configured_origin(call):
    event = proxy_event("OPTIONS", "/pose", None, {"Origin": "https://example.org",
                                                   "Access-Control-Request-Method": "POST"})
    status, _, response = call(event)
    assert status == 204
    headers = response_headers(response)
    assert headers["access-control-allow-origin"] in ("*", "https://example.org")


def test_every_person_in_pilots_jpg_comes_back_and_max_people_caps_them(call):
    pilots = (DATA / "Pilots.jpg").read_bytes()
    status, every, _ = call(json_event("/pose", {"image": b64(pilots), "return_image": False}))
    assert status == 200 and len(every["people"]) >= 3
    assert every["joints"] == every["people"][0]["joints"]
    for person in every["people"]:
        box = person["box"]
        assert 0 < person["score"] <= 1 and box["width"] > 0 and box["height"] > 0
        assert len(person["keypoints"]) == 3 * len(person["joints"])
    status, two, _ = call(json_event("/pose", {"image": b64(pilots), "return_image": False, "max_people": 2}))
    assert status == 200 and len(two["people"]) == 2
    status, one, _ = call(proxy_event("POST", "/pose", pilots, {"Content-Type": "image/jpeg"},
                                      {"max_people": "1", "return_image": "false"}))
    assert status == 200 and len(one["people"]) == 1


@pytest.mark.parametrize("value", [0, 21, -1, 2.5, "3", True, None, [2]])
def test_max_people_outside_1_to_20_is_a_422(call, pose_jpg, value):
    body = {"image": b64(pose_jpg), "max_people": value}
    status, reply, _ = call(json_event("/pose", body))
    if value is None:  # JSON null: the default
        assert status == 200
        return
    if value == "3":  # a string of digits reads as the query string's would
        assert status == 200
        return
    assert status == 422 and reply["error"]["code"] == "bad_parameter" and "max_people" in reply["error"]["message"]


def test_the_annotated_image_draws_a_box_and_number_per_person(call):
    """Pilots.jpg: the drawing differs from the photo inside every person's box, on its edge."""
    pilots = (DATA / "Pilots.jpg").read_bytes()
    status, reply, _ = call(json_event("/pose", {"image": b64(pilots)}))
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["annotated_image"].split(",", 1)[1]))).convert("RGB"),
                       dtype=np.int16)
    photo = np.asarray(Image.open(io.BytesIO(pilots)).convert("RGB"), dtype=np.int16)
    for person in reply["people"]:
        box = person["box"]
        top, left = int(round(box["top"])), int(round(box["left"]))
        right = int(round(box["left"] + box["width"]))
        edge = slice(max(left, 0), min(right, photo.shape[1]))
        row = max(top, 0)
        assert np.abs(drawn[row, edge] - photo[row, edge]).max() > 60  # the box's top edge is drawn
