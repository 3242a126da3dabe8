"""Load: the local API (python -m local.serve, one function instance) under concurrent clients, and the
handler called 1000 times in one process. Bounded in count and time; asserts on correctness and on memory
growth, never on absolute times. The latency numbers are printed and written to out/load.json.
"""

from __future__ import annotations

import base64
import gc
import http.client
import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, ROOT, local_server

pytestmark = pytest.mark.load

CLIENTS = 8
CONCURRENT_REQUESTS = 512  # 64 per client
SEQUENTIAL_REQUESTS = 100  # one client, for the latency of a request that does not queue
WARM_UP_CONCURRENT = 128
RSS_GROWTH_LIMIT_MB = 50
OUT = ROOT / "out" / "load.json"


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(a.max()), 1), "mean_ms": round(float(a.mean()), 1)}


def record(key: str, value: dict) -> None:
    """Merge one test's numbers into out/load.json (print them too: pytest -s shows them)."""
    OUT.parent.mkdir(exist_ok=True)
    report = json.loads(OUT.read_text()) if OUT.is_file() else {}
    report[key] = value
    OUT.write_text(json.dumps(report, indent=1))
    print(f"\n{key}:", json.dumps(value, indent=1))


def photos() -> dict[str, bytes]:
    small = Image.open(DATA / "pose.jpg")
    small.thumbnail((320, 320))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=90)
    return {"pose.jpg": (DATA / "pose.jpg").read_bytes(), "Pilots.jpg": (DATA / "Pilots.jpg").read_bytes(),
            "astronaut.png": (DATA / "astronaut.png").read_bytes(), "pose-320.jpg": buf.getvalue()}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The local API with the default served model: (pid, port)."""
    with local_server(log_dir=tmp_path_factory.mktemp("serve")) as (process, base):
        yield process.pid, int(base.rsplit(":", 1)[1])


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        t = time.perf_counter()
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        data = response.read()
        elapsed = (time.perf_counter() - t) * 1e3
        return response.status, json.loads(data), elapsed
    finally:
        conn.close()


def test_the_local_api_under_8_concurrent_clients(server):
    pid, port = server
    status, health, _ = request(port, "GET", "/health")
    assert status == 200
    model_name, n_joints = health["model"]["name"], len(health["model"]["joints"])
    images = photos()
    bodies = {(name, flag): json.dumps({"image": base64.b64encode(data).decode(), "return_image": flag}).encode()
              for name, data in images.items() for flag in (False, True)}

    samples: list[float] = []  # the server's RSS every 0.25 s from the concurrent warm-up on
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mb(pid))
            stop.wait(0.25)

    problems: list[str] = []
    expected: dict[str, list] = {}

    def one(i: int, flag_every: int = 8) -> tuple[float, dict]:
        name = list(images)[i % len(images)]
        flag = i % flag_every == 0
        status, reply, ms = request(port, "POST", "/pose", bodies[(name, flag)])
        if status != 200:
            problems.append(f"{i}: {status} {reply}")
        elif reply["model"]["name"] != model_name or len(reply["joints"]) != n_joints:
            problems.append(f"{i}: wrong model or joint count")
        elif [(j["x"], j["y"], j["score"]) for j in reply["joints"]] != expected[name]:
            problems.append(f"{i}: {name} got other joints than before")
        elif flag != reply.get("annotated_image", "").startswith("data:image/"):
            problems.append(f"{i}: annotated_image present is {not flag}, asked {flag}")
        return ms, reply["timings_ms"] if status == 200 else {}

    # warm-up: every photo both ways, three times (the first reply is the reference for that photo),
    # then rounds at full concurrency, so that the server's threads, the in-flight bodies and the
    # allocator's arenas reach their steady size: the RSS peak of this phase is the baseline
    for _ in range(3):
        for (name, flag), body in bodies.items():
            status, reply, _ = request(port, "POST", "/pose", body)
            assert status == 200, reply
            expected.setdefault(name, [(j["x"], j["y"], j["score"]) for j in reply["joints"]])
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            list(pool.map(one, range(WARM_UP_CONCURRENT)))
        warm = len(samples)
        sequential = [one(i)[0] for i in range(SEQUENTIAL_REQUESTS)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            results = list(pool.map(one, range(CONCURRENT_REQUESTS)))
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        sampler.join(timeout=5)
    final = rss_mb(pid)
    assert not problems, "\n".join(problems[:20])

    baseline, peak = max(samples[:warm]), max(samples[warm:] + [final])
    concurrent = [ms for ms, _ in results]
    inference = [t["inference"] for _, t in results if t]
    report = {
        "model": model_name, "quantization": health["model"]["quantization"], "threads": health["threads"],
        "cpus": os.cpu_count(), "photos": sorted(images), "share_with_return_image": 1 / 8,
        "sequential_1_client": percentiles(sequential),
        "concurrent_8_clients": {**percentiles(concurrent), "requests_per_s": round(len(concurrent) / wall, 1)},
        "server_inference_ms": percentiles(inference),
        "rss_mb": {"warm_up_peak": round(baseline, 1), "run_peak": round(peak, 1), "final": round(final, 1)},
        "errors": len(problems), "requests": WARM_UP_CONCURRENT + SEQUENTIAL_REQUESTS + CONCURRENT_REQUESTS,
    }
    record("local_api", report)

    assert len(concurrent) == CONCURRENT_REQUESTS
    assert peak - baseline < RSS_GROWTH_LIMIT_MB, report["rss_mb"]
    status, health, _ = request(port, "GET", "/health")
    assert status == 200 and health["warm"] is True


def test_1000_sequential_invocations_do_not_grow_memory(app):
    from local.apigw import LambdaContext, json_event, response_body

    small = Image.open(DATA / "pose.jpg")
    small.thumbnail((160, 160))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=90)
    image = base64.b64encode(buf.getvalue()).decode()
    events = [json_event("/pose", {"image": image, "return_image": flag}) for flag in (False, True)]
    n_joints = len(app.MODELS.pose.card.joints)
    first = None
    rss = {}
    for i in range(1, 1001):
        response = app.lambda_handler(events[i % 10 == 0], LambdaContext())  # one in ten draws the image
        assert response["statusCode"] == 200
        joints = [(j["x"], j["y"]) for j in json.loads(response_body(response))["joints"]]
        assert len(joints) == n_joints and joints == (first := first or joints)
        if i % 200 == 0:
            gc.collect()
            rss[i] = round(rss_mb(), 1)
    record("in_process_1000_invocations", {"rss_mb_after": rss, "image": f"{small.width}x{small.height} JPEG",
                                           "share_with_return_image": 0.1})
    assert rss[1000] - rss[200] < 20, rss
