"""An API Gateway proxy event -> what POST /pose was asked to do, or a typed error saying why not.

Two body shapes: JSON ``{"image": "<base64 or data URL>", ...}``, or the photo itself (a raw
``image/jpeg``, ``image/png`` or ``image/webp`` body, base64-encoded by API Gateway's binary media
types) with the parameters in the query string. Unknown JSON fields are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from pose import draw, image
from pose.errors import BadParameter, BadRequest, TooLarge, UnsupportedImage
from pose.pipeline import MAX_PEOPLE

RAW_TYPES = ("image/jpeg", "image/png", "image/webp")
MAX_BODY_CHARS = 6 * 1024 * 1024  # API Gateway's payload limit
MAX_IMAGE_B64_CHARS = (image.MAX_BYTES + 2) // 3 * 4
PEOPLE_LIMIT = 20  # the largest max_people a request may ask for


@dataclass(frozen=True)
class PoseRequest:
    image: bytes
    threshold: float
    return_image: bool
    max_people: int
    image_format: str = "png"  # of the annotated image: one of draw.FORMATS


def parse(event, default_threshold: float) -> PoseRequest:
    """The API event (Powertools' APIGatewayProxyEvent) -> PoseRequest."""
    body = event.body or ""
    if len(body) > MAX_BODY_CHARS:
        raise TooLarge(f"the request body is over {MAX_BODY_CHARS} bytes")
    content_type = (event.headers or {}).get("content-type") or (event.headers or {}).get("Content-Type") or ""
    content_type = content_type.split(";")[0].strip().lower()
    if content_type in RAW_TYPES:
        if not body:
            raise BadRequest(f"the request body is empty; send the {content_type} image as the body")
        if not event.is_base64_encoded:
            raise BadRequest(f"a raw {content_type} body must reach the function base64-encoded "
                             "(API Gateway binary media types)")
        if len(body) > MAX_IMAGE_B64_CHARS:
            raise TooLarge(f"the image is over {image.MAX_BYTES} bytes")
        return _request(_b64decode(body, "the body"), event.query_string_parameters or {}, default_threshold)
    if content_type.startswith("image/"):
        raise UnsupportedImage(f"Content-Type {content_type} is not supported; send one of {', '.join(RAW_TYPES)}")
    text = _b64decode(body, "the body").decode("utf-8", "replace") if event.is_base64_encoded else body
    if not text.strip():
        raise BadRequest("the request body is empty; send JSON {\"image\": \"<base64>\"} or a raw image")
    try:
        doc = json.loads(text)
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("the request body is not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadRequest("the JSON body must be an object with an 'image' field")
    return _request(None, doc, default_threshold)


def _request(data: bytes | None, fields: dict, default_threshold: float) -> PoseRequest:
    """The parameters (from the JSON body or the query string) are checked before the image is decoded."""
    threshold = _threshold(fields.get("threshold"), default_threshold)
    return_image = _flag(fields.get("return_image"), True)
    max_people = _max_people(fields.get("max_people"))
    image_format = _image_format(fields.get("image_format"))
    if data is None:
        data = _image_from_field(fields.get("image"))
    return PoseRequest(data, threshold, return_image, max_people, image_format)


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None


def _image_from_field(value: Any) -> bytes:
    """The JSON 'image' field: plain base64, or a data URL of an image type."""
    if not isinstance(value, str) or not value:
        raise BadRequest("the JSON body needs an 'image' field: a base64 string or a data URL")
    if value.startswith("data:"):
        header, sep, value = value.partition(",")
        media_type = header[5:].split(";")[0].strip().lower()
        if not sep or not header.endswith(";base64"):
            raise BadRequest("the data URL must be base64-encoded (data:image/...;base64,...)")
        if media_type not in image.MEDIA_TYPES:
            raise UnsupportedImage(f"the data URL's media type '{media_type}' is not an image type")
    if len(value) > MAX_IMAGE_B64_CHARS:
        raise TooLarge(f"the image is over {image.MAX_BYTES} bytes")
    return _b64decode(value, "the 'image' field")


def _threshold(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BadParameter("'threshold' must be a number in [0, 1]") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise BadParameter("'threshold' must be a number in [0, 1]")
    return float(value)


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
        return MAX_PEOPLE
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= PEOPLE_LIMIT:
        raise BadParameter(f"'max_people' must be an integer in [1, {PEOPLE_LIMIT}]")
    return value


def _image_format(value: Any) -> str:
    if value is None:
        return "png"
    if not isinstance(value, str) or value.lower() not in draw.FORMATS:
        raise BadParameter(f"'image_format' must be one of {', '.join(draw.FORMATS)}")
    return value.lower()
