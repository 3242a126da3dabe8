"""A YOLOv8/YOLO11-pose ONNX export (Ultralytics' `yolo export format=onnx`) with the model card, ready to serve.

    python -m build.card_yolo_pose SRC.onnx --out DST.onnx [--name NAME] [--license LICENSE] [--detector]

The export has one input ``images`` [1, 3, S, S] (RGB, 0..1, letterboxed with the value 114) and one output
``output0`` [1, 4 + 1 + 3K, N] of raw candidates (no NMS), and records ``imgsz`` and ``kpt_shape`` in its own
metadata; this reads them, checks that the graph is that layout with COCO's 17 joints, and writes the card
(output kind ``yolo_pose``) beside Ultralytics' metadata. Weights are unchanged. A user's own weights carry
their own licence: say it with --license (Ultralytics' released weights are AGPL-3.0).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import onnx

from build import cards
from pose.errors import ModelError  # noqa: E402  (importable once build.cards has run: handler/ on the path)

INPUT, OUTPUT = "images", "output0"
PAD = 114  # Ultralytics' LetterBox fill
# Ultralytics' predict defaults: a candidate scoring at least conf 0.25 is a person; NMS at IoU 0.7
SCORE_THRESHOLD, NMS_IOU = 0.25, 0.7
JOINT_THRESHOLD = 0.5  # a joint is drawn from this visibility score up (Ultralytics' plots use 0.5 too)


def export_facts(model: onnx.ModelProto) -> tuple[int, int]:
    """(input side, joints) of an Ultralytics pose export, checked against its graph; ValueError otherwise."""
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("task") != "pose" or "kpt_shape" not in meta or "imgsz" not in meta:
        raise ValueError("not an Ultralytics pose export: its metadata has no task 'pose', kpt_shape and imgsz")
    (height, width), (joints, values) = ast.literal_eval(meta["imgsz"]), ast.literal_eval(meta["kpt_shape"])
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.input, *model.graph.output)}
    if height != width or values != 3 or shapes.get(INPUT) != [1, 3, height, width] \
            or shapes.get(OUTPUT, [None] * 3)[:2] != [1, 5 + 3 * joints]:
        raise ValueError(f"expected a square input '{INPUT}' [1, 3, S, S] and '{OUTPUT}' [1, 5 + 3K, N] with "
                         f"(x, y, score) joints; the export has {shapes}, imgsz {meta['imgsz']}, kpt_shape {meta['kpt_shape']}")
    if joints != len(cards.COCO_JOINTS):
        raise ValueError(f"the export has {joints} joints; this tool names COCO's {len(cards.COCO_JOINTS)} only")
    return height, joints


def card(side: int, *, name: str, source: str, license: str, score_threshold: float = SCORE_THRESHOLD,
         nms_iou: float = NMS_IOU, person_detector: bool = False) -> dict:
    """The card of a COCO-17 YOLO-pose export of input side `side`."""
    return cards.make_card(
        name=name, version="1", source=source, license=license, quantization="fp32",
        input={"name": INPUT, "height": side, "width": side, "layout": "NCHW", "dtype": "float32", "color": "RGB",
               "scaling": {"kind": "range", "range": [0.0, 1.0]}, "pad": PAD},
        output={"kind": "yolo_pose", "name": OUTPUT, "score_threshold": score_threshold, "nms_iou": nms_iou,
                "person_detector": person_detector},
        joint_set_name="coco", threshold=JOINT_THRESHOLD)


def write(src: Path, dst: Path, **facts) -> dict:
    """src (an Ultralytics pose export) -> dst with the card; returns the card."""
    model = onnx.load(str(src))
    side, _ = export_facts(model)
    written = card(side, **facts)
    cards.set_card(model, written)
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="the ONNX file `yolo export format=onnx` wrote")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", help="the model's name in replies (default: the file's stem)")
    ap.add_argument("--license", default="AGPL-3.0", help="the weights' licence (Ultralytics' own: AGPL-3.0)")
    ap.add_argument("--score-threshold", type=float, default=SCORE_THRESHOLD)
    ap.add_argument("--nms-iou", type=float, default=NMS_IOU)
    ap.add_argument("--detector", action="store_true",
                    help="run on the person detector's crops (default: the model's own candidates are the people)")
    a = ap.parse_args(argv)
    try:
        written = write(a.src, a.out, name=a.name or a.src.stem, source=f"Ultralytics ONNX export {a.src.name}",
                        license=a.license, score_threshold=a.score_threshold, nms_iou=a.nms_iou,
                        person_detector=a.detector)
    except (OSError, ValueError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.out}: card {written['name']}, input {written['input']['width']}, output kind yolo_pose")
    return 0


if __name__ == "__main__":
    sys.exit(main())
