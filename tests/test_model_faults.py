"""Faults of the function's own setup: a model that is missing, corrupt, without a valid card or not the pinned one.

Each start is the real cold start (`from local import function; function.load()`, which imports
handler/app.py) in a fresh Python process with the bad environment. It must fail with exit status 1
and one log line naming the cause, no stack trace; a start that succeeds must have /health describe
exactly the model file it serves.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnx
import pytest

from conftest import ROOT, served_model

pytestmark = pytest.mark.model

SOURCE = ROOT / "models" / "efficientpose.onnx"  # the small FP32 model: quick to copy and to load

START = """
from local import function
from local.apigw import LambdaContext, proxy_event, response_body
app = function.load()
response = app.lambda_handler(proxy_event("GET", "/health"), LambdaContext())
print("HEALTH", response["statusCode"], response_body(response).decode())
"""


def start(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """One cold start in a fresh process: the import of the handler, then GET /health if it got that far."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL", "POWERTOOLS_", "AWS_"))}
    return subprocess.run([sys.executable, "-c", START], cwd=ROOT, env={**clean, **env}, capture_output=True,
                          text=True, timeout=timeout)


def log_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"level"')]


def health_of(result: subprocess.CompletedProcess) -> dict:
    line = next(line for line in result.stdout.splitlines() if line.startswith("HEALTH "))
    _, status, body = line.split(" ", 2)
    assert status == "200"
    return json.loads(body)


def assert_one_clear_failure(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 1, exactly one ERROR log line saying the cold start failed and why, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = log_lines(result.stdout)
    assert len(lines) == 1 and lines[0]["level"] == "ERROR", result.stdout
    message = lines[0]["message"]
    assert message.startswith("cold start failed: ")
    for word in words:
        assert word in message, message
    assert "HEALTH" not in result.stdout
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything and 'File "' not in everything, everything[-3000:]
    assert [line for line in result.stdout.splitlines() if line.strip()] == [result.stdout.strip()]
    return message


def card_of(path: Path) -> dict:
    model = onnx.load(str(path), load_external_data=False)
    return json.loads({p.key: p.value for p in model.metadata_props}["pose"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def with_card(model: onnx.ModelProto, card: str | None) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.metadata_props[:]
    if card is not None:
        copy.metadata_props.add(key="pose", value=card)
    return copy


def card_variants() -> dict[str, tuple[object, tuple[str, ...]]]:
    """name -> (card text, or a function editing the card dict; words the failure must name)."""
    return {
        "no card in the metadata": (None, ("no 'pose' entry",)),
        "card not JSON": ("{'schema': 1,", ("invalid model card", "not JSON")),
        "card of a future schema": (lambda c: c.update(schema=2), ("invalid model card", "schema")),
        "card without joints": (lambda c: c.pop("joints"), ("invalid model card", "joints")),
        "card with a bad layout": (lambda c: c["input"].update(layout="NXYZ"), ("invalid model card", "layout")),
        "card naming an input the graph lacks": (lambda c: c["input"].update(name="image"),
                                                 ("invalid model card", "'image'", "not in the graph")),
        "card naming an output the graph lacks": (lambda c: c["output"].update(name="heatmaps"),
                                                  ("invalid model card", "'heatmaps'", "not in the graph")),
        "card with the wrong input dtype": (lambda c: c["input"].update(dtype="int32"),
                                            ("invalid model card", "does not run as its card says")),
        "card with the wrong input size": (lambda c: c["input"].update(width=256, height=256),
                                           ("invalid model card", "does not run as its card says")),
        "card with the wrong input layout": (lambda c: c["input"].update(layout="NCHW"),
                                             ("invalid model card", "does not run as its card says")),
        "card with one joint too many": (lambda c: (c["joints"].append("tail"), c["sides"].append("center")),
                                         ("invalid model card", "decodes to 16 joints", "names 17")),
        "card with the wrong output kind": (lambda c: c.update(output={
            "kind": "keypoints", "name": c["output"]["name"], "encoding": "yx_score_normalized"}),
            ("invalid model card", "keypoint output of shape (1, 368, 368, 16)")),
        "card with the wrong output layout": (lambda c: c["output"].update(layout="NCHW"),
                                              ("invalid model card", "decodes to 368 joints")),
        "card with a NaN in its scaling": (lambda c: c["input"].update(scaling={"kind": "range",
                                                                               "range": [float("nan"), 1.0]}),
                                           ("invalid model card", "NaN")),
        "card with a skeleton of booleans": (lambda c: c.update(skeleton=[[True, False]]),
                                             ("invalid model card", "skeleton")),
        "card with a 6 MB name": (lambda c: c.update(name="n" * 6_000_000), ("invalid model card", "65536")),
        "card nested 100,000 deep": ("[" * 100_000 + "]" * 100_000, ("invalid model card",)),
        "card nested 30,000 deep": ("[" * 30_000 + "]" * 30_000, ("invalid model card", "not JSON")),
    }


@pytest.fixture(scope="module")
def starts(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, tuple[str, ...]]]:
    """Every bad setup started once (two at a time): name -> (result, words its failure must name)."""
    tmp = tmp_path_factory.mktemp("bad-models")
    data = SOURCE.read_bytes()
    files = {
        "model file missing": (tmp / "nothing-here.onnx", ("model file not found", "nothing-here.onnx")),
        "model path is a directory": (tmp, ("model file not found",)),
        "model file empty": (tmp / "empty.onnx", ("could not be loaded", "empty.onnx")),
        "model file truncated": (tmp / "truncated.onnx", ("could not be loaded", "truncated.onnx")),
        "model file is text": (tmp / "text.onnx", ("could not be loaded", "text.onnx")),
    }
    (tmp / "empty.onnx").write_bytes(b"")
    (tmp / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp / "text.onnx").write_text("this is not an ONNX model\n" * 100)
    envs = {name: ({"MODEL_PATH": str(path)}, words) for name, (path, words) in files.items()}

    model = onnx.load(str(SOURCE))
    card = card_of(SOURCE)
    for i, (name, (change, words)) in enumerate(card_variants().items()):
        if callable(change):
            edited = json.loads(json.dumps(card))
            change(edited)
            text = json.dumps(edited)
        else:
            text = change
        path = tmp / f"card-{i}.onnx"
        onnx.save(with_card(model, text), str(path))
        envs[name] = ({"MODEL_PATH": str(path)}, words)

    served = served_model()
    envs["sha256 not the pinned one"] = ({"MODEL_PATH": str(served), "MODEL_SHA256": sha256(SOURCE)},
                                         ("sha256 mismatch", sha256(served), sha256(SOURCE)))
    envs["MODEL_THREADS not a number"] = ({"MODEL_PATH": str(SOURCE), "MODEL_THREADS": "two"}, ("MODEL_THREADS",))
    for value in ("-1", "0", "nan", "inf", "1e400"):
        envs[f"MODEL_S3_TIMEOUT {value}"] = ({"MODEL_PATH": str(SOURCE), "MODEL_S3_TIMEOUT": value},
                                             ("MODEL_S3_TIMEOUT", "positive", repr(value)))
    for value in ("-1", "0", "1e3", "\u0662"):
        envs[f"MODEL_THREADS {value}"] = ({"MODEL_PATH": str(SOURCE), "MODEL_THREADS": value}, ("MODEL_THREADS",))
    envs["MODEL_S3_URI not an S3 URI"] = ({"MODEL_S3_URI": "https://example.org/model.onnx"},
                                          ("MODEL_S3_URI", "s3://bucket/key"))
    envs["good: efficientpose, no pin"] = ({"MODEL_PATH": str(SOURCE)}, ())
    envs["good: default model, pinned (upper case)"] = ({"MODEL_PATH": str(served),
                                                         "MODEL_SHA256": sha256(served).upper()}, ())

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = {name: pool.submit(start, env) for name, (env, _) in envs.items()}
        return {name: (futures[name].result(), envs[name][1]) for name in envs}


BAD = ["model file missing", "model path is a directory", "model file empty", "model file truncated",
       "model file is text", *card_variants(), "sha256 not the pinned one", "MODEL_THREADS not a number",
       "MODEL_S3_URI not an S3 URI", *(f"MODEL_S3_TIMEOUT {v}" for v in ("-1", "0", "nan", "inf", "1e400")),
       *(f"MODEL_THREADS {v}" for v in ("-1", "0", "1e3", "\u0662"))]


@pytest.mark.parametrize("name", BAD)
def test_a_bad_setup_fails_the_cold_start_with_one_line_naming_the_cause(starts, name):
    result, words = starts[name]
    assert_one_clear_failure(result, *words)


def test_health_describes_exactly_the_model_file_it_serves(starts):
    health = health_of(starts["good: efficientpose, no pin"][0])
    assert health["status"] == "ok" and health["warm"] is False
    assert health["sha256"] == sha256(SOURCE)
    assert health["model"] == card_of(SOURCE) and health["model"]["name"] == "efficientpose-ii-lite"


def test_a_pinned_sha256_that_matches_is_served(starts):
    result = starts["good: default model, pinned (upper case)"][0]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    health = health_of(result)
    assert health["sha256"] == sha256(served_model())
    assert health["model"] == card_of(served_model())
    assert not [line for line in log_lines(result.stdout) if line["level"] == "ERROR"]


def test_the_in_process_function_reports_the_file_it_loaded(app):
    """The session's function (tests/conftest.py): /health's sha256 and card are those of MODEL_PATH's file."""
    from local.apigw import LambdaContext, proxy_event, response_body

    health = json.loads(response_body(app.lambda_handler(proxy_event("GET", "/health"), LambdaContext())))
    path = Path(os.environ["MODEL_PATH"])
    assert health["sha256"] == sha256(path) == app.MODELS.pose.sha256
    assert health["model"] == card_of(path)
