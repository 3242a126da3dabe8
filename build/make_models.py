"""Rebuild the served INT8 models (models/int8/<name>.int8.onnx) from their FP32 sources, as models/models.json lists them.

    python -m build.make_models                 # every model (the pose models and the detector)
    python -m build.make_models --only movenet-thunder
    python -m build.make_models --check         # rebuild, then FP32 vs INT8: accuracy deltas, joints, latency
    python -m build.make_models --check-only    # only the check, on the INT8 files as they are

The options per model are its ``recipe.quantize`` in models/models.json (``RECIPES`` below; chosen with
``build/sensitivity.py``, whose header has the table of variants that chose them). Quantization itself is
``build/quantize.py`` (static QDQ, U8S8, per-channel weights); this file only adds what quantize.py has no option for:

- calibration on augmented variants of the photos (``augment``): each photo also as a horizontal flip,
  random square crops (person-sized to whole-photo-sized, zero padded at the border as the eval
  protocol's crops are), a zoomed-out copy and darker/brighter copies, then preprocessed by the
  service's own code (``pose.image.prepare``, or ``pose.detect.prepare`` for the detector), seeded, so
  a rebuild gives the same ranges; quantize.py gets them through its ``reader`` parameter.

A model that INT8 would spoil has no recipe: the layer serves its FP32 file (models.json's ``served``).

A pose model's file has a symbolic batch ``N`` with per-sample results (``build/batch_dim.py``, applied by
quantize.py): the service runs every person crop of a photo in one batch. The detector keeps its batch of 1.

Calibration photos are read in place from ../shared (never copied). Without ../shared this script
says so and stops: the committed INT8 files stay as they are and remain usable.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from build import batch_dim
from build import cards
from build import photos
from build import quantize
from local import catalog
from pose.source import sha256_of

BUILD = Path(__file__).resolve().parent
ROOT = BUILD.parent
MODELS = ROOT / "models"

# Calibration sources: names -> folders. "shared" holds only the photos cleared for the project, "eval"
# the evaluation photos (calibrating on them biases the accuracy report; see RECIPES' notes).
SOURCES = {"eval": photos.EVAL_IMAGES, "shared": photos.PROJECT_IMAGES}

# The INT8 recipe of each model that has one, from models/models.json (its "recipe"."quantize"; its "why" says
# how it was chosen). A model without one (PP-TinyPose, RTMDet-nano: static INT8 collapses both) is served as
# its FP32 file; the entry's "why_fp32" says what INT8 cost.
RECIPES: dict[str, dict] = {m.name: m.quantize for m in catalog.models() if m.quantize}


# --- calibration inputs ----------------------------------------------------------------------------------


def augmented_rgbs(rgb: np.ndarray, crops: int = 0, seed: int = 0, flip: bool = True, zoom_out: bool = True,
                   photometric: bool = True) -> list[np.ndarray]:
    """The photo, its mirror image, ``crops`` random square crops (side 0.3 to 1.0 of the longer side,
    centre anywhere in the middle 80%, zero padded outside the photo, half of them mirrored), the photo
    shrunk to half its size in a black canvas, and a dark (x0.35) and a bright (x1.3, clipped) copy."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    out = [rgb]
    if flip:
        out.append(rgb[:, ::-1].copy())
    img = Image.fromarray(rgb)
    for _ in range(crops):
        side = int(rng.uniform(0.3, 1.0) * max(h, w))
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        left, top = int(cx - side / 2), int(cy - side / 2)
        patch = np.asarray(img.crop((left, top, left + side, top + side)))
        out.append(patch[:, ::-1].copy() if rng.random() < 0.5 else patch)
    if zoom_out:
        canvas = np.zeros((h, w, 3), np.uint8)
        small = np.asarray(img.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR))
        y0, x0 = int(rng.integers(0, h - small.shape[0] + 1)), int(rng.integers(0, w - small.shape[1] + 1))
        canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
        out.append(canvas)
    if photometric:
        out.append(np.clip(rgb.astype(np.float32) * 0.35, 0, 255).astype(np.uint8))
        out.append(np.clip(rgb.astype(np.float32) * 1.3, 0, 255).astype(np.uint8))
    return out


def calibration_tensors(paths: list[Path], card: dict, augment: dict | None) -> list[np.ndarray]:
    """The model's input tensors for the photos (and their augmented variants), as the service prepares them."""
    spec, prepare = photos.input_spec(card), photos.preprocess_for(card)
    tensors = []
    for i, p in enumerate(paths):
        rgb = photos.load_rgb(p)
        variants = augmented_rgbs(rgb, seed=augment.get("seed", 0) * 100003 + i,
                                  **{k: v for k, v in augment.items() if k != "seed"}) if augment else [rgb]
        tensors += [prepare(v, spec)[0] for v in variants]
    return tensors


class TensorReader(quantize.PhotoReader):
    """quantize.PhotoReader fed with prepared tensors (augmented) instead of one tensor per photo."""

    def __init__(self, paths: list[Path], card: dict, augment: dict | None = None):  # noqa: not super().__init__
        self.input_name = card["input"]["name"]
        self.tensors = calibration_tensors(paths, card, augment)
        self._i, self._end = 0, len(self.tensors)


def source_dirs(sources: list[str]) -> list[Path]:
    dirs = [SOURCES[s] for s in sources]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise FileNotFoundError(f"calibration photos are missing: {', '.join(missing)} (the ../shared folder "
                                "beside the project); the committed models/int8 files are unchanged and usable")
    return dirs


def staged_graph(src: Path) -> onnx.ModelProto:
    """The graph as build/quantize.py quantizes it (batch fixed at 1, ConvTranspose rewrite, node names,
    quant_pre_process), so that node names resolved here are the ones it excludes."""
    import tempfile

    from build import rewrite

    model, _ = rewrite.rewrite(batch_dim.fix_batch(onnx.load(str(src))))
    quantize.unnamed_to_named(model)
    with tempfile.TemporaryDirectory(prefix="make_models.") as tmp:
        onnx.save(model, f"{tmp}/a.onnx")
        quantize.pre_process(f"{tmp}/a.onnx", f"{tmp}/b.onnx")
        return onnx.load(f"{tmp}/b.onnx")


def fp32_nodes(src: Path, recipe: dict) -> list[str]:
    """Node names kept FP32 by the recipe's ``fp32_prefix_convs`` (every node from the input up to the
    activation of that conv, counted from 0, i.e. the first layers whole) and ``fp32_patterns`` (regular
    expressions searched in node names), plus its config's ``exclude_nodes``."""
    import re

    names = list(recipe["config"].get("exclude_nodes", []))
    prefix, patterns = recipe.get("fp32_prefix_convs"), recipe.get("fp32_patterns", [])
    if prefix is None and not patterns:
        return names
    graph = staged_graph(src).graph
    if prefix is not None:
        seen = 0
        for n in graph.node:
            if seen > prefix and n.op_type not in ("Clip", "Relu"):
                break
            names.append(n.name)
            seen += n.op_type == "Conv"
    for pattern in patterns:
        names += [n.name for n in graph.node if re.search(pattern, n.name)]
    return list(dict.fromkeys(names))


def build(name: str, recipe: dict, dst: Path | None = None, src: Path | None = None,
          calibrator: quantize.Calibrator = quantize.calibrate) -> dict:
    """Quantize the model's FP32 source with its recipe into dst (default: the file it is served as);
    ``calibrator`` computes the activation ranges (quantize.calibrate, or a caller's cached one)."""
    src = src or catalog.get(name).source_path
    dst = dst or catalog.get(name).served_path
    dst.parent.mkdir(parents=True, exist_ok=True)
    dirs = source_dirs(recipe["sources"])
    config = {**recipe["config"], "exclude_nodes": fp32_nodes(src, recipe)}
    images = [str(d) for d in dirs]
    if recipe.get("exclude_photos"):  # a name prefix of photos to leave out
        images = [str(f) for f in photos.list_images(dirs) if not f.name.startswith(recipe["exclude_photos"])]
    cfg = quantize.Config(images=images, **config)
    info = quantize.quantize(src, dst, cfg, reader=functools.partial(TensorReader, augment=recipe.get("augment")),
                             calibrator=calibrator)
    # the card: quantize.py recorded the photos; add the augmentation and the number of inputs it made
    model = onnx.load(str(dst))
    card = cards.get_card(model)
    n_inputs = len(calibration_tensors(photos.list_images(dirs)[:1], card, recipe.get("augment")))
    card["calibration"]["augmentation"] = (
        {**recipe["augment"], "inputs_per_photo": n_inputs,
         "what": "original, mirror, random square crops (0.3-1.0 of the longer side, half mirrored), "
                 "half-size in a black canvas, x0.35 dark, x1.3 bright; then pose.image.prepare"}
        if recipe.get("augment") else None)
    card["calibration"]["sources"] = recipe["sources"]
    if recipe.get("exclude_photos"):
        card["calibration"]["excluded_photos"] = recipe["exclude_photos"] + "*"
    card["calibration"]["fp32_rules"] = {k: recipe[k] for k in ("fp32_prefix_convs", "fp32_patterns") if k in recipe}
    cards.set_card(model, card)
    onnx.save(model, str(dst))
    return info




# --- the check ---------------------------------------------------------------------------------------------


def compare(ref: dict, got: dict) -> dict:
    """evaluate.run results of FP32 (ref) and INT8 (got) on the same inputs -> per protocol/set: metric
    deltas (INT8 - FP32, points) and, per PCK metric, the joints FP32 got right and INT8 not (lost) and
    the reverse (gained), plus the instances whose OKS moved by more than 0.1."""
    from build import evaluate

    out = {}
    for key in ref:
        a, b = ref[key], got[key]
        ta, tb = evaluate.summarise(a), evaluate.summarise(b)
        row = {"instances": ta["instances"]}
        for metric in ta:
            if metric in ("instances", "joints_labelled"):
                continue
            row[metric] = (ta[metric], tb[metric], round(tb[metric] - ta[metric], 2))
        for metric in a[0].correct:
            ca = np.concatenate([s.correct[metric] for s in a])
            cb = np.concatenate([s.correct[metric] for s in b])
            row[f"{metric} lost/gained"] = (int((ca & ~cb).sum()), int((~ca & cb).sum()))
        if a[0].oks is not None or key[1] == "coco":
            moved = [(s.instance, round(t.oks - s.oks, 3)) for s, t in zip(a, b)
                     if s.oks is not None and t.oks is not None and abs(t.oks - s.oks) > 0.1]
            row["oks moved >0.1"] = moved
        out["/".join(key)] = row
    return out


def print_comparison(table: dict) -> None:
    for key, row in table.items():
        parts = []
        for k, v in row.items():
            if k == "instances":
                continue
            if isinstance(v, tuple) and len(v) == 3:
                parts.append(f"{k} {v[0]:.2f}->{v[1]:.2f} ({v[2]:+.2f})")
            elif isinstance(v, tuple):
                parts.append(f"{k} -{v[0]}/+{v[1]}")
            elif v:
                parts.append(f"{k} {len(v)}")
        print(f"  {key:<12} n={row['instances']:<3} " + "; ".join(parts))


def latency(paths: dict[str, Path], threads: int, runs: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median ms per model, batch 1 (a symbolic batch too), sessions opened as the service does, run in turn
    round by round in one process (so the machine's drift hits all alike)."""
    from build.bench_models import open_session

    sessions = {k: open_session(p, threads) for k, p in paths.items()}
    feeds = {}
    for k, s in sessions.items():
        i = s.get_inputs()[0]
        rng = np.random.default_rng(0)
        dtype = np.float32 if "float" in i.type else np.int32
        feeds[k] = {i.name: rng.uniform(0, 255 if dtype == np.int32 else 1, [d if isinstance(d, int) else 1 for d in i.shape]).astype(dtype)}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(warmup + runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[k])
            if r >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def check(names: list[str], runs: int = 30) -> int:
    from build import evaluate
    from pose.model import PoseModel

    if not (evaluate.EVAL / "mpii.json").is_file():
        print(f"--check: the eval set is absent ({evaluate.EVAL}); skipped")
        return 0
    for name in names:
        fp32, int8 = catalog.get(name).source_path, catalog.get(name).served_path
        if cards.get_card(onnx.load(str(int8), load_external_data=False))["output"]["kind"] in cards.card_schema.DETECTOR_OUTPUTS:
            from build import evaluate_detector  # a person detector: box AP, not joints

            print(f"{name}: FP32 vs INT8, person boxes")
            evaluate_detector.main([str(fp32), str(int8), "--runs", str(runs)])
            continue
        model = PoseModel(int8, threads=1)
        print(f"{name}: FP32 vs {model.card.quantization} ({int8.stat().st_size / 1e6:.1f} MB)")
        print_comparison(compare(evaluate.run(evaluate.Served(PoseModel(fp32, threads=1))),
                                 evaluate.run(evaluate.Served(model))))
        for threads in (1, 2):
            ms = latency({"fp32": fp32, "int8": int8}, threads, runs)
            print(f"  latency {threads} thread(s): FP32 {ms['fp32']:.1f} ms, INT8 {ms['int8']:.1f} ms "
                  f"(x{ms['fp32'] / ms['int8']:.2f}; medians of {runs} alternating runs)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(RECIPES), action="append", help="only this model (repeatable)")
    ap.add_argument("--check", action="store_true", help="after building, compare FP32 vs INT8 on ../shared/eval")
    ap.add_argument("--check-only", action="store_true", help="compare without rebuilding")
    ap.add_argument("--runs", type=int, default=30, help="latency rounds for the check")
    a = ap.parse_args(argv)
    names = a.only or list(RECIPES)
    if not a.check_only:
        for name in names:
            dst = catalog.get(name).served_path
            try:
                info = build(name, RECIPES[name])
            except FileNotFoundError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            took = f" in {info['seconds']} s" if "seconds" in info else ""
            print(f"{dst.relative_to(ROOT)}: {dst.stat().st_size:,} bytes, sha256 {sha256_of(dst)}{took}")
            print(f"  {json.dumps(RECIPES[name])}")
    if a.check or a.check_only:
        return check(names, a.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
