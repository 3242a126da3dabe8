"""The Lambda function: POST /pose and GET /health behind API Gateway (REST, proxy integration).

The model is loaded once, when this module is imported (the cold start), into one global
session; a model that cannot be loaded stops the function at init with one log line naming why.
Every request error is a PoseError raised where it is found and turned into HTTP here, once.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import time
from typing import Any

import numpy as np
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from pose import draw, image
from pose.errors import BadParameter, BadRequest, ModelError, PoseError, TooLarge, UnsupportedImage
from pose.model import PoseModel, load_from_env

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", "PoseService"))

RAW_TYPES = ("image/jpeg", "image/png", "image/webp")
MAX_BODY_CHARS = 6 * 1024 * 1024  # API Gateway's payload limit
MAX_IMAGE_B64_CHARS = (image.MAX_BYTES + 2) // 3 * 4
MAX_ANNOTATED_B64_CHARS = 5 * 1024 * 1024  # Lambda's response limit is 6 MB: room for the joints and headers
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

app = APIGatewayRestResolver(cors=CORSConfig(allow_origin=os.getenv("ALLOWED_ORIGIN", "*"), max_age=600))


def _load_model() -> PoseModel:
    try:
        return load_from_env()
    except ModelError as exc:
        logger.error(f"cold start failed: {exc.message}")
        raise SystemExit(1) from None


MODEL = _load_model()
_warm = False


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


def parse_request(event) -> tuple[bytes, float, bool]:
    """The API event -> (image bytes, threshold, return_image). Unknown JSON fields are ignored."""
    body = event.body or ""
    if len(body) > MAX_BODY_CHARS:
        raise TooLarge(f"the request body is over {MAX_BODY_CHARS} bytes")
    content_type = (event.headers or {}).get("content-type") or (event.headers or {}).get("Content-Type") or ""
    content_type = content_type.split(";")[0].strip().lower()
    query = event.query_string_parameters or {}
    default_threshold = MODEL.card.threshold
    if content_type in RAW_TYPES:
        if not body:
            raise BadRequest(f"the request body is empty; send the {content_type} image as the body")
        if not event.is_base64_encoded:
            raise BadRequest(f"a raw {content_type} body must reach the function base64-encoded "
                             "(API Gateway binary media types)")
        if len(body) > MAX_IMAGE_B64_CHARS:
            raise TooLarge(f"the image is over {image.MAX_BYTES} bytes")
        data = _b64decode(body, "the body")
        return data, _threshold(query.get("threshold"), default_threshold), _flag(query.get("return_image"), True)
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
    threshold = _threshold(doc.get("threshold"), default_threshold)
    return_image = _flag(doc.get("return_image"), True)
    return _image_from_field(doc.get("image")), threshold, return_image


def pose_response(rgb: np.ndarray, estimate, threshold: float, return_image: bool, timings: dict) -> dict:
    """Shape one estimate as the API's JSON (see README: Response)."""
    card = MODEL.card
    visible = estimate.scores >= threshold
    joints = [
        {"id": i, "name": name, "x": round(float(x), 2), "y": round(float(y), 2),
         "score": round(float(s), 4), "visible": bool(v)}
        for i, (name, (x, y), s, v) in enumerate(zip(card.joints, estimate.points, estimate.scores, visible))
    ]
    keypoints: list[float] = []
    for j in joints:
        keypoints += [j["x"], j["y"], 2] if j["visible"] else [0, 0, 0]
    reply = {
        "joints": joints,
        "keypoints": keypoints,
        "skeleton": [{"from": card.joints[a], "to": card.joints[b], "pair": [a, b]} for a, b in card.skeleton],
        "image": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0])},
        "model": {"name": card.name, "version": card.version, "quantization": card.quantization,
                  "sha256": MODEL.sha256},
        "threshold": threshold,
        # The box of the photo the closer look (pose/region.py) ran on; null: one look at the whole photo.
        "region": None if estimate.region is None else {
            "left": estimate.region.left, "top": estimate.region.top,
            "width": estimate.region.width, "height": estimate.region.height},
    }
    if return_image:
        t = time.perf_counter()
        drawing = draw.annotate(rgb, estimate.points, visible, card.sides, card.skeleton)
        media_type, data = "image/png", draw.png_bytes(drawing)
        if len(data) * 4 // 3 > MAX_ANNOTATED_B64_CHARS:  # a detailed photo: as PNG the reply would pass 6 MB
            buf = io.BytesIO()
            drawing.save(buf, format="JPEG", quality=90)
            media_type, data = "image/jpeg", buf.getvalue()
        reply["annotated_image"] = f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")
        timings["render"] = (time.perf_counter() - t) * 1e3
    else:
        timings["render"] = 0.0
    reply["timings_ms"] = {k: round(v, 2) for k, v in timings.items()}
    return reply


def _json(status: int, payload: dict) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps(payload),
                    headers=SECURITY_HEADERS)


@app.post("/pose")
def post_pose() -> Response:
    # A subsegment, not @tracer.capture_method: that decorator logs every exception it sees (each 4xx
    # too) with its stack trace through the root logger, which Lambda sends to CloudWatch.
    with tracer.provider.in_subsegment("## post_pose"):
        started = time.perf_counter()
        data, threshold, return_image = parse_request(app.current_event)
        rgb = image.decode(data)
        decoded = time.perf_counter()
        estimate = MODEL.estimate(rgb)
        timings = {"decode": (decoded - started) * 1e3, **estimate.timings_ms}
        reply = pose_response(rgb, estimate, threshold, return_image, timings)
    metrics.add_metric(name="InferenceLatency", unit=MetricUnit.Milliseconds, value=estimate.timings_ms["inference"])
    metrics.add_metric(name="TotalLatency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1e3)
    metrics.add_metric(name="ImageBytes", unit=MetricUnit.Bytes, value=len(data))
    metrics.add_metric(name="ImagePixels", unit=MetricUnit.Count, value=int(rgb.shape[0] * rgb.shape[1]))
    return _json(200, reply)


@app.get("/health")
def get_health() -> Response:
    return _json(200, {"status": "ok", "warm": _warm, "sha256": MODEL.sha256, "threads": MODEL.threads,
                       "model": MODEL.card.describe()})


@app.exception_handler(PoseError)
def on_pose_error(exc: PoseError) -> Response:
    logger.info("request rejected", extra={"status": exc.status, "error_code": exc.code})
    return _json(exc.status, {"error": {"code": exc.code, "message": exc.message}})


@app.exception_handler(Exception)
def on_unexpected(exc: Exception) -> Response:
    request_id = app.lambda_context.aws_request_id if app.lambda_context else None
    logger.error("unexpected error", extra={"error_type": type(exc).__name__})
    return _json(500, {"error": {"code": "internal_error", "message": "internal error", "request_id": request_id}})


@app.not_found
def on_not_found(_exc: Exception) -> Response:
    return _json(404, {"error": {"code": "not_found", "message": "no such route; use POST /pose or GET /health"}})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: Any) -> dict:
    global _warm
    try:
        return app.resolve(event, context)
    finally:
        _warm = True
