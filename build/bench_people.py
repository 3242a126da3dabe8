"""Every person in a photo, timed: one person vs every person, batched vs one pose run per person.

    python -m build.bench_people [--runs 15] [--threads 1] [--json out/bench/people.json]

In one process at MODEL_THREADS threads (default 1: what Lambda's default 2048 MB buys), with the
served pose model and the bundled detector as the function loads them, each round times, in a
rotating order, what POST /pose does without the annotated image (decode the photo's bytes, find the
people, shape the JSON reply) for each photo and each way:

- ``one person``: no detector: the whole photo with its closer look (the service before the detector);
- ``every person, batched``: detector, then all person crops in one ``session.run``;
- ``every person, a run per person``: the same with one ``session.run`` per crop.

Photos: tests/data/pose.jpg (one person), tests/data/Pilots.jpg (several) and, when ../shared is
beside the project, the eval photo with the most people (``crowd``). Medians over the rounds; the
machine may be shared: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from build.render_report import speed_table
from local import function
from pose import image
from pose.detect import open_detector
from pose.model import PoseModel
from pose.pipeline import estimate_people
from pose.reply import to_json

ROOT = Path(__file__).resolve().parent.parent

EVAL = ROOT.parent / "shared" / "eval"
WAYS = ("one person", "every person, batched", "every person, a run per person")


def photos() -> dict[str, Path]:
    found = {"pose.jpg (1 person)": ROOT / "tests" / "data" / "pose.jpg",
             "Pilots.jpg": ROOT / "tests" / "data" / "Pilots.jpg"}
    multi = EVAL / "coco_multi.json"
    if multi.is_file():
        labels = json.loads(multi.read_text())
        counts: dict[int, int] = {}
        for a in labels["annotations"]:
            if a["num_keypoints"] > 0:
                counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
        crowd = max(counts, key=counts.get)
        name = next(i["file_name"] for i in labels["images"] if i["id"] == crowd)
        found[f"crowd ({counts[crowd]} labelled people)"] = EVAL / "images" / name
    else:
        print(f"(no {multi}: the crowd photo is left out)")
    return found


def measure(runs: int = 15, warmup: int = 2, threads: int = 1) -> dict:
    """Median ms and people found per photo and way, the ways alternating round by round."""
    pose = PoseModel(function.model_path(), threads=threads)
    one_run_each = PoseModel(function.model_path(), threads=threads)
    one_run_each.batched = False  # the same graph, run once per person
    detector = open_detector(function.detector_path(), threads=threads)
    setups = {"one person": (pose, None), "every person, batched": (pose, detector),
              "every person, a run per person": (one_run_each, detector)}
    models = {"model": {"name": pose.card.name}, "detector": {"name": detector.card.name}}

    def serve(data: bytes, way: str) -> tuple[float, int]:
        model, det = setups[way]
        t = time.perf_counter()
        rgb = image.read_photo(data)
        found = estimate_people(rgb, model, det)
        json.dumps(to_json(found, model.card, model.card.threshold, (rgb.shape[1], rgb.shape[0]), models))
        return (time.perf_counter() - t) * 1e3, len(found.people)

    table = {}
    for label, path in photos().items():
        data = path.read_bytes()
        times: dict[str, list[float]] = {w: [] for w in WAYS}
        people: dict[str, int] = {}
        for r in range(warmup + runs):
            for way in WAYS[r % 3:] + WAYS[:r % 3]:
                ms, people[way] = serve(data, way)
                if r >= warmup:
                    times[way].append(ms)
        table[label] = {w: {"median_ms": round(statistics.median(times[w]), 2), "people": people[w]} for w in WAYS}
    return {"threads": threads, "runs": runs, "batched_graph": pose.batched,
            "model": f"{pose.card.name} {pose.card.quantization}",
            "detector": f"{detector.card.name} {detector.card.quantization}", "photos": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=int(os.getenv("MODEL_THREADS", "1")))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.runs, args.warmup, args.threads)
    print(speed_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
