"""The annotated image: a palette PNG by default, drawn in its exact colours; JPEG or WebP on request."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from local.apigw import json_event, proxy_event
from pose import draw


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def annotated(reply: dict) -> tuple[str, Image.Image]:
    header, data = reply["annotated_image"].split(",", 1)
    return header, Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture(scope="module")
def replies(app, pose_jpg) -> dict:
    from local.apigw import LambdaContext, response_body
    import json

    out = {}
    for fmt in (None, "png", "jpeg", "webp"):
        payload = {"image": b64(pose_jpg), **({"image_format": fmt} if fmt else {})}
        response = app.lambda_handler(json_event("/pose", payload), LambdaContext())
        assert response["statusCode"] == 200, response["body"]
        out[fmt] = json.loads(response_body(response))
    return out


def test_the_default_is_a_palette_png_of_the_photo(replies):
    header, png = annotated(replies[None])
    assert header == "data:image/png;base64"
    assert png.format == "PNG" and png.mode == "P"
    assert png.size == (replies[None]["image"]["width"], replies[None]["image"]["height"])
    assert annotated(replies["png"])[1].tobytes() == png.tobytes()


def test_the_palette_png_draws_each_joint_in_its_exact_colour(app, replies):
    """The photo is reduced to a palette first and the drawing made after, so no joint colour is
    approximated: the centre of each visible joint's dot is its side's colour (for the joints whose
    dot no other dot, drawn later, may cover: those over three dot radii from every other joint)."""
    reply = replies[None]
    rgb = np.asarray(annotated(reply)[1].convert("RGB"))
    radius = max(3, round(max(rgb.shape[:2]) / 120))  # draw.annotate's dot radius
    everyone = np.array([[j["x"], j["y"]] for p in reply["people"] for j in p["joints"] if j["visible"]])
    alone = [j for j in reply["joints"] if j["visible"]
             and np.sort(np.hypot(*(everyone - [j["x"], j["y"]]).T))[1] > 3 * radius]
    assert len(alone) >= 8
    for j in alone:
        side = app.MODELS.pose.card.sides[j["id"]]
        assert tuple(rgb[round(j["y"]), round(j["x"])]) == draw.COLORS[side], j["name"]


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_jpeg_and_webp_on_request_are_smaller_and_show_the_same_drawing(replies, fmt):
    header, img = annotated(replies[fmt])
    assert header == f"data:image/{fmt};base64" and img.format == fmt.upper()
    assert len(replies[fmt]["annotated_image"]) < len(replies[None]["annotated_image"])
    png = np.asarray(annotated(replies[None])[1].convert("RGB"), dtype=np.int16)
    assert img.size == (png.shape[1], png.shape[0])
    assert np.median(np.abs(np.asarray(img.convert("RGB"), dtype=np.int16) - png)) <= 8
    assert replies[fmt]["joints"] == replies[None]["joints"]


def test_image_format_in_the_query_string_of_a_raw_body(call, pose_jpg):
    status, reply, _ = call(proxy_event("POST", "/pose", pose_jpg, {"Content-Type": "image/jpeg"},
                                        query={"image_format": "WebP"}))
    assert status == 200 and annotated(reply)[0] == "data:image/webp;base64"


@pytest.mark.parametrize("value", ["gif", "", "png ", 5, True, ["png"], None])
def test_an_unknown_image_format_is_a_bad_parameter(call, pose_jpg, value):
    payload = {"image": b64(pose_jpg), "image_format": value}
    status, body, _ = call(json_event("/pose", payload))
    if value is None:  # JSON null: the default
        assert status == 200 and annotated(body)[0] == "data:image/png;base64"
        return
    assert status == 422 and body["error"]["code"] == "bad_parameter"
    assert "image_format" in body["error"]["message"]


def test_an_image_too_large_in_its_format_falls_back_to_jpeg(app, pose_jpg, monkeypatch):
    """The reply must stay under Lambda's 6 MB: an image over MAX_ANNOTATED_BYTES is sent as a JPEG."""
    from pose import reply as reply_module
    from pose.image import read_photo
    from pose.pipeline import estimate_people

    rgb = read_photo(pose_jpg)
    found = estimate_people(rgb, app.MODELS.pose, app.MODELS.detector)
    media_type, data = reply_module.annotated_image(rgb, found, app.MODELS.pose.card, 0.5, "webp")
    assert media_type == "image/webp"
    monkeypatch.setattr(reply_module, "MAX_ANNOTATED_BYTES", len(data) - 1)
    media_type, fallback = reply_module.annotated_image(rgb, found, app.MODELS.pose.card, 0.5, "webp")
    assert media_type == "image/jpeg" and Image.open(io.BytesIO(fallback)).format == "JPEG"


def test_the_palette_png_renders_in_well_under_the_time_of_a_truecolour_png(app, pose_jpg):
    """Side by side in one run, alternating: draw + encode as served, and as a truecolour PNG (the
    former default, which took longer than the model itself). Medians of the paired ratios."""
    import time

    from pose.image import read_photo
    from pose.pipeline import estimate_people

    rgb = read_photo(pose_jpg)
    found = estimate_people(rgb, app.MODELS.pose, app.MODELS.detector)
    marks = [(p.points, p.scores >= 0.5, p.box) for p in found.people]
    card = app.MODELS.pose.card

    def served() -> None:
        draw.encode(draw.annotate(rgb, marks, card.sides, card.skeleton, palette=True), "png")

    def truecolour() -> None:
        draw.encode(draw.annotate(rgb, marks, card.sides, card.skeleton), "png")

    ratios = []
    for i in range(9):
        took = {}
        for render in (served, truecolour)[::1 if i % 2 else -1]:
            t = time.perf_counter()
            render()
            took[render] = time.perf_counter() - t
        ratios.append(took[served] / took[truecolour])
    assert np.median(ratios) < 0.7, ratios
