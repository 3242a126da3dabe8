"""Every person in a photo, measured: docs/people.json, then docs/people.md.

    python -m build.report_people [--quick]
    python -m build.render_report docs/people.json      # the page again from the JSON, without measuring

Side by side, through the service's own pipeline (pose/pipeline.py) on ../shared/eval:

- every person: COCO keypoint AP / AP50 / AP75 / AR (pycocotools' COCOeval) on the 23 photos of
  coco_multi.json, for one person per photo (no detector: the whole photo with its closer look, the
  service before the detector), the served default pipeline (models/models.json's defaults), each other
  served pose model with the default detector and alone, and the default pose model with each other detector;
- one person: people[0] on the whole photos (scored against the labelled person it matches best)
  and on each labelled person's crop: OKS and PCK@0.2 (COCO), PCKh@0.5 (MPII), as build/evaluate.py;
- the detectors alone: person box AP of each detector's FP32 and served files (build/evaluate_detector.py);
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
from build import provenance
from build import render_report
from local import catalog
from pose.detect import open_detector
from pose.model import PoseModel

BUILD = Path(__file__).resolve().parent
ROOT = BUILD.parent

MODELS = ROOT / "models"


def pipelines() -> dict[str, tuple[str, str | None]]:
    """name -> (pose model file, detector file or None), files under models/, from models/models.json: the
    default pose model alone and with the default detector (served), each other served pose model likewise,
    and the default pose model with each other served detector."""
    pose, detector = catalog.get(catalog.default("pose")), catalog.get(catalog.default("detector"))
    out = {"one person (no detector)": (pose.served, None), "every person (served)": (pose.served, detector.served)}
    for m in catalog.models("pose", in_layer=True):
        if m.name != pose.name:
            out[f"{m.title}, one person"] = (m.served, None)
            out[f"{m.title} + {detector.title}"] = (m.served, detector.served)
    for d in catalog.models("detector", in_layer=True):
        if d.name != detector.name:
            out[f"{pose.title} + {d.title}"] = (pose.served, d.served)
    return out


PIPELINES = pipelines()
# box AP of every detector's FP32 source and served file, files under models/
DETECTORS = tuple(dict.fromkeys(f for d in catalog.models("detector") for f in (d.source, d.served)))
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
