"""Import the Lambda function in this process, configured as the template configures it.

MODEL_PATH defaults to the file the model layer serves as the default model; MODEL (a model name)
picks another served one. DETECTOR_PATH defaults to the default person detector's file ("none": none).
The files are those layers/model/Makefile lists (name=file under models/), read from it here so that a
local run serves what a deployment serves. The import is the cold start: it loads the model once.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER_MAKEFILE = ROOT / "layers" / "model" / "Makefile"
# template.yaml's defaults (ModelName, DETECTOR_PATH); tests/test_template.py checks they agree.
DEFAULT_MODEL = "pp-tinypose-256x192"
DEFAULT_DETECTOR = "rtmdet-nano"


def served(kind: str = "MODELS") -> dict[str, Path]:
    """The model layer's files of one kind, name -> file under models/, as layers/model/Makefile lists
    them: kind "MODELS" (the pose models) or "DETECTORS" (the person detectors)."""
    line = re.search(rf"^{kind} \?= (.+)$", LAYER_MAKEFILE.read_text(), re.M).group(1)
    return {name: ROOT / "models" / file for name, file in (pair.split("=", 1) for pair in line.split())}


def _served_file(kind: str, name: str) -> Path:
    files = served(kind)
    if name not in files:
        raise ValueError(f"{name!r} is not a served {kind.lower()[:-1]}: the model layer has {', '.join(files)}")
    return files[name]


def model_path(name: str | None = None) -> Path:
    """The file the model layer serves for pose model `name` (default: MODEL, else DEFAULT_MODEL)."""
    return _served_file("MODELS", name or os.getenv("MODEL") or DEFAULT_MODEL)


def detector_path(name: str = DEFAULT_DETECTOR) -> Path:
    """The file the model layer serves for person detector `name`."""
    return _served_file("DETECTORS", name)


def load():
    """The handler module `app`, imported once per process. handler/ is on the import path as on Lambda
    (where it is the function's root): the venv's install of the project (`make venv`) or pytest's
    `pythonpath` puts it there (pyproject.toml)."""
    os.environ.setdefault("MODEL_PATH", str(model_path()))
    os.environ.setdefault("DETECTOR_PATH", str(detector_path()))
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "pose")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    return importlib.import_module("app")
