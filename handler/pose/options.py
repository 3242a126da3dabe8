"""What a caller may ask of an answer, checked once for POST /pose and for the batch jobs.

A value is read from JSON (numbers and booleans) or from text (a query string, or JSON that sends text):
"0.5", "true", "3". An absent value, or null, is the default. A wrong one is a BadParameter naming the
parameter and what it must be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from . import draw
from .errors import BadParameter
from .pipeline import MAX_PEOPLE

NAMES = ("threshold", "return_image", "max_people", "image_format")
MAX_NUMBER_CHARS = 32  # a parameter written as a string longer than this is refused unread
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # ASCII digits only


@dataclass(frozen=True)
class Options:
    threshold: float | None = None  # a joint is visible from this score; None: the model card's threshold
    max_people: int = MAX_PEOPLE  # people in the reply at most, 1 to MAX_PEOPLE
    return_image: bool = False  # also draw the people on the photo
    image_format: str = "png"  # of that drawing: one of draw.FORMATS


def parse(fields: Mapping[str, Any], return_image: bool = False) -> Options:
    """The parameters among `fields` -> Options (`return_image`: its default); BadParameter for a wrong one."""
    return Options(threshold=_threshold(fields.get("threshold")),
                   return_image=_flag(fields.get("return_image"), return_image),
                   max_people=_max_people(fields.get("max_people")),
                   image_format=_image_format(fields.get("image_format")))


def _threshold(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_NUMBER_CHARS and _NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise BadParameter("'threshold' must be a number in [0, 1]")
    return float(value) + 0.0  # -0 is 0


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise BadParameter("'return_image' must be true or false")
    return value


def _max_people(value: Any) -> int:
    if value is None:
        return Options.max_people
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PEOPLE:
        raise BadParameter(f"'max_people' must be an integer in [1, {MAX_PEOPLE}]")
    return value


def _image_format(value: Any) -> str:
    if value is None:
        return Options.image_format
    if not isinstance(value, str) or value.lower() not in draw.FORMATS:
        raise BadParameter(f"'image_format' must be one of {', '.join(draw.FORMATS)}")
    return value.lower()
