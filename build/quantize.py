"""INT8 quantization of any served pose model: static QDQ (the default) or the seed's dynamic recipe.

    python -m build.quantize models/x.onnx models/int8/x.int8.onnx             # static QDQ, U8S8, MinMax
    python -m build.quantize SRC DST --preset s8s8                              # for arm64 (Graviton)
    python -m build.quantize SRC DST --method percentile --percentile 99.999    # or --method entropy (slow)
    python -m build.quantize SRC DST --ops Conv,MatMul                          # only these op types
    python -m build.quantize SRC DST --exclude-nodes NAME --exclude-last-convs 2
    python -m build.quantize SRC DST --mode dynamic                             # the seed's baseline

Static path:

0. ``batch_dim.fix_batch``: the batch becomes a fixed 1 while quantizing (symbolic shape inference stops at a
   Resize on a symbolic batch; calibration runs one photo at a time anyway); step 5 makes it symbolic again.
1. ``build/rewrite.py``: every ConvTranspose(4x4, stride 2, pad 1) becomes Conv + DepthToSpace + Slice
   (exact), because onnxruntime has no quantized ConvTranspose. Any other ConvTranspose stays FP32.
2. ``onnxruntime.quantization.quant_pre_process`` (``pre_process``): ONNX shape inference and basic graph
   optimisations (constant folding, Identity removal), so every tensor has a shape. Its symbolic shape
   inference is skipped: with the batch fixed at 1 every shape is static, and that tool ignores GatherND's
   ``batch_dims`` (which the batch rewrite uses) and then stops; for the bundled models' fixed-batch
   sources both ways gave node- and initializer-identical quantized graphs.
3. Calibration (``calibrate``): the model runs on real person photos preprocessed by the service's own
   code (``pose.image.read_photo`` + ``pose.image.prepare`` from the model's card, or ``pose.detect.prepare``
   for a person detector), and onnxruntime's MinMax, Percentile or Entropy calibrator turns the
   activations into ranges. A caller with other inputs in mind passes its own reader (``quantize(...,
   reader=...)``); a caller that builds many variants of one model passes its own ``calibrator`` (same
   signature as ``calibrate``), e.g. one that reuses ranges already computed (build/sensitivity.py).
4. ``quantize_static`` in QDQ format: activations QUInt8 (asymmetric), weights QInt8 per output channel
   (``u8s8``: the fast path of x86-64, VNNI or not), or activations QInt8 too (``s8s8``: onnxruntime's
   recommendation for arm64; on x86-64 it runs about half as fast as u8s8).

What stays FP32: the head convolutions (Conv nodes with no quantized Conv/MatMul/Gemm after them: the
final 1x1 heatmap conv of Simple Baselines, MoveNet's four output heads, EfficientPose's last conv,
NanoDet's three class-and-box convs) and
every node after them, i.e. a model's in-graph decoding (MoveNet's sigmoid/argmax/gather/coordinate
arithmetic, EfficientPose's heatmap upscaling); a Pad with an infinite value and the node after it (NanoDet's
-inf padding before its max pool); plus whatever ``--exclude-nodes`` / ``--exclude-ops`` /
``--exclude-last-convs`` name. Before the heads, ``--ops all`` (the default) quantizes every op
onnxruntime can run in INT8 (Conv, and the Relu/Clip it fuses, Add, Concat, MaxPool, Resize, ...); for the
bundled models that measured faster and closer to FP32 than Conv and MatMul alone, whose FP32 Clip/Add
between the convolutions cost a dequantize/quantize pair each (``--ops Conv,MatMul`` still does that).

5. ``batch_dim.make_batch_dynamic`` on the result of a pose model (a detector keeps a batch of 1: one photo
   per run): batch dimension ``N`` and per-sample results at any batch
   (a no-op when the FP32 source already batches, as the bundled ones do; it checks that nothing assumes one
   image). Not for ``--mode dynamic``: its DynamicQuantizeLinear takes one activation scale over the whole
   tensor, so a batch of P is not P batch-1 runs; that file keeps a fixed batch of 1 (it is the seed's
   baseline, measured at batch 1).

The card travels with the model: ``quantization`` becomes ``int8-static-qdq-u8s8`` (``-s8s8``) or
``int8-dynamic``, and ``calibration`` records how (method, photos, op types, kept-FP32 nodes, rewrites,
sha256 of the FP32 source, onnxruntime version).

Calibration photos default to ../shared/eval/images and ../shared/images, read in place (never copied).
The evaluation set is then also the calibration set; ranges are two numbers per tensor, but for an
unbiased accuracy report calibrate on other photos (``--images``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime import quantization as oq
from onnxruntime.quantization import calibrate as oq_calibrate
from onnxruntime.quantization import registry

from build import batch_dim
from build import cards
from build import photos
from build import rewrite as deconv_rewrite
from pose.source import sha256_of

PRESETS = {  # name -> (activation type, weight type)
    "u8s8": (oq.QuantType.QUInt8, oq.QuantType.QInt8),
    "s8s8": (oq.QuantType.QInt8, oq.QuantType.QInt8),
}
METHODS = {
    "minmax": oq.CalibrationMethod.MinMax,
    "percentile": oq.CalibrationMethod.Percentile,
    "entropy": oq.CalibrationMethod.Entropy,
}
# "all": every op onnxruntime's QDQ quantizer knows, plus DepthToSpace (a pure data move that onnxruntime
# runs on uint8 once its input and output share one scale, as calibration gives them: the rewritten
# Simple Baselines head then never leaves INT8)
ALL_OPS = tuple(sorted(set(registry.QDQRegistry) | set(registry.QLinearOpsRegistry) | {"DepthToSpace"}))
HISTOGRAM_BINS = 2048
ENTROPY_QUANTIZED_BINS = 256  # KL target levels over the symmetric [-t, t] window: 128 for [0, t] (post-ReLU)
CALIBRATION_CHUNK = 8  # photos per inference batch of the calibrator (bounds the memory of histogram methods)
WEIGHTED_OPS = {"Conv", "MatMul", "Gemm"}  # what has integer kernels in onnxruntime (not ConvTranspose)


class QuantizeError(ValueError):
    """The request cannot be carried out (no photos, unknown node names, no card)."""


@dataclass
class Config:
    mode: str = "static"  # or "dynamic"
    preset: str = "u8s8"
    method: str = "minmax"
    percentile: float = 99.999
    images: list[str] | None = None  # files/folders; None: ../shared defaults
    max_images: int = 0  # 0: all
    ops: list[str] | None = None  # None: ALL_OPS (within the backbone: heads and decoding stay FP32)
    exclude_nodes: list[str] = field(default_factory=list)
    exclude_ops: list[str] = field(default_factory=list)
    exclude_last_convs: int = 0
    keep_head: bool = True  # head convolutions (no Conv/MatMul after them) stay FP32
    per_channel: bool = True
    reduce_range: bool = False
    rewrite: bool = True
    preprocess: bool = True


class PhotoReader(oq.CalibrationDataReader):
    """Feeds the model its own input tensors, one photo at a time, prepared as the service does (or by
    ``prepare``, see photos.Prepare)."""

    def __init__(self, paths: list[Path], card: dict, prepare: photos.Prepare | None = None):
        self.input_name = card["input"]["name"]
        self.tensors = photos.prepare_all(paths, card, prepare)
        self._i, self._end = 0, len(self.tensors)

    def get_next(self) -> dict | None:
        if self._i >= self._end:
            return None
        self._i += 1
        return {self.input_name: self.tensors[self._i - 1]}

    def rewind(self) -> None:
        self._i, self._end = 0, len(self.tensors)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._i, self._end = start_index, min(end_index, len(self.tensors))

    def __len__(self) -> int:
        return len(self.tensors)


# --- choosing what stays FP32 ----------------------------------------------------------------------------


def head_convs(model: onnx.ModelProto, ops: list[str] | None = None) -> list[str]:
    """Names of the Conv nodes after which no weighted op that would be quantized (Conv, MatMul, Gemm,
    among ``ops``; None: all) follows: the layers that make the outputs."""
    weighted = WEIGHTED_OPS if ops is None else WEIGHTED_OPS & set(ops)
    feeds_weighted: dict[str, bool] = defaultdict(bool)  # tensor -> a weighted op reads it, directly or later
    heads = []
    for n in reversed(model.graph.node):  # ONNX graphs are topologically sorted
        downstream = any(feeds_weighted[t] for t in n.output)
        if n.op_type == "Conv" and not downstream:
            heads.append(n.name)
        for t in n.input:
            feeds_weighted[t] |= downstream or n.op_type in weighted
    return heads[::-1]


def after_heads(model: onnx.ModelProto, heads: list[str]) -> list[str]:
    """Names of the nodes downstream of the head convolutions: a model's in-graph decoding (argmax,
    gathers, coordinate arithmetic, upsampling of the outputs), never to be quantized."""
    heads_set, tainted, tail = set(heads), set(), []
    for n in model.graph.node:
        if n.name in heads_set:
            tainted.update(n.output)
        elif any(t in tainted for t in n.input):
            tainted.update(n.output)
            tail.append(n.name)
    return tail


def infinite_pads(model: onnx.ModelProto) -> list[str]:
    """Names of the Pad nodes that pad with an infinite value (TensorFlow's -inf before a max pool, as in
    NanoDet) and of the nodes that read their output: no INT8 scale can hold that tensor's range."""
    inits = {t.name: t for t in model.graph.initializer}
    pads = [n for n in model.graph.node if n.op_type == "Pad" and len(n.input) > 2 and n.input[2] in inits
            and not np.isfinite(onnx.numpy_helper.to_array(inits[n.input[2]])).all()]
    padded = {t for n in pads for t in n.output}
    return [n.name for n in pads] + [n.name for n in model.graph.node if padded & set(n.input)]


def last_convs(model: onnx.ModelProto, n: int) -> list[str]:
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    return convs[-n:] if n > 0 else []


def kept_fp32(model: onnx.ModelProto, cfg: Config) -> dict[str, list[str]]:
    """The nodes to leave in FP32, by reason."""
    names = {n.name for n in model.graph.node}
    missing = [n for n in cfg.exclude_nodes if n not in names]
    if missing:
        raise QuantizeError(f"--exclude-nodes names not in the (pre-processed) graph: {missing}; "
                            f"e.g. {sorted(names)[:5]}")
    kept = {
        "by_name": list(cfg.exclude_nodes),
        "by_op": [n.name for n in model.graph.node if n.op_type in set(cfg.exclude_ops)],
        "last_convs": last_convs(model, cfg.exclude_last_convs),
        # a ConvTranspose the rewrite could not convert has no integer kernel: QDQ would only add a dequantize
        "conv_transpose": [n.name for n in model.graph.node if n.op_type == "ConvTranspose"],
        "infinite_pad": infinite_pads(model),
        "heads": [], "after_heads": [],
    }
    if cfg.keep_head:
        kept["heads"] = head_convs(model, cfg.ops)
        kept["after_heads"] = after_heads(model, kept["heads"])
    return kept


def _flat(kept: dict[str, list[str]]) -> list[str]:
    return list(dict.fromkeys(n for names in kept.values() for n in names))


def unnamed_to_named(model: onnx.ModelProto) -> None:
    """Exclusion works by node name: give unnamed nodes a stable one."""
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"


# --- the two recipes -------------------------------------------------------------------------------------


def _display(p: Path) -> str:
    """A photo folder as the card records it: relative to the folder holding the project and ../shared
    (made absolute without following links, so a symlinked ../shared still reads shared/...)."""
    try:
        return str(Path(os.path.abspath(p)).relative_to(photos.ROOT.parent))
    except ValueError:
        return str(p)


def pre_process(src: str | Path, dst: str | Path) -> None:
    """quant_pre_process as this recipe uses it (see the module docstring, step 2)."""
    oq.quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def calibration_paths(cfg: Config) -> tuple[list[Path], list[str]]:
    dirs = cfg.images if cfg.images is not None else [str(d) for d in photos.default_dirs()]
    paths = photos.list_images(dirs) if dirs else []
    if cfg.max_images:
        paths = paths[: cfg.max_images]
    if not paths:
        raise QuantizeError("no calibration photos (../shared absent? pass --images)")
    return paths, [_display(Path(d)) for d in dirs]


def calibrate(model_path: Path, reader: PhotoReader, cfg: Config, workdir: Path) -> oq_calibrate.TensorsData:
    """Activation ranges, by onnxruntime's calibrators with settings that make each method what it says.

    Called directly rather than through quantize_static, because quantize_static passes no histogram
    size to the Entropy calibrator, whose default (128 bins, 128 quantized bins) leaves a single
    candidate threshold: the full range, i.e. MinMax under another name. Histograms are two-sided
    (``symmetric`` off) so that a non-negative tensor (after ReLU) keeps a range starting at 0; Entropy's
    thresholds, symmetric by construction, are then clipped to the values actually seen.
    """
    method = METHODS[cfg.method]
    options = {
        "minmax": {},
        "percentile": {"num_bins": HISTOGRAM_BINS, "percentile": cfg.percentile, "symmetric": False},
        "entropy": {"num_bins": HISTOGRAM_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS, "symmetric": False},
    }[cfg.method]
    calibrator = oq.create_calibrator(model_path, cfg.ops or list(ALL_OPS),
                                      augmented_model_path=str(workdir / "augmented.onnx"),
                                      calibrate_method=method, extra_options=options)
    for start in range(0, len(reader), CALIBRATION_CHUNK):
        reader.set_range(start, start + CALIBRATION_CHUNK)
        calibrator.collect_data(reader)
    reader.rewind()
    ranges = calibrator.compute_data()
    if cfg.method == "entropy":
        for name in list(ranges.data):
            td = ranges.data[name]
            hist, edges = np.asarray(td.hist), np.asarray(td.bins)
            nonzero = np.nonzero(hist)[0]
            if nonzero.size:
                seen_lo, seen_hi = edges[nonzero[0]], edges[nonzero[-1] + 1]
                ranges.data[name] = oq_calibrate.TensorData(
                    lowest=np.asarray(max(td.lowest, seen_lo), dtype=np.float32),
                    highest=np.asarray(min(td.highest, seen_hi), dtype=np.float32), hist=hist, bins=edges)
    return ranges


# (calibration photos, the model's card) -> the reader that feeds them to the calibrator
ReaderFactory = Callable[[list[Path], dict], PhotoReader]
# (staged model, reader, cfg, work folder) -> activation ranges: ``calibrate``, or a caller's (e.g. cached) one
Calibrator = Callable[[Path, PhotoReader, Config, Path], oq_calibrate.TensorsData]


def quantize_static(src: str | Path, dst: str | Path, cfg: Config, reader: ReaderFactory = PhotoReader,
                    calibrator: Calibrator = calibrate) -> dict:
    src, dst = Path(src), Path(dst)
    model = batch_dim.fix_batch(onnx.load(str(src)))
    card = cards.get_card(model)
    act_type, weight_type = PRESETS[cfg.preset]
    paths, sources = calibration_paths(cfg)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quantize.") as tmp:
        tmp = Path(tmp)
        report = None
        if cfg.rewrite:
            model, report = deconv_rewrite.rewrite(model)
            if report.rewritten:
                deconv_rewrite.note_in_card(model, report)
                card = cards.get_card(model)
        unnamed_to_named(model)
        stage = tmp / "stage.onnx"
        onnx.save(model, str(stage))
        if cfg.preprocess:
            pre = tmp / "pre.onnx"
            pre_process(stage, pre)
            stage = pre
        kept = kept_fp32(onnx.load(str(stage), load_external_data=False), cfg)
        feed = reader(paths, card)
        cache = tmp / "ranges.json"
        oq_calibrate.save_tensors_data(calibrator(stage, feed, cfg, tmp), cache)
        oq.quantize_static(
            str(stage), str(dst), None,
            calibration_cache_path=str(cache),
            quant_format=oq.QuantFormat.QDQ,
            op_types_to_quantize=cfg.ops or list(ALL_OPS),
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            activation_type=act_type,
            weight_type=weight_type,
            nodes_to_exclude=_flat(kept),
            calibrate_method=METHODS[cfg.method],
        )
    seconds = time.perf_counter() - t0
    prep = photos.preprocess_for(card)
    calibration = {
        "format": "QDQ",
        "activations": act_type.name, "weights": weight_type.name + (" per-channel" if cfg.per_channel else ""),
        "reduce_range": cfg.reduce_range,
        "method": METHODS[cfg.method].name + (f" {cfg.percentile}" if cfg.method == "percentile" else ""),
        "images": len(paths), "image_sources": sources,
        "preprocessing": f"pose.image.read_photo + {prep.__module__}.{prep.__name__} "
                         "(the service's letterbox and scaling)",
        "op_types": cfg.ops or "all",
        "fp32_nodes": {k: v for k, v in kept.items() if v and k != "after_heads"},
        "fp32_nodes_after_heads": len(kept["after_heads"]),
        "rewritten_nodes": report.rewritten if report else [],
        "quant_pre_process": cfg.preprocess,
        "from_sha256": sha256_of(src), "onnxruntime": ort.__version__,
    }
    card["quantization"] = f"int8-static-qdq-{cfg.preset}"
    card["calibration"] = calibration
    _write_card(dst, card, batch=batch_dim.is_pose_model(card))
    return {"seconds": round(seconds, 1), **calibration}


def quantize_dynamic(src: str | Path, dst: str | Path, cfg: Config) -> dict:
    """The seed's recipe, as it was: quantize_dynamic with its defaults (ConvInteger / MatMulInteger,
    per-tensor QInt8 weights, ConvTranspose left FP32); only node exclusions are honoured."""
    src, dst = Path(src), Path(dst)
    card = cards.get_card(onnx.load(str(src), load_external_data=False))
    t0 = time.perf_counter()
    model = batch_dim.fix_batch(onnx.load(str(src)))
    unnamed_to_named(model)
    exclude = list(dict.fromkeys(cfg.exclude_nodes + [n.name for n in model.graph.node if n.op_type in set(cfg.exclude_ops)]
                                 + last_convs(model, cfg.exclude_last_convs)))
    with tempfile.TemporaryDirectory(prefix="quantize.") as tmp:
        stage = Path(tmp) / "stage.onnx"
        onnx.save(model, str(stage))
        oq.quantize_dynamic(str(stage), str(dst), weight_type=oq.QuantType.QInt8, nodes_to_exclude=exclude)
    details = {"mode": "dynamic (quantize_dynamic defaults)", "weights": "QInt8 per-tensor",
               "fp32_nodes": exclude, "from_sha256": sha256_of(src), "onnxruntime": ort.__version__}
    card["quantization"] = "int8-dynamic"
    card["calibration"] = details
    _write_card(dst, card)
    return {"seconds": round(time.perf_counter() - t0, 1), **details}


def _write_card(path: Path, card: dict, batch: bool = False) -> None:
    model = onnx.load(str(path))
    if batch:
        batch_dim.make_batch_dynamic(model)
    cards.set_card(model, card)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def quantize(src: str | Path, dst: str | Path, cfg: Config | None = None, reader: ReaderFactory = PhotoReader,
             calibrator: Calibrator = calibrate) -> dict:
    """Quantize src into dst as cfg says; ``reader`` makes the calibration reader and ``calibrator`` turns it
    into activation ranges (static mode only)."""
    cfg = cfg or Config()
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "dynamic":
        return quantize_dynamic(src, dst, cfg)
    return quantize_static(src, dst, cfg, reader, calibrator)


# --- checking a result -----------------------------------------------------------------------------------


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv/MatMul/Gemm nodes whose weight is a plain float initializer (not quantized)."""
    inits = {i.name: i for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and len(n.input) > 1
            and n.input[1] in inits and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT]


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for n in model.graph.node:
        counts[n.op_type] += 1
    return dict(sorted(counts.items()))


def _split(values: list[str] | None) -> list[str]:
    return [v for item in values or [] for v in item.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="FP32 ONNX model with a card")
    ap.add_argument("dst")
    ap.add_argument("--mode", choices=("static", "dynamic"), default="static")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="u8s8",
                    help="u8s8: activations uint8, weights int8 (x86-64); s8s8: both int8 (arm64)")
    ap.add_argument("--method", choices=sorted(METHODS), default="minmax", help="calibration method")
    ap.add_argument("--percentile", type=float, default=99.999, help="for --method percentile")
    ap.add_argument("--images", nargs="*", help="calibration photos or folders "
                    "(default: ../shared/eval/images and ../shared/images)")
    ap.add_argument("--max-images", type=int, default=0, help="use at most this many photos (0: all)")
    ap.add_argument("--ops", default="all",
                    help="op types to quantize, comma-separated (e.g. Conv,MatMul), or 'all' (the default; "
                    "the head convolutions and every node after them stay FP32 either way)")
    ap.add_argument("--exclude-nodes", nargs="*", default=[], help="node names to keep FP32")
    ap.add_argument("--exclude-ops", nargs="*", default=[], help="op types to keep FP32")
    ap.add_argument("--exclude-last-convs", type=int, default=0, help="keep the last N Conv nodes FP32")
    ap.add_argument("--no-keep-head", dest="keep_head", action="store_false",
                    help="also quantize the head convolutions (kept FP32 by default)")
    ap.add_argument("--no-per-channel", dest="per_channel", action="store_false")
    ap.add_argument("--reduce-range", action="store_true", help="7-bit weights (x86 without VNNI)")
    ap.add_argument("--no-rewrite", dest="rewrite", action="store_false", help="leave ConvTranspose as is")
    ap.add_argument("--no-preprocess", dest="preprocess", action="store_false", help="skip quant_pre_process")
    a = ap.parse_args(argv)
    cfg = Config(mode=a.mode, preset=a.preset, method=a.method, percentile=a.percentile, images=a.images,
                 max_images=a.max_images, ops=None if a.ops == "all" else _split([a.ops]),
                 exclude_nodes=_split(a.exclude_nodes), exclude_ops=_split(a.exclude_ops),
                 exclude_last_convs=a.exclude_last_convs, keep_head=a.keep_head, per_channel=a.per_channel,
                 reduce_range=a.reduce_range, rewrite=a.rewrite, preprocess=a.preprocess)
    try:
        info = quantize(a.src, a.dst, cfg)
    except (QuantizeError, cards.card_schema.ModelError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = onnx.load(a.dst)
    print(f"wrote {a.dst}: {Path(a.src).stat().st_size / 1e6:.1f} MB -> {Path(a.dst).stat().st_size / 1e6:.1f} MB "
          f"in {info['seconds']} s; quantization {cards.get_card(out)['quantization']}")
    print(f"  FP32 weighted nodes kept: {fp32_nodes(out)}")
    print(f"  ops: {json.dumps(op_counts(out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
