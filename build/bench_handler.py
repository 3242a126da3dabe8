"""End-to-end handler latency per served model, next to its pure inference time.

    python -m build.bench_handler                      # every pose model the model layer serves
                                                       # (layers/model/Makefile); writes out/bench/handler.json
    python -m build.bench_handler --models models/int8/efficientpose.int8.onnx --runs 10 --threads 2

The handler module holds one model per process (it loads MODEL_PATH when imported), so each model is measured
in its own fresh process (this script with --child), configured as local/function.py configures a local run and
with MODEL_THREADS (default 1: what Lambda's default 2048 MB buys). In it, each round runs, in a rotating order:

- ``handler, png``: ``app.lambda_handler`` on an API Gateway JSON event of tests/data/pose.jpg with
  ``return_image: true`` (parse, base64 and image decode, estimate, joints, PNG drawing, JSON reply);
- ``handler, jpeg`` and ``handler, webp``: the same with ``image_format`` jpeg or webp;
- ``handler, joints``: the same with ``return_image: false``;
- ``session.run``: the model's onnxruntime session alone on the same photo's prepared input tensor.

Medians after warm-up rounds, plus the medians of the stage timings the reply reports (timings_ms) and of each
image's render time over its round's ``session.run`` time (paired), and the
import of the handler module (the cold start: powertools, onnxruntime, the model's session and warm-up run).
The machine may be shared: read the differences and ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests" / "data" / "pose.jpg"
FORMATS = ("png", "jpeg", "webp")
CASES = (*(f"handler, {f}" for f in FORMATS), "handler, joints", "session.run")


def child(model: Path, runs: int, warmup: int, threads: int) -> dict:
    os.environ["MODEL_PATH"] = str(model)
    os.environ["MODEL_THREADS"] = str(threads)
    t0 = time.perf_counter()
    from local import function
    from local.apigw import LambdaContext, json_event, response_body

    app = function.load()
    import_ms = (time.perf_counter() - t0) * 1e3
    from pose.image import prepare, read_photo

    data = PHOTO.read_bytes()
    b64 = base64.b64encode(data).decode("ascii")
    tensor = prepare(read_photo(data), app.MODELS.pose.card.input)[0]
    times: dict[str, list[float]] = {c: [] for c in CASES}
    stages: dict[str, dict[str, list[float]]] = {c: {} for c in CASES[:-1]}
    sizes: dict[str, int] = {}
    for r in range(warmup + runs):
        order = CASES[r % len(CASES):] + CASES[:r % len(CASES)]
        for case in order:
            if case == "session.run":
                t = time.perf_counter()
                app.MODELS.pose.run(tensor)
                dt = (time.perf_counter() - t) * 1e3
            else:
                fmt = case.split(", ")[1]
                event = json_event("/pose", {"image": b64, "return_image": fmt in FORMATS,
                                             **({"image_format": fmt} if fmt in FORMATS else {})})
                context = LambdaContext()
                t = time.perf_counter()
                response = app.lambda_handler(event, context)
                dt = (time.perf_counter() - t) * 1e3
                if response["statusCode"] != 200:
                    raise RuntimeError(f"{case}: HTTP {response['statusCode']}: {response_body(response)[:300]!r}")
                body = response_body(response)
                sizes[case] = len(body)
                if r >= warmup:
                    for k, v in json.loads(body)["timings_ms"].items():
                        stages[case].setdefault(k, []).append(v)
            if r >= warmup:
                times[case].append(dt)
    card = app.MODELS.pose.card
    render_x = {f: statistics.median(r / s for r, s in zip(stages[f"handler, {f}"]["render"], times["session.run"]))
                for f in FORMATS}
    return {
        "model": str(model.resolve().relative_to(ROOT)) if model.resolve().is_relative_to(ROOT) else str(model),
        "name": card.name, "quantization": card.quantization, "size_mb": model.stat().st_size / 1e6,
        "threads": app.MODELS.pose.threads, "runs": runs, "warmup": warmup, "photo": PHOTO.name,
        "import_ms": import_ms,
        "median_ms": {c: statistics.median(v) for c, v in times.items()},
        "stages_median_ms": {c: {k: statistics.median(v) for k, v in s.items()} for c, s in stages.items()},
        "render_x_session_run": render_x,
        "response_bytes": sizes,
    }


def measure(model: Path, runs: int, warmup: int, threads: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(model), "--runs", str(runs), "--warmup",
                           str(warmup), "--threads", str(threads)], capture_output=True, text=True, cwd=ROOT,
                          timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"{model}: the measuring process failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    rows = ["| model | quantization | MB | threads | handler ms: png / jpeg / webp / joints only | session.run ms "
            "| handler, joints - session.run | stages, joints: decode / preprocess / inference / postprocess "
            "| render ms: png / jpeg / webp | render / session.run: png / jpeg / webp | reply KB: png / jpeg / webp "
            "| import (cold start) ms |",
            "|---|---|---:|---:|---|---:|---:|---|---|---|---|---:|"]
    for r in results:
        m, s, x = r["median_ms"], r["stages_median_ms"], r["render_x_session_run"]
        j = s["handler, joints"]
        rows.append(f"| {r['name']} | {r['quantization']} | {r['size_mb']:.1f} | {r['threads']} | "
                    + " / ".join(f"{m[f'handler, {f}']:.1f}" for f in FORMATS) + f" / {m['handler, joints']:.1f} | "
                    f"{m['session.run']:.1f} | {m['handler, joints'] - m['session.run']:+.1f} | "
                    f"{j.get('decode', 0):.1f} / {j.get('preprocess', 0):.1f} / {j.get('inference', 0):.1f} / "
                    f"{j.get('postprocess', 0):.1f} | "
                    + " / ".join(f"{s[f'handler, {f}']['render']:.1f}" for f in FORMATS) + " | "
                    + " / ".join(f"{x[f]:.2f}" for f in FORMATS) + " | "
                    + " / ".join(f"{r['response_bytes'][f'handler, {f}'] / 1e3:.0f}" for f in FORMATS)
                    + f" | {r['import_ms']:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", type=Path, help="ONNX pose model files (default: every served one)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="MODEL_THREADS (default 1: Lambda at 2048 MB)")
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "handler.json")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.runs, a.warmup, a.threads)))
        return 0
    from local import catalog

    models = a.models or [m.served_path for m in catalog.models("pose", in_layer=True) if m.served_path.is_file()]
    if not models:
        print("error: none of the served pose models is there (models/models.json)", file=sys.stderr)
        return 2
    results = []
    for model in models:
        print(f"{model}: {a.warmup} + {a.runs} rounds in a fresh process ...", file=sys.stderr, flush=True)
        results.append(measure(model, a.runs, a.warmup, a.threads))
    print(f"{PHOTO.name}, JSON events through app.lambda_handler; medians of {a.runs} rounds after {a.warmup} warm-up "
          f"rounds, the cases in turn in one process per model")
    print(table(results))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"photo": PHOTO.name, "results": results}, indent=1) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
