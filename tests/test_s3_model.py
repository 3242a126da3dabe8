"""The model from S3 (MODEL_S3_URI) against a real S3 API on loopback: moto in server mode.

The function's own boto3 client is not patched: each cold start runs in a fresh process with
AWS_ENDPOINT_URL_S3 pointing at the moto server (or at a small proxy in front of it that breaks or
stalls the download), dummy credentials and a region. MODEL_TMP_DIR is a per-test directory, so what
a start leaves there can be checked: only a complete, verified model under its final name.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pytest

from conftest import ROOT, served_model

pytestmark = pytest.mark.aws

pytest.importorskip("moto.server")

BUCKET = "pose-models"
SMALL = ROOT / "models" / "efficientpose.onnx"  # quick to load where the test is about the download

START = """
import base64, json, sys
from local import function
from local.apigw import LambdaContext, json_event, proxy_event, response_body
app = function.load()
health = app.lambda_handler(proxy_event("GET", "/health"), LambdaContext())
print("HEALTH", health["statusCode"], response_body(health).decode())
if "--pose" in sys.argv:
    photo = open("tests/data/pose.jpg", "rb").read()
    event = json_event("/pose", {"image": base64.b64encode(photo).decode(), "return_image": False})
    pose = app.lambda_handler(event, LambdaContext())
    print("POSE", pose["statusCode"], response_body(pose).decode())
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def client(endpoint: str, service: str = "s3", key: str = "testing", secret: str = "testing"):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret)


@pytest.fixture(scope="module")
def s3(endpoint):
    s3 = client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(served_model()), BUCKET, "default.onnx")
    s3.upload_file(str(SMALL), BUCKET, "efficientpose.onnx")
    return s3


def s3_env(endpoint: str, tmp_dir: Path, uri: str, **extra: str) -> dict[str, str]:
    """The function's environment: the model from `uri`, the AWS SDK pointed at `endpoint` only."""
    return {
        "MODEL_S3_URI": uri, "MODEL_TMP_DIR": str(tmp_dir),
        "MODEL_PATH": "/nonexistent/the-layer-model-must-not-be-used.onnx",
        "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_dir / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_dir / "no-credentials"),
        **extra,
    }


def start(env: dict[str, str], pose: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL", "POWERTOOLS_", "AWS_"))}
    return subprocess.run([sys.executable, "-c", START, *(["--pose"] if pose else [])], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=timeout)


def replies(result: subprocess.CompletedProcess) -> dict[str, tuple[int, dict]]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = {}
    for line in result.stdout.splitlines():
        if line.startswith(("HEALTH ", "POSE ")):
            name, status, body = line.split(" ", 2)
            out[name] = (int(status), json.loads(body))
    return out


def failure(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 1 with one ERROR log line naming the cause, and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout[-3000:], result.stderr[-3000:])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"level"')]
    assert len(lines) == 1 and lines[0]["level"] == "ERROR", result.stdout
    message = lines[0]["message"]
    assert message.startswith("cold start failed: ")
    for word in words:
        assert word in message, message
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    return message


def tmp_files(tmp_dir: Path) -> list[str]:
    return sorted(p.name for p in tmp_dir.iterdir()) if tmp_dir.is_dir() else []


def served_copies(tmp_dir: Path) -> list[str]:
    """Files a later start could take for the model: model-*.onnx (partial downloads are .model-*.part)."""
    return [name for name in tmp_files(tmp_dir) if name.startswith("model-") and name.endswith(".onnx")]


# ---------------------------------------------------------------------------------------------------


def test_the_model_from_s3_answers_a_pose_request_and_its_tmp_copy_is_reused(endpoint, s3, app, pose_jpg, tmp_path):
    import base64

    from local.apigw import LambdaContext, json_event, response_body

    s3.upload_file(str(served_model()), BUCKET, "reuse/default.onnx")
    env = s3_env(endpoint, tmp_path, f"s3://{BUCKET}/reuse/default.onnx")
    first = replies(start(env, pose=True))
    status, health = first["HEALTH"]
    assert status == 200 and health["sha256"] == sha256(served_model())
    status, pose = first["POSE"]
    assert status == 200 and pose["model"]["sha256"] == sha256(served_model())
    card = app.MODELS.pose.card
    assert pose["model"]["name"] == card.name and len(pose["joints"]) == len(card.joints)
    local = json.loads(response_body(app.lambda_handler(
        json_event("/pose", {"image": base64.b64encode(pose_jpg).decode(), "return_image": False}), LambdaContext())))
    assert np.allclose([(j["x"], j["y"]) for j in pose["joints"]], [(j["x"], j["y"]) for j in local["joints"]],
                       atol=0.05)
    copies = served_copies(tmp_path)
    assert len(copies) == 1 and tmp_files(tmp_path) == copies
    assert sha256(tmp_path / copies[0]) == sha256(served_model())

    s3.delete_object(Bucket=BUCKET, Key="reuse/default.onnx")
    second = replies(start(env))  # the object is gone: only the /tmp copy can serve
    assert second["HEALTH"][1]["sha256"] == sha256(served_model())
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    failure(start(s3_env(endpoint, fresh, f"s3://{BUCKET}/reuse/default.onnx")), "not found")


def test_a_pinned_sha256_that_matches_is_served_and_a_tampered_tmp_copy_is_replaced(endpoint, s3, tmp_path):
    env = s3_env(endpoint, tmp_path, f"s3://{BUCKET}/efficientpose.onnx", MODEL_SHA256=sha256(SMALL))
    assert replies(start(env))["HEALTH"][1]["sha256"] == sha256(SMALL)
    [copy] = served_copies(tmp_path)
    (tmp_path / copy).write_bytes(b"tampered" * 1000)
    assert replies(start(env))["HEALTH"][1]["sha256"] == sha256(SMALL)  # downloaded again, verified
    assert sha256(tmp_path / copy) == sha256(SMALL) and tmp_files(tmp_path) == [copy]


def test_a_sha256_mismatch_fails_and_leaves_nothing_in_tmp(endpoint, s3, tmp_path):
    env = s3_env(endpoint, tmp_path, f"s3://{BUCKET}/efficientpose.onnx", MODEL_SHA256=sha256(served_model()))
    failure(start(env), "sha256 mismatch", sha256(SMALL), sha256(served_model()))
    assert tmp_files(tmp_path) == []


@pytest.mark.parametrize("uri", [f"s3://no-such-bucket-{os.getpid()}/m.onnx", f"s3://{BUCKET}/no/such/key.onnx"])
def test_a_missing_bucket_or_key_fails_clearly(endpoint, s3, tmp_path, uri):
    failure(start(s3_env(endpoint, tmp_path, uri)), uri, "not found")
    assert tmp_files(tmp_path) == []


def test_an_object_that_is_not_a_model_is_not_kept_for_the_next_start(endpoint, s3, tmp_path):
    """No pin: a corrupt object loads as nothing; its copy is dropped, so a fixed object is picked up next time."""
    s3.put_object(Bucket=BUCKET, Key="corrupt.onnx", Body=SMALL.read_bytes()[:100_000])
    env = s3_env(endpoint, tmp_path, f"s3://{BUCKET}/corrupt.onnx")
    failure(start(env), "could not be loaded")
    assert served_copies(tmp_path) == []
    s3.upload_file(str(SMALL), BUCKET, "corrupt.onnx")
    assert replies(start(env))["HEALTH"][1]["sha256"] == sha256(SMALL)


def test_a_tmp_dir_that_cannot_be_written_fails_clearly(endpoint, s3, tmp_path):
    failure(start(s3_env(endpoint, tmp_path / "missing" / "dir", f"s3://{BUCKET}/efficientpose.onnx")),
            "cannot write to", str(tmp_path / "missing" / "dir"))


def test_no_credentials_fail_clearly(endpoint, s3, tmp_path):
    env = s3_env(endpoint, tmp_path, f"s3://{BUCKET}/efficientpose.onnx")
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    failure(start(env), "NoCredentialsError")
    assert tmp_files(tmp_path) == []


def test_an_unreachable_endpoint_fails_clearly(s3, tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = s3_env(closed, tmp_path, f"s3://{BUCKET}/efficientpose.onnx", MODEL_S3_TIMEOUT="2")
    failure(start(env), "EndpointConnectionError")
    assert tmp_files(tmp_path) == []


# ---------------------------------------------------------------------------------------------------
# Access denied: moto checks signatures and IAM policies once its auth is switched on


@pytest.fixture()
def iam_users(endpoint, s3):
    """Two IAM users (one may read the bucket, one may not) and moto's auth switched on, then off again."""
    iam = client(endpoint, "iam")
    keys = {}
    for user, bucket in (("reader", BUCKET), ("stranger", "some-other-bucket")):
        if user not in [u["UserName"] for u in iam.list_users()["Users"]]:
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="read-models", PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}],
            }))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])

    def auth(count: str) -> None:
        request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).read()

    auth("0")  # from now on every request is authenticated and authorised
    try:
        yield keys
    finally:
        auth("inf")


def test_access_denied_fails_clearly(endpoint, iam_users, tmp_path):
    uri = f"s3://{BUCKET}/efficientpose.onnx"
    reader, stranger = iam_users["reader"], iam_users["stranger"]
    for name in ("reader", "stranger", "forged"):
        (tmp_path / name).mkdir()
    allowed = replies(start(s3_env(endpoint, tmp_path / "reader", uri, AWS_ACCESS_KEY_ID=reader[0],
                                   AWS_SECRET_ACCESS_KEY=reader[1])))
    assert allowed["HEALTH"][1]["sha256"] == sha256(SMALL)  # the policy, not broken auth, decides below
    failure(start(s3_env(endpoint, tmp_path / "stranger", uri, AWS_ACCESS_KEY_ID=stranger[0],
                         AWS_SECRET_ACCESS_KEY=stranger[1])), uri, "access denied")
    failure(start(s3_env(endpoint, tmp_path / "forged", uri, AWS_ACCESS_KEY_ID=reader[0],
                         AWS_SECRET_ACCESS_KEY="not-the-secret")), uri, "access denied")
    for name in ("stranger", "forged"):
        assert tmp_files(tmp_path / name) == []


# ---------------------------------------------------------------------------------------------------
# Broken and stalled downloads, through a proxy in front of moto


class BreakingProxy:
    """An HTTP proxy on 127.0.0.1 in front of `upstream` that passes everything but object bodies (GET 2xx):
    in mode "cut" it sends half of each body and closes; in mode "stall" it sends the headers and 1 KiB,
    then nothing; in mode "silent" it sends nothing at all."""

    def __init__(self, upstream: str, mode: str):
        self.mode, self.object_gets, self.release = mode, 0, threading.Event()
        host, port = upstream.removeprefix("http://").split(":")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                upstream_reply = conn.getresponse()
                data = upstream_reply.read()
                breaking = self.command == "GET" and upstream_reply.status in (200, 206) and "uploads" not in self.path
                if breaking and proxy.mode == "silent":
                    proxy.object_gets += 1
                    proxy.release.wait(60)
                    self.close_connection = True
                    return
                self.send_response(upstream_reply.status)
                for k, v in upstream_reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                size = upstream_reply.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", size or "0")
                if breaking:
                    proxy.object_gets += 1
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if not breaking:
                    self.wfile.write(data)
                    return
                self.wfile.write(data[: len(data) // 2] if proxy.mode == "cut" else data[:1024])
                self.wfile.flush()
                if proxy.mode == "stall":
                    proxy.release.wait(60)
                self.close_connection = True

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def proxy(endpoint):
    proxies = []

    def make(mode: str) -> BreakingProxy:
        proxies.append(BreakingProxy(endpoint, mode))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


@pytest.mark.parametrize("pin", [False, True])
def test_an_interrupted_download_fails_clearly_and_leaves_no_model_behind(endpoint, s3, proxy, tmp_path, pin):
    cut = proxy("cut")
    extra = {"MODEL_SHA256": sha256(SMALL)} if pin else {}
    env = s3_env(cut.url, tmp_path, f"s3://{BUCKET}/efficientpose.onnx", **extra)
    failure(start(env), "connection broke or stalled", "IncompleteRead")
    assert cut.object_gets >= 1 and tmp_files(tmp_path) == []
    # the next start, with S3 whole again, downloads and serves the model
    assert replies(start({**env, "AWS_ENDPOINT_URL_S3": endpoint}))["HEALTH"][1]["sha256"] == sha256(SMALL)


@pytest.mark.parametrize("mode", ["stall", "silent"])
def test_a_stalled_download_times_out_clearly(endpoint, s3, proxy, tmp_path, mode):
    stall = proxy(mode)
    env = s3_env(stall.url, tmp_path, f"s3://{BUCKET}/efficientpose.onnx", MODEL_S3_TIMEOUT="1")
    failure(start(env, timeout=90), "connection broke or stalled", "ReadTimeout")
    assert stall.object_gets >= 1 and tmp_files(tmp_path) == []


def test_a_start_killed_mid_download_leaves_no_file_the_next_start_takes_for_the_model(endpoint, s3, proxy,
                                                                                         tmp_path):
    """Lambda kills a start that overruns: the partial download stays, under a name no start serves."""
    stall = proxy("stall")
    env = s3_env(stall.url, tmp_path, f"s3://{BUCKET}/efficientpose.onnx", MODEL_S3_TIMEOUT="60")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL", "POWERTOOLS_", "AWS_"))}
    process = subprocess.Popen([sys.executable, "-c", START], cwd=ROOT, env={**clean, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (stall.object_gets and any(n.endswith(".part") for n in tmp_files(tmp_path))):
            assert process.poll() is None, "the start ended before its download stalled"
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.1)
        time.sleep(0.3)  # some bytes are in the partial file
    finally:
        process.kill()
        process.wait(timeout=30)
    partial = [n for n in tmp_files(tmp_path) if n.endswith(".part")]
    assert partial and served_copies(tmp_path) == []
    assert (tmp_path / partial[0]).stat().st_size < SMALL.stat().st_size
    # next start, S3 reachable: it downloads again and serves the real model, not the partial file
    health = replies(start({**env, "AWS_ENDPOINT_URL_S3": endpoint}))["HEALTH"][1]
    assert health["sha256"] == sha256(SMALL)
    [copy] = served_copies(tmp_path)
    assert sha256(tmp_path / copy) == sha256(SMALL)
