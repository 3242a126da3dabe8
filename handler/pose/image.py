"""Bytes of a photo -> RGB array, and the letterbox transform to a model's input with its exact inverse.

Coordinates: a point (x, y) is in pixel units with pixel centres on integers, the convention of the
MPII and COCO labels: the top-left pixel covers [-0.5, 0.5] x [-0.5, 0.5].

Decoding bounds what a hostile file can cost before Pillow does the work: bytes, pixels and the
long side from the header; a JPEG's segments and scans (each progressive scan costs a pass over the
whole image); a time budget checked on every read of the decoder. Conversion to RGB goes a band of
rows at a time, so the decoded image and the result are the only full-size buffers.
"""

from __future__ import annotations

import io
import math
import os
import re
import time
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from .card import InputSpec
from .errors import TooLarge, UnsupportedImage
from .region import Region

MAX_BYTES = 4_500_000  # API Gateway and Lambda cap a request at 6 MB: about 4.4 MB of image after base64
MAX_PIXELS = 40_000_000  # larger is rejected before the pixels are decoded (decompression bombs)
MAX_SIDE = 20_000  # px; Pillow keeps a pointer per row: 1 x 40,000,000 would cost 2.6 GB
MAX_JPEG_SCANS = 32  # a progressive JPEG has about 10; each scan is one more pass over every block
MAX_JPEG_SEGMENTS = 1_000  # a camera JPEG has a few dozen; Pillow reads each one in Python
DECODE_BUDGET_S = 10.0  # the decoder stops at its next read after this; the function's timeout is 25 s
DECODE_BLOCK = 8192  # bytes per read of the decoder (Pillow's default 64 KB holds 900 scans of a scan bomb)
MIN_LEVELS = 16  # an image whose values we must map (16-bit, 32-bit, float) keeps at least this contrast
BAND_PIXELS = 1 << 20  # pixels converted to RGB at a time
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # what Pillow may try; the rest are 415
MEDIA_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"}

# libtiff decodes the JPEG inside a TIFF itself and counts its scans (it refuses the 100th by default):
# the same limit as ours.
os.environ.setdefault("LIBTIFF_JPEG_MAX_ALLOWED_SCAN_NUMBER", str(MAX_JPEG_SCANS + 1))

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks of text and colour profile: Pillow inflates them as it opens the file and refuses one that
# inflates past 1 MB, which would refuse the pixels for their metadata. Browsers take no orientation
# from them either (XMP, ImageMagick's "Raw profile type exif"), so they are dropped unread.
PNG_METADATA_CHUNKS = (b"iCCP", b"tEXt", b"zTXt", b"iTXt")

_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # not stuffing, a restart or a fill byte
_LEVELS_16 = np.rint(np.arange(65536) * (255 / 65535)).astype(np.uint8)


def read_photo(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               budget_s: float | None = None) -> np.ndarray:
    """The bytes of a photo -> an (H, W, 3) uint8 RGB array, upright (EXIF orientation applied).

    Grayscale, palette, RGBA (composited on white), CMYK, 16-bit, 32-bit and float images and
    animated images (first frame) all come out as 8-bit RGB. Raises TooLarge or UnsupportedImage;
    the latter's `cause` names what the decoder raised (never the bytes). The byte and pixel limits
    default to the API's; the batch jobs pass their own (pose/records.py). Decoding stops once it
    has taken `budget_s` seconds (default DECODE_BUDGET_S).
    """
    if len(data) > max_bytes:
        raise TooLarge(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data:
        raise UnsupportedImage("the image is empty (0 bytes)")
    if data[:2] == b"\xff\xd8":
        check_jpeg_structure(data)
    if data[:8] == PNG_SIGNATURE:
        data = without_png_metadata(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(_Budgeted(data, DECODE_BUDGET_S if budget_s is None else budget_s),
                            formats=FORMATS) as img:
                check_size(*img.size, max_pixels)
                img.decodermaxblock = DECODE_BLOCK
                img.load()
                orientation = exif_orientation(img)
                rgb = to_rgb(img)
    except (TooLarge, UnsupportedImage):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(f"image has too many pixels; the limit is {max_pixels}") from None
    except UnidentifiedImageError:
        raise UnsupportedImage("the data is not an image in a supported format (JPEG, PNG, WebP)") from None
    except MemoryError:
        raise
    except Exception as exc:  # truncated or corrupt files, and whatever else a decoder raises on them
        raise UnsupportedImage(f"the image could not be decoded: {type(exc).__name__}", cause=_cause(exc)) from None
    return upright(rgb, orientation)


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    if width * height > max_pixels:
        raise TooLarge(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
    if max(width, height) > MAX_SIDE:
        raise TooLarge(f"image is {width}x{height} pixels; the limit is {MAX_SIDE} pixels on the long side")


def check_jpeg_structure(data: bytes) -> None:
    """Refuse a JPEG with more scans or segments than real photos have, before any decoding.

    Walks the markers after SOI as libjpeg does: a segment's length skips it (an EXIF thumbnail's
    own scans are not counted); entropy-coded data and stray bytes run to the next marker.
    """
    scans = segments = 0
    i = 2
    while (found := _JPEG_MARKER.search(data, i)) is not None:
        i, marker = found.start(), data[found.start() + 1]
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01:  # TEM: no length
            i += 2
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise TooLarge(f"the JPEG has over {MAX_JPEG_SEGMENTS} segments; the limit is {MAX_JPEG_SEGMENTS}")
        if marker == 0xDA:  # SOS
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise TooLarge(f"the JPEG has over {MAX_JPEG_SCANS} scans; the limit is {MAX_JPEG_SCANS} "
                               "(a progressive JPEG has about 10)")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")


def without_png_metadata(data: bytes) -> bytes:
    """The PNG's bytes without its PNG_METADATA_CHUNKS (the same bytes when it has none). A chunk cut short
    ends the walk: the rest is left for the decoder to judge."""
    if not any(kind in data for kind in PNG_METADATA_CHUNKS):
        return data
    kept, copied_to, at = [], 0, len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        end = at + 12 + int.from_bytes(data[at:at + 4], "big")
        kind = data[at + 4:at + 8]
        if kind in PNG_METADATA_CHUNKS and end <= len(data):
            kept.append(data[copied_to:at])
            copied_to = end
        if kind == b"IEND":
            break
        at = end
    kept.append(data[copied_to:])
    return b"".join(kept)


class _Budgeted(io.BytesIO):
    """The image bytes as a file whose reads fail once the decode budget is spent. Pillow's decoders
    read in blocks (DECODE_BLOCK), so a file whose decoding takes ever longer per byte stops at its
    next block. (libtiff and libwebp take the whole file in one read: their time grows with pixels.)"""

    def __init__(self, data: bytes, budget_s: float):
        super().__init__(data)
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s

    def read(self, size: int | None = -1) -> bytes:
        if time.monotonic() >= self.deadline:
            raise TooLarge(f"the image takes over {self.budget_s:g} s to decode")
        return super().read(size)


def _cause(exc: BaseException) -> str:
    """What raised, for the logs: the exception type and the module it came from, never its message
    (a decoder's message can quote the file)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "?") if tb is not None else "?"
    return f"{type(exc).__name__} in {module}"


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation, 1 to 8; 1 when it is absent or unreadable: a photo is never refused for its
    metadata. XMP's tiff:Orientation is not read (Pillow's getexif falls back to it): browsers ignore it,
    so the joints would not land on the photo the user sees."""
    for key in ("xmp", "XML:com.adobe.xmp"):
        img.info.pop(key, None)
    try:
        value = img.getexif().get(ExifTags.Base.Orientation)
    except Exception:
        return 1
    return value if type(value) is int and 1 <= value <= 8 else 1


def upright(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """The array as a viewer shows it under EXIF `orientation` (the pixels are moved, never resampled)."""
    view = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
            5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
            8: lambda a: np.rot90(a, 1)}.get(orientation)
    return rgb if view is None else np.ascontiguousarray(view(rgb))


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB, a band of rows at a time.

    16-bit images map 0..65535 to 0..255. 32-bit integer and float images map the smallest of the
    usual ranges that holds all their values: [0, 1] (float), [0, 255], [0, 65535], then the full
    signed range (integer); a float image beyond [0, 65535], with NaN or infinities, or one whose
    mapping would leave it nearly black or white (under MIN_LEVELS levels) is refused (415).
    """
    levels = _levels(img)
    width, height = img.size
    rgb = np.empty((height, width, 3), np.uint8)
    rows = max(1, BAND_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        band = img.crop((0, top, width, min(height, top + rows)))
        rgb[top:top + band.height] = _band_rgb(band, levels)
    return rgb


def _levels(img: Image.Image) -> tuple[float, float] | None:
    """The (black, white) values of a 16-bit, 32-bit or float image; None for 8-bit modes."""
    if img.mode.startswith("I;16"):
        ranges = [(0, 65535)]
    elif img.mode == "I":
        ranges = [(0, 255), (0, 65535), (0, 2 ** 31 - 1), (-2 ** 31, 2 ** 31 - 1)]
    elif img.mode == "F":
        ranges = [(0, 1), (0, 255), (0, 65535)]
    else:
        return None
    lo, hi = img.getextrema()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UnsupportedImage(f"the {img.mode} image has NaN or infinite values")
    black, white = next(((a, b) for a, b in ranges if a <= lo and hi <= b), (None, None))
    if black is None:
        raise UnsupportedImage(f"the float image's values span {lo:g} to {hi:g}: outside [0, 65535], "
                               "so what is black and what is white is unknown")
    spread = (hi - lo) * 255 / (white - black)
    if hi > lo and spread < MIN_LEVELS:
        raise UnsupportedImage(f"the {img.mode} image's values span {lo:g} to {hi:g} of [{black:g}, {white:g}]: "
                               f"in 8 bits it would be a flat image ({spread:.1f} levels)")
    return black, white


def _band_rgb(band: Image.Image, levels: tuple[float, float] | None) -> np.ndarray:
    """One band of rows -> (h, W, 3) uint8 RGB (broadcastable: a gray band may come back (h, W, 1))."""
    if band.mode.startswith("I;16"):
        return _LEVELS_16[np.asarray(band)][:, :, None]
    if levels is not None:
        values = np.asarray(band, dtype=np.float64)
        if not np.isfinite(values).all():
            raise UnsupportedImage(f"the {band.mode} image has NaN or infinite values")
        black, white = levels
        return np.rint((values - black) * (255 / (white - black))).astype(np.uint8)[:, :, None]
    if band.mode == "P" and "transparency" in band.info:
        band = band.convert("RGBA")
    if band.mode in ("RGBA", "LA", "PA"):
        rgba = band.convert("RGBA")
        band = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(band.convert("RGB"))


@dataclass(frozen=True)
class Letterbox:
    """Aspect-preserving resize of a (width x height) photo into the model input, centred, padded.

    The photo is resized to (new_w, new_h) and pasted at (pad_x, pad_y). With pixel centres on
    integers a point maps as x_in = (x + 0.5) * sx - 0.5 + pad_x, where sx = new_w / width
    (likewise y), so the inverse is exact.
    """

    width: int
    height: int
    new_w: int
    new_h: int
    pad_x: int
    pad_y: int

    @classmethod
    def fit(cls, width: int, height: int, in_w: int, in_h: int) -> "Letterbox":
        s = min(in_w / width, in_h / height)
        new_w = max(1, min(in_w, round(width * s)))
        new_h = max(1, min(in_h, round(height * s)))
        return cls(width, height, new_w, new_h, (in_w - new_w) // 2, (in_h - new_h) // 2)

    @property
    def scale(self) -> tuple[float, float]:
        return self.new_w / self.width, self.new_h / self.height

    def forward(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) photo pixels -> model input pixels."""
        sx, sy = self.scale
        p = np.asarray(points, dtype=np.float64)
        return np.stack([(p[:, 0] + 0.5) * sx - 0.5 + self.pad_x, (p[:, 1] + 0.5) * sy - 0.5 + self.pad_y], axis=1)

    def inverse(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) model input pixels -> photo pixels."""
        sx, sy = self.scale
        p = np.asarray(points, dtype=np.float64)
        return np.stack([(p[:, 0] - self.pad_x + 0.5) / sx - 0.5, (p[:, 1] - self.pad_y + 0.5) / sy - 0.5], axis=1)

    def apply(self, photo: Image.Image | np.ndarray, in_w: int, in_h: int, left: int = 0, top: int = 0,
              pad: int = 0) -> np.ndarray:
        """The (in_h, in_w, 3) uint8 canvas: the box of width x height photo pixels from (left, top), resized,
        on a background of value `pad` (0: black). The box may reach past the photo: only the part inside it
        is read and resized, so the cost follows the photo's pixels, never the box's (a canvas pixel the
        photo covers only in part stays background)."""
        if not isinstance(photo, Image.Image):
            photo = Image.fromarray(photo)
        x0, x1 = _inside(left, self.width, self.new_w, photo.width)
        y0, y1 = _inside(top, self.height, self.new_h, photo.height)
        canvas = np.full((in_h, in_w, 3), pad, dtype=np.uint8)
        if x1 > x0 and y1 > y0:
            sx, sy = self.scale
            box = (max(0.0, left + x0 / sx), max(0.0, top + y0 / sy),
                   min(photo.width, left + x1 / sx), min(photo.height, top + y1 / sy))
            resized = photo.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=box)
            canvas[self.pad_y + y0:self.pad_y + y1, self.pad_x + x0:self.pad_x + x1] = np.asarray(resized)
        return canvas


def _inside(start: int, length: int, new_length: int, photo_length: int) -> tuple[int, int]:
    """[a, b): the pixels of a box of `length` photo pixels from `start`, resized to `new_length`, that lie
    wholly inside the photo's [0, photo_length) (integer arithmetic: a box inside the photo gives all)."""
    a = max(0, -((start * new_length) // length))
    return a, max(a, min(new_length, (photo_length - start) * new_length // length))


def prepare(photo: Image.Image | np.ndarray, spec: InputSpec,
            region: Region | None = None) -> tuple[np.ndarray, Letterbox]:
    """The region of the photo (None: all of it) -> the model's input tensor (batch of 1) as the card says,
    and the letterbox used (from the region's pixels to the input's)."""
    if region is None:
        height, width = (photo.height, photo.width) if isinstance(photo, Image.Image) else photo.shape[:2]
        region = Region(0, 0, width, height)
    box = Letterbox.fit(region.width, region.height, spec.width, spec.height)
    return to_tensor(box.apply(photo, spec.width, spec.height, region.left, region.top, spec.pad), spec), box


def to_tensor(canvas: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(H, W, 3) uint8 RGB canvas at the model's input size -> scaled tensor in the card's layout."""
    x = canvas[:, :, ::-1] if spec.color == "BGR" else canvas
    s = spec.scaling
    if s["kind"] == "raw":
        x = x.astype(spec.dtype)
    elif s["kind"] == "range":
        lo, hi = s["range"]
        x = (x.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)).astype(spec.dtype)
    else:  # mean_std on 0..1 values
        mean = np.asarray(s["mean"], dtype=np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(s["std"], dtype=np.float32) * 255.0)
        x = ((x.astype(np.float32) - mean) * inv_std).astype(spec.dtype)
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None])
