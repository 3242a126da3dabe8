"""Crafted image files that cost time or memory out of proportion, break a decoder, or decode to the wrong pixels.

Each class is tried in several shapes: JPEG scan and segment bombs and the decode budget; images
too long on one side; EXIF the decoder cannot rewrite; TIFF tags of unexpected types; 16-bit,
32-bit and float pixels. The worst inputs the service accepts are timed and measured by
`make limits` (build/limits.py); the memory of the worst ones is checked here in a fresh process.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from build import limits
from conftest import DATA
from local.apigw import json_event
from pose import image
from pose.errors import PoseError, TooLarge, UnsupportedImage
from test_hostile_input import logs, no_pixel_decoding  # noqa: F401  (fixtures)

pytestmark = pytest.mark.model


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def send(call, data: bytes) -> tuple[int, dict]:
    status, body, _ = call(json_event("/pose", {"image": b64(data), "return_image": False}))
    return status, body


def joints(reply: dict) -> list:
    return [(j["x"], j["y"], j["score"]) for j in reply["joints"]]


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    """tests/data/pose.jpg in 8-bit gray."""
    return np.asarray(Image.open(DATA / "pose.jpg").convert("L"))


@pytest.fixture(scope="module")
def gray_reply(app, gray) -> dict:
    from local.apigw import LambdaContext, response_body

    response = app.lambda_handler(json_event("/pose", {"image": b64(limits.encode(Image.fromarray(gray), "PNG")),
                                                       "return_image": False}), LambdaContext())
    assert response["statusCode"] == 200
    return json.loads(response_body(response))


# ---------------------------------------------------------------------------------------------------
# Decode time: scans and segments are counted before decoding; the decoder stops when its budget is spent


def with_stray_bytes(data: bytes) -> bytes:
    """Garbage before every marker after the first scan: libjpeg skips it with a warning and reads on."""
    first = data.find(b"\xff\xda")
    return data[:first] + data[first:].replace(b"\xff\xc4", b"\x00\x01\xff\xc4").replace(b"\xff\xda", b"\x07\xff\xda")


SCAN_BOMBS = {
    "the issue's bomb: the second scan 62,000 times": lambda: limits.scan_bomb(),
    "the second scan once more than the limit allows": lambda: limits.scan_bomb(640, 480, image.MAX_JPEG_SCANS - 9),
    "an AC refinement scan repeated": lambda: limits.progressive_jpeg(limits.flat(640, 480), image.MAX_JPEG_SCANS + 1),
    "scans with stray bytes between them": lambda: with_stray_bytes(limits.scan_bomb(640, 480, 500)),
    "a photo's progressive JPEG, its last scan repeated": lambda: limits.progressive_jpeg(
        Image.open(DATA / "pose.jpg"), image.MAX_JPEG_SCANS + 1),
}


@pytest.mark.parametrize("name", list(SCAN_BOMBS))
def test_a_jpeg_with_more_scans_than_a_photo_has_is_413_before_decoding(call, no_pixel_decoding, name):
    data = SCAN_BOMBS[name]()
    made = len(no_pixel_decoding)  # making it may decode the photo
    assert len(data) <= image.MAX_BYTES
    status, body = send(call, data)
    assert status == 413 and body["error"]["code"] == "too_large", body
    assert f"over {image.MAX_JPEG_SCANS} scans" in body["error"]["message"]
    assert no_pixel_decoding[made:] == []


@pytest.mark.parametrize("marker", [b"\xff\xfe", b"\xff\xef", b"\xff\xe1"])  # COM, APP15, APP1
def test_a_jpeg_of_a_thousand_tiny_segments_is_413_before_decoding(call, no_pixel_decoding, pose_jpg, marker):
    data = pose_jpg[:2] + (marker + b"\x00\x02") * (image.MAX_JPEG_SEGMENTS + 1) + pose_jpg[2:]
    status, body = send(call, data)
    assert status == 413 and "segments" in body["error"]["message"], body
    assert no_pixel_decoding == []


def test_jpegs_at_the_scan_limit_with_scans_in_metadata_or_stray_bytes_are_answered(call, pose_jpg):
    """The limit counts the image's own scans: an EXIF thumbnail's (inside an APP segment) are skipped,
    and stray bytes between segments (which libjpeg skips) do not stop the count."""
    photo = Image.open(DATA / "pose.jpg")
    at_limit = limits.progressive_jpeg(photo, image.MAX_JPEG_SCANS)
    thumbnail = limits.progressive_jpeg(limits.flat(64, 48), image.MAX_JPEG_SCANS + 5)
    assert len(thumbnail) < 65000
    in_metadata = pose_jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(thumbnail) + 2) + thumbnail + pose_jpg[2:]
    stray = with_stray_bytes(limits.encode(photo, "JPEG", progressive=True))
    for data in (at_limit, in_metadata, stray):
        status, reply = send(call, data)
        assert status == 200, reply
        assert reply["image"] == {"width": photo.width, "height": photo.height}


def tiff_holding_jpeg(jpeg: bytes, width: int, height: int) -> bytes:
    """A YCbCr TIFF whose one strip is a whole JPEG stream (compression 7): libtiff decodes it."""
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, None), (259, 3, 1, 7), (262, 3, 1, 6),
            (273, 4, 1, None), (277, 3, 1, 3), (278, 4, 1, height), (279, 4, 1, len(jpeg)), (284, 3, 1, 1),
            (530, 3, 2, None)]
    at = 8 + 2 + 12 * len(tags) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    for tag, kind, count, value in tags:
        if tag in (258, 273):  # BitsPerSample (8, 8, 8) after the IFD, then the strip
            out += struct.pack("<HHII", tag, kind, count, at if tag == 258 else at + 6)
        elif tag == 530:  # YCbCrSubSampling 1, 1
            out += struct.pack("<HHIHH", tag, kind, count, 1, 1)
        elif kind == 3:  # one SHORT
            out += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, kind, count, value)
    return out + b"\0\0\0\0" + struct.pack("<3H", 8, 8, 8) + jpeg


@pytest.mark.parametrize("scans", [image.MAX_JPEG_SCANS + 1, 5000])
def test_a_tiff_holding_a_jpeg_with_too_many_scans_is_refused(call, scans):
    """libtiff decodes a JPEG inside a TIFF itself, past our count: its own scan limit is set to ours."""
    status, body = send(call, tiff_holding_jpeg(limits.progressive_jpeg(limits.flat(300, 200), scans), 300, 200))
    assert status == 415 and body["error"]["code"] == "unsupported_image", body


def test_a_tiff_holding_a_jpeg_at_the_scan_limit_is_decoded():
    jpeg = limits.progressive_jpeg(limits.flat(300, 200), image.MAX_JPEG_SCANS)
    rgb = image.read_photo(tiff_holding_jpeg(jpeg, 300, 200))
    assert rgb.shape == (200, 300, 3) and np.abs(rgb.astype(int) - (120, 130, 140)).max() <= 2


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_a_spent_decode_budget_is_413_for_every_format(call, monkeypatch, fmt):
    """The budget is checked on every read of every format (a budget of 0 s is spent at the first)."""
    data = limits.encode(Image.open(DATA / "pose.jpg").convert("RGB"), fmt)
    monkeypatch.setattr(image, "DECODE_BUDGET_S", 0.0)
    status, body = send(call, data)
    assert status == 413 and "to decode" in body["error"]["message"], body


def test_the_decode_budget_stops_a_scan_bomb_part_way(monkeypatch):
    """With the scan limit lifted, a bomb that takes a minute to decode is stopped by a 1 s budget
    long before its last byte is read."""
    data = limits.scan_bomb(2000, 2000, 60000)
    read = []
    original = image._Budgeted.read

    def counting(self, size=-1):
        chunk = original(self, size)
        read.append(len(chunk))
        return chunk

    monkeypatch.setattr(image, "MAX_JPEG_SCANS", 10 ** 6)
    monkeypatch.setattr(image, "MAX_JPEG_SEGMENTS", 10 ** 6)
    monkeypatch.setattr(image._Budgeted, "read", counting)
    with pytest.raises(TooLarge, match="to decode"):
        image.read_photo(data, budget_s=1.0)
    assert sum(read) < len(data) / 4, (sum(read), len(data))


# ---------------------------------------------------------------------------------------------------
# Memory: the long side is capped before decoding; the worst legal images peak at a bounded figure


def rgba_png(width: int, height: int) -> bytes:
    return limits.png(width, height, 8, 6)


def palette_png_with_transparency(width: int, height: int) -> bytes:
    data = limits.png(width, height, 8, 3)
    ihdr_end = 8 + 25
    plte = limits.png_chunk(b"PLTE", bytes(range(6))) + limits.png_chunk(b"tRNS", b"\x00")
    return data[:ihdr_end] + plte + data[ihdr_end:]


def rgba_tiff(width: int, height: int) -> bytes:
    from test_hostile_input import _patch_dims

    return _patch_dims(limits.encode(Image.new("RGBA", (16, 16)), "TIFF"), width, height, "TIFF")


TOO_LONG = {
    "RGBA PNG, 1 x 40,000,000 (the issue's)": lambda: rgba_png(1, 40_000_000),
    "palette PNG with transparency, 1 x 40,000,000": lambda: palette_png_with_transparency(1, 40_000_000),
    "RGBA TIFF, 1 x 40,000,000": lambda: rgba_tiff(1, 40_000_000),
    "gray PNG, one pixel over the long side, wide": lambda: limits.png(image.MAX_SIDE + 1, 1, 8, 0),
    "RGBA PNG, 1000 x one over the long side": lambda: rgba_png(1000, image.MAX_SIDE + 1),
}


@pytest.mark.parametrize("name", list(TOO_LONG))
def test_an_image_over_the_long_side_limit_is_413_before_decoding(call, no_pixel_decoding, name):
    status, body = send(call, TOO_LONG[name]())
    assert status == 413 and body["error"]["code"] == "too_large", body
    assert f"{image.MAX_SIDE} pixels on the long side" in body["error"]["message"]
    assert no_pixel_decoding == []


@pytest.mark.parametrize("size", [(1, image.MAX_SIDE), (image.MAX_SIDE, 2)])
def test_an_image_at_the_long_side_limit_is_answered(call, size):
    status, reply = send(call, rgba_png(*size))
    assert status == 200 and reply["image"] == {"width": size[0], "height": size[1]}, reply


DECODE_PEAK = """
import sys
from pathlib import Path
from build.limits import peak_mb
from pose import image
data = Path(sys.argv[1]).read_bytes()
before = peak_mb()
rgb = image.read_photo(data)
print(rgb.shape, peak_mb() - before)
"""


@pytest.mark.parametrize("case", ["16-bit gray PNG, 40 MP", "int32 TIFF, full range, 40 MP", "RGBA PNG, 40 MP",
                                  "palette PNG with transparency, 40 MP"])
def test_the_worst_legal_images_decode_in_bounded_memory(tmp_path, case):
    """In a fresh process: decoding a 40 MP image raises the peak by little more than the decoded
    image (up to 4 bytes a pixel in Pillow) and the RGB result (3): at most 9 bytes a pixel (343 MB).
    Before the band-wise conversion a 16-bit PNG took 1,161 MB and an int32 TIFF 1,233 MB in the
    whole function."""
    path = tmp_path / "input"
    path.write_bytes(limits.cases()[case]())
    out = subprocess.run([sys.executable, "-c", DECODE_PEAK, str(path)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    shape, growth = out.stdout.rsplit(")", 1)
    pixels = 7745 * 5164
    print(f"{case}: decode raised the peak by {float(growth):.0f} MB")
    assert shape.startswith("(5164, 7745, 3")
    assert float(growth) * 2 ** 20 < pixels * 9


# ---------------------------------------------------------------------------------------------------
# EXIF: the orientation is read, never rewritten; metadata never fails a photo


def exif_blob(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """TIFF-structured EXIF, little-endian: (tag, type, count, value bytes) per entry."""
    at = 8 + 2 + 12 * len(entries) + 4
    ifd, extra = struct.pack("<H", len(entries)), b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            ifd += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, kind, count, at + len(extra))
            extra += value
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + extra


ORIENTATION_6 = (0x0112, 3, 1, struct.pack("<H", 6))
BAD_EXIF = {
    "XResolution as ASCII": [ORIENTATION_6, (0x011A, 2, 4, b"72\0\0")],
    "ResolutionUnit as a RATIONAL": [ORIENTATION_6, (0x0128, 5, 1, struct.pack("<II", 2, 0))],
    "Software as a SHORT array": [ORIENTATION_6, (0x0131, 3, 4, struct.pack("<4H", 1, 2, 3, 4))],
}


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG"])
@pytest.mark.parametrize("name", list(BAD_EXIF))
def test_orientation_6_with_a_badly_typed_exif_tag_is_turned_upright(call, fmt, name):
    """Pillow's exif_transpose raised TypeError rewriting such EXIF (a 500); the pixels are turned as a
    viewer would, exactly as the same pixels turned here and sent without EXIF."""
    stored = Image.open(DATA / "pose.jpg").convert("RGB").transpose(Image.Transpose.ROTATE_90)
    lossless = {"lossless": True} if fmt == "WEBP" else {}
    data = limits.encode(stored, fmt, exif=b"Exif\x00\x00" + exif_blob(BAD_EXIF[name]), **lossless)
    status, reply = send(call, data)
    assert status == 200, reply
    pixels = Image.open(io.BytesIO(data)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    _, expected = send(call, limits.encode(pixels, "PNG"))
    assert reply["image"] == expected["image"] and joints(reply) == joints(expected)


UNREADABLE_EXIF = {
    "garbage after the EXIF header": b"Exif\x00\x00" + bytes(range(7, 250)),
    "an IFD pointing past the end": b"Exif\x00\x00II*\x00" + struct.pack("<I", 10 ** 6),
    "orientation 9": b"Exif\x00\x00" + exif_blob([(0x0112, 3, 1, struct.pack("<H", 9))]),
    "orientation as text": b"Exif\x00\x00" + exif_blob([(0x0112, 2, 2, b"6\0")]),
    "an IFD that loops on itself": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00" + struct.pack(
        "<HHII", 0x8769, 4, 1, 8) + b"\x08\x00\x00\x00",
}


@pytest.mark.parametrize("name", list(UNREADABLE_EXIF))
def test_unreadable_exif_leaves_the_photo_as_stored(call, pose_jpg, name):
    photo = Image.open(io.BytesIO(pose_jpg)).convert("RGB")
    data = limits.encode(photo, "JPEG", quality=95, exif=UNREADABLE_EXIF[name])
    status, reply = send(call, data)
    assert status == 200, reply
    _, stored = send(call, limits.encode(Image.open(io.BytesIO(data)).convert("RGB"), "PNG"))
    assert joints(reply) == joints(stored)


def test_tiff_orientation_with_a_badly_typed_tag_is_turned_upright(gray):
    stored = np.ascontiguousarray(np.rot90(gray, 1))  # as a camera would store orientation 6
    data = tiff_file(stored, {274: (3, 1, struct.pack("<H", 6)), 282: (2, 4, b"72\0\0")})
    assert np.array_equal(image.read_photo(data)[:, :, 0], gray)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_moves_pixels_as_pillow_transposes_them(orientation):
    rgb = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(orientation)
    expected = rgb if method is None else np.asarray(Image.fromarray(rgb).transpose(method))
    assert np.array_equal(image.upright(rgb, orientation), expected)


# ---------------------------------------------------------------------------------------------------
# Decoder exceptions: whatever a decoder raises on a file is the file's fault (415), its cause logged


def tiff_file(pixels: np.ndarray, entries: dict | None = None) -> bytes:
    """An uncompressed 8-bit gray TIFF in one strip, written by hand; `entries` {tag: (type, count,
    value bytes)} replace or add tags (StripOffsets' value None: the strip's real offset)."""
    h, w = pixels.shape
    tags = {256: (4, 1, struct.pack("<I", w)), 257: (4, 1, struct.pack("<I", h)), 258: (3, 1, struct.pack("<H", 8)),
            259: (3, 1, struct.pack("<H", 1)), 262: (3, 1, struct.pack("<H", 1)), 273: (4, 1, None),
            277: (3, 1, struct.pack("<H", 1)), 278: (4, 1, struct.pack("<I", h)),
            279: (4, 1, struct.pack("<I", w * h)), **(entries or {})}
    at = 8 + 2 + 12 * len(tags) + 4
    values = b"".join(v for _, _, v in tags.values() if v is not None and len(v) > 4)
    strip = at + len(values)
    ifd, extra = struct.pack("<H", len(tags)), b""
    for tag in sorted(tags):
        kind, count, value = tags[tag]
        value = struct.pack("<I", strip) if value is None else value
        if len(value) <= 4:
            ifd += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, kind, count, at + len(extra))
            extra += value
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + extra + pixels.tobytes()


BROKEN_TIFFS = {  # name: (tag entries, the exception Pillow raised)
    "StripOffsets of type FLOAT": ({273: (11, 1, struct.pack("<f", 200.0))}, "TypeError"),
    "StripOffsets of 2^63 (LONG8)": ({273: (16, 1, struct.pack("<Q", 2 ** 63 + 5))}, "OverflowError"),
    "StripOffsets as ASCII": ({273: (2, 4, b"200\0")}, "TypeError"),
    "RowsPerStrip of type RATIONAL 16/0": ({278: (5, 1, struct.pack("<II", 16, 0))}, "ValueError"),
    "ImageWidth of type BYTE": ({256: (1, 1, b"\x40")}, "ValueError"),
    "JPEG compression over raw pixels": ({259: (3, 1, struct.pack("<H", 7))}, "OSError"),
}


@pytest.mark.parametrize("name", list(BROKEN_TIFFS))
def test_a_tiff_with_a_badly_typed_tag_is_415_with_its_cause_logged(call, logs, gray, name):
    entries, raised = BROKEN_TIFFS[name]
    data = tiff_file(gray[:64, :64].copy(), entries)
    status, body = send(call, data)
    assert status == 415 and body["error"]["code"] == "unsupported_image", body
    assert body["error"]["message"] == f"the image could not be decoded: {raised}"
    lines, everything = logs()
    rejected = [line for line in lines if line["message"] == "request rejected"]
    assert len(rejected) == 1 and rejected[0]["cause"].startswith(f"{raised} in PIL."), rejected
    assert b64(data)[40:80] not in everything and "Traceback" not in everything


def test_every_tiff_tag_with_every_type_is_answered_without_a_crash(gray):
    """A structured fuzz: each tag the decoder reads, stored as each TIFF type with values that
    are small, huge, negative or NaN as that type reads them: a pose or a client error, never another exception."""
    pixels = gray[:16, :24].copy()
    outcomes: dict[str, int] = {}
    values = [struct.pack("<I", 7), struct.pack("<I", 0xFFFFFFFF), struct.pack("<Q", 2 ** 63 + 3), b"\x00\x00\xc0\x7f"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tag in (256, 257, 258, 259, 262, 273, 274, 277, 278, 279, 282, 284, 317, 320, 338, 339, 340, 341):
            for kind in range(0, 19):
                for value in values:
                    try:
                        image.read_photo(tiff_file(pixels, {tag: (kind, 1, value)}))
                        outcome = "decoded"
                    except PoseError as exc:
                        outcome = f"{exc.status}"
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(outcomes)
    assert set(outcomes) <= {"decoded", "413", "415"} and "415" in outcomes and "decoded" in outcomes


# ---------------------------------------------------------------------------------------------------
# 16-bit, 32-bit and float pixels: mapped to 8 bits by their range, or refused saying why


def tiff_of(array: np.ndarray) -> bytes:
    return limits.encode(Image.fromarray(array), "TIFF")


SAME_PIXELS = {  # name: the 8-bit gray photo stored another way, decoded to exactly its pixels
    "float32 in [0, 1]": lambda g: tiff_of(g.astype(np.float32) / 255),
    "float32 in [0, 255]": lambda g: tiff_of(g.astype(np.float32)),
    "float32 in [0, 65535]": lambda g: tiff_of(g.astype(np.float32) * 257),
    "int32, full range": lambda g: tiff_of((g.astype(np.int64) * (2 ** 31 - 1) // 255).astype(np.int32)),
    "int32, full signed range": lambda g: tiff_of(
        (g.astype(np.int64) * (2 ** 32 - 1) // 255 - 2 ** 31).astype(np.int32)),
    "int32 holding 16-bit values": lambda g: tiff_of(g.astype(np.int32) * 257),
    "int32 holding 8-bit values": lambda g: tiff_of(g.astype(np.int32)),
    "16-bit PNG": lambda g: limits.png16(g),
}


@pytest.mark.parametrize("name", list(SAME_PIXELS))
def test_deep_and_float_images_decode_to_the_8bit_photos_pixels_and_pose(call, gray, gray_reply, name):
    data = SAME_PIXELS[name](gray)
    rgb = image.read_photo(data)
    assert np.array_equal(rgb, np.repeat(gray[:, :, None], 3, axis=2))
    status, reply = send(call, data)
    assert status == 200 and joints(reply) == joints(gray_reply)


REFUSED_VALUES = {  # name: (the photo stored so, words of the 415's message)
    "float32 with a NaN first": (lambda g: tiff_of(np.where(np.arange(g.size).reshape(g.shape) == 0, np.nan,
                                                            g / 255).astype(np.float32)), "NaN"),
    "float32 with a NaN in the middle": (lambda g: tiff_of(np.where(np.arange(g.size).reshape(g.shape) == g.size // 2,
                                                                    np.nan, g / 255).astype(np.float32)), "NaN"),
    "float32 with an infinity": (lambda g: tiff_of(np.where(g == g.max(), np.inf, g / 255).astype(np.float32)),
                                 "infinite"),
    "float32 in [-0.5, 0.5]": (lambda g: tiff_of((g / 255 - 0.5).astype(np.float32)), "outside [0, 65535]"),
    "float32 up to 1e6": (lambda g: tiff_of(g.astype(np.float32) * 4000), "outside [0, 65535]"),
    "float32 in [0, 0.02]: black in 8 bits": (lambda g: tiff_of((g / 255 * 0.02).astype(np.float32)), "flat"),
    "int32 of 0 and 1: a mask, black in 8 bits": (lambda g: tiff_of((g > 128).astype(np.int32)), "flat"),
    "16-bit PNG holding 8-bit values: black": (lambda g: limits.png(g.shape[1], g.shape[0], 16, 0,
                                                                    g.astype(np.uint16)), "flat"),
}


@pytest.mark.parametrize("name", list(REFUSED_VALUES))
def test_pixels_without_a_known_black_and_white_are_415_saying_why(call, gray, name):
    make, words = REFUSED_VALUES[name]
    status, body = send(call, make(gray))
    assert status == 415 and body["error"]["code"] == "unsupported_image", body
    assert words in body["error"]["message"], body["error"]["message"]


def test_a_uniform_float_image_is_uniform_gray_not_refused():
    rgb = image.read_photo(tiff_of(np.full((20, 30), 0.5, np.float32)))
    assert rgb.shape == (20, 30, 3) and (rgb == 128).all()


def test_memory_follows_the_pixels_not_what_the_photo_shows(tmp_path):
    """One person filling a tall photo, against the same person filling a wide one of as many pixels,
    each through the function in a fresh process (build/limits.py): the crop around a tall person is
    wider than the photo, and only what lies inside the photo is read, so both cost the same. Before,
    the crop was allocated whole: at 40 MP the tall photo peaked at 1,118 MB against the wide one's 767."""
    growth = {}
    for width, height in ((5000, 2000), (2000, 5000)):
        data = limits.encode(limits.person_filling(width, height), "JPEG", quality=80)
        measured = limits.measure(f"{width} x {height}", data, tmp_path)
        assert measured["status"] == 200, measured
        growth[width > height] = measured["peak_mb"] - measured["cold_start_peak_mb"]
    print(f"peak over the cold start: wide {growth[True]:.0f} MB, tall {growth[False]:.0f} MB")
    assert growth[False] < 1.15 * growth[True], growth
