"""Which layers of a pose model must stay FP32 under static INT8: the search behind build/make_models.py.

    python -m build.sensitivity chunks movenet-thunder [--size 8]       # keep each run of N convs FP32 in turn
    python -m build.sensitivity convs movenet-thunder --from 0 --to 16   # keep each single conv FP32 in turn
    python -m build.sensitivity variants movenet-thunder                 # the table of whole recipes (VARIANTS)
    python -m build.sensitivity tensors movenet-thunder                  # per-tensor QDQ error (qdq_loss_debug)

Every variant is built by ``make_models.build`` (i.e. build/quantize.py) with one recipe; calibration ranges
are computed once per (model, method, photos) and reused, so a variant costs a quantization and an
evaluation (about 15 s for MoveNet on 2 cores). Each row reports, INT8 minus FP32 on ../shared/eval through
the service's code (evaluate.run): PCKh@0.5 on MPII and OKS on COCO, crops and whole-photo protocols,
the joints lost/gained (PCKh@0.5 + PCK@0.2, both protocols), and two continuous agreement measures with
FP32 on the same inputs, which are far less noisy than the means of a 38/85-instance set:
``disp%``, the mean distance between INT8 and FP32 joints in % of the input side, and ``moved``, the
share of joints moved by more than 2% of the side. Optional (``--latency``): median 1-thread latency
ratio FP32/INT8, side by side in one process.

Picking layers on the eval set is tuning on the test set; ``disp%`` and ``moved`` are also given for
inputs that are not eval photos (``agree_shared``: ../shared/images and their augmentations), and the
EfficientPose calibrates on ../shared/images only; MoveNet's chosen recipe calibrates on the eval photos
too (the shared-only variant N missed the OKS target by 0.05/0.5 points).

What the search showed (MoveNet, INT8 - FP32; x1t: FP32/INT8 1-thread latency, noisy on a shared machine):
no single run of 8 convs kept FP32 fixes it (``chunks``); per-tensor SQNR (``tensors``) drops fastest in the
first convs (40.7 dB after the stem, 30.6 after the first depthwise, ~21 by block 3) and reaches 13 dB at
the backbone's end; the whole-photo losses were mostly one person switch (the centre heatmap's argmax).

| variant (eval+shared calibration unless said) | crops mpii | crops oks | whole mpii | whole oks | lost/gained | x1t |
| A minmax, all quantized                  | -0.25 | -3.55 | -4.76 | -4.90 | -95/+23 | 1.50 |
| B A + head branches FP32                 |  0.00 | -3.42 | -5.64 | -6.19 | -97/+29 | 1.57 |
| C B + first 5 convs FP32                 | -1.01 | -1.15 | -1.78 | -4.05 | -56/+33 | 1.57 |
| D percentile 99.99                       | +0.25 | -2.82 | -4.76 | -6.47 | -92/+23 | 1.48 |
| F D + branches + first 5 convs FP32      | -0.75 | -0.68 | +0.60 | -3.41 | -45/+26 | 1.58 |
| G F at 99.999                            | -1.51 | -0.65 | -0.59 | -1.95 | -37/+23 | 1.59 |
| H G with first 8 convs                   | -0.50 | -0.74 | -0.59 | -2.30 | -42/+22 | 1.46 |
| L G with first 17 convs                  | -1.01 | -0.87 | -2.97 | -2.63 | -45/+23 | 1.37 |
| M G + FPN FP32 (chosen)                  | +1.00 | +0.06 | +1.79 | -0.35 | -10/+16 | 1.58 |
| N M on shared+augment only               | +1.00 | -1.05 | +0.60 | -1.50 | -32/+25 | 1.61 |
| O M without the first 5 convs            | +0.50 | -1.88 |  0.00 | -1.97 | -56/+21 | 1.79 |
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import onnx

from build import evaluate
from build import make_models
from build import photos
from build import quantize
from pose.model import PoseModel

# --- calibration once per (model, method, photos) ------------------------------------------------------------

_RANGES: dict = {}  # (model, photos, augmentation, method, percentile, op types) -> activation ranges


def cached_calibrator(name: str, recipe: dict) -> quantize.Calibrator:
    """quantize.calibrate for this model and recipe, reusing the ranges of an earlier variant with the same
    inputs and method: the variants of a search differ in the nodes kept FP32, which change no range."""
    inputs = (name, tuple(recipe["sources"]), json.dumps(recipe.get("augment"), sort_keys=True))

    def calibrate(model_path: Path, reader: quantize.PhotoReader, cfg: quantize.Config, workdir: Path):
        key = (inputs, cfg.method, cfg.percentile, tuple(cfg.ops or ()))
        if key not in _RANGES:
            _RANGES[key] = quantize.calibrate(model_path, reader, cfg, workdir)
        return _RANGES[key]

    return calibrate


def build_variant(name: str, recipe: dict, dst: Path) -> None:
    make_models.build(name, recipe, dst=dst, calibrator=cached_calibrator(name, recipe))


# --- scoring ---------------------------------------------------------------------------------------------------


class Scorer:
    """FP32 reference results for one model, computed once; score(int8 path) -> one row."""

    def __init__(self, name: str):
        self.name = name
        self.fp32 = PoseModel(make_models.MODELS / f"{name}.onnx", threads=1)
        self.ref = evaluate.run(evaluate.Served(self.fp32))
        self.inputs = {"eval": self._eval_inputs(), "shared": self._shared_inputs()}
        # One pass each: the displacement a quantized layer causes, not a change of crop it may lead to.
        self.ref_points = {k: [self.fp32.estimate(x).points for x in v] for k, v in self.inputs.items()}

    @staticmethod
    def _eval_inputs() -> list[np.ndarray]:
        labels = evaluate.load_labels()
        rgbs, out = {}, []
        for _, instances in labels.values():
            for inst in instances:
                if inst["image"] not in rgbs:
                    rgbs[inst["image"]] = evaluate.read_rgb(evaluate.EVAL, inst["image"])
                    out.append(rgbs[inst["image"]])
                out.append(evaluate.crop_of(rgbs[inst["image"]], inst["crop"])[0])
        return out

    @staticmethod
    def _shared_inputs() -> list[np.ndarray]:
        out = []
        for i, p in enumerate(photos.list_images([photos.PROJECT_IMAGES])):
            out += make_models.augmented_rgbs(photos.load_rgb(p), crops=12, seed=777 + i, photometric=False)
        return out

    def agreement(self, model: PoseModel, which: str) -> tuple[float, float]:
        disp = []
        for x, ref in zip(self.inputs[which], self.ref_points[which]):
            side = max(x.shape[:2])
            disp.append(np.linalg.norm(model.estimate(x).points - ref, axis=1) / side)
        d = np.concatenate(disp)
        return round(100 * float(d.mean()), 3), round(100 * float((d > 0.02).mean()), 2)

    def score(self, path: Path, latency: bool = False) -> dict:
        model = PoseModel(path, threads=1)
        table = make_models.compare(self.ref, evaluate.run(evaluate.Served(model)))
        row = {}
        for proto in ("crops", "whole"):
            if f"{proto}/mpii" in table:
                row[f"{proto}/mpii pckh"] = table[f"{proto}/mpii"]["pckh@0.5"][2]
            row[f"{proto}/coco oks"] = table[f"{proto}/coco"]["oks"][2]
        lost = sum(v[0] for t in table.values() for k, v in t.items() if k in ("pckh@0.5 lost/gained", "pck@0.2 lost/gained"))
        gained = sum(v[1] for t in table.values() for k, v in t.items() if k in ("pckh@0.5 lost/gained", "pck@0.2 lost/gained"))
        row["lost/gained"] = f"-{lost}/+{gained}"
        row["disp% eval"], row["moved% eval"] = self.agreement(model, "eval")
        row["disp% shared"], row["moved% shared"] = self.agreement(model, "shared")
        if latency:
            ms = make_models.latency({"fp32": self.fp32.path, "int8": path}, threads=1, runs=20)
            row["x1t"] = round(ms["fp32"] / ms["int8"], 2)
        return row


def print_row(label: str, row: dict, header: bool = False) -> None:
    if header:
        print(f"| {'variant':<40} | " + " | ".join(row) + " |", flush=True)
    print(f"| {label:<40} | " + " | ".join(str(v) for v in row.values()) + " |", flush=True)


def conv_names(name: str) -> list[str]:
    """Conv node names as build/quantize.py sees them (after the rewrite and quant_pre_process), minus the heads."""
    pre = make_models.staged_graph(make_models.MODELS / f"{name}.onnx")
    heads = set(quantize.head_convs(pre)) | set(quantize.after_heads(pre, quantize.head_convs(pre)))
    return [n.name for n in pre.graph.node if n.op_type == "Conv" and n.name not in heads]


def with_excluded(recipe: dict, nodes: list[str]) -> dict:
    r = copy.deepcopy(recipe)
    r["config"]["exclude_nodes"] = list(dict.fromkeys(r["config"].get("exclude_nodes", []) + nodes))
    return r


# The whole recipes compared by `variants` (the base is make_models.RECIPES[name]; each entry overrides it).
MOVENET_BRANCHES = r"kpt_(regress|offset|heatmap)_0/|center_0/"  # the four head branches (64x64, 24->96 ch)
FAST = {"sources": ["eval", "shared"], "augment": None}  # calibration for the layer search: fast

VARIANTS: dict[str, dict[str, dict]] = {
    "movenet-thunder": {
        "A minmax": {**FAST, "config": {"method": "minmax"}},
        "B minmax, branches FP32": {**FAST, "config": {"method": "minmax"}, "fp32_patterns": [MOVENET_BRANCHES]},
        "C minmax, branches + prefix 4 FP32": {**FAST, "config": {"method": "minmax"}, "fp32_patterns": [MOVENET_BRANCHES],
                                               "fp32_prefix_convs": 4},
        "D pct 99.99": {**FAST, "config": {"method": "percentile", "percentile": 99.99}},
        "E pct 99.99, branches FP32": {**FAST, "config": {"method": "percentile", "percentile": 99.99},
                                       "fp32_patterns": [MOVENET_BRANCHES]},
        "F pct 99.99, branches + prefix 4 FP32": {**FAST, "config": {"method": "percentile", "percentile": 99.99},
                                                  "fp32_patterns": [MOVENET_BRANCHES], "fp32_prefix_convs": 4},
        "G pct 99.999, branches + prefix 4 FP32": {**FAST, "config": {"method": "percentile", "percentile": 99.999},
                                                   "fp32_patterns": [MOVENET_BRANCHES], "fp32_prefix_convs": 4},
        "H pct 99.999, branches + prefix 7 FP32": {**FAST, "config": {"method": "percentile", "percentile": 99.999},
                                                   "fp32_patterns": [MOVENET_BRANCHES], "fp32_prefix_convs": 7},
        "I pct 99.999, prefix 4 FP32": {**FAST, "config": {"method": "percentile", "percentile": 99.999},
                                        "fp32_prefix_convs": 4},
        "J pct 99.9999, branches + prefix 4 FP32": {**FAST, "config": {"method": "percentile", "percentile": 99.9999},
                                                    "fp32_patterns": [MOVENET_BRANCHES], "fp32_prefix_convs": 4},
        "L pct 99.999, branches + prefix 16 FP32": {**FAST, "config": {"method": "percentile", "percentile": 99.999},
                                                    "fp32_patterns": [MOVENET_BRANCHES], "fp32_prefix_convs": 16},
        "M pct 99.999, branches + FPN + prefix 4 FP32": {
            **FAST, "config": {"method": "percentile", "percentile": 99.999}, "fp32_prefix_convs": 4,
            "fp32_patterns": [MOVENET_BRANCHES, r"model_1/(conv2d|separable_conv2d|re_lu|tf\.__operators__)", r"^Resize"]},
        "N = M, calibrated on shared+augment only": {
            "sources": ["shared"], "augment": {"crops": 40, "seed": 0},
            "config": {"method": "percentile", "percentile": 99.999}, "fp32_prefix_convs": 4,
            "fp32_patterns": [MOVENET_BRANCHES, r"model_1/(conv2d|separable_conv2d|re_lu|tf\.__operators__)", r"^Resize"]},
        "O pct 99.999, branches + FPN FP32 (no prefix)": {
            **FAST, "config": {"method": "percentile", "percentile": 99.999},
            "fp32_patterns": [MOVENET_BRANCHES, r"model_1/(conv2d|separable_conv2d|re_lu|tf\.__operators__)", r"^Resize"]},
        "K pct 99.999, branches + prefix 4, shared+augment": {
            "sources": ["shared"], "augment": {"crops": 40, "seed": 0},
            "config": {"method": "percentile", "percentile": 99.999},
            "fp32_patterns": [MOVENET_BRANCHES], "fp32_prefix_convs": 4},
    },
    "efficientpose": {
        "minmax, eval+shared, no augment": {"sources": ["eval", "shared"], "augment": None,
                                            "config": {"method": "minmax"}},
        "minmax, shared, augment": {"sources": ["shared"], "config": {"method": "minmax"}},
        "pct 99.999, shared, augment": {"sources": ["shared"],
                                        "config": {"method": "percentile", "percentile": 99.999}},
    },
}


def merged(base: dict, override: dict) -> dict:
    r = copy.deepcopy(base)
    for k, v in override.items():
        if k == "config":
            r["config"].update(v)
        else:
            r[k] = v
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("chunks", "convs", "prefix", "variants", "tensors"))
    ap.add_argument("model", choices=sorted(make_models.RECIPES))
    ap.add_argument("--size", type=int, default=8, help="convs per chunk (chunks)")
    ap.add_argument("--prefixes", type=int, nargs="*", default=[1, 4, 7, 10],
                    help="prefix: keep every node up to the activation of conv N FP32, for each N")
    ap.add_argument("--from", dest="start", type=int, default=0)
    ap.add_argument("--to", dest="stop", type=int, default=10 ** 6)
    ap.add_argument("--recipe", help="JSON overriding the base recipe (e.g. sources, config.method)")
    ap.add_argument("--only", nargs="*", help="variants: only these labels")
    ap.add_argument("--latency", action="store_true", help="add the 1-thread FP32/INT8 latency ratio")
    ap.add_argument("--keep", default="/tmp/sensitivity", help="folder for the variant files")
    a = ap.parse_args(argv)
    base = make_models.RECIPES[a.model]
    if a.recipe:
        base = merged(base, json.loads(a.recipe))
    out = Path(a.keep)
    out.mkdir(parents=True, exist_ok=True)
    if a.what == "tensors":
        return tensors(a.model, base, out)
    scorer = Scorer(a.model)
    jobs: list[tuple[str, dict]] = []
    if a.what == "variants":
        neutral = {k: v for k, v in base.items() if k not in ("fp32_prefix_convs", "fp32_patterns")}
        jobs = [(label, merged(neutral, o)) for label, o in VARIANTS[a.model].items() if not a.only or label in a.only]
    else:
        jobs.append(("base: " + json.dumps(base["config"].get("exclude_nodes") or "all quantized"), base))
        convs = conv_names(a.model)
        if a.what == "prefix":
            for p in a.prefixes:
                jobs.append((f"FP32 prefix to conv {p}", merged(base, {"fp32_prefix_convs": p})))
        elif a.what == "chunks":
            for s in range(0, len(convs), a.size):
                jobs.append((f"FP32 convs {s}-{min(s + a.size, len(convs)) - 1}", with_excluded(base, convs[s:s + a.size])))
        else:
            for i in range(a.start, min(a.stop, len(convs))):
                jobs.append((f"FP32 conv {i} {convs[i][-40:]}", with_excluded(base, [convs[i]])))
    for k, (label, recipe) in enumerate(jobs):
        dst = out / f"{a.model}.{a.what}.{k}.onnx"
        build_variant(a.model, recipe, dst)
        print_row(label, scorer.score(dst, a.latency), header=k == 0)
    return 0


def tensors(name: str, recipe: dict, out: Path) -> int:
    """Per activation tensor: SQNR (dB) of the QDQ model's tensor vs the FP32 model's, on a few shared photos;
    the lowest are where the error enters or grows."""
    from onnxruntime.quantization import qdq_loss_debug as qd

    dst = out / f"{name}.tensors.onnx"
    build_variant(name, recipe, dst)
    card = make_models.cards.get_card(onnx.load(str(dst), load_external_data=False))
    paths = photos.list_images([photos.PROJECT_IMAGES])
    tensors_ = make_models.calibration_tensors(paths, card, {"crops": 2, "seed": 5, "photometric": False})

    class Reader(quantize.oq.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{card["input"]["name"]: t} for t in tensors_])

        def get_next(self):
            return next(self.it, None)

    fp32_aug, qdq_aug = out / "fp32.aug.onnx", out / "qdq.aug.onnx"
    qd.modify_model_output_intermediate_tensors(str(make_models.MODELS / f"{name}.onnx"), str(fp32_aug))
    qd.modify_model_output_intermediate_tensors(str(dst), str(qdq_aug))
    fp = qd.collect_activations(str(fp32_aug), Reader())
    qa = qd.collect_activations(str(qdq_aug), Reader())
    matched = qd.create_activation_matching(qa, fp)
    errs = qd.compute_activation_error(matched)
    rows = sorted(((v.get("xmodel_err", float("nan")), v.get("qdq_err", float("nan")), k) for k, v in errs.items()),
                  key=lambda r: r[0])
    print("| tensor | SQNR vs FP32 model (dB) | SQNR of its own QDQ (dB) |")
    for x, q, k in rows[:40]:
        print(f"| {k[-70:]} | {x:.1f} | {q:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
