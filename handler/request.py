"""An API Gateway proxy event -> what POST /pose (or POST /track) was asked to do, or a typed error saying why not.

Two body shapes: JSON ``{"image": "<base64 or data URL>", ...}``, or the photo itself (a raw
``image/jpeg``, ``image/png`` or ``image/webp`` body, base64-encoded by API Gateway's binary media
types) with the parameters in the query string. Unknown JSON fields are ignored; a leading UTF-8 BOM
is skipped; JSON nested deeper than MAX_JSON_DEPTH is refused (400) before it is parsed. Headers and
query parameters are read from both of the event's maps, single- and multi-value: API Gateway may
send either alone.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from pose import image, options, service
from pose.errors import BadParameter, BadRequest, TooLarge, UnsupportedImage

RAW_TYPES = ("image/jpeg", "image/png", "image/webp")
MAX_BODY_CHARS = 6 * 1024 * 1024  # API Gateway's payload limit
MAX_IMAGE_B64_CHARS = (image.MAX_BYTES + 2) // 3 * 4
MAX_JSON_DEPTH = 64  # arrays and objects nested deeper are refused (400): no field needs more than 2
MAX_QUOTED_CHARS = 40  # request text quoted in an error message is cut to this many characters


@dataclass(frozen=True)
class PoseRequest:
    image: bytes
    options: options.Options


@dataclass(frozen=True)
class TrackRequest:
    frames: list[bytes]  # the clip's next frames, each an image's bytes, in order
    state: Any  # the tracker state of the previous reply, unchecked (Tracker.load_state checks it); None: none
    options: options.Options


def parse(event) -> PoseRequest:
    """The API event (Powertools' APIGatewayProxyEvent) -> PoseRequest."""
    body = _body(event)
    content_type = _content_type(event)
    if content_type in RAW_TYPES:
        if not body:
            raise BadRequest(f"the request body is empty; send the {content_type} image as the body")
        if not event.is_base64_encoded:
            raise BadRequest(f"a raw {content_type} body must reach the function base64-encoded "
                             "(API Gateway binary media types)")
        return _request(_image_b64decode(body, "the body"), _query(event))
    if content_type.startswith("image/"):
        raise UnsupportedImage(f"Content-Type {_quoted(content_type)} is not supported; send one of "
                               f"{', '.join(RAW_TYPES)}")
    return _request(None, _json_object(event, body, "JSON {\"image\": \"<base64>\"} or a raw image",
                                       "an object with an 'image' field"))


def parse_track(event) -> TrackRequest:
    """POST /track's event -> TrackRequest: a JSON object with `frames` (1 to service.MAX_TRACK_FRAMES
    images, each base64 or a data URL), `state` (absent or null for a clip's first frames) and POST /pose's
    `threshold` and `max_people`."""
    body = _body(event)
    if _content_type(event).startswith("image/"):
        raise UnsupportedImage("POST /track takes JSON {\"frames\": [...], \"state\": ...}, not a raw image")
    doc = _json_object(event, body, "JSON {\"frames\": [\"<base64>\", ...]}", "an object with a 'frames' field")
    asked = options.parse(doc)
    frames = doc.get("frames")
    if not isinstance(frames, list) or not 1 <= len(frames) <= service.MAX_TRACK_FRAMES:
        raise BadRequest(f"'frames' must be a list of 1 to {service.MAX_TRACK_FRAMES} images (base64 or data URLs)")
    data = [_image_from_text(frame, f"frame {i}") for i, frame in enumerate(frames)]
    return TrackRequest(data, doc.get("state"), asked)


def _body(event) -> str:
    body = event.body or ""
    if len(body) > MAX_BODY_CHARS:
        raise TooLarge(f"the request body is over {MAX_BODY_CHARS} bytes")
    return body


def _content_type(event) -> str:
    return _header(event, "content-type").split(";")[0].strip().lower()


def _json_object(event, body: str, expected: str, shape: str) -> dict:
    """A JSON body -> its object; BadRequest naming the `expected` body, or the object's `shape`."""
    text = _b64decode(body, "the body").decode("utf-8", "replace") if event.is_base64_encoded else body
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise BadRequest(f"the request body is empty; send {expected}")
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(f"the request body is JSON nested over {MAX_JSON_DEPTH} levels deep; the limit is "
                         f"{MAX_JSON_DEPTH}")
    try:
        doc = json.loads(text, parse_int=_json_int)
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("the request body is not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"the JSON body must be {shape}")
    return doc


def _header(event, name: str) -> str:
    """A header's value from the single-value map, else the last of the multi-value map's; "" when absent."""
    value = event.headers.get(name)
    if value is None:
        values = event.multi_value_headers.get(name)
        value = values[-1] if isinstance(values, list) and values else None
    return value if isinstance(value, str) else ""


def _query(event) -> dict:
    """The query parameters the service reads, from either map; one given twice with two values is refused."""
    single = event.query_string_parameters or {}
    multi = event.multi_value_query_string_parameters or {}
    params = {}
    for name in options.NAMES:
        values = multi.get(name) if isinstance(multi.get(name), list) else []
        if len(set(values)) > 1:
            raise BadParameter(f"'{name}' is given {len(values)} times with different values; give it once")
        value = single.get(name, values[-1] if values else None)
        if value is not None:
            params[name] = value
    return params


def _json_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON text, counted outside strings (an upper bound on invalid JSON).

    Array operations in one pass over the text, so the time is linear in its length whatever it holds: a
    quote opens or closes a string unless an odd run of backslashes comes right before it.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0
    data = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
    at = np.arange(len(data), dtype=np.int32)  # a body is at most 6 MB
    last_other = np.maximum.accumulate(np.where(data != ord("\\"), at, -1))  # the last non-backslash up to i
    backslashes_before = at - 1 - np.concatenate((np.array([-1], np.int32), last_other[:-1]))
    quotes = (data == ord('"')) & (backslashes_before % 2 == 0)
    outside = np.cumsum(quotes, dtype=np.int32) % 2 == 0  # (a closing quote counts as outside: it is no bracket)
    steps = (data == ord("[")).astype(np.int8) + (data == ord("{")) - (data == ord("]")) - (data == ord("}"))
    return int(np.cumsum(np.where(outside, steps, 0), dtype=np.int32).max(initial=0))


def _json_int(digits: str) -> int | float:
    """A JSON integer; a longer one than any field needs is read as a float (Python refuses int() of
    over 4300 digits, and an unknown field may hold one)."""
    return int(digits) if len(digits) <= 20 else float(digits)


def _request(data: bytes | None, fields: dict) -> PoseRequest:
    """The parameters (from the JSON body or the query string) are checked before the image is decoded."""
    asked = options.parse(fields, return_image=True)
    return PoseRequest(_image_from_field(fields.get("image")) if data is None else data, asked)


def _b64decode(text: str, what: str) -> bytes:
    """Base64 with or without line breaks (MIME base64 has them) -> bytes."""
    return _strict_b64decode("".join(text.split()), what)


def _image_b64decode(text: str, what: str) -> bytes:
    """An image in base64 -> its bytes; TooLarge when they would be over image.MAX_BYTES. What counts is
    what decodes: whitespace (MIME base64's line breaks) is not counted."""
    compact = "".join(text.split())
    if len(compact) > MAX_IMAGE_B64_CHARS:
        raise TooLarge(f"the image is over {image.MAX_BYTES} bytes")
    return _strict_b64decode(compact, what)


def _strict_b64decode(compact: str, what: str) -> bytes:
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None


def _quoted(text: str) -> str:
    """Request text for an error message: quoted, cut to MAX_QUOTED_CHARS, so no reply grows with the request."""
    return repr(text[:MAX_QUOTED_CHARS] + ("..." if len(text) > MAX_QUOTED_CHARS else ""))


def _image_from_field(value: Any) -> bytes:
    """The JSON 'image' field: plain base64, or a data URL of an image type."""
    if not isinstance(value, str) or not value:
        raise BadRequest("the JSON body needs an 'image' field: a base64 string or a data URL")
    return _image_from_text(value, "the 'image' field")


def _image_from_text(value: Any, what: str) -> bytes:
    """An image as plain base64 or a data URL of an image type -> its bytes (`what` names it in errors)."""
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a base64 string or a data URL")
    if value.startswith("data:"):
        header, sep, value = value.partition(",")
        media_type = header[5:].split(";")[0].strip().lower()
        if not sep or not header.endswith(";base64"):
            raise BadRequest("the data URL must be base64-encoded (data:image/...;base64,...)")
        if media_type not in image.MEDIA_TYPES:
            raise UnsupportedImage(f"the data URL's media type {_quoted(media_type)} is not an image type")
    return _image_b64decode(value, what)
