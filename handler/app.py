"""The Lambda function: POST /pose, POST /track and GET /health behind API Gateway (REST, proxy integration).

The pose model and the person detector are loaded once, when this module is imported (the cold
start), into global sessions; a model that cannot be loaded stops the function at init with one log
line naming why. Every request error is a PoseError raised where it is found (request.py, pose/)
and turned into HTTP here, once.

Tracing is Lambda's own active tracing (template.yaml, Tracing: Active): each invocation's trace shows
its Initialization (a cold start), Invocation and Overhead, with no SDK in the function. Powertools'
Tracer would import the X-Ray SDK (and botocore) at every cold start, tracing on or off, for subsegments
that repeat the Invocation; the reply's timings_ms and the metrics below give the stages.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

import request
from pose import memory, service
from pose.errors import PoseError
from pose.reply import data_url

logger = Logger()
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", "PoseService"))

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

app = APIGatewayRestResolver(cors=CORSConfig(allow_origin=os.getenv("ALLOWED_ORIGIN", "*"), max_age=600))


MODELS = service.load_models_or_exit(logger.error)
_warm = False


def _after_restore() -> None:
    """SnapStart (template.yaml, SnapStart=true): this process was restored from a snapshot taken at
    the end of the cold start above, and so was every other environment of this version. The imports
    and the sessions are what the snapshot saves; what must differ per environment is done again:
    Python's random generator (seeded once, at start-up, so it would repeat in every environment) and
    `_warm` (false until this environment's first request). No network connection is open at the
    snapshot: the S3 client of a model download lives only during the download."""
    global _warm
    _warm = False
    random.seed()


try:  # the Lambda runtime's SnapStart hooks; absent anywhere else
    from snapshot_restore_py import register_after_restore
except ImportError:
    pass
else:
    register_after_restore(_after_restore)


def _json(status: int, payload: dict) -> Response:
    """A JSON response; NaN or infinity anywhere in it raises (a 500) rather than reach a client as invalid JSON."""
    return Response(status_code=status, content_type="application/json", body=json.dumps(payload, allow_nan=False),
                    headers=SECURITY_HEADERS)


@app.post("/pose")
def post_pose() -> Response:
    started = time.perf_counter()
    asked = request.parse(app.current_event)
    answer = service.answer(asked.image, asked.options, MODELS)
    image = {"annotated_image": data_url(*answer.drawing)} if answer.drawing else {}
    reply = answer.json(**image)
    metrics.add_metric(name="InferenceLatency", unit=MetricUnit.Milliseconds, value=answer.timings_ms["inference"])
    metrics.add_metric(name="TotalLatency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1e3)
    metrics.add_metric(name="ImageBytes", unit=MetricUnit.Bytes, value=len(asked.image))
    metrics.add_metric(name="ImagePixels", unit=MetricUnit.Count,
                       value=reply["image"]["width"] * reply["image"]["height"])
    metrics.add_metric(name="People", unit=MetricUnit.Count, value=len(reply["people"]))
    return _json(200, reply)


@app.post("/track")
def post_track() -> Response:
    """A clip's next frames and the tracker state of the previous reply -> their people with track ids and
    the new state (service.track). Stateless: the state travels with the requests."""
    started = time.perf_counter()
    asked = request.parse_track(app.current_event)
    reply = service.track(asked.frames, asked.state, asked.options, MODELS)
    metrics.add_metric(name="TrackFrames", unit=MetricUnit.Count, value=len(reply["frames"]))
    metrics.add_metric(name="TotalLatency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1e3)
    return _json(200, reply)


@app.get("/health")
def get_health() -> Response:
    pose, detector = MODELS.pose, MODELS.detector
    return _json(200, {"status": "ok", "warm": _warm, "sha256": pose.sha256, "threads": pose.threads,
                       "model": pose.card.describe(),
                       "detector": None if detector is None else detector.card.describe()})


@app.exception_handler(PoseError)
def on_pose_error(exc: PoseError) -> Response:
    cause = {"cause": exc.cause} if exc.cause else {}
    logger.info("request rejected", extra={"status": exc.status, "error_code": exc.code, **cause})
    return _json(exc.status, {"error": {"code": exc.code, "message": exc.message}})


@app.exception_handler(Exception)
def on_unexpected(exc: Exception) -> Response:
    request_id = app.lambda_context.aws_request_id if app.lambda_context else None
    logger.error("unexpected error", extra={"error_type": type(exc).__name__})
    return _json(500, {"error": {"code": "internal_error", "message": "internal error", "request_id": request_id}})


@app.not_found
def on_not_found(_exc: Exception) -> Response:
    return _json(404, {"error": {"code": "not_found", "message": "no such route; use POST /pose, POST /track or GET /health"}})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: Any) -> dict:
    global _warm
    try:
        return app.resolve(event, context)
    finally:
        _warm = True
        memory.release()  # what this request's photo and crops took goes back: the next one starts as this did
