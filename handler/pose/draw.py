"""The annotated image: the photo with every person's visible joints as dots, visible limbs as
lines, and a thin box with the person's number (1 = people[0], the main person) around each; and its encoding.

The PNG is a palette PNG: the photo is reduced to 251 colours (Pillow's fast octree) and the drawing
is then made in its own exact colours. Against a truecolour PNG (compress level 1) it took 0.27x the
time and 0.23x the bytes on tests/data/pose.jpg, where a truecolour PNG took longer than the model;
smooth gradients (sky, skin) show bands. JPEG and WebP keep the photo's colours, smaller still.
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_SIDE = 1280  # the drawing is scaled down to this long side, so the response stays under 6 MB
COLORS = {"left": (0, 200, 255), "right": (255, 80, 40), "center": (255, 220, 0)}
BOX_COLOR = (255, 255, 255)
LABEL_BACKGROUND = (20, 20, 20)
INKS = {*COLORS.values(), BOX_COLOR, LABEL_BACKGROUND}
PHOTO_COLORS = 256 - len(INKS)  # a palette PNG holds 256 colours: the photo's, then the drawing's
FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
JPEG_QUALITY = 85


def annotate(rgb: np.ndarray, people: list[tuple[np.ndarray, np.ndarray, tuple[float, ...] | None]],
             sides: tuple[str, ...], skeleton: tuple[tuple[int, int], ...], palette: bool = False,
             track_ids: list[int] | None = None) -> Image.Image:
    """Draw each person given as (points (K, 2), visible (K,), box or None) in photo pixels:
    joints whose `visible` is true, limbs whose both ends are (left/right in their colours), and
    the box (left, top, right, bottom) with the person's number when a box is given. With
    `palette`, on the photo reduced to PHOTO_COLORS colours (a "P" image, for a palette PNG). With
    `track_ids` (one per person; not with `palette`), each box is labelled with its id in the track's own
    colour (track_color), so that a person keeps one colour through a clip."""
    img = Image.fromarray(rgb)
    k = min(1.0, MAX_SIDE / max(img.size))
    if k < 1.0:
        img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.BILINEAR)
    if palette:
        img = img.quantize(PHOTO_COLORS, method=Image.Quantize.FASTOCTREE)
    size = max(img.size)
    width = max(2, round(size / 200))
    radius = max(3, round(size / 120))
    font = ImageFont.load_default(size=max(10, round(size / 60)))
    pen = ImageDraw.Draw(img)
    for number, (points, visible, box) in enumerate(people, start=1):
        if box is not None:
            ink = BOX_COLOR if track_ids is None else track_color(track_ids[number - 1])
            x0, y0, x1, y1 = ((np.asarray(box, dtype=np.float64) + 0.5) * k - 0.5).tolist()
            pen.rectangle([x0, y0, x1, y1], outline=ink, width=max(1, width // 2))
            text = str(number if track_ids is None else track_ids[number - 1])
            left, top, right, bottom = pen.textbbox((x0, y0), text, font=font)
            pad = max(2, width // 2)
            pen.rectangle([left - pad, top - pad, right + pad, bottom + pad], fill=LABEL_BACKGROUND)
            pen.text((x0, y0), text, fill=ink, font=font)
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


def track_color(track_id: int) -> tuple[int, int, int]:
    """A bright colour of its own for each track id: hues a golden angle apart, so neighbouring ids differ."""
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = (round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 1.0))
    return (r, g, b)


def encode(img: Image.Image, image_format: str) -> tuple[str, bytes]:
    """(media type, bytes) of the drawing as a "png", "jpeg" or "webp" (FORMATS)."""
    buf = io.BytesIO()
    if image_format == "png":
        img.save(buf, format="PNG", compress_level=1)
    elif image_format == "jpeg":
        img.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    elif image_format == "webp":
        img.convert("RGB").save(buf, format="WEBP", method=0)  # Pillow's default quality, 80; the fastest method
    else:
        raise ValueError(f"no such image format: {image_format!r}")
    return FORMATS[image_format], buf.getvalue()
