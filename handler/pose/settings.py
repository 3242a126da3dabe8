"""Every environment variable the service reads, with its default and its check, in one place.

    MODEL_PATH                      the pose model file (default: the model layer's default model)
    MODEL_S3_URI                    s3://bucket/key of a pose model served instead of MODEL_PATH (source.py)
    MODEL_SHA256                    the sha256 the pose model file must have (any case); unset: any file
    MODEL_TMP_DIR                   where a model from S3 is kept (default /tmp)
    MODEL_S3_TIMEOUT                seconds a connect or a read of that download may stall (default 5, at most 900)
    MODEL_THREADS                   onnxruntime intra-op threads, 1 to 64 (default: one per vCPU the memory buys)
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE set by Lambda: the memory that the default thread count follows
    DETECTOR_PATH                   the person detector file (default: the model layer's); "none": no detector

A value that fails its check is a ModelError naming the variable: the cold start stops on it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping

from .errors import ModelError

DEFAULT_MODEL_PATH = "/opt/model/pp-tinypose-256x192.onnx"
DEFAULT_DETECTOR_PATH = "/opt/model/rtmdet-nano.onnx"
DEFAULT_TMP_DIR = "/tmp"
MB_PER_VCPU = 1769  # Lambda gives one vCPU per 1769 MB of memory
MAX_THREADS = 64
S3_TIMEOUT_S = 5.0  # connect and per-read timeout of the model download: a stall fails in ~20 s, not minutes
MAX_S3_TIMEOUT_S = 900.0  # Lambda's longest timeout


@dataclass(frozen=True)
class Settings:
    """The service's configuration, checked."""
    model_path: str
    model_s3_uri: str | None  # when set, the pose model comes from S3, not from model_path
    model_sha256: str | None
    tmp_dir: str
    threads: int
    s3_timeout_s: float
    detector_path: str | None  # None: no detector (DETECTOR_PATH=none)


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of `env` (default: this process's environment); ModelError for a value that fails its check."""
    env = os.environ if env is None else env
    detector = env.get("DETECTOR_PATH", DEFAULT_DETECTOR_PATH)
    return Settings(model_path=env.get("MODEL_PATH", DEFAULT_MODEL_PATH),
                    model_s3_uri=env.get("MODEL_S3_URI") or None,
                    model_sha256=env.get("MODEL_SHA256") or None,
                    tmp_dir=env.get("MODEL_TMP_DIR", DEFAULT_TMP_DIR),
                    threads=_threads(env),
                    s3_timeout_s=_s3_timeout(env),
                    detector_path=None if detector.strip().lower() in ("", "none") else detector)


def threads_for_memory(memory_mb: int | None, cpus: int | None = None) -> int:
    """intra-op threads: one per vCPU that the function's memory buys (at least 1)."""
    cpus = cpus or os.cpu_count() or 1
    if memory_mb is None:
        return cpus
    return max(1, min(cpus, memory_mb // MB_PER_VCPU))


def _threads(env: Mapping[str, str]) -> int:
    """MODEL_THREADS, else one per vCPU that AWS_LAMBDA_FUNCTION_MEMORY_SIZE buys."""
    if env.get("MODEL_THREADS"):
        return _env_int(env, "MODEL_THREADS", 1, MAX_THREADS)
    memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    return threads_for_memory(_env_int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 1, 1 << 20) if memory else None)


def _env_int(env: Mapping[str, str], name: str, lo: int, hi: int) -> int:
    text = env[name].strip()
    if not (text.isascii() and text.isdigit() and lo <= int(text) <= hi):
        raise ModelError(f"{name} must be an integer in [{lo}, {hi}], got {env[name][:40]!r}")
    return int(text)


def _s3_timeout(env: Mapping[str, str]) -> float:
    """MODEL_S3_TIMEOUT: seconds, a positive finite number up to MAX_S3_TIMEOUT_S (default S3_TIMEOUT_S)."""
    text = env.get("MODEL_S3_TIMEOUT") or ""
    if not text:
        return S3_TIMEOUT_S
    try:
        value = float(text) if text.strip().isascii() else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_S3_TIMEOUT_S:  # NaN fails too
        raise ModelError(f"MODEL_S3_TIMEOUT must be a positive number of seconds, at most {MAX_S3_TIMEOUT_S:g}; "
                         f"got {text[:40]!r}")
    return value
