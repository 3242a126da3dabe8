"""Import the Lambda function in this process, configured as the template configures it.

MODEL_PATH defaults to the INT8 default model as the model layer ships it; MODEL (a model name)
picks another bundled one. DETECTOR_PATH defaults to the bundled person detector ("none": none). The import is the cold start: it loads the model once.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "movenet-thunder"


def model_path(name: str | None = None) -> Path:
    return ROOT / "models" / "int8" / f"{name or os.getenv('MODEL') or DEFAULT_MODEL}.int8.onnx"


def detector_path() -> Path:
    """The person detector the model layer ships."""
    return ROOT / "models" / "int8" / "nanodet.int8.onnx"


def load():
    """The handler module `app`, imported once per process."""
    os.environ.setdefault("MODEL_PATH", str(model_path()))
    os.environ.setdefault("DETECTOR_PATH", str(detector_path()))
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "pose")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    handler_dir = str(ROOT / "handler")
    if handler_dir not in sys.path:
        sys.path.insert(0, handler_dir)
    return importlib.import_module("app")
