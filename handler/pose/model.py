"""Find the model file, open one onnxruntime session, warm it up, and estimate poses with it.

The file comes from the model layer (``MODEL_PATH``) or, when ``MODEL_S3_URI`` is set, from S3
into /tmp (downloaded to a temporary name, verified against ``MODEL_SHA256`` when given, then
renamed, so a broken download is never taken for a model; a connect or a read that stalls for
``MODEL_S3_TIMEOUT`` seconds, default 5, fails after a retry). The session is created once per
process, at cold start, by ``load_from_env``.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import onnxruntime as ort
from PIL import Image

from . import card as model_card
from .decode import decode
from .errors import ModelError
from .image import prepare
from .region import Region, person_region

DEFAULT_MODEL_PATH = "/opt/model/pp-tinypose-256x192.onnx"
DEFAULT_DETECTOR_PATH = "/opt/model/rtmdet-nano.onnx"
MB_PER_VCPU = 1769  # Lambda gives one vCPU per 1769 MB of memory
S3_TIMEOUT_S = 5.0  # connect and per-read timeout of the model download: a stall fails in ~20 s, not minutes
# Crops per session.run. The run's working memory follows its batch (a crowd's 21 crops: +0.5 GB at the peak),
# and so does each crop's time on Lambda's one thread: PP-TinyPose took 24 ms a crop alone, 37 ms in a batch
# of 8; MoveNet 31 and 42 ms (build/bench_pipelines.py). A graph with a batch axis still takes any batch.
MAX_BATCH = 1


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
    points: np.ndarray  # (K, 2) x, y in photo pixels
    scores: np.ndarray  # (K,)
    timings_ms: dict[str, float] = field(default_factory=dict)
    region: Region | None = None  # where the second, closer look was; None when there was none


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


class PoseModel:
    """One ONNX pose model with its card and its one session."""

    def __init__(self, path: str | Path, threads: int | None = None, expected_sha256: str | None = None,
                 arena: bool = False, max_batch: int = MAX_BATCH):
        self.path = Path(path)
        self.session, self.sha256 = open_session(self.path, threads, expected_sha256, arena)
        self.max_batch = max_batch
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = model_card.parse(meta.get(model_card.CARD_KEY))
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if self.card.input.name not in inputs:
            raise ModelError(f"invalid model card: input '{self.card.input.name}' is not in the graph {sorted(inputs)}")
        if self.card.output.name not in outputs:
            raise ModelError(f"invalid model card: output '{self.card.output.name}' is not in the graph {sorted(outputs)}")
        # A graph with a fixed batch of 1 still serves several people: one run each.
        self.batched = inputs[self.card.input.name].shape[0] != 1
        self.threads = self.session.get_session_options().intra_op_num_threads
        try:
            self.warm_up()
        except ModelError:
            raise
        except Exception as exc:  # the card's input or output spec does not fit the graph
            raise ModelError(f"invalid model card: the model does not run as its card says: "
                             f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}") from None

    def warm_up(self) -> None:
        """One run on a blank input, decoded as the card says: a card that does not fit the graph fails here."""
        spec = self.card.input
        shape = (1, 3, spec.height, spec.width) if spec.layout == "NCHW" else (1, spec.height, spec.width, 3)
        points, scores = decode(self.card, self.run(np.zeros(shape, dtype=spec.dtype)))
        k = len(self.card.joints)
        if points.shape != (1, k, 2) or scores.shape != (1, k):
            raise ModelError(f"invalid model card: the output decodes to {points.shape[1]} joints, "
                             f"the card names {k}")

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """A batch of P inputs -> the output for P people: a session.run per `max_batch` of them (per one
        on a fixed-batch graph)."""
        step = self.max_batch if self.batched else 1
        outputs = [self.session.run([self.card.output.name], {self.card.input.name: tensor[i:i + step]})[0]
                   for i in range(0, len(tensor), step)]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def look(self, rgb: np.ndarray, regions: list[Region | None]) -> Estimate:
        """Joints of one person in each region of the photo (None: the whole photo), in session.runs of
        `max_batch` regions: points (P, K, 2) in photo pixels and scores (P, K), and the stage timings."""
        t0 = time.perf_counter()
        photo = Image.fromarray(rgb)  # once for every region: each reads only its part of it
        prepared = [prepare(photo, self.card.input, r) for r in regions]
        tensor = np.concatenate([t for t, _ in prepared])
        t1 = time.perf_counter()
        output = self.run(tensor)
        t2 = time.perf_counter()
        points, scores = decode(self.card, output)
        finite = np.isfinite(points).all(axis=-1) & np.isfinite(scores)  # a broken model's NaN or infinity:
        points, scores = np.where(finite[..., None], points, 0.0), np.where(finite, scores, 0.0)  # not a joint
        points = np.stack([box.inverse(p) if r is None else r.to_photo(box.inverse(p))
                           for p, (_, box), r in zip(points, prepared, regions)])
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return Estimate(points, scores, timings)

    def estimate(self, rgb: np.ndarray, closer_look: bool = True) -> Estimate:
        """One person in the whole photo: (H, W, 3) uint8 RGB -> joints (K, 2) in photo pixels with
        scores, and stage timings (summed over both passes when there was a closer look)."""
        first = self._one(self.look(rgb, [None]))
        return self.closer_look(rgb, first) if closer_look else first

    def closer_look(self, rgb: np.ndarray, first: Estimate) -> Estimate:
        """When `first` (a look at the whole photo) found a person who is small in the photo, look
        again in a box around them (region.py); each joint is then the one of the look that scored
        it higher, so a joint the box cut off keeps its first place. `first` when there is no box."""
        spec = self.card.input
        region = person_region(first.points, first.scores, rgb.shape[1], rgb.shape[0], spec.width, spec.height)
        if region is None:
            return first
        second = self._one(self.look(rgb, [region]))
        closer = second.scores >= first.scores
        points = np.where(closer[:, None], second.points, first.points)
        timings = {k: first.timings_ms.get(k, 0.0) + second.timings_ms[k] for k in second.timings_ms}
        return Estimate(points, np.maximum(first.scores, second.scores), timings, region)

    @staticmethod
    def _one(batch: Estimate) -> Estimate:
        return Estimate(batch.points[0], batch.scores[0], batch.timings_ms)


def fetch_from_s3(uri: str, expected_sha256: str | None, tmp_dir: str = "/tmp",
                  timeout_s: float = S3_TIMEOUT_S) -> Path:
    """Download s3://bucket/key to tmp_dir once; reuse a verified copy on later starts.

    Every failure (S3 error, broken or stalled connection, unwritable tmp_dir) is a ModelError
    naming the cause, and leaves no file that a later start could take for the model.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ModelError(f"MODEL_S3_URI must look like s3://bucket/key, got {uri!r}")
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    target = Path(tmp_dir) / f"model-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.onnx"
    if target.is_file() and (not expected_sha256 or sha256_of(target) == expected_sha256.lower()):
        return target
    import boto3  # in the Lambda runtime; imported only on this path
    from boto3.exceptions import Boto3Error
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"model download from s3://{bucket}/{key} failed"
    try:
        fd, partial = tempfile.mkstemp(dir=tmp_dir, prefix=".model-", suffix=".part")
    except OSError as exc:
        raise ModelError(f"{where}: cannot write to {tmp_dir}: {exc.strerror}") from None
    os.close(fd)
    try:
        client = boto3.client("s3", config=Config(connect_timeout=timeout_s, read_timeout=timeout_s,
                                                  retries={"mode": "standard", "max_attempts": 2}))
        client.download_file(bucket, key, partial, Config=TransferConfig(num_download_attempts=2))
        if expected_sha256 and sha256_of(partial) != expected_sha256.lower():
            raise ModelError(f"model sha256 mismatch: s3://{bucket}/{key} is {sha256_of(partial)}, "
                             f"expected {expected_sha256}")
        os.replace(partial, target)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        hint = {"404": "not found (no such bucket or key)", "NoSuchKey": "no such key",
                "NoSuchBucket": "no such bucket", "403": "access denied (403)"}.get(code, code)
        raise ModelError(f"{where}: {hint}") from None
    except Boto3Error as exc:  # s3transfer gave up: the connection broke or stalled on every attempt
        cause = getattr(exc, "last_exception", None) or exc
        raise ModelError(f"{where}: the connection broke or stalled "
                         f"({type(cause).__name__}: {str(cause)[:200]})") from None
    except BotoCoreError as exc:
        raise ModelError(f"{where}: {type(exc).__name__}: {exc}") from None
    except OSError as exc:
        raise ModelError(f"{where}: cannot write to {tmp_dir}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


MAX_THREADS = 64
MAX_S3_TIMEOUT_S = 900.0  # Lambda's longest timeout


def _threads(env) -> int:
    """MODEL_THREADS, else one per vCPU that AWS_LAMBDA_FUNCTION_MEMORY_SIZE buys."""
    if env.get("MODEL_THREADS"):
        return _env_int(env, "MODEL_THREADS", 1, MAX_THREADS)
    memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    return threads_for_memory(_env_int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 1, 1 << 20) if memory else None)


def _env_int(env, name: str, lo: int, hi: int) -> int:
    text = env[name].strip()
    if not (text.isascii() and text.isdigit() and lo <= int(text) <= hi):
        raise ModelError(f"{name} must be an integer in [{lo}, {hi}], got {env[name][:40]!r}")
    return int(text)


def _s3_timeout(env) -> float:
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


def load_from_env(env: dict[str, str] | None = None) -> PoseModel:
    """The served model as the function's environment configures it."""
    env = os.environ if env is None else env
    expected = env.get("MODEL_SHA256") or None
    threads = _threads(env)
    timeout = _s3_timeout(env)
    if not env.get("MODEL_S3_URI"):
        return PoseModel(env.get("MODEL_PATH", DEFAULT_MODEL_PATH), threads=threads, expected_sha256=expected)
    path = fetch_from_s3(env["MODEL_S3_URI"], expected, env.get("MODEL_TMP_DIR", "/tmp"), timeout)
    try:
        return PoseModel(path, threads=threads, expected_sha256=expected)
    except ModelError:
        path.unlink(missing_ok=True)  # a copy that cannot be served is not reused by the next start
        raise


def load_detector_from_env(env: dict[str, str] | None = None):
    """The person detector as the environment configures it (``DETECTOR_PATH``, which template.yaml
    sets in every function; default the model layer's); None when ``DETECTOR_PATH`` is "none": then
    every photo is one person's."""
    env = os.environ if env is None else env
    path = env.get("DETECTOR_PATH", DEFAULT_DETECTOR_PATH)
    if path.strip().lower() in ("", "none"):
        return None
    if not Path(path).is_file():  # a model-file error would not say which of the two files is missing
        raise ModelError(f"person detector not found: DETECTOR_PATH={path} (is the model layer attached? "
                         f"DETECTOR_PATH=none serves without one)")
    from .detect import open_detector

    return open_detector(Path(path), threads=_threads(env))
