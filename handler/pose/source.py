"""A model file from the model layer or from S3, and the sha256 that names a file.

A model from S3 is downloaded into a temporary name under the settings' tmp_dir, verified against
MODEL_SHA256 when one is given, then renamed, so a broken download is never taken for a model; a
connect or a read that stalls for MODEL_S3_TIMEOUT seconds fails after a retry. A verified copy is
reused by later starts of the same instance.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from .errors import ModelError
from .settings import DEFAULT_TMP_DIR, S3_TIMEOUT_S, Settings


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pose_model_file(settings: Settings) -> Path:
    """Where the pose model file is: MODEL_PATH, or its copy from MODEL_S3_URI (downloaded when needed)."""
    if not settings.model_s3_uri:
        return Path(settings.model_path)
    return fetch_from_s3(settings.model_s3_uri, settings.model_sha256, settings.tmp_dir, settings.s3_timeout_s)


def fetch_from_s3(uri: str, expected_sha256: str | None, tmp_dir: str = DEFAULT_TMP_DIR,
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
