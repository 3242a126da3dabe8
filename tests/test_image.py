"""Decoding photos of every kind, the letterbox transform and its exact inverse, input scaling."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pose import image
from pose.card import InputSpec
from pose.errors import TooLarge, UnsupportedImage
from pose.region import Region


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def marker_image(w: int = 60, h: int = 40) -> Image.Image:
    """A photo with a red block at its top-left and a blue block at its bottom-right."""
    a = np.full((h, w, 3), 128, np.uint8)
    a[2:12, 2:14] = (255, 0, 0)
    a[h - 10:h - 2, w - 12:w - 2] = (0, 0, 255)
    return Image.fromarray(a)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_applies_every_exif_orientation(orientation):
    upright = np.asarray(marker_image())
    # store the picture so that a viewer applying `orientation` shows it upright
    inverse = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = marker_image() if inverse is None else marker_image().transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    rgb = image.read_photo(encode(stored, "PNG", exif=exif))
    assert rgb.shape == upright.shape
    assert np.array_equal(rgb, upright)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "1"])
def test_decode_turns_every_mode_into_8bit_rgb(mode):
    src = marker_image()
    gray = np.asarray(src.convert("L"))
    if mode == "I;16":
        img, expected = Image.fromarray(gray.astype(np.uint16) * 257), np.repeat(gray[:, :, None], 3, axis=2)
    elif mode == "P":
        img = src.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
        expected = np.asarray(src)
    else:
        img = src.convert(mode)
        expected = np.asarray(img.convert("RGB"))
    rgb = image.read_photo(encode(img, "PNG"))
    assert rgb.dtype == np.uint8 and rgb.shape == (40, 60, 3)
    assert np.array_equal(rgb, expected)


def test_decode_reads_cmyk_jpeg_as_rgb():
    src = marker_image()
    rgb = image.read_photo(encode(src.convert("CMYK"), "JPEG", quality=95)).astype(int)
    assert rgb.shape == (40, 60, 3)
    assert np.abs(rgb - np.asarray(src, int)).mean() < 8


def test_decode_composites_transparency_on_white():
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert (image.read_photo(encode(rgba, "PNG")) == 255).all()


def test_decode_reads_webp_and_progressive_jpeg_alike(pose_jpg):
    src = Image.open(io.BytesIO(pose_jpg))
    base = image.read_photo(pose_jpg).astype(np.int16)
    for data in (encode(src, "WEBP", quality=95), encode(src, "JPEG", quality=95, progressive=True)):
        other = image.read_photo(data).astype(np.int16)
        assert other.shape == base.shape
        assert np.abs(other - base).mean() < 6


@pytest.mark.parametrize("data", [b"", b"hello, this is text", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"])
def test_decode_rejects_non_images_with_415(data):
    with pytest.raises(UnsupportedImage):
        image.read_photo(data)


def test_decode_rejects_a_truncated_jpeg_with_415(pose_jpg):
    with pytest.raises(UnsupportedImage):
        image.read_photo(pose_jpg[: len(pose_jpg) // 2])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries a tiny, broken payload (a decompression bomb's header)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_decode_rejects_a_decompression_bomb_before_decoding_pixels():
    with pytest.raises(TooLarge, match="pixels"):
        image.read_photo(png_header_only(60000, 60000))


def test_decode_rejects_bytes_over_the_limit():
    with pytest.raises(TooLarge):
        image.read_photo(b"\xff" * (image.MAX_BYTES + 1))


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (256, 256), (1, 1), (3000, 17), (17, 3000)])
def test_letterbox_inverse_undoes_forward_exactly(size):
    box = image.Letterbox.fit(size[0], size[1], 256, 256)
    pts = np.random.default_rng(0).uniform(-0.5, max(size) - 0.5, size=(50, 2))
    assert np.allclose(box.inverse(box.forward(pts)), pts, atol=1e-9)


@pytest.mark.parametrize("size,inp", [((640, 480), (256, 256)), ((300, 900), (368, 368)), ((400, 400), (192, 256))])
def test_letterbox_forward_lands_on_the_drawn_spot(size, inp):
    """A bright spot drawn in the photo is found in the model input where forward() says."""
    w, h = size
    spot = np.array([[w * 0.3, h * 0.7]])
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - spot[0, 0]) ** 2 + (yy - spot[0, 1]) ** 2) / (2 * (max(w, h) / 30) ** 2))
    rgb = np.repeat((blob * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    box = image.Letterbox.fit(w, h, *inp)
    canvas = box.apply(rgb, *inp).astype(np.float64)[:, :, 0]
    cy, cx = np.mgrid[0:inp[1], 0:inp[0]]
    found = np.array([(canvas * cx).sum() / canvas.sum(), (canvas * cy).sum() / canvas.sum()])
    assert np.allclose(found, box.forward(spot)[0], atol=0.5)
    assert canvas.shape == (inp[1], inp[0])


def test_letterbox_centres_the_photo_and_pads_black():
    rgb = np.full((100, 200, 3), 200, np.uint8)
    box = image.Letterbox.fit(200, 100, 256, 256)
    canvas = box.apply(rgb, 256, 256)
    assert (box.new_w, box.new_h, box.pad_x, box.pad_y) == (256, 128, 0, 64)
    assert (canvas[:64] == 0).all() and (canvas[192:] == 0).all() and (canvas[64:192] == 200).all()


def spec(**kw) -> InputSpec:
    base = dict(name="x", height=4, width=4, layout="NHWC", dtype="float32", color="RGB", scaling={"kind": "raw"})
    base.update(kw)
    return InputSpec(**base)


def test_to_tensor_scales_as_the_card_says():
    canvas = np.zeros((4, 4, 3), np.uint8)
    canvas[..., 0], canvas[..., 1], canvas[..., 2] = 255, 0, 51
    raw = image.to_tensor(canvas, spec(dtype="int32"))
    assert raw.dtype == np.int32 and raw.shape == (1, 4, 4, 3) and tuple(raw[0, 0, 0]) == (255, 0, 51)
    rng = image.to_tensor(canvas, spec(scaling={"kind": "range", "range": [-1, 1]}))
    assert np.allclose(rng[0, 0, 0], [1.0, -1.0, 51 / 255 * 2 - 1], atol=1e-6)
    ms = image.to_tensor(canvas, spec(layout="NCHW", color="BGR",
                                      scaling={"kind": "mean_std", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]}))
    assert ms.shape == (1, 3, 4, 4)
    # BGR: channel 0 is blue (51), channel 2 is red (255)
    assert np.allclose(ms[0, :, 0, 0], [(0.2 - 0.5) / 0.25, (0 - 0.5) / 0.5, (1.0 - 0.5) / 1.0], atol=1e-6)


def test_a_region_past_the_photo_is_read_inside_and_padded_black():
    """A person's region may reach past the photo: the input shows the photo's part where it lies, black
    elsewhere, and nothing of the size of the region is made (the photo is 200 x 100, the region 400 x 400)."""
    rgb = np.full((100, 200, 3), 200, dtype=np.uint8)
    region = Region(left=-100, top=-150, width=400, height=400)
    tensor, box = image.prepare(rgb, spec(height=64, width=64), region)
    canvas = tensor[0, :, :, 0]
    assert (box.new_w, box.new_h) == (64, 64)
    # the photo is the region's [100, 300) x [150, 250): at 64 / 400 of its size, the canvas's [16, 48) x [24, 40)
    assert (canvas[24:40, 16:48] == 200).all()
    canvas[24:40, 16:48] = 0
    assert (canvas == 0).all()


def test_a_region_inside_the_photo_reads_as_its_crop_does():
    rng = np.random.default_rng(1)
    rgb = np.repeat(np.repeat(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), 8, axis=0), 8, axis=1)
    region = Region(left=64, top=48, width=128, height=96)
    from_region, box = image.prepare(rgb, spec(height=48, width=64), region)
    from_crop, crop_box = image.prepare(rgb[48:144, 64:192], spec(height=48, width=64))
    assert box == crop_box
    # Inside, the same pixels; on the outermost ones the region's filter also sees the photo past the crop
    assert np.abs(from_region - from_crop)[0, 1:-1, 1:-1].max() <= 1
