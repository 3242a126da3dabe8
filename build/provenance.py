"""Where a generated page's numbers come from: the code's commit and the command that measured them.

The measuring tools (build/report.py, build/report_people.py) record both in their JSON beside the date, and
their pages show them, so a page can be traced back and remade.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def commit() -> str:
    """HEAD's short hash, with "-dirty" when tracked files differ from it; "" outside a git checkout."""
    try:
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        return _git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return ""


def command(script: str | Path, argv: list[str] | None = None) -> str:
    """The command line that ran script with argv (default: this process's arguments), as typed from the root."""
    path = Path(script).resolve()
    if path.is_relative_to(ROOT):  # a tool of this repository: run from the root as a module
        shown = ["-m", ".".join(path.relative_to(ROOT).with_suffix("").parts)]
    else:
        shown = [str(path)]
    return shlex.join(["python", *shown, *(sys.argv[1:] if argv is None else argv)])
