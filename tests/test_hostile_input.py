"""Hostile and broken input on the real handler with the real model, and what leaks into replies and logs.

tests/test_app.py has the basic bad requests (empty body, invalid JSON, bad base64, threshold range ...);
this file adds the ones it lacks, every image kind against the upright photo's pose, decompression
bombs in each container, a property-based test over random input, and the log and reply hygiene.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from conftest import DATA
from local.apigw import LambdaContext, json_event, proxy_event, response_body, response_headers

LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024  # bytes of the JSON a synchronous invocation may return
MARKER = "SECRET-MARKER-7f3a"  # planted in request bodies; must never come back or reach a log


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def raw_event(data: bytes, content_type: str = "image/jpeg", query: dict | None = None) -> dict:
    return proxy_event("POST", "/pose", data, {"Content-Type": content_type}, query)


def text_event(text: str) -> dict:
    return proxy_event("POST", "/pose", text, {"Content-Type": "application/json"})


def joints_of(reply: dict) -> np.ndarray:
    return np.array([(j["x"], j["y"]) for j in reply["joints"]])


@pytest.fixture(scope="module")
def photo(pose_jpg) -> Image.Image:
    return Image.open(io.BytesIO(pose_jpg)).convert("RGB")


@pytest.fixture(scope="module")
def upright(app, pose_jpg) -> dict:
    """The reply for tests/data/pose.jpg as it is: the reference every variant is compared with."""
    response = app.lambda_handler(json_event("/pose", {"image": b64(pose_jpg), "return_image": False}),
                                  LambdaContext())
    assert response["statusCode"] == 200
    return json.loads(response_body(response))


@pytest.fixture(scope="module")
def reference(upright):
    """(visible joint mask, person size in pixels) of the upright reply."""
    visible = np.array([j["visible"] for j in upright["joints"]])
    assert visible.sum() >= 10
    pts = joints_of(upright)[visible]
    return visible, float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])))


def assert_same_pose(reply: dict, upright: dict, reference, tolerance: float) -> None:
    """Every joint visible in the upright reply lands within tolerance x person size of it."""
    visible, size = reference
    assert reply["image"] == upright["image"]
    assert [j["name"] for j in reply["joints"]] == [j["name"] for j in upright["joints"]]
    dist = np.hypot(*(joints_of(reply) - joints_of(upright))[visible].T)
    assert dist.max() <= tolerance * size, f"joints moved by up to {dist.max():.1f} px (person is {size:.0f} px)"


# ---------------------------------------------------------------------------------------------------
# Malformed requests that tests/test_app.py does not cover: status, error code and a message naming it


def _pdf() -> bytes:
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def _pose() -> bytes:
    return (DATA / "pose.jpg").read_bytes()


MALFORMED = {
    # name: (event factory, status, error code, words the message must contain)
    "raw body empty": (lambda: raw_event(b""), 400, "bad_request", "empty"),
    "JSON body only whitespace": (lambda: text_event(" \n\t "), 400, "bad_request", "empty"),
    "JSON nested too deeply": (lambda: text_event('{"a":' * 50_000 + "1" + "}" * 50_000), 400, "bad_request", "JSON"),
    "JSON with a lone surrogate": (lambda: text_event('{"image": "\\ud800"}'), 400, "bad_request", "base64"),
    "image is a list": (lambda: json_event("/pose", {"image": [b64(_pose())]}), 400, "bad_request", "'image'"),
    "image is an object": (lambda: json_event("/pose", {"image": {"data": "AAAA"}}), 400, "bad_request", "'image'"),
    "image is true": (lambda: json_event("/pose", {"image": True}), 400, "bad_request", "'image'"),
    "image is null": (lambda: json_event("/pose", {"image": None}), 400, "bad_request", "'image'"),
    "base64 with bad padding": (lambda: json_event("/pose", {"image": "AAA"}), 400, "bad_request", "base64"),
    "raw body not base64 (gateway misconfigured)": (
        lambda: {**raw_event(b"x"), "body": "%%%not base64%%%", "isBase64Encoded": True}, 400, "bad_request", "base64"),
    "raw image not base64-encoded by the gateway": (
        lambda: {**raw_event(b"x"), "body": "\xff\xd8\xff", "isBase64Encoded": False}, 400, "bad_request", "base64"),
    "data URL not base64": (lambda: json_event("/pose", {"image": "data:image/png," + b64(_pose())}),
                            400, "bad_request", "base64"),
    "data URL of SVG": (lambda: json_event("/pose", {"image": "data:image/svg+xml;base64," + b64(b"<svg/>")}),
                        415, "unsupported_image", "image/svg+xml"),
    "data URL of PDF": (lambda: json_event("/pose", {"image": "data:application/pdf;base64," + b64(_pdf())}),
                        415, "unsupported_image", "application/pdf"),
    "data URL of zero bytes": (lambda: json_event("/pose", {"image": "data:image/png;base64,"}),
                               415, "unsupported_image", "empty"),
    "PDF in JSON": (lambda: json_event("/pose", {"image": b64(_pdf())}), 415, "unsupported_image", "not an image"),
    "PDF as a raw image/jpeg": (lambda: raw_event(_pdf()), 415, "unsupported_image", "not an image"),
    "text as a raw image/png": (lambda: raw_event(b"hello, I am text", "image/png"), 415, "unsupported_image",
                                "not an image"),
    "truncated JPEG, raw": (lambda: raw_event(_pose()[: len(_pose()) // 3]), 415, "unsupported_image", "decoded"),
    "truncated JPEG, JSON": (lambda: json_event("/pose", {"image": b64(_pose()[:5000])}), 415, "unsupported_image",
                             "decoded"),
    "JPEG magic only": (lambda: raw_event(b"\xff\xd8\xff"), 415, "unsupported_image", "image"),
    "raw SVG content type": (lambda: raw_event(b"<svg/>", "image/svg+xml"), 415, "unsupported_image", "image/svg+xml"),
    "raw image over the byte limit": (lambda: {**raw_event(b"x"), "body": "A" * 6_000_004, "isBase64Encoded": True},
                                      413, "too_large", "4500000"),
    "JSON image over the byte limit, body under 6 MB": (lambda: json_event("/pose", {"image": "A" * 6_000_004}),
                                                        413, "too_large", "4500000"),
    "threshold is a list": (lambda: json_event("/pose", {"image": "AAAA", "threshold": [0.5]}), 422, "bad_parameter",
                            "threshold"),
    "threshold is an object": (lambda: json_event("/pose", {"image": "AAAA", "threshold": {"v": 1}}), 422,
                               "bad_parameter", "threshold"),
    "threshold NaN": (lambda: text_event('{"image": "AAAA", "threshold": NaN}'), 422, "bad_parameter", "threshold"),
    "threshold Infinity": (lambda: text_event('{"image": "AAAA", "threshold": Infinity}'), 422, "bad_parameter",
                           "threshold"),
    "threshold string out of range": (lambda: json_event("/pose", {"image": "AAAA", "threshold": "2"}), 422,
                                      "bad_parameter", "threshold"),
    "threshold in the query not a number": (lambda: raw_event(_pose(), query={"threshold": "high"}), 422,
                                            "bad_parameter", "threshold"),
    "threshold in the query above 1": (lambda: raw_event(_pose(), query={"threshold": "1.01"}), 422,
                                       "bad_parameter", "threshold"),
    "return_image in the query not a boolean": (lambda: raw_event(_pose(), query={"return_image": "yes please"}), 422,
                                                "bad_parameter", "return_image"),
    "return_image a number": (lambda: json_event("/pose", {"image": "AAAA", "return_image": 1}), 422, "bad_parameter",
                              "return_image"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_its_status_and_an_error_naming_it(call, name):
    make, status, code, words = MALFORMED[name]
    got, body, response = call(make())
    assert got == status, body
    assert response_headers(response)["content-type"] == "application/json"
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert words.lower() in body["error"]["message"].lower(), body["error"]["message"]
    assert "Traceback" not in response["body"] and 'File "' not in response["body"]


def test_unknown_fields_are_ignored(call, pose_jpg, upright):
    status, reply, _ = call(json_event("/pose", {
        "image": b64(pose_jpg), "return_image": False, "threshold": None, "model": "efficientpose",
        "options": {"flip": True}, "callback": "https://example.org/x", "__proto__": {"admin": True}}))
    assert status == 200
    assert reply["model"] == upright["model"] and reply["threshold"] == upright["threshold"]
    assert joints_of(reply).tolist() == joints_of(upright).tolist()


def test_a_data_url_with_parameters_and_upper_case_type_is_read(call, pose_jpg, upright):
    status, reply, _ = call(json_event("/pose", {"image": "data:IMAGE/JPEG;name=a.jpg;base64," + b64(pose_jpg),
                                                 "return_image": False}))
    assert status == 200 and joints_of(reply).tolist() == joints_of(upright).tolist()


def test_base64_with_line_breaks_is_read(call, pose_jpg, upright):
    wrapped = base64.encodebytes(pose_jpg).decode("ascii")  # MIME style: a newline every 76 characters
    status, reply, _ = call(json_event("/pose", {"image": wrapped, "return_image": False}))
    assert status == 200 and joints_of(reply).tolist() == joints_of(upright).tolist()


# ---------------------------------------------------------------------------------------------------
# Tiny and extreme images: a pose reply, never a crash


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_a_1x1_image_gets_a_pose_reply(call, app, fmt):
    data = encode(Image.new("RGB", (1, 1), (200, 30, 90)), fmt)
    status, reply, _ = call(json_event("/pose", {"image": b64(data)}))
    assert status == 200, reply
    assert reply["image"] == {"width": 1, "height": 1}
    assert len(reply["joints"]) == len(app.MODELS.pose.card.joints)
    assert all(np.isfinite([j["x"], j["y"], j["score"]]).all() for j in reply["joints"])
    png = Image.open(io.BytesIO(base64.b64decode(reply["annotated_image"].split(",", 1)[1])))
    assert png.size == (1, 1)


@pytest.mark.parametrize("size", [(1, 3000), (3000, 1), (2, 2)])
def test_extreme_aspect_ratios_get_a_pose_reply(call, size):
    status, reply, _ = call(raw_event(encode(Image.new("L", size, 128), "PNG"), "image/png"))
    assert status == 200 and reply["image"] == {"width": size[0], "height": size[1]}
    assert all(np.isfinite([j["x"], j["y"]]).all() for j in reply["joints"])


def test_a_detailed_photo_keeps_the_reply_under_the_lambda_response_limit(app):
    """Noise defeats PNG: the annotated image alone would pass 6 MB and Lambda would answer 502."""
    noise = np.random.default_rng(7).integers(0, 256, (1280, 1280, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90)
    response = app.lambda_handler(raw_event(data), LambdaContext())
    assert response["statusCode"] == 200
    assert len(json.dumps(response).encode()) < LAMBDA_RESPONSE_LIMIT
    reply = json.loads(response_body(response))
    header, payload = reply["annotated_image"].split(",", 1)
    assert header in ("data:image/png;base64", "data:image/jpeg;base64")
    drawn = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert drawn.size == (1280, 1280) and drawn.format == header.split("/")[1].split(";")[0].upper()


# ---------------------------------------------------------------------------------------------------
# Decompression bombs: declared pixels over the limit are refused (413) before any pixel is decoded


def _patch_dims(data: bytes, width: int, height: int, fmt: str) -> bytes:
    d = bytearray(data)
    if fmt == "JPEG":
        i = d.find(b"\xff\xc0")
        d[i + 5:i + 9] = struct.pack(">HH", height, width)
    elif fmt == "GIF":
        d[6:10] = struct.pack("<HH", width, height)  # the logical screen
        i = 13 + (3 << ((d[10] & 7) + 1) if d[10] & 0x80 else 0)  # after the global colour table
        while d[i] == 0x21:  # extension blocks: label, then sub-blocks up to a zero length
            i += 2
            while d[i]:
                i += d[i] + 1
            i += 1
        assert d[i] == 0x2C  # the image descriptor
        d[i + 5:i + 9] = struct.pack("<HH", width, height)
    elif fmt == "WEBP":  # lossy VP8: 14-bit dimensions after the start code
        i = d.find(b"\x9d\x01\x2a")
        d[i + 3:i + 7] = struct.pack("<HH", width, height)
    elif fmt == "TIFF":
        offset = struct.unpack("<I", d[4:8])[0]
        for k in range(struct.unpack("<H", d[offset:offset + 2])[0]):
            entry = offset + 2 + 12 * k
            tag = struct.unpack("<H", d[entry:entry + 2])[0]
            if tag in (256, 257):
                d[entry + 2:entry + 8] = struct.pack("<HI", 4, 1)  # LONG, one value
                d[entry + 8:entry + 12] = struct.pack("<I", width if tag == 256 else height)
    elif fmt == "PNG":
        def chunk(kind: bytes, payload: bytes) -> bytes:
            return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                + chunk(b"IEND", b""))
    return bytes(d)


def bomb(fmt: str, width: int, height: int) -> bytes:
    small = Image.new("RGB", (16, 16), (90, 90, 90))
    return _patch_dims(encode(small.convert("P") if fmt == "GIF" else small, fmt), width, height, fmt)


def declared_size(data: bytes) -> tuple[int, int]:
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return Image.open(io.BytesIO(data)).size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


@pytest.fixture()
def no_pixel_decoding(monkeypatch):
    """Fail the test if Pillow decodes any pixels (ImageFile.load) while the fixture is active."""
    loads = []
    original = ImageFile.ImageFile.load

    def spy(self):
        loads.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return loads


@pytest.mark.parametrize("fmt,size", [
    ("PNG", (60000, 60000)), ("JPEG", (60000, 60000)), ("GIF", (60000, 60000)), ("TIFF", (60000, 60000)),
    ("WEBP", (16383, 16383)),  # the largest a VP8 header can declare
    ("PNG", (7000, 7000)), ("JPEG", (7000, 7000)), ("GIF", (7000, 7000)), ("TIFF", (7000, 7000)),
    ("WEBP", (7000, 7000)),  # over the service's 40 Mpx but under Pillow's own bomb limit
])
def test_decompression_bomb_is_413_before_its_pixels_are_decoded(call, no_pixel_decoding, fmt, size):
    data = bomb(fmt, *size)
    assert declared_size(data) == size  # the header really declares that size
    status, body, _ = call(json_event("/pose", {"image": b64(data)}))
    assert status == 413 and body["error"]["code"] == "too_large", body
    assert "pixels" in body["error"]["message"]
    assert no_pixel_decoding == []


@pytest.mark.parametrize("fmt,ctype", [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")])
def test_decompression_bomb_as_raw_body_is_413(call, no_pixel_decoding, fmt, ctype):
    status, body, _ = call(raw_event(bomb(fmt, 16383, 16383), ctype))
    assert status == 413 and "pixels" in body["error"]["message"]
    assert no_pixel_decoding == []


# ---------------------------------------------------------------------------------------------------
# Every kind of image decodes to the same pose


def png_rgb16(rgb: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): each 8-bit value v becomes v * 257."""
    h, w, _ = rgb.shape
    rows = (rgb.astype(">u2") * 257).reshape(h, w * 3).view(np.uint8).reshape(h, w * 6)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def variants(photo: Image.Image) -> dict[str, tuple[bytes, float]]:
    """name -> (file bytes, tolerance as a fraction of the person's size; 0 = the same joints exactly)."""
    rgb = np.asarray(photo)
    rgba = photo.convert("RGBA")
    gray = photo.convert("L")
    return {
        "RGBA PNG, opaque": (encode(rgba, "PNG"), 0.0),
        "RGB BMP": (encode(photo, "BMP"), 0.0),
        "RGB TIFF (LZW)": (encode(photo, "TIFF", compression="tiff_lzw"), 0.0),
        "WebP lossless": (encode(photo, "WEBP", lossless=True), 0.0),
        "16-bit RGB PNG": (png_rgb16(rgb), 0.0),
        "grayscale PNG": (encode(gray, "PNG"), 0.05),
        "16-bit grayscale PNG": (encode(Image.fromarray(np.asarray(gray).astype(np.uint16) * 257), "PNG"), 0.05),
        "grayscale JPEG": (encode(gray, "JPEG", quality=90), 0.05),
        "palette PNG (256 colours)": (encode(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG"),
                                      0.05),
        "GIF": (encode(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "GIF"), 0.05),
        "CMYK JPEG": (encode(photo.convert("CMYK"), "JPEG", quality=90), 0.05),
        "progressive JPEG": (encode(photo, "JPEG", quality=85, progressive=True), 0.05),
        "WebP lossy": (encode(photo, "WEBP", quality=80), 0.05),
        "JPEG quality 30": (encode(photo, "JPEG", quality=30), 0.05),
    }


def test_every_image_kind_gives_the_upright_photos_pose(call, photo, upright, reference):
    failures = []
    for name, (data, tolerance) in variants(photo).items():
        status, reply, _ = call(json_event("/pose", {"image": b64(data), "return_image": False}))
        assert status == 200, (name, reply)
        try:
            if tolerance == 0.0:
                assert reply["image"] == upright["image"]
                assert joints_of(reply).tolist() == joints_of(upright).tolist()
            else:
                assert_same_pose(reply, upright, reference, tolerance)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


def test_16bit_gray_maps_to_the_same_pixels_as_8bit_gray(call, photo):
    gray = photo.convert("L")
    deep = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    replies = [call(json_event("/pose", {"image": b64(data), "return_image": False}))[1]
               for data in (encode(gray, "PNG"), encode(deep, "PNG"))]
    assert joints_of(replies[0]).tolist() == joints_of(replies[1]).tolist()


INVERSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
           7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
UNDO = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_oriented_camera_jpeg_gives_the_upright_pose(call, photo, upright, reference, orientation):
    """A camera JPEG stored sideways or mirrored with its EXIF orientation: the joints land on the same body parts.

    Exactly the joints of its own pixels turned upright here (by the orientation's known transform, sent
    as a lossless PNG), and, since the JPEG is a lossy copy, within 5% of the person's size of the photo's.
    """
    stored = photo if INVERSE[orientation] is None else photo.transpose(INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    jpeg = encode(stored, "JPEG", quality=92, exif=exif)
    status, reply, _ = call(raw_event(jpeg))
    assert status == 200
    pixels = Image.open(io.BytesIO(jpeg)).convert("RGB")  # as stored: Pillow does not apply EXIF by itself
    turned = pixels if UNDO[orientation] is None else pixels.transpose(UNDO[orientation])
    _, exact, _ = call(json_event("/pose", {"image": b64(encode(turned, "PNG")), "return_image": False}))
    assert joints_of(reply).tolist() == joints_of(exact).tolist()
    assert_same_pose(reply, upright, reference, 0.05)


def test_animated_gif_uses_its_first_frame(call, photo, upright, reference):
    mirrored = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    _, mirror_reply, _ = call(json_event("/pose", {"image": b64(encode(mirrored, "PNG")), "return_image": False}))
    visible, size = reference
    for fmt in ("GIF", "PNG", "WEBP"):  # GIF, APNG, animated WebP
        frames = [photo, mirrored, Image.new("RGB", photo.size, (0, 0, 0))]
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
        status, reply, _ = call(json_event("/pose", {"image": b64(data), "return_image": False}))
        assert status == 200, (fmt, reply)
        assert_same_pose(reply, upright, reference, 0.05)
        # and not the second frame's (mirrored) pose
        far = np.hypot(*(joints_of(reply) - joints_of(mirror_reply))[visible].T)
        assert far.max() > 0.1 * size, fmt


# ---------------------------------------------------------------------------------------------------
# Random input: never a 5xx, never a crash, and the next valid request gets the right answer

CLIENT_ERRORS = {400: "bad_request", 413: "too_large", 415: "unsupported_image", 422: "bad_parameter"}


def small_images() -> list[bytes]:
    base = Image.open(DATA / "pose.jpg").convert("RGB").resize((48, 32))
    return [encode(base, "JPEG"), encode(base, "PNG"), encode(base.convert("P"), "GIF"), encode(base, "WEBP"),
            encode(base, "TIFF"), encode(base, "BMP"), encode(base, "JPEG", progressive=True)]


SEEDS = small_images()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)


@st.composite
def mutated_image(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            data = data[:at]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


image_bytes = st.binary(max_size=2048) | mutated_image()


@st.composite
def hostile_event(draw) -> dict:
    kind = draw(st.sampled_from(["raw", "json-image", "data-url", "json-any", "text", "query"]))
    if kind == "raw":
        return raw_event(draw(image_bytes), draw(st.sampled_from(["image/jpeg", "image/png", "image/webp"])))
    if kind == "json-image":
        doc = {"image": b64(draw(image_bytes))}
        doc.update(draw(st.dictionaries(st.sampled_from(["threshold", "return_image", "other"]), json_values,
                                        max_size=3)))
        return json_event("/pose", doc)
    if kind == "data-url":
        media = draw(st.sampled_from(["image/jpeg", "image/png", "image/gif", "text/html", "image/svg+xml", ""]))
        return json_event("/pose", {"image": f"data:{media};base64," + b64(draw(image_bytes))})
    if kind == "json-any":
        return json_event("/pose", draw(json_values))
    if kind == "query":
        query = draw(st.dictionaries(st.sampled_from(["threshold", "return_image", "x"]), st.text(max_size=8),
                                     max_size=2))
        return raw_event(draw(image_bytes), "image/jpeg", query)
    return text_event(draw(st.text(max_size=200)))


def test_a_corrupt_photo_whose_joints_all_fall_off_it_gets_its_drawing(call):
    """Found by the random test below: the person's box came out inverted and the drawing raised (500)."""
    status, body, _ = call(json_event("/pose", {"image": b64((DATA / "corrupt-48x32.jpg").read_bytes())}))
    assert status == 200, body
    box = body["people"][0]["box"]
    assert box["width"] >= 0 and box["height"] >= 0 and body["annotated_image"].startswith("data:image/")


def test_random_input_never_gets_a_5xx_and_the_next_request_is_answered(app, pose_jpg, upright):
    seen = {}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(hostile_event())
    def check(event):
        response = app.lambda_handler(event, LambdaContext())
        status = response["statusCode"]
        body = json.loads(response_body(response))
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, body
        if status == 200:
            assert len(body["joints"]) == len(app.MODELS.pose.card.joints)
            assert all(np.isfinite([j["x"], j["y"], j["score"]]).all() for j in body["joints"])
        else:
            assert status in CLIENT_ERRORS and body["error"]["code"] == CLIENT_ERRORS[status], body
            assert body["error"]["message"]

    check()
    assert len(seen) >= 3, seen  # the strategy reached several outcomes, not only one error
    response = app.lambda_handler(json_event("/pose", {"image": b64(pose_jpg), "return_image": False}), LambdaContext())
    assert response["statusCode"] == 200
    assert joints_of(json.loads(response_body(response))).tolist() == joints_of(upright).tolist()


# ---------------------------------------------------------------------------------------------------
# What replies and logs carry: no stack trace, no request body, no image; a 5xx has a request id


class CurrentStdout:
    """A stream that writes to whatever sys.stdout is at the time (capsys swaps it between test phases)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture()
def logs(app, capsys, caplog):
    """Everything the function logs, as Lambda would ship it to CloudWatch: call it to get (lines, all text).

    The Powertools logger's JSON lines on stdout (at INFO), read with capsys; anything on stderr; and,
    with caplog, whatever reaches the root logger at WARNING, where the Lambda runtime has its handler.
    """
    handler = app.logger.registered_handler
    level = app.logger.log_level
    old_stream = handler.setStream(CurrentStdout())  # not the stream the logger took at import: capsys's
    app.logger.setLevel("INFO")
    caplog.set_level(logging.WARNING)
    capsys.readouterr()

    def read() -> tuple[list[dict], str]:
        out, err = capsys.readouterr()
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"level"' in line]
        assert not [r for r in caplog.records if r.exc_info], caplog.text
        return lines, out + err + caplog.text

    yield read
    app.logger.setLevel(level)
    handler.setStream(old_stream)


def assert_clean(text: str, *secrets: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[:2000]
    for s in secrets:
        assert s not in text, f"{s[:40]!r} leaked"


def test_a_rejected_request_logs_one_line_without_the_body(call, logs, pose_jpg):
    pdf = _pdf() + MARKER.encode()
    body = json.dumps({"image": b64(pdf), "note": MARKER})
    status, reply, response = call(text_event(body))
    assert status == 415
    lines, everything = logs()
    assert [line["message"] for line in lines] == ["request rejected"]
    assert lines[0]["status"] == 415 and lines[0]["error_code"] == "unsupported_image"
    assert_clean(everything, MARKER, b64(pdf)[:40])
    assert_clean(response["body"], MARKER, b64(pdf)[:40])


@pytest.mark.parametrize("where", ["estimate", "decode"])
def test_an_internal_error_is_a_500_with_a_request_id_the_logs_can_be_searched_by(app, logs, monkeypatch,
                                                                                   pose_jpg, where):
    def explode(*_args, **_kw):
        raise RuntimeError(f"boom {MARKER} at /var/task/pose/model.py line 1")

    if where == "estimate":  # the pose run: on the detector's crops (look) or on the whole photo (estimate)
        monkeypatch.setattr(app.MODELS.pose, "estimate", explode)
        monkeypatch.setattr(app.MODELS.pose, "look", explode)
    else:
        from pose import image

        monkeypatch.setattr(image, "read_photo", explode)
    context = LambdaContext()
    image_b64 = b64(pose_jpg)
    response = app.lambda_handler(json_event("/pose", {"image": image_b64, "note": MARKER}), context)
    monkeypatch.undo()
    assert response["statusCode"] == 500
    body = json.loads(response_body(response))
    assert body == {"error": {"code": "internal_error", "message": "internal error",
                              "request_id": context.aws_request_id}}
    lines, everything = logs()
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1 and errors[0]["error_type"] == "RuntimeError"
    assert errors[0]["function_request_id"] == context.aws_request_id
    assert_clean(everything, MARKER, image_b64[:40], image_b64[-40:], "/var/task")
    assert_clean(response["body"], MARKER, image_b64[:40], "RuntimeError")


def test_a_good_request_logs_nothing_of_the_image_and_the_reply_has_no_image_unless_asked(call, logs, pose_jpg):
    status, reply, response = call(json_event("/pose", {"image": b64(pose_jpg), "return_image": False,
                                                        "note": MARKER}))
    assert status == 200 and "annotated_image" not in reply
    _, everything = logs()
    assert_clean(everything, MARKER, b64(pose_jpg)[:40])
    assert_clean(response["body"], MARKER, b64(pose_jpg)[:40])


# ---------------------------------------------------------------------------------------------------
# Metadata never decides: the pixels are decoded, whatever the profile or text chunks hold


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


INFLATING = zlib.compress(b"\0" * 2_000_000, 9)  # 2 MB once inflated: past Pillow's 1 MB for a text chunk
PNG_METADATA = {
    "an ICC profile": png_chunk(b"iCCP", b"profile\0\0" + INFLATING),
    "compressed text": png_chunk(b"zTXt", b"Comment\0\0" + INFLATING),
    "compressed XMP": png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\1\0\0\0" + INFLATING),
}


@pytest.mark.parametrize("after_pixels", [False, True], ids=["before the pixels", "after the pixels"])
@pytest.mark.parametrize("name", list(PNG_METADATA))
def test_a_png_whose_metadata_inflates_past_a_megabyte_is_read_for_its_pixels(call, photo, name, after_pixels):
    plain = encode(photo, "PNG")
    _, expected, _ = call(raw_event(plain, "image/png", {"return_image": "false"}))
    at = len(plain) - 12 if after_pixels else 33  # before IEND, or right after IHDR
    status, reply, _ = call(raw_event(plain[:at] + PNG_METADATA[name] + plain[at:], "image/png",
                                      {"return_image": "false"}))
    assert status == 200, reply
    assert joints_of(reply).tolist() == joints_of(expected).tolist()


XMP_ORIENTATION_6 = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax'
                     b'-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
                     b'</rdf:RDF></x:xmpmeta>')


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_an_orientation_only_in_xmp_is_not_applied_as_browsers_do_not(call, photo, fmt):
    """Browsers (and the web page) turn a photo by its EXIF orientation only; the joints must land on
    the photo as they show it."""
    plain = encode(photo, "PNG")
    _, expected, _ = call(raw_event(plain, "image/png", {"return_image": "false"}))
    tagged = encode(photo, fmt, xmp=XMP_ORIENTATION_6, **({"quality": 100} if fmt != "TIFF" else {}))
    status, reply, _ = call(json_event("/pose", {"image": b64(tagged), "return_image": False}))
    assert status == 200, reply
    assert (reply["image"]["width"], reply["image"]["height"]) == photo.size
    assert np.abs(joints_of(reply) - joints_of(expected)).max() < 0.05 * max(photo.size)


def test_base64_with_line_breaks_is_limited_by_what_it_decodes_to(call, pose_jpg, upright):
    """A 4.45 MB photo in MIME base64 (a line break every 76 characters) is over the limit by its
    characters but not by its bytes: it is read (a JPEG's bytes after its end marker are ignored)."""
    photo = pose_jpg + bytes(4_450_000 - len(pose_jpg))
    wrapped = base64.encodebytes(photo).decode("ascii")
    assert len(wrapped) > (4_500_000 + 2) // 3 * 4 > len("".join(wrapped.split()))
    status, reply, _ = call(json_event("/pose", {"image": wrapped, "return_image": False}))
    assert status == 200 and joints_of(reply).tolist() == joints_of(upright).tolist()
    over = base64.encodebytes(pose_jpg + bytes(4_500_003 - len(pose_jpg))).decode("ascii")
    status, reply, _ = call(json_event("/pose", {"image": over, "return_image": False}))
    assert status == 413 and reply["error"]["code"] == "too_large", reply


@pytest.mark.parametrize("where", ["data URL", "Content-Type"])
def test_an_error_quotes_request_text_cut_short(call, pose_jpg, where):
    """A 1 MB media type is refused (415) with a reply of a few hundred bytes, not one that grows with it."""
    media_type = "image/x-" + "a" * 1_000_000
    if where == "data URL":
        event = json_event("/pose", {"image": f"data:{media_type};base64,{b64(pose_jpg)}"})
    else:
        event = proxy_event("POST", "/pose", b64(pose_jpg), {"Content-Type": media_type})
    status, reply, raw = call(event)
    assert status == 415 and reply["error"]["code"] == "unsupported_image", reply
    assert "image/x-aaaa" in reply["error"]["message"] and len(raw["body"]) < 400
