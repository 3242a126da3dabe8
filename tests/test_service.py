"""service.answer, the one use case: POST /pose and the batch record are its answer, byte for byte; the
models are loaded by one function for both functions; reply.py shapes JSON without onnxruntime."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, served_model
from local.apigw import LambdaContext, json_event, response_body
from pose import records, service
from pose.errors import ModelError, TooLarge, UnsupportedImage
from pose.options import Options
from pose.reply import data_url

STAGES = {"decode", "detect", "preprocess", "inference", "postprocess", "render"}


def without_timings(reply: dict) -> dict:
    return {k: v for k, v in reply.items() if k != "timings_ms"}


def api_body(app, photo: bytes, **fields) -> dict:
    event = json_event("/pose", {"image": base64.b64encode(photo).decode(), **fields})
    response = app.lambda_handler(event, LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    return json.loads(response_body(response))


@pytest.mark.parametrize("photo", ["pose.jpg", "Pilots.jpg"])
def test_the_answer_is_what_post_pose_replies_for_a_real_photo(app, photo):
    data = (ROOT / "tests" / "data" / photo).read_bytes()
    asked = Options(threshold=0.5, max_people=2, return_image=True, image_format="jpeg")
    answer = service.answer(data, asked, app.MODELS)
    api = api_body(app, data, threshold=0.5, max_people=2, return_image=True, image_format="jpeg")
    ours = answer.json(annotated_image=data_url(*answer.drawing))
    assert list(ours) == list(api)  # the same fields in the same order, timings last
    assert json.dumps(without_timings(ours)) == json.dumps(without_timings(api))
    assert answer.drawing[0] == "image/jpeg" and 1 <= len(api["people"]) <= 2
    assert set(answer.timings_ms) == set(api["timings_ms"]) == STAGES


def test_a_batch_record_is_the_answer_with_its_file_and_error(app, pose_jpg):
    answer = service.answer(pose_jpg, Options(), app.MODELS)
    record, drawing = records.photo_record("a/pose.jpg", pose_jpg, app.MODELS, Options())
    assert drawing is None and answer.drawing is None
    assert list(record) == ["file", *answer.json(), "error"]
    assert (record["file"], record["error"]) == ("a/pose.jpg", None)
    assert json.dumps(without_timings(record)) == json.dumps({"file": "a/pose.jpg", **without_timings(answer.json()),
                                                              "error": None})


def test_no_threshold_asked_is_the_model_cards_and_no_drawing_unless_asked(app, pose_jpg):
    answer = service.answer(pose_jpg, Options(), app.MODELS)
    assert answer.reply["threshold"] == app.MODELS.pose.card.threshold
    assert answer.drawing is None and "annotated_image" not in answer.json()
    assert answer.reply["model"] == app.MODELS.described["model"]


def test_the_photo_limits_are_the_callers_and_a_bad_photo_raises_its_error(app, pose_jpg):
    with pytest.raises(TooLarge):
        service.answer(pose_jpg, Options(), app.MODELS, max_bytes=len(pose_jpg) - 1)
    with pytest.raises(TooLarge):
        service.answer(pose_jpg, Options(), app.MODELS, max_pixels=1000 * 666)  # pose.jpg is 1000 x 667
    with pytest.raises(UnsupportedImage):
        service.answer(b"not a photo", Options(), app.MODELS)


def test_a_fault_no_check_foresaw_is_a_model_error_of_one_line(monkeypatch):
    def broken(_settings):
        raise RuntimeError("the disk went away\nsecond line")

    monkeypatch.setattr(service, "load_pose_model", broken)
    with pytest.raises(ModelError, match=r"^RuntimeError: the disk went away$"):
        service.load_models({"MODEL_PATH": str(served_model())})


def test_load_models_or_exit_logs_one_line_and_exits_1(monkeypatch):
    logged = []
    monkeypatch.setenv("MODEL_PATH", "/nowhere/model.onnx")
    monkeypatch.delenv("MODEL_S3_URI", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        service.load_models_or_exit(logged.append)
    assert exit_info.value.code == 1
    assert logged == ["cold start failed: model file not found: /nowhere/model.onnx"]


def test_the_batch_function_fails_its_cold_start_as_the_api_function_does():
    """Both functions load their models by service.load_models_or_exit: one log line, exit status 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL", "DETECTOR", "POWERTOOLS_", "AWS_"))}
    env.update(MODEL_PATH=str(served_model()), MODEL_THREADS="many", AWS_DEFAULT_REGION="us-east-1",
               PYTHONPATH=str(ROOT / "handler"))
    for module in ("app", "batch"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 1, done.stderr[-2000:]
        (line,) = done.stdout.splitlines()
        assert json.loads(line)["message"] == "cold start failed: MODEL_THREADS must be an integer in [1, 64], " \
                                              "got 'many'", module
        assert "Traceback" not in done.stderr, done.stderr


def modules_after_import(module: str) -> set[str]:
    """The modules a fresh interpreter holds after importing `module` (with handler/ on its path)."""
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "handler")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_shaping_the_reply_never_imports_onnxruntime():
    loaded = modules_after_import("pose.reply")
    assert "onnxruntime" not in loaded and "pose.pipeline" not in loaded


def test_the_detector_and_the_pose_model_do_not_import_each_other():
    assert "pose.detect" not in modules_after_import("pose.model")
    assert "pose.model" not in modules_after_import("pose.detect")
