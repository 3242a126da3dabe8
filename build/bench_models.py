"""Size, latency and agreement of model variants, side by side in one process.

    python -m build.bench_models                        # Simple Baselines R50 MPII (random-init): 4 variants
    python -m build.bench_models --models a.onnx b.onnx --reference a.onnx --json out/bench.json

Default set (built into ``--workdir`` unless present; ``--rebuild`` forces it):

- ``fp32``: ``export.py --random-init`` (ResNet-50, MPII, 256x256; BatchNorm statistics measured on photos);
- ``fp32-rewritten``: ``rewrite.py`` (ConvTranspose -> Conv + DepthToSpace + Slice);
- ``int8-dynamic``: the seed's recipe, ``quantize_dynamic`` with its defaults;
- ``int8-static``: ``quantize.py`` defaults (rewrite, pre-process, QDQ U8S8 per-channel, MinMax on the
  ../shared photos, every op before the final conv, which stays FP32).

Latency: batch 1, one intra-op thread, graph optimisation ALL (as the service opens its session); each round
runs every variant once, in turn, so drift of the machine hits all alike; the median of ``--runs`` rounds
after ``--warmup`` rounds. Agreement with the reference on the first 8 photos (../shared/images, then the eval
set; they are also calibration photos): max abs difference of the outputs, and the share of joints whose
location (heatmap argmax or keypoint) is identical / within 2% of the side, over all joints and over the
joints the reference is confident about. With random-init weights these numbers say how much a random deep
network amplifies INT8 rounding, not how accurate a trained model stays: that needs real weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from build import cards
from build import photos
from pose.session import session_options

ROOT = Path(__file__).resolve().parent.parent


def open_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """A session with the service's options (pose/model.py), so a variant is measured as it would be served."""
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def build_simple_baselines(workdir: Path, rebuild: bool = False, seed: int = 0) -> dict[str, Path]:
    from build import export
    from build import quantize
    from build import rewrite

    workdir.mkdir(parents=True, exist_ok=True)
    v = {name: workdir / f"sb-r50-mpii.{name}.onnx" for name in ("fp32", "fp32-rewritten", "int8-dynamic", "int8-static")}
    if rebuild or not v["fp32"].exists():
        export.main(["--random-init", "--arch", "resnet50", "--dataset", "mpii", "--seed", str(seed), "--out", str(v["fp32"])])
    if rebuild or not v["fp32-rewritten"].exists():
        rewrite.rewrite_file(v["fp32"], v["fp32-rewritten"])
    if rebuild or not v["int8-dynamic"].exists():
        quantize.quantize(v["fp32"], v["int8-dynamic"], quantize.Config(mode="dynamic"))
    if rebuild or not v["int8-static"].exists():
        quantize.quantize(v["fp32"], v["int8-static"], quantize.Config())
    return v


def latencies(sessions: dict[str, ort.InferenceSession], feeds: dict[str, dict], runs: int, warmup: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(warmup + runs):
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, feeds[name])
            dt = (time.perf_counter() - t0) * 1000.0
            if r >= warmup:
                times[name].append(dt)
    return {k: {"median_ms": statistics.median(v), "p10_ms": float(np.percentile(v, 10)),
                "p90_ms": float(np.percentile(v, 90)), "runs": len(v)} for k, v in times.items()}


def agreement(ref: list[np.ndarray], got: list[np.ndarray], output: dict, threshold: float) -> dict:
    """How close got is to ref: the max abs difference of the outputs, and where the joints land.

    Joint locations: heatmap argmax (identical, and within 2% of the heatmap side, at least one pixel)
    or keypoint y, x (within 2% of the input side), over all joints and over the joints the reference
    is confident about (score or heatmap peak >= the card's threshold).
    """
    out = {"max_abs_diff": max(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) for a, b in zip(ref, got))}
    same, near, confident = [], [], []
    for a, b in zip(ref, got):
        if output["kind"] == "keypoints":  # (..., joints, 3): y, x normalised to the input, score
            a, b = a.reshape(-1, 3).astype(np.float64), b.reshape(-1, 3).astype(np.float64)
            d = np.abs(a[:, :2] - b[:, :2]).max(axis=1)
            same.append(d == 0)
            near.append(d <= 0.02)
            confident.append(a[:, 2] >= threshold)
        else:
            if output["layout"] == "NHWC":
                a, b = a.transpose(0, 3, 1, 2), b.transpose(0, 3, 1, 2)
            n, j, h, w = a.shape
            fa, fb = a.reshape(n * j, -1), b.reshape(n * j, -1)
            ia, ib = fa.argmax(1), fb.argmax(1)
            d = np.maximum(np.abs(ia // w - ib // w), np.abs(ia % w - ib % w))
            same.append(d == 0)
            near.append(d <= max(1.0, 0.02 * max(h, w)))
            confident.append(fa.max(1) >= threshold)
    same, near, confident = map(np.concatenate, (same, near, confident))
    out.update(joints=int(same.size), joints_identical=float(same.mean()), joints_within_2pct=float(near.mean()),
               confident_joints=int(confident.sum()),
               confident_within_2pct=float(near[confident].mean()) if confident.any() else None)
    return out


def bench(paths: dict[str, Path], reference: str, runs: int = 20, warmup: int = 3, threads: int = 1,
          max_photos: int = 8) -> dict:
    models = {k: onnx.load(str(p), load_external_data=False) for k, p in paths.items()}
    card_of = {k: cards.get_card(m) for k, m in models.items()}
    sessions = {k: open_session(p, threads) for k, p in paths.items()}
    image_paths = photos.list_images([str(d) for d in reversed(photos.default_dirs())])[:max_photos]
    if not image_paths:
        raise SystemExit("error: no photos (../shared absent)")
    inputs = {k: photos.prepare_all(image_paths, c) for k, c in card_of.items()}
    feeds = {k: {card_of[k]["input"]["name"]: inputs[k][0]} for k in paths}
    lat = latencies(sessions, feeds, runs, warmup)
    outs = {k: [sessions[k].run([card_of[k]["output"]["name"]], {card_of[k]["input"]["name"]: x})[0] for x in inputs[k]]
            for k in paths}
    ref_output = card_of[reference]["output"]
    result = {"reference": reference, "threads": threads, "batch": 1, "photos_for_agreement": len(image_paths),
              "latency_photo": image_paths[0].name, "onnxruntime": ort.__version__, "cpu": _cpu(),
              "variants": {}}
    for k, p in paths.items():
        ops = {n.op_type for n in models[k].graph.node}
        result["variants"][k] = {
            "file": str(p), "size_mb": p.stat().st_size / 1e6, "quantization": card_of[k]["quantization"],
            **lat[k], "has_convtranspose": "ConvTranspose" in ops,
            "vs_reference": (agreement(outs[reference], outs[k], ref_output, card_of[reference]["threshold"])
                             if k != reference else None),
        }
    ref_ms = lat[reference]["median_ms"]
    for k, v in result["variants"].items():
        v["speedup_vs_reference"] = ref_ms / v["median_ms"]
    return result


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                vnni = "avx512_vnni" in flags or "avx_vnni" in flags
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()}, VNNI {'yes' if vnni else 'no'})"
    except OSError:
        pass
    return platform.machine()


def table(result: dict) -> str:
    rows = ["| variant | quantization | size MB | median ms | p10-p90 ms | x ref | max abs diff "
            "| joints identical / within 2% (confident: within 2%) |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    for k, v in result["variants"].items():
        a = v["vs_reference"] or {}
        joints = ""
        if a:
            conf = a["confident_within_2pct"]
            joints = (f"{a['joints_identical']:.0%} / {a['joints_within_2pct']:.0%} of {a['joints']} "
                      f"({'-' if conf is None else f'{conf:.0%}'} of {a['confident_joints']})")
        rows.append(f"| {k} | {v['quantization']} | {v['size_mb']:.1f} | {v['median_ms']:.1f} | "
                    f"{v['p10_ms']:.0f}-{v['p90_ms']:.0f} | {v['speedup_vs_reference']:.2f} | "
                    f"{a.get('max_abs_diff', 0):.3g} | {joints} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="ONNX files to compare (default: the Simple Baselines set)")
    ap.add_argument("--reference", help="the variant the others are compared with (default: the first)")
    ap.add_argument("--workdir", default=str(ROOT / "out" / "bench"))
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if a.models:
        paths = {Path(m).stem: Path(m) for m in a.models}
    else:
        paths = build_simple_baselines(Path(a.workdir), a.rebuild)
    reference = Path(a.reference).stem if a.reference else next(iter(paths))
    result = bench(paths, reference, a.runs, a.warmup, a.threads)
    print(f"{result['cpu']}, onnxruntime {result['onnxruntime']}, batch 1, {a.threads} thread(s), "
          f"median of {a.runs} runs after {a.warmup} warm-up rounds")
    print(table(result))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
