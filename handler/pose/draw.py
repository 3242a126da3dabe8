"""The annotated image: the photo with every person's visible joints as dots, visible limbs as
lines, and a thin box with the person's number (1 = the best-scored) around each."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_SIDE = 1280  # the drawing is scaled down to this long side, so the response stays under 6 MB
COLORS = {"left": (0, 200, 255), "right": (255, 80, 40), "center": (255, 220, 0)}
BOX_COLOR = (255, 255, 255)
LABEL_BACKGROUND = (20, 20, 20)


def annotate(rgb: np.ndarray, people: list[tuple[np.ndarray, np.ndarray, tuple[float, ...] | None]],
             sides: tuple[str, ...], skeleton: tuple[tuple[int, int], ...]) -> Image.Image:
    """Draw each person given as (points (K, 2), visible (K,), box or None) in photo pixels:
    joints whose `visible` is true, limbs whose both ends are (left/right in their colours), and
    the box (left, top, right, bottom) with the person's number when a box is given."""
    img = Image.fromarray(rgb)
    k = min(1.0, MAX_SIDE / max(img.size))
    if k < 1.0:
        img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.BILINEAR)
    size = max(img.size)
    width = max(2, round(size / 200))
    radius = max(3, round(size / 120))
    font = ImageFont.load_default(size=max(10, round(size / 60)))
    pen = ImageDraw.Draw(img)
    for number, (points, visible, box) in enumerate(people, start=1):
        if box is not None:
            x0, y0, x1, y1 = ((np.asarray(box, dtype=np.float64) + 0.5) * k - 0.5).tolist()
            pen.rectangle([x0, y0, x1, y1], outline=BOX_COLOR, width=max(1, width // 2))
            text = str(number)
            left, top, right, bottom = pen.textbbox((x0, y0), text, font=font)
            pad = max(2, width // 2)
            pen.rectangle([left - pad, top - pad, right + pad, bottom + pad], fill=LABEL_BACKGROUND)
            pen.text((x0, y0), text, fill=BOX_COLOR, font=font)
        pts = (np.asarray(points, dtype=np.float64) + 0.5) * k - 0.5
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


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
