"""One Python project (pyproject.toml): the code imports by package names and never edits the import path,
and `build` is this repository's build/ wherever the project runs, although PyPA's `build` package has the
same import name."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import build
from build import cards
from conftest import ROOT

# The decoy: what an installed PyPA `build` looks like to the import system, a top-level package `build`
# in a directory on the path after the current one (site-packages or PYTHONPATH).
DECOY = {"build/__init__.py": "print('decoy build')\n", "build/cards.py": "print('decoy build.cards')\n"}
PATH_EDIT = re.compile(r"sys\.path\s*(\.(insert|append|extend|remove)\b|\[[^\]]*\]\s*=|[+]=|=(?!=))")


def decoy_site(tmp_path: Path) -> Path:
    for name, text in DECOY.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def run_module(module: str, cwd: Path, site: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(site), os.environ["PYTHONPATH"]))}
    return subprocess.run([sys.executable, "-m", module], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_tests_import_the_repository_build_folder():
    assert Path(build.__file__).resolve() == ROOT / "build" / "__init__.py"
    assert Path(cards.__file__).resolve().parent == ROOT / "build"


def test_a_tool_run_as_a_module_from_the_root_is_ours_even_with_pypa_build_installed(tmp_path):
    """`python -m build.cards` from the repository root: the current directory comes first on the path, so
    a `build` package installed elsewhere (here a decoy ahead of site-packages) never shadows build/."""
    done = run_module("build.cards", ROOT, decoy_site(tmp_path / "site"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "decoy" not in done.stdout


def test_from_another_directory_an_installed_build_would_win(tmp_path):
    """The limit: outside the repository root `build` is whatever the path has (PyPA's, if installed).
    The Makefile and the docs run the tools from the root."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_module("build.cards", elsewhere, decoy_site(tmp_path / "site"))
    assert "decoy build.cards" in done.stdout, done.stderr[-2000:]


def test_no_code_of_the_repository_edits_the_import_path():
    """Packages and pytest's `pythonpath` (pyproject.toml), never sys.path edits, also not in the programs
    the tests and tools start (they get PYTHONPATH, as Lambda's runtime does)."""
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    this = Path(__file__).resolve()
    edits = [f"{name}:{n}: {line.strip()}" for name in tracked.stdout.split() if ROOT / name != this
             for n, line in enumerate((ROOT / name).read_text().splitlines(), 1) if PATH_EDIT.search(line)]
    assert edits == []


def test_no_function_of_the_build_tools_is_over_60_lines():
    """Long tools are split into named steps."""
    long = [f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted((ROOT / "build").glob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert long == []


def test_handler_imports_only_what_the_lambda_layers_hold():
    """handler/ runs on Lambda: onnxruntime, numpy, pillow, powertools, boto3 and the standard library (and its
    own modules); PyAV only in the video function's modules, whose layer has it (layers/video), never in pose/."""
    handler = ROOT / "handler"
    own = {p.stem for p in handler.glob("*.py")} | {"pose"}
    allowed = set(sys.stdlib_module_names) | own | {"onnxruntime", "numpy", "PIL", "aws_lambda_powertools",
                                                     "boto3", "botocore", "snapshot_restore_py"}  # the last: the runtime's SnapStart hooks
    video = {handler / "video.py", handler / "video_io.py"}
    wrong = []
    for path in sorted(handler.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for top in {n.split(".")[0] for n in names}:
                if top not in allowed and not (top == "av" and path in video):
                    wrong.append(f"{path.relative_to(ROOT)}: {top}")
    assert wrong == []
