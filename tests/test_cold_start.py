"""The cold start as Lambda pays it (build/coldstart.py): what it imports, what it costs next to the
floor, and what a SnapStart restore does again; and that every function of every documented deployment
starts with exactly the environment and layers template.yaml gives it (no local defaults)."""

from __future__ import annotations

import copy
import json
import os
import re
import statistics
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from build import coldstart
from conftest import ROOT, served_model
from local import catalog
from pose.source import sha256_of
from test_template import TEMPLATE, evaluate, holds, parameter_values, refused_by, translate

pytestmark = pytest.mark.tools


def detector() -> Path | None:
    return coldstart.DETECTOR if coldstart.DETECTOR.is_file() else None


@pytest.fixture(scope="module")
def layer(tmp_path_factory) -> dict[str, Path]:
    """handler/requirements.txt's closure and the runtime's boto3, without bytecode, and the function's
    code: what Lambda puts on the import path, and nothing else."""
    work = tmp_path_factory.mktemp("coldstart")
    site = coldstart.packages(coldstart.REQUIREMENTS.read_text(), work, bytecode=False)["no bytecode"]
    return {"site": site, "function": coldstart.function_code(work / "function")}


def test_the_function_imports_from_the_layer_alone_and_never_the_xray_sdk_or_boto3(layer):
    """A cold start needs nothing the layer does not ship, and neither the X-Ray SDK (tracing is
    Lambda's own) nor boto3 (only the S3 model path imports it, when it downloads)."""
    got = coldstart.sample("app", layer["function"], layer["site"], served_model(), detector())
    assert got["imported"] == [], got
    assert not (layer["site"] / "aws_xray_sdk").exists()


def test_a_cold_start_without_bytecode_stays_near_the_floor(layer):
    """Fresh processes, without bytecode, alternating: the handler's import (models loaded and warmed)
    against the floor (numpy, onnxruntime, Pillow, the sessions, one run each). Median of the paired
    CPU-time ratios; make bench measures it at length (measured 1.4-1.5x; with the X-Ray SDK 2.4-2.7x)."""
    ratios = []
    for i in range(5):
        took = {}
        for what in ("app", "floor")[::1 if i % 2 else -1]:
            took[what] = coldstart.sample(what, layer["function"], layer["site"], served_model(), detector())["cpu_ms"]
        ratios.append(took["app"] / took["floor"])
    assert statistics.median(ratios) < 2.2, ratios


def test_a_snapstart_restore_reseeds_random_and_forgets_warm(tmp_path):
    """The runtime's snapshot_restore_py exists only on Lambda; here a module of the same interface
    records what the function registers, then the test runs it as the runtime would after a restore."""
    (tmp_path / "snapshot_restore_py.py").write_text(textwrap.dedent("""
        after_restore = []
        def register_after_restore(func, *args, **kwargs):
            after_restore.append((func, args, kwargs))
            return func
        def register_before_snapshot(func, *args, **kwargs):
            return func
    """))
    child = textwrap.dedent(f"""
        import random
        from local import function
        app = function.load()
        import snapshot_restore_py as runtime
        assert len(runtime.after_restore) == 1, runtime.after_restore
        app._warm = True
        state = random.getstate()
        for func, args, kwargs in runtime.after_restore:
            func(*args, **kwargs)
        print(app._warm, random.getstate() != state)
    """)
    env = {"PATH": "/usr/bin:/bin", "MODEL_PATH": str(served_model()), "DETECTOR_PATH": str(detector() or "none"),
           "PYTHONPATH": os.pathsep.join((str(tmp_path), os.environ["PYTHONPATH"]))}
    r = subprocess.run([sys.executable, "-c", child], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True"]



# --- every function's cold start, with exactly the environment template.yaml gives it -------------

BUCKET = "pose-cold-start"
S3_MODEL = served_model("efficientpose")  # not the default model: the reply shows which file was served
S3_URI = f"s3://{BUCKET}/models/efficientpose.onnx"
BATCH = {"BatchInputBucket": "my-photos", "BatchInputPrefix": "photos/", "BatchOutputBucket": "my-results"}
DEPLOYMENTS = {  # each with the batch, so that its two functions start too
    "defaults": {},
    "another model, no detector": {"ModelName": "efficientpose", "DetectPeople": "false"},
    "model from S3, detector from the layer": {"ModelS3Uri": S3_URI, "ModelSha256": sha256_of(S3_MODEL)},
    "model from S3, no detector, no model layer": {"ModelS3Uri": S3_URI, "DetectPeople": "false"},
}
DEPS_LAYER = "DepsLayer"  # stood in for by this Python's site-packages (the same packages)
# Layers whose python/ (cp312 wheels) this Python's site-packages also stands in for; their model/ is mounted.
WITH_PACKAGES = {DEPS_LAYER, "VideoLayer"}
DEPS_PACKAGES = ("numpy", "onnxruntime", "PIL", "aws_lambda_powertools")

START = r"""
import importlib, json, sys, types
module = importlib.import_module(sys.argv[1])  # the cold start: the models are loaded here
models = getattr(module, "MODELS", None)
out = {"model": models.pose.sha256, "detector": models.detector is not None} if models else {}
out["imported"] = [m for m in sys.argv[3:] if m in sys.modules]
if sys.argv[2]:
    context = types.SimpleNamespace(
        function_name="f", function_version="1", memory_limit_in_mb=2048, aws_request_id="cold-start",
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:f", log_group_name="/aws/lambda/f",
        log_stream_name="s", get_remaining_time_in_millis=lambda: 25000)
    out["reply"] = module.lambda_handler(json.loads(sys.argv[2]), context)
print("STARTED " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def sam_template() -> dict:
    from samcli.yamlhelper import yaml_parse

    return yaml_parse(TEMPLATE.read_text())


@pytest.fixture(scope="module")
def s3_model(endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(S3_MODEL), BUCKET, S3_URI.split("/", 3)[3])


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """build(folder, logical id): what `sam build` makes of that part (the Makefile's build-<id>), made once."""
    built: dict[str, Path] = {}

    def make(folder: str, logical_id: str) -> Path:
        if logical_id not in built:
            out = tmp_path_factory.mktemp(logical_id)
            subprocess.run(["make", "--no-print-directory", "-s", "-C", str(ROOT / folder), f"build-{logical_id}",
                            f"ARTIFACTS_DIR={out}"], check=True, capture_output=True, timeout=120)
            built[logical_id] = out
        return built[logical_id]

    return make


def start_function(template: dict, translated: dict, parameters: dict, logical_id: str, build, endpoint: str,
                   tmp: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """One cold start of the function `logical_id` as `template` (`translated` by SAM) deploys it with
    `parameters`: its code and layers as their Makefiles build them, its environment exactly as
    CloudFormation would resolve it, with the layers' mount point /opt moved to the built layer. Added
    only what Lambda adds (memory, region) and this machine's stand-ins for AWS: moto's S3, dummy
    credentials, a folder for Lambda's /tmp, and this Python's site-packages for the dependency layer.
    Returns the process and the resolved properties (with `layers`: the template's ids of its layers)."""
    from local.apigw import proxy_event

    source = template["Resources"][logical_id]["Properties"]
    props = evaluate(translated["Resources"][logical_id]["Properties"], template, parameters, substitute=True)
    layers = [next(lid for lid, r in template["Resources"].items()
                   if r["Type"] == "AWS::Serverless::LayerVersion" and re.fullmatch(rf"{lid}[0-9a-f]{{10}}", ref["Ref"]))
              for ref in props.get("Layers", [])]
    mounted = [build(template["Resources"][lid]["Properties"]["ContentUri"], lid) for lid in layers if lid != DEPS_LAYER]
    assert len(mounted) <= 1, "two layers would merge into /opt"
    opt = mounted[0] if mounted else tmp / "opt-with-no-layer"
    env = {k: v.replace("/opt/", f"{opt}/", 1) if v.startswith("/opt/") else v
           for k, v in props.get("Environment", {}).get("Variables", {}).items()}
    assert all(isinstance(v, str) and "${" not in v for v in env.values()), env
    (tmp / "tmp").mkdir(parents=True, exist_ok=True)
    env |= {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(props["MemorySize"]), "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "MODEL_TMP_DIR": str(tmp / "tmp"),
            "PYTHONPATH": os.pathsep.join([str(build(source["CodeUri"], logical_id)), sysconfig.get_paths()["purelib"]])}
    health = any(e["Properties"].get("Path") == "/health" for e in source.get("Events", {}).values())
    event = json.dumps(proxy_event("GET", "/health")) if health else ""
    module = props["Handler"].rsplit(".", 1)[0]
    r = subprocess.run([sys.executable, "-S", "-c", START, module, event, *DEPS_PACKAGES], env=env,
                       cwd=env["PYTHONPATH"].split(os.pathsep)[0], capture_output=True, text=True, timeout=120)
    return r, props | {"layers": layers}


def started(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("STARTED ")]
    return json.loads(line.split(" ", 1)[1])


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_every_function_starts_with_exactly_the_templates_environment(sam_template, s3_model, endpoint, build,
                                                                      tmp_path, name):
    parameters = DEPLOYMENTS[name] | BATCH
    for key, value in parameters.items():  # values CloudFormation would take
        p = sam_template["Parameters"][key]
        assert value in p.get("AllowedValues", [value]) and re.fullmatch(p.get("AllowedPattern", ".*"), value), key
    assert refused_by(sam_template, parameters) == []
    values = parameter_values(sam_template, parameters)
    model = S3_MODEL if values["ModelS3Uri"] else served_model(values["ModelName"])
    detector = values["DetectPeople"] == "true"
    translated = translate(sam_template, parameters)
    functions = [k for k, r in translated["Resources"].items() if r["Type"] == "AWS::Lambda::Function"
                 and ("Condition" not in r or holds({"Condition": r["Condition"]}, sam_template, values))]
    assert sorted(functions) == ["BatchFunction", "GatherFunction", "PoseFunction", "VideoFunction"]
    for logical_id in functions:
        r, props = start_function(sam_template, translated, parameters, logical_id, build, endpoint, tmp_path / logical_id)
        out = started(r)
        if not WITH_PACKAGES & set(props["layers"]):
            assert out["imported"] == [], (logical_id, out["imported"])  # it would fail without the layer
        if logical_id == "GatherFunction":
            continue
        # the video layer carries only the default pose model (layers/video/Makefile)
        expected = model if values["ModelS3Uri"] or logical_id != "VideoFunction" else served_model(catalog.default("pose"))
        assert (out["model"], out["detector"]) == (sha256_of(expected), detector), logical_id
        if logical_id == "PoseFunction":
            reply = out["reply"]
            assert reply["statusCode"] == 200, reply
            body = json.loads(reply["body"])
            assert body["sha256"] == sha256_of(model) and (body["detector"] is not None) is detector


def test_a_function_whose_environment_names_a_missing_layer_does_not_start(sam_template, s3_model, endpoint, build,
                                                                           tmp_path):
    """What the template did before the model layer stayed attached for the detector: with ModelS3Uri,
    no layer and no DETECTOR_PATH, the handler's default /opt/model/rtmdet-nano.onnx is not there."""
    old = copy.deepcopy(sam_template)
    old["Conditions"]["UseModelLayer"] = {"Fn::Equals": [{"Ref": "ModelS3Uri"}, ""]}
    del old["Resources"]["PoseFunction"]["Properties"]["Environment"]["Variables"]["DETECTOR_PATH"]
    parameters = {"ModelS3Uri": S3_URI}
    r, props = start_function(old, translate(old, parameters), parameters, "PoseFunction", build, endpoint, tmp_path)
    assert props["layers"] == [DEPS_LAYER] and r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "person detector not found: DETECTOR_PATH=/opt/model/rtmdet-nano.onnx" in r.stdout
