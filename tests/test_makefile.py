"""The Makefile's installs: make demo installs the function's requirements only; make test adds the
rest on top, once (`make -n`: what make would run, run nothing)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import ROOT


def would_run(target: str, venv: Path) -> list[str]:
    out = subprocess.run(["make", "-n", "--no-print-directory", target, f"VENV={venv}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "pip install" in line or line.startswith("python3 -m venv")]


def test_the_run_requirements_are_the_functions_and_the_dev_requirements_include_them():
    run = (ROOT / "requirements-run.txt").read_text().split()
    dev = (ROOT / "requirements-dev.txt").read_text().split()
    assert "-r" in run and "handler/requirements.txt" in run
    assert "requirements-run.txt" in dev and "handler/requirements.txt" not in dev


def test_demo_on_a_fresh_clone_installs_the_run_requirements_only(tmp_path):
    steps = would_run("demo", tmp_path / "venv")
    assert steps[0].startswith("python3 -m venv")
    assert [s.split()[-1] for s in steps if " -r " in s] == ["requirements-run.txt"]
    assert [s.split()[-3:] for s in steps if " -r " not in s and "pip install" in s][-1] == ["--no-deps", "-e", "."]


def test_test_after_demo_installs_only_the_rest(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / ".run-installed").touch()  # what make demo left
    assert [s.split()[-1] for s in would_run("test", venv)] == ["requirements-dev.txt"]
    (venv / ".installed").touch()
    assert would_run("test", venv) == [] and would_run("demo", venv) == []
