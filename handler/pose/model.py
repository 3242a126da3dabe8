"""Find the model file, open one onnxruntime session, warm it up, and estimate poses with it.

The file comes from the model layer (``MODEL_PATH``) or, when ``MODEL_S3_URI`` is set, from S3
into /tmp (downloaded to a temporary name, verified against ``MODEL_SHA256`` when given, then
renamed, so a broken download is never taken for a model). The session is created once per
process, at cold start, by ``load_from_env``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import onnxruntime as ort

from . import card as model_card
from .decode import decode
from .errors import ModelError
from .image import prepare

DEFAULT_MODEL_PATH = "/opt/model/movenet-thunder.int8.onnx"
MB_PER_VCPU = 1769  # Lambda gives one vCPU per 1769 MB of memory


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def threads_for_memory(memory_mb: int | None, cpus: int | None = None) -> int:
    """intra-op threads: one per vCPU that the function's memory buys (at least 1)."""
    cpus = cpus or os.cpu_count() or 1
    if memory_mb is None:
        return cpus
    return max(1, min(cpus, memory_mb // MB_PER_VCPU))


@dataclass
class Estimate:
    points: np.ndarray  # (N, 2) x, y in photo pixels
    scores: np.ndarray  # (N,)
    timings_ms: dict[str, float] = field(default_factory=dict)


class PoseModel:
    """One ONNX pose model with its card and its one session."""

    def __init__(self, path: str | Path, threads: int | None = None, expected_sha256: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        self.sha256 = sha256_of(self.path)
        if expected_sha256 and self.sha256 != expected_sha256.lower():
            raise ModelError(f"model sha256 mismatch: {self.path} is {self.sha256}, expected {expected_sha256}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or threads_for_memory(None)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several types for a corrupt or unreadable file
            raise ModelError(f"model file could not be loaded: {self.path}: {str(exc).splitlines()[0][:200]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = model_card.parse(meta.get(model_card.CARD_KEY))
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if self.card.input.name not in inputs:
            raise ModelError(f"invalid model card: input '{self.card.input.name}' is not in the graph {sorted(inputs)}")
        if self.card.output.name not in outputs:
            raise ModelError(f"invalid model card: output '{self.card.output.name}' is not in the graph {sorted(outputs)}")
        self.threads = options.intra_op_num_threads
        self.warm_up()

    def warm_up(self) -> None:
        spec = self.card.input
        shape = (1, 3, spec.height, spec.width) if spec.layout == "NCHW" else (1, spec.height, spec.width, 3)
        self.run(np.zeros(shape, dtype=spec.dtype))

    def run(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run([self.card.output.name], {self.card.input.name: tensor})[0]

    def estimate(self, rgb: np.ndarray) -> Estimate:
        """(H, W, 3) uint8 RGB photo -> joints in photo pixels with scores, and stage timings."""
        t0 = time.perf_counter()
        tensor, box = prepare(rgb, self.card.input)
        t1 = time.perf_counter()
        output = self.run(tensor)
        t2 = time.perf_counter()
        points, scores = decode(self.card, output)
        points = box.inverse(points)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return Estimate(points, scores, timings)


def fetch_from_s3(uri: str, expected_sha256: str | None, tmp_dir: str = "/tmp") -> Path:
    """Download s3://bucket/key to tmp_dir once; reuse a verified copy on later starts."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ModelError(f"MODEL_S3_URI must look like s3://bucket/key, got {uri!r}")
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    target = Path(tmp_dir) / f"model-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.onnx"
    if target.is_file() and (not expected_sha256 or sha256_of(target) == expected_sha256.lower()):
        return target
    import boto3  # in the Lambda runtime; imported only on this path
    from botocore.exceptions import BotoCoreError, ClientError

    fd, partial = tempfile.mkstemp(dir=tmp_dir, prefix=".model-", suffix=".part")
    os.close(fd)
    try:
        boto3.client("s3").download_file(bucket, key, partial)
        if expected_sha256 and sha256_of(partial) != expected_sha256.lower():
            raise ModelError(f"model sha256 mismatch: s3://{bucket}/{key} is {sha256_of(partial)}, "
                             f"expected {expected_sha256}")
        os.replace(partial, target)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise ModelError(f"model download from s3://{bucket}/{key} failed: {code}") from None
    except BotoCoreError as exc:
        raise ModelError(f"model download from s3://{bucket}/{key} failed: {type(exc).__name__}: {exc}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def load_from_env(env: dict[str, str] | None = None) -> PoseModel:
    """The served model as the function's environment configures it."""
    env = os.environ if env is None else env
    expected = env.get("MODEL_SHA256") or None
    memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    threads = int(env["MODEL_THREADS"]) if env.get("MODEL_THREADS") else threads_for_memory(int(memory) if memory else None)
    if env.get("MODEL_S3_URI"):
        path = fetch_from_s3(env["MODEL_S3_URI"], expected, env.get("MODEL_TMP_DIR", "/tmp"))
    else:
        path = env.get("MODEL_PATH", DEFAULT_MODEL_PATH)
    return PoseModel(path, threads=threads, expected_sha256=expected)
