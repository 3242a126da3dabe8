"""Import the Lambda function in this process, configured as the template configures it.

MODEL_PATH defaults to the file the model layer serves as the default model; MODEL (a model name)
picks another served one. DETECTOR_PATH defaults to the default person detector's file ("none": none).
The names, files and defaults are models/models.json's (local/catalog.py), the list the model layer is
built from, so that a local run serves what a deployment serves. The import is the cold start: it loads
the model once.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path

from local import catalog

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = catalog.default("pose")
DEFAULT_DETECTOR = catalog.default("detector")


def model_path(name: str | None = None) -> Path:
    """The file the model layer serves for pose model `name` (default: MODEL, else DEFAULT_MODEL)."""
    return catalog.served_path(name or os.getenv("MODEL") or DEFAULT_MODEL, "pose")


def detector_path(name: str = DEFAULT_DETECTOR) -> Path:
    """The file the model layer serves for person detector `name`."""
    return catalog.served_path(name, "detector")


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
