"""Bytes of a photo -> RGB array, and the letterbox transform to a model's input with its exact inverse.

Coordinates: a point (x, y) is in pixel units with pixel centres on integers, the convention of the
MPII and COCO labels: the top-left pixel covers [-0.5, 0.5] x [-0.5, 0.5].
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .card import InputSpec
from .errors import TooLarge, UnsupportedImage

MAX_BYTES = 4_500_000  # API Gateway and Lambda cap a request at 6 MB: about 4.4 MB of image after base64
MAX_PIXELS = 40_000_000  # larger is rejected before the pixels are decoded (decompression bombs)
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # what Pillow may try; the rest are 415
MEDIA_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"}


def decode(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to an (H, W, 3) uint8 RGB array, upright (EXIF orientation applied).

    Grayscale, palette, RGBA (composited on white), CMYK, 16-bit and animated images (first frame)
    all come out as 8-bit RGB. Raises TooLarge or UnsupportedImage. The limits default to the
    API's; the batch jobs pass their own (pose/records.py).
    """
    if len(data) > max_bytes:
        raise TooLarge(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data:
        raise UnsupportedImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = img.size
            if w * h > max_pixels:
                raise TooLarge(f"image is {w}x{h} pixels; the limit is {max_pixels} pixels")
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(f"image has too many pixels; the limit is {max_pixels}") from None
    except UnidentifiedImageError:
        raise UnsupportedImage("the data is not an image in a supported format (JPEG, PNG, WebP)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt files
        raise UnsupportedImage(f"the image could not be decoded: {type(exc).__name__}") from None


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        gray = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


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

    def apply(self, rgb: np.ndarray, in_w: int, in_h: int) -> np.ndarray:
        """The (in_h, in_w, 3) uint8 canvas: the resized photo on black."""
        resized = Image.fromarray(rgb).resize((self.new_w, self.new_h), Image.Resampling.BILINEAR)
        canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        canvas[self.pad_y:self.pad_y + self.new_h, self.pad_x:self.pad_x + self.new_w] = np.asarray(resized)
        return canvas


def prepare(rgb: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Letterbox]:
    """RGB photo -> the model's input tensor (batch of 1) as the card says, and the letterbox used."""
    box = Letterbox.fit(rgb.shape[1], rgb.shape[0], spec.width, spec.height)
    return to_tensor(box.apply(rgb, spec.width, spec.height), spec), box


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
