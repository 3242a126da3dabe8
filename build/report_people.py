"""Every person in a photo, measured: docs/people.md and docs/people.json.

    python -m build.report_people [--quick]

Side by side, through the service's own pipeline (pose/pipeline.py) on ../shared/eval:

- every person: COCO keypoint AP / AP50 / AP75 / AR (pycocotools' COCOeval) on the 23 photos of
  coco_multi.json, for one person per photo (no detector: the whole photo with its closer look, the
  service before the detector), the served default pipeline (local/function.py's defaults), MoveNet with
  NanoDet (the default before) in INT8 and in FP32, and EfficientPose;
- one person: people[0] on the whole photos (scored against the labelled person it matches best)
  and on each labelled person's crop: OKS and PCK@0.2 (COCO), PCKh@0.5 (MPII), as build/evaluate.py;
- the detectors alone: person box AP of NanoDet's FP32 and INT8 files and of RTMDet-nano's
  (build/evaluate_detector.py);
- speed at 1 thread (build/bench_people.py): one person vs every person, batched vs a run per person.

Needs ../shared beside the project; the machine may be shared: read the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from build import bench_people
from build import evaluate
from build import evaluate_detector
from pose.detect import open_detector
from pose.model import PoseModel

from local import function

BUILD = Path(__file__).resolve().parent
ROOT = BUILD.parent

MODELS = ROOT / "models"
SERVED_POSE = function.model_path(function.DEFAULT_MODEL).relative_to(MODELS).as_posix()
SERVED_DETECTOR = function.detector_path().relative_to(MODELS).as_posix()
PIPELINES = {  # name -> (pose model file, detector file or None), files under models/
    "one person (no detector)": (SERVED_POSE, None),
    "every person (served)": (SERVED_POSE, SERVED_DETECTOR),
    "MoveNet + NanoDet, INT8": ("int8/movenet-thunder.int8.onnx", "int8/nanodet.int8.onnx"),
    "MoveNet + NanoDet, FP32": ("movenet-thunder.onnx", "nanodet.onnx"),
    "EfficientPose INT8, one person": ("int8/efficientpose.int8.onnx", None),
    "EfficientPose INT8, every person": ("int8/efficientpose.int8.onnx", SERVED_DETECTOR),
}
DETECTORS = ("nanodet.onnx", "int8/nanodet.int8.onnx", "rtmdet-nano.onnx")  # box AP, files under models/
ONE_PERSON = (("whole/coco", "oks"), ("whole/coco", "pck@0.2"), ("whole/mpii", "pckh@0.5"),
              ("crops/coco", "oks"), ("crops/coco", "pck@0.2"), ("crops/mpii", "pckh@0.5"))


def accuracy(pose_file: str, detector_file: str | None) -> dict:
    model = PoseModel(MODELS / pose_file, threads=2)
    detector = open_detector(MODELS / detector_file, threads=2) if detector_file else None
    out = {"one": evaluate.report(evaluate.run(evaluate.Pipeline(model, detector)))}
    if len(model.card.joints) == 17:
        out["every"] = evaluate.coco_multi(evaluate.Pipeline(model, detector, evaluate.COCO_MAX_PEOPLE).people,
                                           model.card.joints)
    return out


def measure(quick: bool) -> dict:
    result = {"date": dt.date.today().isoformat(), "pipelines": {}}
    for name, (pose_file, detector_file) in PIPELINES.items():
        print(f"accuracy: {name}", flush=True)
        result["pipelines"][name] = {"pose": pose_file, "detector": detector_file, **accuracy(pose_file, detector_file)}
    print("detector box AP", flush=True)
    gt = evaluate_detector.load_gt()
    result["detector"] = {f: evaluate_detector.box_ap(gt, evaluate_detector.box_results(
        open_detector(MODELS / f, threads=2), gt)) for f in DETECTORS}
    print("speed", flush=True)
    result["speed"] = bench_people.measure(runs=5 if quick else 20, threads=1)
    return result


def markdown(r: dict) -> str:
    p = r["pipelines"]
    lines = ["# Every person in a photo: measured", "",
             f"Written by `make report` (build/report_people.py) on {r['date']}. The eval photos are few (23 for "
             "COCO keypoint AP, 85 COCO and 38 MPII labelled persons): compare rows, not absolute figures.", "",
             "## Every person: COCO keypoint AP on coco_multi.json (pycocotools)", "",
             "| pipeline | AP | AP50 | AP75 | AR | people answered |", "|---|---|---|---|---|---|"]
    for name, row in p.items():
        if "every" in row:
            e = row["every"]
            lines.append(f"| {name} | {e['AP']:.1f} | {e['AP50']:.1f} | {e['AP75']:.1f} | {e['AR']:.1f} | {e['people']} |")
    lines += ["", "## One person: people[0] on whole photos and on each labelled person's crop", "",
              "| pipeline | " + " | ".join(f"{k} {m}" for k, m in ONE_PERSON) + " |",
              "|---|" + "---|" * len(ONE_PERSON)]
    for name, row in p.items():
        cells = [f"{row['one'][k][m]:.1f}" if m in row["one"].get(k, {}) else "-" for k, m in ONE_PERSON]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## The detectors: person box AP on coco_multi.json", "", "| file | AP | AP50 | AR |", "|---|---|---|---|"]
    for f, d in r["detector"].items():
        lines.append(f"| models/{f} | {d['AP']:.1f} | {d['AP50']:.1f} | {d['AR']:.1f} |")
    lines += ["", "## Speed", "", bench_people.markdown(r["speed"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer speed rounds; writes out/report/people.*")
    args = parser.parse_args(argv)
    if not (evaluate.EVAL / "coco_multi.json").is_file():
        print(f"error: the eval set is absent ({evaluate.EVAL}): clone with ../shared beside the project", file=sys.stderr)
        return 2
    result = measure(args.quick)
    out = ROOT / ("out/report" if args.quick else "docs")
    out.mkdir(parents=True, exist_ok=True)
    (out / "people.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "people.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
