"""The cold start as Lambda pays it (build/coldstart.py): what it imports, what it costs next to the
floor, and what a SnapStart restore does again."""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, served_model

sys.path.insert(0, str(ROOT / "build"))
import coldstart  # noqa: E402


def detector() -> Path | None:
    return coldstart.DETECTOR if coldstart.DETECTOR.is_file() else None


@pytest.fixture(scope="module")
def layer(tmp_path_factory) -> dict[str, Path]:
    """handler/requirements.txt's closure and the runtime's boto3, without bytecode, and the function's
    code: what Lambda puts on sys.path, and nothing else."""
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
        import random, sys
        sys.path[:0] = [{str(tmp_path)!r}, {str(ROOT)!r}]
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
    env = {"PATH": "/usr/bin:/bin", "MODEL_PATH": str(served_model()), "DETECTOR_PATH": str(detector() or "none")}
    r = subprocess.run([sys.executable, "-c", child], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True"]

