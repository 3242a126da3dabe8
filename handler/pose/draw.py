"""The annotated PNG: the photo with its visible joints as dots and its visible limbs as lines."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

MAX_SIDE = 1280  # the drawing is scaled down to this long side, so the response stays under 6 MB
COLORS = {"left": (0, 200, 255), "right": (255, 80, 40), "center": (255, 220, 0)}


def annotate(rgb: np.ndarray, points: np.ndarray, visible: np.ndarray, sides: tuple[str, ...],
             skeleton: tuple[tuple[int, int], ...]) -> Image.Image:
    """Draw joints whose `visible` is true and limbs whose both ends are; left/right in their colours."""
    img = Image.fromarray(rgb)
    k = min(1.0, MAX_SIDE / max(img.size))
    if k < 1.0:
        img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.BILINEAR)
    pts = (np.asarray(points, dtype=np.float64) + 0.5) * k - 0.5
    size = max(img.size)
    width = max(2, round(size / 200))
    radius = max(3, round(size / 120))
    pen = ImageDraw.Draw(img)
    for a, b in skeleton:
        if visible[a] and visible[b]:
            side = sides[a] if sides[a] == sides[b] else "center"
            pen.line([tuple(pts[a]), tuple(pts[b])], fill=COLORS[side], width=width)
    for j in np.flatnonzero(visible):
        x, y = pts[j]
        pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=COLORS[sides[j]],
                    outline=(255, 255, 255), width=max(1, width // 2))
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
