"""The Lambda layers: what the Makefiles build, and that it fits Lambda.

The dependency layer is built once per session into a temporary directory with the very
recipe `sam build` runs (layers/deps/Makefile: pip --target with cp312 manylinux x86_64 wheels;
needs PyPI, and pip's cache makes reruns quick). Then: function code + dependency layer + models
must stay under Lambda's 250 MB unzipped limit, the layer must hold no build-time-only package,
every wheel in it must run on Lambda's python3.12 x86_64 (Amazon Linux 2023, glibc 2.34), and,
where a CPython 3.12 is on the machine, the layer is imported and runs a small ONNX model.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from local import catalog

pytestmark = pytest.mark.aws

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "handler" / "requirements.txt"
# Every file of the model layer: name -> its file under models/ (the entries of models/models.json it serves).
SERVED = {m.name: m.served_path for m in catalog.models(in_layer=True)}
SHIPPED = tuple(SERVED)
AL2023_GLIBC = (2, 34)
# Build-time tools and what the runtime already has: none of them may ship in the layer.
FORBIDDEN = {
    "torch", "onnx", "opencv-python", "opencv-python-headless", "opencv-contrib-python", "tensorflow",
    "tf-keras", "keras", "jax", "sympy", "boto3", "botocore", "s3transfer",
}
FORBIDDEN_TOP_LEVEL = {"torch", "onnx", "cv2", "tensorflow", "keras", "jax", "sympy", "boto3", "botocore", "s3transfer"}


def _load_build_layers():
    spec = importlib.util.spec_from_file_location("build_layers", ROOT / "layers" / "build_layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_layers"] = module
    spec.loader.exec_module(module)
    return module


bl = _load_build_layers()


@pytest.fixture(scope="session")
def deps_layer(tmp_path_factory) -> Path:
    """layers/deps/Makefile's build-DepsLayer into a temporary ARTIFACTS_DIR; its python/ folder."""
    return bl.build_deps(tmp_path_factory.mktemp("deps-layer"))


@pytest.fixture(scope="session")
def function_code(tmp_path_factory) -> Path:
    if not (ROOT / "handler" / "app.py").is_file():
        pytest.skip("handler/app.py is not there yet")
    return bl.build_function(tmp_path_factory.mktemp("function"))


def distributions(site: Path) -> dict[str, str]:
    """Installed distributions in a --target folder: normalized name -> version."""
    out = {}
    for d in site.glob("*.dist-info"):
        name, version = d.name[: -len(".dist-info")].rsplit("-", 1)
        out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


# --- the recipes ----------------------------------------------------------------------------


def test_requirements_are_pinned():
    """The layer is rebuilt from these on every deploy: each must name one exact version."""
    lines = [ln.split("#")[0].strip() for ln in REQUIREMENTS.read_text().splitlines()]
    reqs = [ln for ln in lines if ln]
    assert reqs
    for req in reqs:
        assert re.fullmatch(r"[A-Za-z0-9._-]+(\[[A-Za-z0-9,._-]+\])?==[0-9][0-9A-Za-z.+!-]*", req), req


def test_deps_recipe_targets_lambda_and_reads_handler_requirements(tmp_path):
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT / "layers" / "deps"), "build-DepsLayer", f"ARTIFACTS_DIR={tmp_path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    pip = " ".join(out.replace("\\\n", " ").split())
    for flag in (
        "--platform manylinux2014_x86_64",
        "--platform manylinux_2_28_x86_64",
        "--implementation cp",
        "--python-version 3.12",
        "--only-binary=:all:",
        "--no-compile",
        f'--target "{tmp_path}/python"',
    ):
        assert flag in pip, flag
    (req,) = re.findall(r'-r "([^"]+)"', pip)
    assert Path(req).resolve() == REQUIREMENTS.resolve()  # one list, no copy to keep in step


def test_recipes_refuse_to_run_without_artifacts_dir():
    for folder, target in (("layers/deps", "build-DepsLayer"), ("layers/model", "build-ModelLayer"), ("handler", "build-PoseFunction")):
        r = subprocess.run(["make", "-C", str(ROOT / folder), target, "ARTIFACTS_DIR="], capture_output=True, text=True)
        assert r.returncode != 0 and "ARTIFACTS_DIR is not set" in r.stderr, folder


def stand_ins(folder: Path) -> Path:
    """A models/ folder of stand-ins: each served file at its place, its bytes the name it is served as."""
    for name, path in SERVED.items():
        stand_in = folder / path.relative_to(ROOT / "models")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_bytes(name.encode())
    return folder


def test_the_layer_serves_every_model_by_name_alone():
    """The Makefile's name=file pairs are models.json's, pose models then detectors; an FP32 file is served
    from models/ and an INT8 one from models/int8/ (never an FP32 file under an INT8 name)."""
    r = subprocess.run(["make", "-n", "-C", str(ROOT / "layers" / "model"), "build-ModelLayer", "ARTIFACTS_DIR=/x"],
                       capture_output=True, text=True, check=True)
    pairs = re.search(r"for pair in (.*?); do", r.stdout).group(1).split()
    assert pairs == [f"{m.name}={m.served}" for role in catalog.ROLES for m in catalog.models(role, in_layer=True)]
    for model in catalog.models(in_layer=True):
        assert model.served == (f"int8/{model.name}.int8.onnx" if model.quantize else model.source), model.name


def test_model_recipe_copies_the_named_models(tmp_path):
    src = stand_ins(tmp_path / "models")
    (src / "scratch.onnx").write_bytes(b"not shipped")
    model = bl.build_model(tmp_path / "artifacts", model_dir=src)
    assert sorted(p.name for p in model.iterdir()) == sorted(f"{n}.onnx" for n in SHIPPED)
    for name in SHIPPED:  # each file under the name it is served as, wherever it came from
        assert (model / f"{name}.onnx").read_bytes() == name.encode()


def test_model_recipe_fails_when_a_model_is_missing(tmp_path):
    src = tmp_path / "models"
    (src / "int8").mkdir(parents=True)
    other = next(m for m in catalog.models("pose", in_layer=True) if m.name != catalog.default("pose"))
    (src / other.served).parent.mkdir(parents=True, exist_ok=True)
    (src / other.served).write_bytes(b"x")
    r = subprocess.run(
        ["make", "-C", str(ROOT / "layers" / "model"), "build-ModelLayer", f"ARTIFACTS_DIR={tmp_path / 'a'}", f"MODEL_DIR={src}"],
        capture_output=True, text=True,
    )
    assert r.returncode != 0
    assert "missing model" in r.stderr and catalog.get(catalog.default("pose")).served in r.stderr
    # ... and MODELS narrows what is shipped; the detector is required too, unless DETECTORS is emptied.
    with pytest.raises(subprocess.CalledProcessError):
        bl.build_model(tmp_path / "b", model_dir=src, models=f"{other.name}={other.served}")
    model = bl.build_model(tmp_path / "c", model_dir=src, models=f"{other.name}={other.served}", detectors="")
    assert [p.name for p in model.iterdir()] == [f"{other.name}.onnx"]


def test_model_recipe_refuses_a_name_without_its_file(tmp_path):
    src = stand_ins(tmp_path / "models")
    r = subprocess.run(
        ["make", "-C", str(ROOT / "layers" / "model"), "build-ModelLayer", f"ARTIFACTS_DIR={tmp_path / 'a'}",
         f"MODEL_DIR={src}", "MODELS=some-model"],
        capture_output=True, text=True,
    )
    assert r.returncode != 0 and "not name=file: some-model" in r.stderr


def test_function_recipe_ships_code_only(function_code):
    names = {p.relative_to(function_code).as_posix() for p in function_code.rglob("*")}
    assert "app.py" in names and "pose/__init__.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not {"requirements.txt", "Makefile"} & names


# --- the built dependency layer -------------------------------------------------------------


def test_layer_has_the_requirements_and_nothing_forbidden(deps_layer):
    dists = distributions(deps_layer)
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = re.sub(r"\[.*\]", "", line).split("==")
            assert dists.get(re.sub(r"[-_.]+", "-", name).lower()) == version, line
    assert not FORBIDDEN & set(dists), FORBIDDEN & set(dists)
    assert not FORBIDDEN_TOP_LEVEL & {p.name for p in deps_layer.iterdir()}
    assert not (deps_layer / "bin").exists()
    assert not list(deps_layer.rglob("*.pyc"))  # bytecode of this machine's Python would be useless


def lambda_compatible(tag: str) -> bool:
    """Whether a wheel tag runs on Lambda's python3.12 x86_64 (Amazon Linux 2023, glibc 2.34)."""
    python, abi, platform = tag.split("-")
    if platform == "any":
        return abi == "none" and any(p in ("py3", "py312", "cp312") for p in python.split("."))
    if abi == "abi3":  # the stable ABI: built for CPython 3.x, runs on 3.x and later
        m = re.fullmatch(r"cp3(\d+)", python)
        if not m or int(m[1]) > 12:
            return False
    elif (python, abi) != ("cp312", "cp312"):
        return False
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64|manylinux(2014|2010|1)_x86_64", platform)
    if not m:
        return False
    glibc = (int(m[1]), int(m[2])) if m[1] else {"2014": (2, 17), "2010": (2, 12), "1": (2, 5)}[m[3]]
    return glibc <= AL2023_GLIBC


def test_layer_wheels_run_on_lambda_python312_x86_64(deps_layer):
    """Every wheel is pure Python or built for CPython 3.12 on x86_64 Linux with glibc <= 2.34."""
    wheels = list(deps_layer.glob("*.dist-info/WHEEL"))
    assert len(wheels) >= 4
    for wheel in wheels:
        tags = [ln.split(":", 1)[1].strip() for ln in wheel.read_text().splitlines() if ln.startswith("Tag:")]
        assert any(lambda_compatible(t) for t in tags), (wheel.parent.name, tags)


@pytest.mark.parametrize(
    "tag, ok",
    [
        ("py3-none-any", True),
        ("py2-none-any", False),
        ("cp312-cp312-manylinux_2_28_x86_64", True),
        ("cp312-abi3-manylinux2014_x86_64", True),
        ("cp310-abi3-manylinux2014_x86_64", True),
        ("cp313-abi3-manylinux2014_x86_64", False),
        ("cp312-cp311-manylinux2014_x86_64", False),
        ("cp312-cp312-manylinux_2_35_x86_64", False),
        ("cp312-cp312-manylinux_2_28_aarch64", False),
        ("cp311-cp311-manylinux_2_28_x86_64", False),
        ("cp312-cp312-musllinux_1_2_x86_64", False),
    ],
)
def test_wheel_tag_check(tag, ok):
    assert lambda_compatible(tag) is ok


def test_function_and_layers_fit_lambda(deps_layer, function_code):
    """Function code + dependency layer + model layer, unzipped, under 250 MB (262,144,000 bytes).

    With the served files in models/ they are counted as they are; without, the dependency layer
    must leave MODEL_BUDGET (64 MiB) for them.
    """
    models = list(SERVED.values())
    parts = [
        bl.Part("function code", function_code, bl.tree_size(function_code), where="handler/"),
        bl.Part("deps layer", deps_layer, bl.tree_size(deps_layer)),
    ]
    if all(m.is_file() for m in models):
        parts.append(bl.Part("model layer", None, sum(m.stat().st_size for m in models),
                             where="models/ (the served files of models/models.json)"))
    else:
        parts.append(bl.Part("model budget", None, bl.MODEL_BUDGET))
    ok = bl.report(parts)  # shown with pytest -s or on failure
    total, _ = bl.check(parts)
    assert ok and total <= bl.LAMBDA_UNZIPPED_LIMIT
    # and the largest part is what we think it is
    sizes = bl.distribution_sizes(deps_layer)
    assert next(iter(sizes)) in ("onnxruntime", "numpy")


@pytest.fixture(scope="session")
def video_layer(tmp_path_factory) -> Path:
    """layers/video/Makefile's build-VideoLayer into a temporary ARTIFACTS_DIR."""
    return bl.build_video(tmp_path_factory.mktemp("video-layer"))


def test_the_video_function_and_its_one_layer_fit_lambda(video_layer, function_code):
    """PyAV (about 100 MiB) beside the dependencies and the default models, under 250 MiB with the code."""
    parts = [bl.Part("function code", function_code, bl.tree_size(function_code)),
             bl.Part("video layer", video_layer, bl.tree_size(video_layer))]
    assert bl.report(parts)
    dists = distributions(video_layer / "python")
    assert {"av", "onnxruntime", "numpy", "pillow"} <= set(dists)
    assert not (video_layer / "python" / "onnxruntime" / "transformers").exists()  # offline tooling left out
    assert sorted(p.name for p in (video_layer / "model").iterdir()) == sorted(
        f"{catalog.default(role)}.onnx" for role in ("pose", "detector"))


def test_size_check_fails_over_the_limit(tmp_path, capsys):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 1000)
    parts = [bl.Part("x", big, bl.tree_size(big))]
    assert bl.report(parts, limit=999) is False
    assert "FAIL" in capsys.readouterr().out
    assert bl.report(parts, limit=1000) is True


# --- the layer under a real CPython 3.12 ----------------------------------------------------


def find_python312() -> str | None:
    """A working CPython 3.12 interpreter: $PYTHON312, python3.12 on PATH, or one of pyenv's."""
    candidates = [os.environ.get("PYTHON312"), shutil.which("python3.12")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in pyenv_root.glob("versions/3.12*/bin/python3.12"))
    for exe in filter(None, candidates):
        try:
            r = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and r.stdout.strip() == "True":
            return exe
    return None


SMOKE = r"""
import sys
import numpy as np
import onnxruntime as ort
import botocore
from PIL import Image
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

layer, model = sys.argv[1], sys.argv[2]
assert ort.__file__.startswith(layer), ort.__file__
assert not botocore.__file__.startswith(layer), "botocore must come from the runtime, not the layer"
Logger(service="smoke")
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
x = np.arange(6, dtype=np.float32).reshape(1, 6)
(y,) = session.run(None, {"x": x})
assert np.allclose(y, x + 1), y
Image.new("RGB", (8, 8)).save(sys.argv[3], "WEBP")
print("ok", ort.__version__, np.__version__)
"""


def test_precompiled_layer_holds_python312_bytecode_only(tmp_path):
    """PYC_PYTHON=<python3.12>: every module gets a cpython-312 .pyc that needs no source mtime check."""
    python312 = find_python312()
    if python312 is None:
        pytest.skip("no CPython 3.12 on this machine (set PYTHON312=/path/to/python3.12)")
    site = bl.build_deps(tmp_path, pyc_python=python312)
    pycs = list(site.rglob("*.pyc"))
    assert len(pycs) > 500
    assert all(p.name.endswith(".cpython-312.pyc") for p in pycs)
    flags = int.from_bytes((site / "numpy" / "__pycache__" / "__init__.cpython-312.pyc").read_bytes()[4:8], "little")
    assert flags == 0b01  # hash-based, unchecked: valid whatever the unzipped files' mtimes
    r = subprocess.run(["make", "-C", str(ROOT / "layers" / "deps"), "build-DepsLayer", f"ARTIFACTS_DIR={tmp_path / 'x'}", f"PYC_PYTHON={sys.executable}"], capture_output=True, text=True)
    assert r.returncode != 0 and "PYC_PYTHON must be CPython 3.12" in r.stdout + r.stderr


def test_layer_imports_and_runs_a_model_on_python312(deps_layer, tmp_path):
    """What Lambda does at cold start: import from /opt/python (runtime's boto3 beside it), run ONNX."""
    python312 = find_python312()
    if python312 is None:
        pytest.skip("no CPython 3.12 on this machine (set PYTHON312=/path/to/python3.12)")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "smoke",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    model = tmp_path / "smoke.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), model)

    # Stand-in for the runtime's own SDK (/var/lang/lib/python3.12/site-packages on Lambda).
    runtime = tmp_path / "runtime"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--no-warn-conflicts", "--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--implementation", "cp",
         "--python-version", "3.12", "--target", str(runtime), "boto3"],
        check=True, capture_output=True,
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": f"{deps_layer}{os.pathsep}{runtime}", "PYTHONNOUSERSITE": "1"}
    r = subprocess.run(
        [python312, "-c", SMOKE, str(deps_layer), str(model), str(tmp_path / "x.webp")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok ")


# --- sam build ------------------------------------------------------------------------------


def test_sam_build_needs_no_docker_and_no_python312(tmp_path):
    """`sam build` runs the three Makefiles (stand-in model files here) and writes a template."""
    if not (ROOT / "handler" / "app.py").is_file():
        pytest.skip("handler/app.py is not there yet")
    sam = Path(sys.executable).with_name("sam")
    models = stand_ins(tmp_path / "models")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    env.update(SAM_CLI_TELEMETRY="0", MODEL_DIR=str(models), PIP_PYTHON=sys.executable, DOCKER_HOST="unix:///nonexistent.sock")
    build = tmp_path / "build"
    r = subprocess.run(
        [str(sam) if sam.exists() else "sam", "build", "--template-file", str(ROOT / "template.yaml"), "--build-dir", str(build)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (build / "template.yaml").is_file()
    assert (build / "PoseFunction" / "app.py").is_file()
    assert (build / "DepsLayer" / "python" / "onnxruntime").is_dir()
    assert sorted(p.name for p in (build / "ModelLayer" / "model").iterdir()) == sorted(f"{n}.onnx" for n in SHIPPED)
