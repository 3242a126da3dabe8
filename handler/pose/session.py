"""One onnxruntime session with the service's options, for a pose model or a detector (and for build/'s tools,
so that what they measure is what the service runs)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from .errors import ModelError
from .settings import threads_for_memory
from .source import sha256_of


def session_options(threads: int | None, arena: bool = False) -> ort.SessionOptions:
    """The options of every session of the service: `threads` intra-op threads, no spinning, and no CPU
    memory arena unless asked: an arena keeps the most that any run ever needed for the life of the
    instance (after two crowd photos, 1 GB), where without it each run's memory is freed as it ends, at
    no cost in speed (build/bench_memory.py)."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or threads_for_memory(None)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def open_session(path: Path, threads: int | None, expected_sha256: str | None = None,
                 arena: bool = False) -> tuple[ort.InferenceSession, str]:
    """One onnxruntime session on the file at `path` and the file's sha256; ModelError when the
    file is missing, not the expected one or not a model onnxruntime can load."""
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    sha256 = sha256_of(path)
    if expected_sha256 and sha256 != expected_sha256.lower():
        raise ModelError(f"model sha256 mismatch: {path} is {sha256}, expected {expected_sha256}")
    try:
        session = ort.InferenceSession(str(path), session_options(threads, arena), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several types for a corrupt or unreadable file
        raise ModelError(f"model file could not be loaded: {path}: {str(exc).splitlines()[0][:200]}") from None
    return session, sha256
