"""Shared fixtures: paths, the committed photos, the eval set (skipped with a message when absent)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import settings

# CI (.ci/run) draws the same random inputs on every run, so a landing never hangs on a new draw; a
# developer's `make test` draws new ones each time, and what they find becomes a fixed test (tests/data).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared"
EVAL = SHARED / "eval"

def pytest_configure(config):
    """The processes the tests start import what the tests import: pytest's `pythonpath` (pyproject.toml),
    ahead of whatever the venv has installed (which may be another checkout of the project)."""
    paths = [str(p) for p in config.getini("pythonpath")]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])


def pytest_collection_modifyitems(config, items):
    """A test that reads the eval set (through `eval_set` or `coco_multi`) is in the eval group; a test in no group
    (pyproject.toml's markers; a module without `pytestmark`) is a unit test."""
    groups = [line.split(":")[0] for line in config.getini("markers")]
    for item in items:
        if {"eval_set", "coco_multi"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.eval)
        if not any(item.get_closest_marker(g) for g in groups):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def pose_jpg() -> bytes:
    return (DATA / "pose.jpg").read_bytes()


@pytest.fixture(scope="session")
def eval_set() -> dict:
    """The shared eval set's labels (mpii and coco), or a skip naming what is missing."""
    if not (EVAL / "mpii.json").is_file():
        pytest.skip(f"the eval set is absent ({EVAL}): clone the project with ../shared beside it to run this test")
    return {name: json.loads((EVAL / f"{name}.json").read_text()) for name in ("mpii", "coco")}


@pytest.fixture(scope="session")
def coco_multi() -> Path:
    """The eval set's photos of several people, labelled (coco_multi.json), or a skip naming what is missing."""
    if not (EVAL / "coco_multi.json").is_file():
        pytest.skip(f"the eval set is absent ({EVAL}): clone the project with ../shared beside it to run this test")
    return EVAL / "coco_multi.json"


def served_model(name: str | None = None) -> Path:
    """The file the model layer serves for pose model `name` (default: the default model)."""
    from local import function

    return function.model_path(name or function.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def app():
    """The Lambda handler module, imported once (its cold start) with the default served model."""
    import os

    os.environ["MODEL_PATH"] = str(served_model())
    from local import function

    return function.load()


@pytest.fixture()
def call(app):
    """Send one API Gateway event to the handler; returns (status, parsed JSON body, raw response)."""
    from local.apigw import LambdaContext, response_body

    def send(event: dict):
        response = app.lambda_handler(event, LambdaContext())
        body = response_body(response)
        return response["statusCode"], json.loads(body) if body else None, response

    return send


@contextlib.contextmanager
def local_server(model_path: Path | None = None, log_dir: Path | None = None, api_key: str = "",
                 log_requests: bool = False):
    """`python -m local.serve --port 0` on 127.0.0.1 with a served model; yields (process, base URL).
    With `api_key`, the server requires it in x-api-key as a RequireApiKey=true stack does; with
    `log_requests`, it writes a line per request to stderr.log in `log_dir`.

    Waits for its banner (printed once the model is loaded) and always stops it. Its output goes to
    files, not pipes: Powertools prints a metrics line every 100 requests, and a pipe nobody drains
    would fill and block the server mid-request.
    """
    logs = log_dir or Path(tempfile.mkdtemp())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL", "AWS_"))}
    env["MODEL_PATH"] = str(model_path or served_model())
    env["API_KEY"] = api_key
    env["SERVE_LOG"] = "1" if log_requests else ""
    with open(logs / "stdout.log", "wb") as out, open(logs / "stderr.log", "wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "local.serve", "--port", "0"], cwd=ROOT, env=env,
                                   stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while " on http://127.0.0.1:" not in (first := (logs / "stdout.log").read_text().split("\n")[0]):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local server did not start:\n{(logs / 'stderr.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield process, first.rsplit(" on ", 1)[1].strip().rstrip("/")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 (and IAM) server on 127.0.0.1, on a free port, for the module that asks for it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def people_frames(count: int, width: int = 480) -> list:
    """A clip made from tests/data/Pilots.jpg (three people, their boxes overlapping): the photo scaled to
    `width` (even sides) and slid right 3 px a frame on a grey canvas 1.25x as wide, as (H, W, 3) uint8 RGB
    arrays: people who move, for the tracker."""
    import numpy as np
    from PIL import Image

    img = Image.open(DATA / "Pilots.jpg").convert("RGB")
    photo = np.asarray(img.resize((width, round(img.height * width / img.width) // 2 * 2)))
    frames = []
    for i in range(count):
        canvas = np.full((photo.shape[0], width * 5 // 4 // 2 * 2, 3), 96, np.uint8)
        x = 3 * i % (canvas.shape[1] - width)
        canvas[:, x: x + width] = photo
        frames.append(canvas)
    return frames
