"""Convert PP-TinyPose 256x192 from OpenVINO IR (fp16 weights) to ONNX, with the project's model card attached.

The source is PaddleDetection's PP-TinyPose 256x192 (Lite-HRNet, Apache-2.0), as the OpenVINO IR that
github.com/guojin-yan/Csharp_and_OpenVINO_deploy_PP-TinyPose holds (commit ``SNAPSHOT_COMMIT``, folder
``model/tinypose_256_192/ir_fp16``; Model Optimizer 2022.2 from the Paddle export, fp16 weights). Those files
are committed in ``models/sources/tinypose_256_192/`` (with the Paddle export's ``infer_cfg.yml``, which
gives the preprocessing), so the conversion and its check run without the snapshot::

    .venv/bin/python -m build.convert_openvino            # -> models/pp-tinypose-256x192.onnx
    .venv/bin/python -m build.convert_openvino --check    # and compare it with OpenVINO on tests/data

Steps:

1. check the sha256 of the source files against ``SOURCE_SHA256``;
2. read the IR with OpenVINO (``openvino`` in requirements-dev.txt) and run its ConstantFolding pass: the
   fp16 weights become float32 constants (the same values) and the shape arithmetic of the graph
   (ShapeOf -> StridedSlice -> Multiply feeding the Interpolate sizes) becomes constants;
3. keep the heatmap output ``conv2d_441.tmp_1`` [1, 17, 64, 48] only: the Paddle export adds an argmax
   (Reshape, TopK, Squeeze) as a second output, which the service's heatmap decoder replaces;
4. translate each remaining op into ONNX nodes (``TRANSLATORS``; opset 17): Convolution, GroupConvolution,
   Add, Relu, Concat, Split, Reshape, Transpose, Interpolate. Any other op stops the conversion, naming it.
   Tensors keep the Paddle names the IR gives them (or the node's name); constants are initializers named
   after their node. Weights are stored as float32 (``--weights fp16`` stores the identical fp16 values
   with a Cast to float32 instead: half the file, the same outputs; see models/MODELS.md for the choice);
5. the card (``build/cards.py``), producer, doc string; the symbolic batch ``N``
   (``build/batch_dim.make_batch_dynamic``); ``onnx.checker``.

Deterministic: the same sources and tool versions give the same bytes (names come from the IR, nodes
in the IR's topological order; nothing time- or path-dependent is written). ``--check`` runs OpenVINO
itself on the untouched IR (CPU, float32 inference precision: the CPU plugin would otherwise compute
in bf16 on CPUs that have it) and onnxruntime on the ONNX file, on the committed photos prepared by the
service's own preprocessing, and prints the largest absolute difference of the heatmaps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from build import batch_dim
from build import cards
from build import photos
from pose.source import sha256_of

BUILD = Path(__file__).resolve().parent
ROOT = BUILD.parent

OPSET = 17
IR_VERSION = 8  # as the other bundled files
SOURCE_DIR = ROOT / "models" / "sources" / "tinypose_256_192"
OUT = ROOT / "models" / "pp-tinypose-256x192.onnx"
SCORE_MAPS = ROOT / "models" / "score-maps" / "pp-tinypose-256x192.json"  # build/calibrate_scores.py fits them
SNAPSHOT_REPO = "github.com/guojin-yan/Csharp_and_OpenVINO_deploy_PP-TinyPose"
SNAPSHOT_COMMIT = "0f6a4845d37b5b16edacbb76f1b1debb39e28a11"
SNAPSHOT_DIR = "model/tinypose_256_192"
# file here -> (its path in the snapshot, sha256)
SOURCE_SHA256 = {
    "model.xml": ("ir_fp16/model.xml", "71990905e8ee8de250c57c4d52a6bb25028fecb7f3fc35d43707febefa45ba14"),
    "model.bin": ("ir_fp16/model.bin", "b16cdb387b96f431c4e0052a8f1c5344bb5cc7c71cc14e245be260624968e462"),
    "model.mapping": ("ir_fp16/model.mapping", "927a3ceecd57722968bf5c759ab4745debb985bf18f24df4d54630dd8ce89a99"),
    "infer_cfg.yml": ("paddle/infer_cfg.yml", "6943ff04a7157ed923e43cd17d4e99cd2c5eaf194baf5a4066f203cbca0d8f54"),
}
HEATMAPS = "conv2d_441.tmp_1"  # the IR's heatmap output; its other output is an argmax of it
PHOTOS = [ROOT / "tests" / "data" / p for p in ("pose.jpg", "Pilots.jpg", "astronaut.png")]

ATTRIBUTION = (
    "PP-TinyPose 256x192 (Lite-HRNet) from PaddleDetection, (c) PaddlePaddle Authors, Apache-2.0, "
    "https://github.com/PaddlePaddle/PaddleDetection (configs/keypoint/tiny_pose). OpenVINO IR (fp16) made with "
    f"Model Optimizer 2022.2.0 from the Paddle export by Guojin Yan, {SNAPSHOT_REPO} @ {SNAPSHOT_COMMIT[:7]}. "
    "Converted from OpenVINO IR to ONNX by this project (format conversion only: the fp16 weights unchanged; "
    "the export's argmax output dropped).")
CARD = {
    "name": "pp-tinypose-256x192",
    "version": "paddledetection-tinypose_256x192",
    "license": "Apache-2.0",
    "attribution": ATTRIBUTION,
    # infer_cfg.yml: TopDownEvalAffine to 192x256, NormalizeImage is_scale (x / 255) with ImageNet's mean and
    # std, Permute (HWC -> CHW); the Paddle reader decodes RGB; Model Optimizer added no mean/scale or reversal
    "input": {"height": 256, "width": 192, "layout": "NCHW", "dtype": "float32", "color": "RGB",
              "scaling": {"kind": "mean_std", "mean": list(cards.IMAGENET_MEAN_RGB), "std": list(cards.IMAGENET_STD_RGB)}},
    "output": {"kind": "heatmaps", "name": HEATMAPS, "layout": "NCHW"},
    "joint_set_name": "coco",
    # top-down: trained on person crops, so its look at a whole photo is no answer of its own (pose/pipeline.py)
    "whole_photo": False,
}


class ConversionError(ValueError):
    """The IR has something this converter does not translate (it never guesses)."""


def check_sources(source_dir: Path) -> None:
    for name, (_, want) in SOURCE_SHA256.items():
        got = sha256_of(source_dir / name)
        if got != want:
            raise ConversionError(f"{source_dir / name}: sha256 {got}, expected {want}")


# -- reading the IR ------------------------------------------------------------------------------------


def read_ir(xml: Path, fold: bool = True):
    """The IR as an openvino.Model, constant-folded by OpenVINO's own pass unless ``fold`` is False."""
    import openvino as ov
    from openvino import passes

    model = ov.Core().read_model(str(xml))
    if fold:
        manager = passes.Manager()
        manager.register_pass(passes.ConstantFolding())
        manager.run_passes(model)
    return model


def openvino_outputs(xml: Path, tensors: list[np.ndarray], output: str = HEATMAPS) -> list[np.ndarray]:
    """OpenVINO's own output ``output`` of the unmodified IR for each (1, ...) tensor, CPU, float32 precision."""
    import openvino as ov

    compiled = ov.Core().compile_model(read_ir(xml, fold=False), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return [request.infer({0: t})[compiled.output(output)].copy() for t in tensors]


# -- translation ---------------------------------------------------------------------------------------


class Graph:
    """The ONNX graph being built: names for OpenVINO outputs, initializers, nodes."""

    def __init__(self, weights: str):
        self.weights = weights
        self.names: dict[tuple[str, int], str] = {}  # (OpenVINO node name, port) -> ONNX tensor
        self.taken: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def claim(self, name: str) -> str:
        """``name``, which must be new in the graph (IR names are unique; a clash is refused, not renamed)."""
        if name in self.taken:
            raise ConversionError(f"two tensors would be named {name!r}")
        self.taken.add(name)
        return name

    def output_name(self, node, port: int = 0) -> str:
        """The ONNX name of an OpenVINO node's output: its IR tensor name, else the node's name."""
        key = (node.get_friendly_name(), port)
        if key not in self.names:
            names = sorted(node.output(port).get_names())
            base = names[0] if names else node.get_friendly_name() + (f":{port}" if node.get_output_size() > 1 else "")
            self.names[key] = self.claim(base)
        return self.names[key]

    def initializer(self, name: str, value: np.ndarray) -> str:
        """A float32 or int64 initializer; float32 as float16 plus a Cast when so asked and exact."""
        name = self.claim(name)
        if value.dtype == np.float32 and self.weights == "fp16":
            half = value.astype(np.float16)
            if not np.array_equal(half.astype(np.float32), value):
                raise ConversionError(f"constant {name} is not exactly representable in float16")
            self.initializers.append(numpy_helper.from_array(half, self.claim(name + "/fp16")))
            self.nodes.append(helper.make_node("Cast", [name + "/fp16"], [name], name=name + "/cast", to=TensorProto.FLOAT))
        else:
            self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, ov_node, inputs: list[str], outputs: list[str] | None = None, **attrs) -> None:
        outputs = outputs or [self.output_name(ov_node)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=ov_node.get_friendly_name(), **attrs))

    def data(self, ov_node, index: int) -> str:
        """The ONNX tensor of input ``index``: the producer's output, or an initializer for a constant."""
        src = ov_node.input_value(index)
        producer = src.get_node()
        if producer.get_type_name() == "Constant":
            key = (producer.get_friendly_name(), src.get_index())
            if key not in self.names:
                value = constant(ov_node, index)
                if value.dtype != np.float32:
                    raise ConversionError(f"{ov_node.get_friendly_name()}: input {index} is a {value.dtype} constant")
                self.names[key] = self.initializer(producer.get_friendly_name(), value)
            return self.names[key]
        return self.output_name(producer, src.get_index())


def constant(ov_node, index: int, dtype=None) -> np.ndarray:
    """The value of input ``index``, which must be a constant once folded."""
    producer = ov_node.input_value(index).get_node()
    if producer.get_type_name() != "Constant":
        raise ConversionError(f"{ov_node.get_type_name()} {ov_node.get_friendly_name()}: input {index} is computed "
                              f"({producer.get_type_name()}), a constant is needed")
    value = producer.get_data()
    return np.ascontiguousarray(value if dtype is None else value.astype(dtype))


def _static_shape(output) -> list[int]:
    shape = output.get_partial_shape()
    if not shape.is_static:
        raise ConversionError(f"{output.get_node().get_friendly_name()}: shape {shape} is not static")
    return [int(d) for d in shape.to_shape()]


def _conv_attrs(n) -> dict:
    a = n.get_attributes()
    if a["auto_pad"] not in ("explicit", "notset"):
        raise ConversionError(f"{n.get_friendly_name()}: auto_pad {a['auto_pad']} is not translated")
    return {"strides": list(a["strides"]), "dilations": list(a["dilations"]),
            "pads": list(a["pads_begin"]) + list(a["pads_end"])}


def _convolution(g: Graph, n) -> None:
    g.node("Conv", n, [g.data(n, 0), g.data(n, 1)], **_conv_attrs(n))


def _group_convolution(g: Graph, n) -> None:
    """Weights [G, C_out/G, C_in/G, kh, kw] -> ONNX Conv with group G and weights [C_out, C_in/G, kh, kw]."""
    w = constant(n, 1, np.float32)
    name = g.initializer(n.input_value(1).get_node().get_friendly_name(), w.reshape(-1, *w.shape[2:]))
    g.node("Conv", n, [g.data(n, 0), name], group=int(w.shape[0]), **_conv_attrs(n))


def _add(g: Graph, n) -> None:
    if n.get_attributes()["auto_broadcast"] != "numpy":
        raise ConversionError(f"{n.get_friendly_name()}: only numpy broadcasting is translated")
    g.node("Add", n, [g.data(n, 0), g.data(n, 1)])


def _relu(g: Graph, n) -> None:
    g.node("Relu", n, [g.data(n, 0)])


def _concat(g: Graph, n) -> None:
    g.node("Concat", n, [g.data(n, i) for i in range(n.get_input_size())], axis=int(n.get_attributes()["axis"]))


def _split(g: Graph, n) -> None:
    """Split into ``num_splits`` equal parts along a constant axis."""
    axis = int(constant(n, 1).item())
    parts = int(n.get_attributes()["num_splits"])
    length = _static_shape(n.input_value(0))[axis]
    sizes = g.initializer(f"{n.get_friendly_name()}/split", np.full(parts, length // parts, np.int64))
    g.node("Split", n, [g.data(n, 0), sizes], [g.output_name(n, k) for k in range(parts)], axis=axis)


def _reshape(g: Graph, n) -> None:
    target = constant(n, 1, np.int64)
    if not n.get_attributes()["special_zero"] and (target == 0).any():
        raise ConversionError(f"{n.get_friendly_name()}: a literal 0 in a Reshape target is not translated")
    g.node("Reshape", n, [g.data(n, 0), g.initializer(f"{n.get_friendly_name()}/shape", target)])


def _transpose(g: Graph, n) -> None:
    g.node("Transpose", n, [g.data(n, 0)], perm=[int(p) for p in constant(n, 1)])


# OpenVINO Interpolate (v4) -> ONNX Resize: mode, coordinate_transformation_mode, nearest_mode
INTERPOLATE_MODES = {"nearest": "nearest", "linear_onnx": "linear"}
NEAREST_MODES = {"simple": "floor", "floor": "floor", "round_prefer_floor": "round_prefer_floor",
                 "round_prefer_ceil": "round_prefer_ceil", "ceil": "ceil"}


def _interpolate(g: Graph, n) -> None:
    """As ONNX Resize by integer scales on every axis (batch and channels 1): Resize by output sizes would
    fix the batch. OpenVINO's 'simple' nearest rounding is floor when upsampling, the only case taken."""
    a = n.get_attributes()
    if a["mode"] not in INTERPOLATE_MODES or a["antialias"] or any(a["pads_begin"]) or any(a["pads_end"]):
        raise ConversionError(f"{n.get_friendly_name()}: Interpolate {a['mode']} (antialias {a['antialias']}, "
                              f"pads {a['pads_begin']} {a['pads_end']}) is not translated")
    if n.get_input_size() > 3:
        raise ConversionError(f"{n.get_friendly_name()}: Interpolate with an axes input is not translated")
    src, dst = _static_shape(n.input_value(0)), _static_shape(n.output(0))
    scales = [d / s for s, d in zip(src, dst)]
    if any(d % s for s, d in zip(src, dst)) or scales[0] != 1:
        raise ConversionError(f"{n.get_friendly_name()}: Interpolate from {src} to {dst} is not by integer scales")
    attrs = {"mode": INTERPOLATE_MODES[a["mode"]], "coordinate_transformation_mode": a["coordinate_transformation_mode"]}
    if a["mode"] == "nearest":
        attrs["nearest_mode"] = NEAREST_MODES[a["nearest_mode"]]
    scales_name = g.initializer(f"{n.get_friendly_name()}/scales", np.asarray(scales, np.float32))
    g.node("Resize", n, [g.data(n, 0), "", scales_name], **attrs)


TRANSLATORS: dict[str, Callable[[Graph, object], None]] = {
    "Convolution": _convolution,
    "GroupConvolution": _group_convolution,
    "Add": _add,
    "Relu": _relu,
    "Concat": _concat,
    "Split": _split,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Interpolate": _interpolate,
}
VERSIONED = {"Interpolate": "opset4"}  # ops whose semantics changed between opsets: the version translated


def _needed(model, result) -> list:
    """The nodes ``result`` depends on, in the model's topological order (Parameters and Constants out)."""
    need = set()
    stack = [result]
    while stack:
        node = stack.pop()
        key = node.get_friendly_name()
        if key in need:
            continue
        need.add(key)
        stack += [node.input_value(i).get_node() for i in range(node.get_input_size())]
    return [op for op in model.get_ordered_ops()
            if op.get_friendly_name() in need and op.get_type_name() not in ("Parameter", "Constant", "Result")]


def to_onnx(model, output: str = HEATMAPS, weights: str = "fp32") -> onnx.ModelProto:
    """The part of the (folded) OpenVINO model that computes ``output``, as an ONNX model (batch 1, no card)."""
    if len(model.inputs) != 1:
        raise ConversionError(f"one input expected, the IR has {len(model.inputs)}")
    results = [r for r in model.get_results() if output in r.input_value(0).get_names()]
    if len(results) != 1:
        raise ConversionError(f"output {output} not found among {[sorted(o.get_names()) for o in model.outputs]}")
    nodes = _needed(model, results[0])
    unknown = sorted({f"{n.get_type_name()} ({n.get_type_info().version_id})" for n in nodes
                      if n.get_type_name() not in TRANSLATORS
                      or VERSIONED.get(n.get_type_name(), n.get_type_info().version_id) != n.get_type_info().version_id})
    if unknown:
        raise ConversionError(f"OpenVINO ops this converter does not translate: {', '.join(unknown)}")
    g = Graph(weights)
    param = model.get_parameters()[0]
    inp = g.output_name(param)
    for n in nodes:
        TRANSLATORS[n.get_type_name()](g, n)
    out = g.output_name(results[0].input_value(0).get_node(), results[0].input_value(0).get_index())
    if out != output:
        raise ConversionError(f"the heatmap tensor came out as {out}, not {output}")
    graph = helper.make_graph(
        g.nodes, "pp_tinypose_256x192",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, _static_shape(param.output(0)))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, _static_shape(results[0].input_value(0)))],
        initializer=g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


# -- the whole conversion ------------------------------------------------------------------------------


def convert(source_dir: Path = SOURCE_DIR, weights: str = "fp32", score_maps: Path | None = SCORE_MAPS) -> onnx.ModelProto:
    """The served ONNX model: translated, carded (with the score maps fitted for it, when the file is
    there), with a symbolic batch, checked by onnx.checker."""
    import openvino as ov

    check_sources(source_dir)
    model = to_onnx(read_ir(source_dir / "model.xml"), HEATMAPS, weights)
    spec = dict(CARD)
    spec["input"] = {"name": model.graph.input[0].name, **spec["input"]}
    shas = "; ".join(f"{SNAPSHOT_DIR}/{path} sha256 {sha}" for path, sha in SOURCE_SHA256.values())
    spec["source"] = (f"{SNAPSHOT_REPO} @ {SNAPSHOT_COMMIT}: {shas}; committed as models/sources/tinypose_256_192/; "
                      f"converted by build/convert_openvino.py (openvino {ov.get_version().split('-')[0]}, "
                      f"onnx opset {OPSET}, weights {weights})")
    if score_maps is not None and score_maps.is_file():
        spec["score_maps"] = json.loads(score_maps.read_text())
    card = cards.make_card(quantization="fp32" if weights == "fp32" else "fp16-weights", threshold=0.6, **spec)
    cards.set_card(model, card)
    model.producer_name = "build/convert_openvino.py"
    model.producer_version = f"openvino {ov.get_version().split('-')[0]}"
    inp, out = model.graph.input[0], model.graph.output[0]
    model.doc_string = (
        f"{card['name']} (Apache-2.0), weights {weights}, converted from the OpenVINO IR "
        f"{SNAPSHOT_DIR}/ir_fp16 of {SNAPSHOT_REPO} @ {SNAPSHOT_COMMIT} by build/convert_openvino.py. {ATTRIBUTION} "
        f"Per sample: input {inp.name} [1, 3, 256, 192] (NCHW RGB, ImageNet mean/std), output {out.name} "
        "[1, 17, 64, 48] (COCO heatmaps). How to feed and read it: the JSON card under metadata key 'pose'.")
    batch_dim.make_batch_dynamic(model)
    onnx.checker.check_model(model)
    return model


def photo_tensors(model: onnx.ModelProto, paths: list[Path] = PHOTOS) -> list[np.ndarray]:
    """The photos prepared by the service's own preprocessing for this model's card."""
    return photos.prepare_all(paths, cards.get_card(model))


def max_diffs(onnx_path: Path, source_dir: Path = SOURCE_DIR, paths: list[Path] = PHOTOS) -> dict[str, float]:
    """Per photo: the largest |onnxruntime heatmap - OpenVINO heatmap| (OpenVINO on the untouched IR)."""
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    tensors = photo_tensors(model, paths)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    ours = [session.run([HEATMAPS], {name: t})[0] for t in tensors]
    theirs = openvino_outputs(source_dir / "model.xml", tensors)
    return {p.name: float(np.abs(a - b).max()) for p, a, b in zip(paths, ours, theirs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source-dir", type=Path, default=SOURCE_DIR, help=f"the IR files (default {SOURCE_DIR.relative_to(ROOT)})")
    ap.add_argument("--out", type=Path, default=OUT, help=f"the ONNX file (default {OUT.relative_to(ROOT)})")
    ap.add_argument("--weights", choices=("fp32", "fp16"), default="fp32",
                    help="float32 initializers (default), or the fp16 values with a Cast")
    ap.add_argument("--check", action="store_true", help="then compare with OpenVINO on the committed photos")
    args = ap.parse_args(argv)
    try:
        model = convert(args.source_dir, args.weights)
    except ConversionError as exc:
        sys.exit(f"error: {exc}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.out))
    print(f"wrote {args.out}  {args.out.stat().st_size} bytes  sha256 {sha256_of(args.out)}  "
          f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers")
    if args.check:
        for photo, diff in max_diffs(args.out, args.source_dir).items():
            print(f"  {photo}: max |ONNX - OpenVINO| {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
