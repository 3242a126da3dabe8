"""RTMDet-nano, OpenMMLab's person detector, as a served ONNX file: the published graph with the model card.

    git --git-dir=DIR show f7cb01b156d0ddce64ea09dfd24e450103782db9:models/rtmdet_nano.onnx > /tmp/rtmdet_nano.onnx
    python -m build.card_rtmdet /tmp/rtmdet_nano.onnx                  # -> models/rtmdet-nano.onnx
    python -m build.card_rtmdet SRC --out /tmp/x.onnx --size 320 --color RGB   # variants to measure

DIR is a clone of github.com/zli20/RtmDet-RtmPose-OnnxRuntime. The file there is an mmdeploy export
(pytorch 1.11.0, opset 11) with its post-processing in the graph: input ``input`` [batch, 3, height, width]
(any size a multiple of 32), outputs ``dets`` [batch, N, 5] (x1, y1, x2, y2 in input pixels, score) and
``labels`` [batch, N] (int64), N at most 100 after the graph's own NMS (IoU 0.6, scores above 0.05), plus
one all-zero row. Its head has one class: the person-only RTMDet-nano of OpenMMLab's RTMPose project.

What this script does, and nothing else: checks the source's sha256, fixes the input at [1, 3, size, size]
(the card's size; the detector runs one photo at a time) and the outputs at batch 1, converts the graph from
opset 11 to 17 (IR 8, as the other bundled models; onnxruntime's per-channel QDQ quantization needs opset 13
or more) and checks that the converted graph gives the original's outputs bit for bit on Pilots.jpg, writes
the card (output kind ``dets``, ``build/cards.py``) and a doc string, checks the graph (``onnx.checker``) and
saves it. Weights are unchanged; two runs give the same bytes. The preprocessing facts the card records (BGR,
mmdet's mean/std, letterbox, 416) were measured: models/MODELS.md has the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter

from build import cards
from pose import detect
from pose.card import parse_detector
from pose.image import read_photo

BUILD = Path(__file__).resolve().parent
ROOT = BUILD.parent
CHECK_PHOTO = ROOT / "tests" / "data" / "Pilots.jpg"
OPSET, IR_VERSION = 17, 8
SNAPSHOT = "github.com/zli20/RtmDet-RtmPose-OnnxRuntime"
COMMIT = "f7cb01b156d0ddce64ea09dfd24e450103782db9"
PATH = "models/rtmdet_nano.onnx"
SHA256 = "4720eda18a18402e7b76d85827d4bc60fba18111fc0b74b559e4d24da9ddc3d2"
SIZE = 416  # letterboxed input side (box AP on coco_multi from 320 to 640: models/MODELS.md)
COLOR = "BGR"  # mmdet's RTMDet takes BGR (bgr_to_rgb False); the snapshot's C++ feeds RGB (a few points worse)

ATTRIBUTION = (
    "RTMDet-nano person detector by OpenMMLab (RTMDet: Lyu et al. 2022, https://github.com/open-mmlab/mmdetection; "
    "the person-only model of RTMPose, https://github.com/open-mmlab/mmpose), Apache-2.0. ONNX export by mmdeploy "
    f"as published in {SNAPSHOT} at {COMMIT[:12]} ({PATH}, from OpenMMLab's Deploee platform per that "
    "repository's README). Changes by this project: input fixed at 1x3xSxS, opset 11 converted to 17 (outputs "
    "unchanged) and this card added; weights unchanged.")


def card(size: int, color: str) -> dict:
    mean, std = cards.IMAGENET_MEAN_RGB, cards.IMAGENET_STD_RGB  # mmdet's (123.675, 116.28, 103.53) / 255 ...
    if color == "BGR":
        mean, std = mean[::-1], std[::-1]
    return cards.make_dets_card(
        name="rtmdet-nano-person", version=f"zli20-{COMMIT[:12]}",
        source=f"{SNAPSHOT} at {COMMIT}, {PATH} (sha256 {SHA256}); mmdeploy export of OpenMMLab's "
               "person-only RTMDet-nano; card added by build/card_rtmdet.py",
        license="Apache-2.0", quantization="fp32", attribution=ATTRIBUTION.replace("SxS", f"{size}x{size}"),
        input={"name": "input", "height": size, "width": size, "layout": "NCHW", "dtype": "float32",
               "color": color, "scaling": {"kind": "mean_std", "mean": list(mean), "std": list(std)}},
        dets="dets", labels="labels", class_index=None,  # one class: every row is a person
        # score_threshold: chosen by COCO keypoint AP of the whole pipeline (PP-TinyPose, 20 people) on
        # ../shared/eval/coco_multi.json: 0.1 49.2, 0.15 49.1, 0.2 48.2, 0.25 45.7, 0.3 43.9, 0.4 38.7; 0.2 is
        # the edge of the plateau, with a quarter fewer crops than 0.15. nms_iou: the graph's own, so the
        # service's NMS keeps every row.
        score_threshold=0.2, nms_iou=0.6)


def fix_shapes(model: onnx.ModelProto, size: int) -> None:
    """Input [1, 3, size, size]; outputs' batch 1, dets' last axis 5 (N stays symbolic)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, size, size)):
        dim.Clear()
        dim.dim_value = value
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        dims[0].Clear()
        dims[0].dim_value = 1
        if out.name == "dets":
            dims[2].Clear()
            dims[2].dim_value = 5


def same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, card_json: str) -> bool:
    """Both graphs give identical outputs on the check photo, prepared as the card says."""
    tensor, _ = detect.prepare(read_photo(CHECK_PHOTO.read_bytes()), parse_detector(card_json).input)
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": tensor})
            for m in (a, b)]
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(*runs))


def build(src: Path, dst: Path, size: int = SIZE, color: str = COLOR) -> str:
    """Check src, write the carded file to dst; return dst's sha256."""
    data = src.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != SHA256:
        raise ValueError(f"{src}: sha256 {got}, expected {SHA256} ({SNAPSHOT}@{COMMIT[:12]}:{PATH})")
    model = onnx.load_from_string(data)
    fix_shapes(model, size)
    c = card(size, color)
    converted = version_converter.convert_version(model, OPSET)
    converted.ir_version = IR_VERSION
    if not same_outputs(model, converted, json.dumps(c)):
        raise ValueError(f"the graph converted to opset {OPSET} gives other outputs than the original on {CHECK_PHOTO.name}")
    model = converted
    cards.set_card(model, c)
    model.doc_string = (f"{c['name']} (Apache-2.0), FP32, from {SNAPSHOT}@{COMMIT} {PATH} (sha256 {SHA256}); "
                        f"input 1x3x{size}x{size} {color}, outputs dets [1, N, 5] and labels [1, N] after the graph's NMS")
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return hashlib.sha256(dst.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help=f"{PATH} of {SNAPSHOT} at {COMMIT[:12]}")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "rtmdet-nano.onnx")
    ap.add_argument("--size", type=int, default=SIZE, help="square input side, a multiple of 32")
    ap.add_argument("--color", choices=("BGR", "RGB"), default=COLOR, help="channel order the card states")
    a = ap.parse_args(argv)
    if a.size % 32:
        ap.error("--size must be a multiple of 32 (the graph concatenates stride-32 and upsampled maps)")
    try:
        digest = build(a.src, a.out, a.size, a.color)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.out}: {a.out.stat().st_size:,} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
