"""Replace each ConvTranspose(4x4, stride 2, pad 1) by an ordinary convolution, exactly, before quantizing.

onnxruntime has no quantized ConvTranspose: a QDQ ConvTranspose runs as DequantizeLinear -> FP32
ConvTranspose, and dynamic quantization leaves it in FP32 altogether, so the Simple Baselines head (a third
of the model's multiply-adds and of its weights) stays FP32. After this rewrite the head is three plain
Conv nodes that quantize like the backbone.

The identity. Let x be (N, C, H, W) and W_t the (C, K, 4, 4) ConvTranspose weight. With stride 2 and
padding 1, output row m receives input row i through kernel row kh = m + 1 - 2i. Write the output rows as
m = 2q - 1 + a with a in {0, 1}: both rows 2q - 1 and 2q then read exactly input rows q - 1 and q (the same
for columns). So a 2x2 convolution over x padded by 1 (output (H + 1) x (W + 1), 4K channels), whose
channel (2a + b) * K + k holds phase (a, b) with

    W_c[(2a + b) * K + k, c, u, v] = W_t[c, k, a + 2 - 2u, b + 2 - 2v]      (u, v in {0, 1}),

followed by DepthToSpace(blocksize 2, mode DCR: channel (2a + b) * K + k goes to offset (a, b) of channel
k) gives rows and columns -1 .. 2H of the transposed convolution; slicing off the first and last row and
column leaves rows 0 .. 2H - 1, the ConvTranspose output, term for term. The multiply-adds stay
16 * C * K per input pixel (plus one row and column) and the weights keep their count, so the INT8 file
stays a quarter of the FP32 one. A following BatchNormalization is folded into the new Conv (weight and
bias), and a following Relu is moved before the DepthToSpace/Slice (both only move values), where
onnxruntime fuses it with the Conv.

A 1x1 convolution right after the last DepthToSpace/Slice (the heatmap layer of Simple Baselines) works
pixel by pixel, so it commutes with both: it is moved before them as a grouped 1x1 conv (4 groups, one
per phase, each with the original weight), and the pixel shuffle then moves 4 x joints channels instead of
4 x 256 (exact as well; it saves most of the DepthToSpace time at 64x64).

    python -m build.rewrite models/x.onnx out/x.rewritten.onnx [--check-images DIR ...]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from build import cards

REWRITE_NAME = "convtranspose4x4s2p1->conv2x2p1+DepthToSpace(DCR)+Slice"
SINK_NAME = "conv1x1 after DepthToSpace+Slice->grouped conv1x1 before them"


@dataclass
class Report:
    rewritten: list[str] = field(default_factory=list)  # ConvTranspose node names
    folded_bn: list[str] = field(default_factory=list)
    moved_relu: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (node name, reason)
    sunk_1x1: list[str] = field(default_factory=list)  # 1x1 Conv nodes moved before a DepthToSpace/Slice


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _why_not(node: onnx.NodeProto, inits: dict) -> str | None:
    """None when the node is a ConvTranspose this rewrite handles exactly; else the reason it is not."""
    a = _attrs(node)
    if node.input[1] not in inits:
        return "weight is not a constant initializer"
    w = inits[node.input[1]]
    if len(w.dims) != 4:
        return f"not 2-D (weight dims {list(w.dims)})"
    strides, pads = list(a.get("strides", [1, 1])), list(a.get("pads", [0, 0, 0, 0]))
    checks = [
        (list(w.dims[2:]) == [4, 4], f"kernel {list(w.dims[2:])} is not 4x4"),
        (strides == [2, 2], f"strides {strides} are not 2"),
        (pads == [1, 1, 1, 1], f"pads {pads} are not 1"),
        (list(a.get("dilations", [1, 1])) == [1, 1], "dilated"),
        (a.get("group", 1) == 1, "grouped"),
        (not any(a.get("output_padding", [])), "output_padding"),
        ("output_shape" not in a, "explicit output_shape"),
        (a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"), "auto_pad"),
        (len(node.input) < 3 or node.input[2] == "" or node.input[2] in inits, "bias is not a constant"),
    ]
    for ok, reason in checks:
        if not ok:
            return reason
    return None


def conv_weight(wt: np.ndarray) -> np.ndarray:
    """(C, K, 4, 4) ConvTranspose weight -> (4K, C, 2, 2) Conv weight, phases in DCR channel order."""
    c, k = wt.shape[:2]
    wc = np.empty((2, 2, k, c, 2, 2), dtype=wt.dtype)
    for a in range(2):
        for b in range(2):
            for u in range(2):
                for v in range(2):
                    wc[a, b, :, :, u, v] = wt[:, :, a + 2 - 2 * u, b + 2 - 2 * v].T
    return wc.reshape(4 * k, c, 2, 2)


def rewrite(model: onnx.ModelProto, fold_bn: bool = True, move_relu: bool = True,
            sink_1x1: bool = True) -> tuple[onnx.ModelProto, Report]:
    """Rewrite every ConvTranspose(4x4, s2, p1) of the main graph in place; returns (model, report)."""
    model, report = _rewrite_deconvs(model, fold_bn, move_relu)
    if sink_1x1 and report.rewritten:
        _sink_1x1_convs(model, report)
    return model, report


def _index(g) -> tuple[dict[str, onnx.TensorProto], dict[str, list[onnx.NodeProto]], set[str]]:
    """The graph's initializers by name, the consumers of each tensor, and the graph output names."""
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in g.node:
        for t in n.input:
            consumers[t].append(n)
    return {i.name: i for i in g.initializer}, consumers, {o.name for o in g.output}


def _rewrite_deconvs(model: onnx.ModelProto, fold_bn: bool, move_relu: bool) -> tuple[onnx.ModelProto, Report]:
    g = model.graph
    inits, consumers, graph_outputs = _index(g)
    report = Report()
    # nodes are keyed by their first output: unique in an ONNX graph, and stable (protobuf wrappers are not)
    removed: set[str] = set()
    replacement: dict[str, list[onnx.NodeProto]] = {}
    new_inits: list[onnx.TensorProto] = []

    def sole_consumer(tensor: str, op: str) -> onnx.NodeProto | None:
        users = consumers.get(tensor, [])
        if tensor in graph_outputs or len(users) != 1 or users[0].op_type != op:
            return None
        return users[0]

    for node in g.node:
        if node.op_type != "ConvTranspose":
            continue
        name = node.name or node.output[0]
        reason = _why_not(node, inits)
        if reason:
            report.skipped.append((name, reason))
            continue
        wt = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        k = wt.shape[1]
        bias = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
                if len(node.input) > 2 and node.input[2] else np.zeros(k))
        chain = [node]
        out = node.output[0]

        bn = sole_consumer(out, "BatchNormalization") if fold_bn else None
        if bn is not None and all(t in inits for t in bn.input[1:5]) and len(bn.output) == 1:
            scale, beta, mean, var = (numpy_helper.to_array(inits[t]).astype(np.float64) for t in bn.input[1:5])
            s = scale / np.sqrt(var + _attrs(bn).get("epsilon", 1e-5))
            wt = wt * s[None, :, None, None]
            bias = (bias - mean) * s + beta
            chain.append(bn)
            out = bn.output[0]
            report.folded_bn.append(bn.name or bn.output[0])
        relu = sole_consumer(out, "Relu") if move_relu else None
        if relu is not None:
            chain.append(relu)
            out = relu.output[0]
            report.moved_relu.append(relu.name or relu.output[0])

        dtype = onnx.helper.tensor_dtype_to_np_dtype(inits[node.input[1]].data_type)
        nodes, params = _as_conv(name.rstrip("/") + "/as_conv", node.input[0], out, wt, bias, dtype, relu is not None)
        new_inits += params
        replacement[node.output[0]] = nodes
        removed.update(n.output[0] for n in chain[1:])
        report.rewritten.append(name)

    if report.rewritten:
        _splice(g, replacement, removed, new_inits)  # also prunes the ConvTranspose and BatchNorm parameters
    return model, report


def _as_conv(base: str, x: str, out: str, wt: np.ndarray, bias: np.ndarray, dtype: np.dtype,
             relu: bool) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes that replace one ConvTranspose(4x4, s2, p1) (its BatchNorm folded into `wt` and `bias`), from
    tensor `x` to tensor `out`: Conv 2x2 (pads 1) -> Relu (when it moved) -> DepthToSpace(DCR, 2) ->
    Slice(1:-1 on H, W); and their new initializers, named under `base`."""
    w_name, b_name = base + "/weight", base + "/bias"
    params = [numpy_helper.from_array(conv_weight(wt).astype(dtype), w_name),
              numpy_helper.from_array(np.tile(bias, 4).astype(dtype), b_name)]
    starts, ends, axes = base + "/slice_starts", base + "/slice_ends", base + "/slice_axes"
    params += [numpy_helper.from_array(np.array(v, dtype=np.int64), nm)
               for v, nm in (([1, 1], starts), ([-1, -1], ends), ([2, 3], axes))]
    t_conv = base + "/conv_out"
    nodes = [helper.make_node("Conv", [x, w_name, b_name], [t_conv], name=base + "/Conv",
                              kernel_shape=[2, 2], pads=[1, 1, 1, 1], strides=[1, 1])]
    t_last = t_conv
    if relu:
        nodes.append(helper.make_node("Relu", [t_conv], [base + "/relu_out"], name=base + "/Relu"))
        t_last = base + "/relu_out"
    nodes.append(helper.make_node("DepthToSpace", [t_last], [base + "/d2s_out"], name=base + "/DepthToSpace",
                                  blocksize=2, mode="DCR"))
    nodes.append(helper.make_node("Slice", [base + "/d2s_out", starts, ends, axes], [out], name=base + "/Slice"))
    return nodes, params


def _sink_1x1_convs(model: onnx.ModelProto, report: Report) -> None:
    """DepthToSpace(DCR, 2) -> Slice(1:-1 on H, W) -> Conv 1x1  ==>  Conv 1x1 (4 groups) -> DepthToSpace -> Slice."""
    g = model.graph
    inits, consumers, outputs = _index(g)

    def only_user(t: str) -> onnx.NodeProto | None:
        users = consumers.get(t, [])
        return users[0] if len(users) == 1 and t not in outputs else None

    def const(name: str) -> list[int] | None:
        return numpy_helper.to_array(inits[name]).tolist() if name in inits else None

    replacement: dict[str, list[onnx.NodeProto]] = {}
    removed: set[str] = set()
    new_inits: list[onnx.TensorProto] = []
    for d2s in g.node:
        if d2s.op_type != "DepthToSpace" or _attrs(d2s).get("blocksize") != 2 or _attrs(d2s).get("mode", b"DCR") not in (b"DCR", "DCR"):
            continue
        sl = only_user(d2s.output[0])
        if sl is None or sl.op_type != "Slice" or len(sl.input) < 4:
            continue
        if [const(t) for t in sl.input[1:4]] != [[1, 1], [-1, -1], [2, 3]] or (len(sl.input) > 4 and sl.input[4]):
            continue
        conv = only_user(sl.output[0])
        if conv is None or conv.op_type != "Conv" or conv.input[1] not in inits:
            continue
        a = _attrs(conv)
        w = numpy_helper.to_array(inits[conv.input[1]])
        if (w.ndim != 4 or w.shape[2:] != (1, 1) or a.get("group", 1) != 1 or any(a.get("pads", [0] * 4))
                or list(a.get("strides", [1, 1])) != [1, 1] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
            continue
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
            continue
        j = w.shape[0]
        bias = (numpy_helper.to_array(inits[conv.input[2]]) if len(conv.input) > 2 and conv.input[2]
                else np.zeros(j, dtype=w.dtype))
        base = (conv.name or conv.output[0]).rstrip("/") + "/before_pixel_shuffle"
        w_name, b_name = base + "/weight", base + "/bias"
        new_inits.extend([numpy_helper.from_array(np.tile(w, (4, 1, 1, 1)), w_name),
                          numpy_helper.from_array(np.tile(bias, 4), b_name)])
        t_conv, t_d2s = base + "/conv_out", base + "/d2s_out"
        replacement[conv.output[0]] = [
            helper.make_node("Conv", [d2s.input[0], w_name, b_name], [t_conv], name=conv.name or base,
                             kernel_shape=[1, 1], group=4),
            helper.make_node("DepthToSpace", [t_conv], [t_d2s], name=d2s.name, blocksize=2, mode="DCR"),
            helper.make_node("Slice", [t_d2s, *sl.input[1:4]], [conv.output[0]], name=sl.name),
        ]
        removed.update((d2s.output[0], sl.output[0]))
        report.sunk_1x1.append(conv.name or conv.output[0])

    if replacement:
        _splice(g, replacement, removed, new_inits)


def _splice(g, replacement: dict, removed: set, new_inits: list) -> None:
    """Put each replacement where the node with that first output stood, drop the removed nodes, add the
    new initializers and prune the unused ones. One pass, nodes keyed by their first output (unique;
    protobuf wrappers are not stable)."""
    ordered = []
    for n in g.node:
        if n.output[0] in replacement:
            ordered += replacement[n.output[0]]
        elif n.output[0] not in removed:
            ordered.append(n)
    del g.node[:]
    g.node.extend(ordered)
    g.initializer.extend(new_inits)
    _prune(g)


def _prune(g: onnx.GraphProto) -> None:
    """Drop initializers nothing reads any more and value_info of tensors nothing produces."""
    used = {t for n in g.node for t in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    gone = {i.name for i in g.initializer} - {i.name for i in keep}
    del g.initializer[:]
    g.initializer.extend(keep)
    inputs = [i for i in g.input if i.name not in gone]  # initializers listed as inputs (IR < 4)
    del g.input[:]
    g.input.extend(inputs)
    produced = {t for n in g.node for t in n.output}
    vi = [v for v in g.value_info if v.name in produced]
    del g.value_info[:]
    g.value_info.extend(vi)


def note_in_card(model: onnx.ModelProto, report: Report) -> None:
    """Record the rewrite in the model card, when the model has one."""
    try:
        card = cards.get_card(model)
    except Exception:
        return
    done = list(card.get("graph_rewrites", []))
    for name, applied in ((REWRITE_NAME, report.rewritten), (SINK_NAME, report.sunk_1x1)):
        if applied and name not in done:
            done.append(name)
    card["graph_rewrites"] = done
    cards.set_card(model, card)


def rewrite_file(src: str | Path, dst: str | Path) -> Report:
    model = onnx.load(str(src))
    model, report = rewrite(model)
    if report.rewritten:
        note_in_card(model, report)
    onnx.checker.check_model(model, full_check=True)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return report


def max_abs_diff(a_path: str | Path, b_path: str | Path, feeds: list[dict]) -> float:
    """Largest |a - b| over all outputs and feeds, both run by onnxruntime (basic optimisations only)."""
    import onnxruntime as ort
    from pose.session import session_options

    def sess(p):
        o = session_options(None)
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        return ort.InferenceSession(str(p), o, providers=["CPUExecutionProvider"])

    sa, sb_ = sess(a_path), sess(b_path)
    worst = 0.0
    for feed in feeds:
        for x, y in zip(sa.run(None, feed), sb_.run(None, feed)):
            worst = max(worst, float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--check-images", nargs="*", help="photos/folders to compare the two graphs on "
                    "(default: ../shared photos when present)")
    ap.add_argument("--max-images", type=int, default=4)
    args = ap.parse_args(argv)
    report = rewrite_file(args.src, args.dst)
    print(f"rewrote {len(report.rewritten)} ConvTranspose (folded {len(report.folded_bn)} BatchNorm, "
          f"moved {len(report.moved_relu)} Relu, moved {len(report.sunk_1x1)} 1x1 Conv before the pixel shuffle) "
          f"-> {args.dst} ({Path(args.dst).stat().st_size / 1e6:.1f} MB)")
    for name, reason in report.skipped:
        print(f"  left as is: {name}: {reason}")
    from build import photos

    dirs = args.check_images if args.check_images is not None else [str(d) for d in photos.default_dirs()]
    paths = photos.list_images(dirs)[: args.max_images] if dirs else []
    if paths and report.rewritten:
        card = cards.get_card(onnx.load(str(args.src), load_external_data=False))
        feeds = [{card["input"]["name"]: x} for x in photos.prepare_all(paths, card)]
        print(f"max abs diff vs the original on {len(paths)} photos: {max_abs_diff(args.src, args.dst, feeds):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
