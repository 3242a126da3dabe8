"""Pose model and detector pairs side by side: the time of a photo's every person, at one thread.

    python -m build.bench_pipelines [--rounds 15] [--json out/bench/pipelines.json]

What POST /pose does without the annotated image (decode, detect, crops, pose runs, people), through the
service's own pipeline, for each pipeline in turn, round after round in one process (the machine's drift
hits all alike); medians per photo and pipeline, and each one's ratio to the first. Photos: the committed
tests/data/pose.jpg (one person) and Pilots.jpg (three), and, when ../shared is beside the project, the eval
photo with the most people. Then the time of one crop of each pose model in a session.run of 1, 2, 4 or 8
crops (the service's MAX_BATCH, pose/model.py), the batch sizes in turn, round after round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from build import bench_people
from pose import image
from pose.detect import open_detector
from pose.model import MAX_BATCH, PoseModel
from pose.pipeline import estimate_people

ROOT = Path(__file__).resolve().parent.parent

MODELS = ROOT / "models"
# name -> (pose model file, detector file, crops per pose run)
PIPELINES = {
    "NanoDet FP32 + MoveNet Thunder FP32, a run per crop": ("movenet-thunder.onnx", "nanodet.onnx", 1),
    "NanoDet INT8 + MoveNet Thunder INT8 (served before)": ("int8/movenet-thunder.int8.onnx",
                                                           "int8/nanodet.int8.onnx", 8),
    "RTMDet-nano FP32 + PP-TinyPose FP32 (served)": ("pp-tinypose-256x192.onnx", "rtmdet-nano.onnx", MAX_BATCH),
}


def crop_ms(rounds: int, batches: tuple[int, ...] = (1, 2, 4, 8)) -> list[dict]:
    """Median ms per crop of each pipeline's pose model when 16 crops run in batches of each size."""
    import numpy as np

    rows = []
    for pose_file in dict.fromkeys(pose for pose, _, _ in PIPELINES.values()):
        models = {b: PoseModel(MODELS / pose_file, threads=1, max_batch=b) for b in batches}
        spec = models[batches[0]].card.input
        shape = (16, 3, spec.height, spec.width) if spec.layout == "NCHW" else (16, spec.height, spec.width, 3)
        crops = np.random.default_rng(0).integers(0, 255, shape).astype(spec.dtype)
        times: dict[int, list[float]] = {b: [] for b in batches}
        for _ in range(rounds + 1):
            for b, model in models.items():
                started = time.perf_counter()
                model.run(crops)
                times[b].append((time.perf_counter() - started) / len(crops))
        rows += [{"pose": pose_file, "batch": b, "ms_per_crop": round(statistics.median(t[1:]) * 1e3, 1)}
                 for b, t in times.items()]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "pipelines.json")
    a = ap.parse_args(argv)
    loaded = {name: (PoseModel(MODELS / pose, threads=1, max_batch=batch), open_detector(MODELS / det, threads=1))
              for name, (pose, det, batch) in PIPELINES.items()}
    photos = {name: path.read_bytes() for name, path in bench_people.photos().items()}
    times: dict[tuple[str, str], list[float]] = {(p, n): [] for p in photos for n in PIPELINES}
    people: dict[tuple[str, str], int] = {}
    for _ in range(a.rounds + 1):  # the first round warms up
        for photo, data in photos.items():
            for name, (pose, detector) in loaded.items():
                started = time.perf_counter()
                found = estimate_people(image.read_photo(data), pose, detector)
                times[photo, name].append(time.perf_counter() - started)
                people[photo, name] = len(found.people)
    rows = []
    for photo in photos:
        base = statistics.median(times[photo, next(iter(PIPELINES))][1:])
        for name in PIPELINES:
            ms = statistics.median(times[photo, name][1:]) * 1e3
            rows.append({"photo": photo, "pipeline": name, "people": people[photo, name], "median_ms": round(ms, 1),
                         "ratio": round(ms / (base * 1e3), 2)})
    print("| photo | pipeline | people | median ms | ratio |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['photo']} | {r['pipeline']} | {r['people']} | {r['median_ms']} | {r['ratio']} |")
    crops = crop_ms(max(3, a.rounds // 2))
    print("\n| pose model | crops per run | ms per crop |\n|---|---:|---:|")
    for r in crops:
        print(f"| {r['pose']} | {r['batch']} | {r['ms_per_crop']} |")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"rounds": a.rounds, "threads": 1, "rows": rows, "crops": crops}, indent=1) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
