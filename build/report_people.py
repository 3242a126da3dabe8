"""Every person in a photo, measured: docs/people.json, then docs/people.md.

    python build/report_people.py [--quick]
    python build/render_report.py docs/people.json      # the page again from the JSON, without measuring

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

BUILD = Path(__file__).resolve().parent
ROOT = BUILD.parent
sys.path.insert(0, str(BUILD))
sys.path.insert(0, str(ROOT / "handler"))
sys.path.insert(0, str(ROOT))
import bench_people  # noqa: E402
import evaluate  # noqa: E402
import evaluate_detector  # noqa: E402
import provenance  # noqa: E402
import render_report  # noqa: E402
from pose.detect import open_detector  # noqa: E402
from pose.model import PoseModel  # noqa: E402

from local import function  # noqa: E402

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


def accuracy(pose_file: str, detector_file: str | None) -> dict:
    model = PoseModel(MODELS / pose_file, threads=2)
    detector = open_detector(MODELS / detector_file, threads=2) if detector_file else None
    out = {"one": evaluate.report(evaluate.run(evaluate.Pipeline(model, detector)))}
    if len(model.card.joints) == 17:
        out["every"] = evaluate.coco_multi(evaluate.Pipeline(model, detector, evaluate.COCO_MAX_PEOPLE).people,
                                           model.card.joints)
    return out


def measure(quick: bool, command: str) -> dict:
    """Every pipeline's accuracy, the detectors' box AP and the speed, as the JSON the page is rendered from;
    command: what ran it."""
    result = {"date": dt.date.today().isoformat(), "git": provenance.commit(), "command": command, "pipelines": {}}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer speed rounds; writes out/report/people.*")
    args = parser.parse_args(argv)
    if not (evaluate.EVAL / "coco_multi.json").is_file():
        print(f"error: the eval set is absent ({evaluate.EVAL}): clone with ../shared beside the project", file=sys.stderr)
        return 2
    result = measure(args.quick, provenance.command(__file__, argv))
    out = ROOT / ("out/report" if args.quick else "docs")
    out.mkdir(parents=True, exist_ok=True)
    (out / "people.json").write_text(json.dumps(result, indent=1, default=float))
    print(render_report.render_file(out / "people.json").read_text())  # from the JSON as written
    return 0


if __name__ == "__main__":
    sys.exit(main())
