"""Person box AP and speed of detector variants, side by side, through the service's own code (pose.detect).

    python -m build.evaluate_detector models/nanodet.onnx models/int8/nanodet.int8.onnx
    python -m build.evaluate_detector models/nanodet.onnx --resize letterbox stretch --sizes 416 320

Accuracy: every variant runs on each of the 23 photos of ../shared/eval/coco_multi.json (read in place) and
its person boxes (score >= 0.05, at most 100 per photo) are scored with pycocotools' COCOeval "bbox" on the
person category: AP (IoU .50:.95), AP50, AR (100 detections). Speed: the whole detector call (preprocess,
inference, decoding, NMS) on tests/data/Pilots.jpg at 1 thread, the variants called in turn round after
round in one process, median per variant (the machine's drift hits all alike).

``--sizes`` runs a model at other square input sizes: the graph's input height and width are rewritten
(NanoDet's graph is fully convolutional; its reshapes use -1) and the card says the new size.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from build import cards
from pose import detect
from pose.image import read_photo

BUILD = Path(__file__).resolve().parent
ROOT = BUILD.parent

EVAL = ROOT.parent / "shared" / "eval"
COCO_MULTI = EVAL / "coco_multi.json"
SPEED_PHOTO = ROOT / "tests" / "data" / "Pilots.jpg"
PERSON = 1  # COCO category id
AP_SCORE_THRESHOLD = 0.05
AP_MAX_DETECTIONS = 100


def with_input_size(src: Path, dst: Path, size: int) -> Path:
    """A copy of the detector at a size x size input: graph input and card rewritten, output shapes symbolic."""
    model = onnx.load(str(src))
    h, w = model.graph.input[0].type.tensor_type.shape.dim[2:]
    h.dim_value = w.dim_value = size
    for out in model.graph.output:
        for dim in out.type.tensor_type.shape.dim[1:2]:
            dim.Clear()
            dim.dim_param = f"{out.name}_cells"
    card = cards.get_card(model)
    card["input"] = {**card["input"], "height": size, "width": size}
    cards.set_card(model, card)
    onnx.save(model, str(dst))
    return dst


def box_results(detector: detect.Detector, gt) -> list[dict]:
    """COCO "bbox" results of the detector on every photo of the ground truth."""
    results = []
    for image in gt.dataset["images"]:
        rgb = read_photo((EVAL / "images" / image["file_name"]).read_bytes())
        found = detector(rgb, score_threshold=AP_SCORE_THRESHOLD, max_detections=AP_MAX_DETECTIONS)
        for (left, top, right, bottom), score in zip(found.boxes + 0.5, found.scores):  # pixel edges, as COCO
            results.append({"image_id": image["id"], "category_id": PERSON, "score": float(score),
                            "bbox": [float(left), float(top), float(right - left), float(bottom - top)]})
    return results


def box_ap(gt, results: list[dict]) -> dict[str, float]:
    """COCOeval "bbox" on the person category: AP, AP50 and AR (100 detections), in points."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AR": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.catIds = [PERSON]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": 100 * ev.stats[0], "AP50": 100 * ev.stats[1], "AR": 100 * ev.stats[8]}


def load_gt():
    from pycocotools.coco import COCO

    if not COCO_MULTI.is_file():
        raise FileNotFoundError(f"the eval set is absent: {COCO_MULTI} (clone with ../shared beside the project)")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(COCO_MULTI))


def speed(detectors: dict[str, detect.Detector], rgb: np.ndarray, runs: int, warmup: int = 3) -> dict[str, float]:
    """Median ms of one detector call per variant, called in turn round by round."""
    times: dict[str, list[float]] = {k: [] for k in detectors}
    for r in range(warmup + runs):
        for k, d in detectors.items():
            t0 = time.perf_counter()
            d(rgb)
            if r >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="detector ONNX files with a card")
    ap.add_argument("--resize", nargs="+", choices=detect.RESIZES, default=None,
                    help="input transforms to compare (default: each card's own)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[], help="also run each model at these square input sizes")
    ap.add_argument("--runs", type=int, default=30, help="timed rounds")
    ap.add_argument("--json", type=Path, help="also write the table here")
    a = ap.parse_args(argv)
    try:
        gt = load_gt()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="evaluate_detector.") as tmp:
        files = []
        for m in a.models:
            files.append((m.name, m))
            for size in a.sizes:
                files.append((f"{m.name}@{size}", with_input_size(m, Path(tmp) / f"{m.stem}.{size}.onnx", size)))
        detectors = {}
        for name, path in files:
            base = detect.open_detector(path, threads=1)
            for resize in a.resize or [base.resize]:
                detectors[(name, resize)] = detect.Detector(base.session, base.card, resize)
        ms = speed(detectors, read_photo(SPEED_PHOTO.read_bytes()), a.runs)
        for (name, resize), d in detectors.items():
            rows.append({"variant": name, "quantization": d.card.quantization, "input": d.card.input.width,
                         "resize": resize, **box_ap(gt, box_results(d, gt)), "ms": ms[(name, resize)]})
    print(f"{'variant':<28} {'quantization':<22} {'input':>5} {'resize':<10} {'AP':>5} {'AP50':>5} {'AR':>5} "
          f"{'ms (1 thread)':>13}")
    for r in rows:
        print(f"{r['variant']:<28} {r['quantization']:<22} {r['input']:>5} {r['resize']:<10} {r['AP']:5.1f} "
              f"{r['AP50']:5.1f} {r['AR']:5.1f} {r['ms']:13.1f}")
    print(f"(person box AP on {len(gt.dataset['images'])} photos of {COCO_MULTI.name}; ms: median of {a.runs} "
          f"alternating detector calls on {SPEED_PHOTO.name})")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
