"""Give an ONNX model a dynamic batch: first input and output dimension symbolic ("N"), per-sample results.

The service sends every person crop of a photo through the pose model in one ``session.run`` on a tensor
[P, ...]. Making the batch dimension of the graph's input and output symbolic is not enough when the graph
itself assumes one image: MoveNet's in-graph decoding (from TensorFlow's single-pose CenterNet code) builds
GatherND indices with a literal batch index 0, reshapes to [17, -1], and mixes [64, 64, 17] tensors that
have no batch axis at all. ``make_batch_dynamic`` rewrites such a graph so that at batch P it computes
exactly what P runs at batch 1 compute (a "vectorising map" of the batch-1 graph over a new leading axis).

How. One onnxruntime run at batch 1 gives the per-sample shape of every tensor and the values of the small
integer tensors (reshape shapes, slice bounds, pads, axes). Then, in node order, every tensor that depends
on the input is held in one of two layouts, both with the batch first:

* ``R`` (replaced): the per-sample shape starts with the batch-1 axis, and that axis now holds the batch:
  [P] + s[1:]. The convolutional body of every model stays like this, node for node, unchanged.
* ``I`` (inserted): a per-sample tensor that has no batch axis (MoveNet's [17], [64, 64, 17]) gets a new
  leading one: [P] + s.

Each op that reads a batched tensor keeps it as it is when it already works per sample in ``R`` (Conv,
Resize, elementwise ops of equal rank, Transpose/ArgMax/Concat/Split... away from axis 0, GatherND with
batch_dims >= 1); otherwise it moves to ``I`` with its axes shifted by one (Unsqueeze/Squeeze on axis 1
convert; constants that must meet a batched tensor in a Concat or GatherND are Expanded to the batch size,
read with ``Shape(input)[0:1]``; GatherND gets batch_dims + 1). A Reshape gets the per-sample target shape
with -1 for the batch; shape-like inputs computed from ``Shape`` of a batched tensor are replaced by their
batch-1 values (the input size is fixed, so they are constants). An op it has no rule for, reading a
batched tensor, raises ``BatchDimError``: the graph is never silently left wrong. The model card and
other metadata are not touched.

The rewrite is idempotent: on its own output (and on a graph that already batches, like the PyTorch export
of Simple Baselines) it changes nothing but the dimension's name, so every build step may apply it.
``batch_mismatch`` checks the result with onnxruntime: a batch of P inputs against P batch-1 runs.

    python -m build.batch_dim SRC.onnx DST.onnx [--check-images tests/data/pose.jpg ...]
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

DIM = "N"
TAG = "batch_dim"  # names of the tensors, nodes and constants this module adds contain "/batch_dim/"

ELEMENTWISE = {
    "Abs", "Add", "And", "Cast", "Ceil", "Clip", "DequantizeLinear", "Div", "Elu", "Equal", "Erf", "Exp", "Floor",
    "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "IsNaN", "LeakyRelu", "Less",
    "LessOrEqual", "Log", "Max", "Mean", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu",
    "QuantizeLinear", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Softplus", "Sqrt", "Sub", "Sum",
    "Tanh", "Where", "Xor",
}
# ops that read a batch-first tensor and treat every sample alone; their other inputs must be per-model
PER_SAMPLE = {
    "AveragePool", "BatchNormalization", "Conv", "ConvInteger", "ConvTranspose", "DepthToSpace",
    "GlobalAveragePool", "GlobalMaxPool", "InstanceNormalization", "LpNormalization", "LRN", "MaxPool", "Pad",
    "QLinearConv", "Resize", "SpaceToDepth",
}
REDUCE = {"ArgMax", "ArgMin", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
          "ReduceProd", "ReduceSum", "ReduceSumSquare"}
PARAMS = {  # op -> indices of its shape-like inputs (replaced by batch-1 values when computed from Shape)
    "Reshape": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 3), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,),
    "Resize": (1, 2, 3), "Expand": (1,), "Tile": (1,), "ReduceSum": (1,), "ConstantOfShape": (0,),
}


class BatchDimError(ValueError):
    """The graph has an op reading a batched tensor that this module cannot make batch-safe."""


@dataclass
class Report:
    dim: str = DIM
    changed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # what -> node names
    added_nodes: int = 0

    def summary(self) -> str:
        parts = [f"{what}: {len(names)}" for what, names in self.changed.items()]
        return f"batch dim {self.dim!r}; " + ("; ".join(parts) if parts else "no node changed") + \
            f"; {self.added_nodes} nodes added"


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])


def _graph_inputs(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in g.initializer}
    return [i for i in g.input if i.name not in inits]


def probe(model: onnx.ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, np.ndarray]]:
    """One onnxruntime run at batch 1 on zeros: the shape of every tensor, and the value of the small ones."""
    import onnxruntime as ort
    from pose.session import session_options

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    feeds = {}
    for inp in _graph_inputs(g):
        dims = inp.type.tensor_type.shape.dim
        if not dims:
            raise BatchDimError(f"input {inp.name} has no shape")
        dims[0].Clear()
        dims[0].dim_value = 1
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if any(d is None or d <= 0 for d in shape):
            raise BatchDimError(f"input {inp.name}: only the batch may be symbolic, got {shape}")
        dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        feeds[inp.name] = np.zeros(shape, dtype)
    del g.value_info[:]  # the run needs none; shapes declared for another batch would only conflict
    have = {o.name for o in g.output}
    for n in g.node:
        for t in n.output:
            if t and t not in have:
                g.output.add().name = t
                have.add(t)
    options = session_options(None)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every tensor as written
    sess = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    shapes: dict[str, tuple[int, ...]] = {k: v.shape for k, v in feeds.items()}
    values: dict[str, np.ndarray] = {}
    for name, v in zip(names, sess.run(names, feeds)):
        v = np.asarray(v)
        shapes[name] = tuple(v.shape)
        if v.size <= 64:
            values[name] = v
    return shapes, values


class _Rewriter:
    def __init__(self, model: onnx.ModelProto, dim: str):
        self.model, self.g, self.dim = model, model.graph, dim
        self.shapes, self.values = probe(model)
        self.inits = {i.name: i for i in self.g.initializer}
        for i in self.g.initializer:
            self.shapes.setdefault(i.name, tuple(i.dims))
        self.inputs = _graph_inputs(self.g)
        self.mode: dict[str, str] = {}  # batched tensor -> "R" or "I"
        self.pdep: set[str] = set()  # unbatched tensors whose value depends on the batch size (from Shape)
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: list[onnx.TensorProto] = []
        self.cache: dict[tuple, str] = {}
        self.report = Report(dim)
        self.batch_size: str | None = None
        self.taken = ({t for n in self.g.node for t in n.output} | set(self.inits) | {i.name for i in self.g.input}
                      | {o.name for o in self.g.output} | {n.name for n in self.g.node})
        for i in self.inputs:
            if self.shapes[i.name][0] != 1:
                raise BatchDimError(f"input {i.name}: batch 1 expected, got {self.shapes[i.name]}")
            self.mode[i.name] = "R"

    # -- small helpers -----------------------------------------------------------------------------------

    def fresh(self, name: str) -> str:
        """name, or name with a number, so that it is new in the graph."""
        out, k = name, 1
        while out in self.taken:
            k += 1
            out = f"{name}_{k}"
        self.taken.add(out)
        return out

    def value(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        return self.values.get(name)

    def const(self, base: str, values, dtype=np.int64) -> str:
        arr = np.asarray(values, dtype=dtype)
        key = ("const", arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self.cache:
            name = self.fresh(f"{base}/{TAG}/const{len(self.new_inits)}")
            self.new_inits.append(numpy_helper.from_array(arr, name))
            self.shapes[name], self.values[name] = arr.shape, arr
            self.cache[key] = name
        return self.cache[key]

    def emit(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        output = self.fresh(output)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        self.report.added_nodes += 1
        return output

    def P(self) -> str:
        """[P] as int64, read from the first input's shape."""
        if self.batch_size is None:
            self.batch_size = self.emit("Shape", [self.inputs[0].name], f"{TAG}/batch_size", start=0, end=1)
            self.pdep.add(self.batch_size)
        return self.batch_size

    def to_I(self, t: str) -> str:
        if self.mode[t] == "I":
            return t
        key = ("I", t)
        if key not in self.cache:
            out = self.emit("Unsqueeze", [t, self.const(t, [1])], f"{t}/{TAG}/I")
            self.shapes[out], self.mode[out] = self.shapes[t], "I"
            self.cache[key] = out
        return self.cache[key]

    def to_R(self, t: str, why: str) -> str:
        if self.mode[t] == "R":
            return t
        if not self.shapes[t] or self.shapes[t][0] != 1:
            raise BatchDimError(f"{why}: {t} (per sample {list(self.shapes[t])}) has no batch-1 axis to hold the batch")
        key = ("R", t)
        if key not in self.cache:
            out = self.emit("Squeeze", [t, self.const(t, [1])], f"{t}/{TAG}/R")
            self.shapes[out], self.mode[out] = self.shapes[t], "R"
            self.cache[key] = out
        return self.cache[key]

    def to_I_rank(self, t: str, rank: int) -> str:
        """t in I, with leading per-sample 1s up to rank (numpy broadcasting aligns from the right)."""
        t = self.to_I(t)
        k = rank - len(self.shapes[t])
        if k <= 0:
            return t
        key = ("rank", t, rank)
        if key not in self.cache:
            out = self.emit("Unsqueeze", [t, self.const(t, list(range(1, k + 1)))], f"{t}/{TAG}/rank{rank}")
            self.shapes[out], self.mode[out] = (1,) * k + self.shapes[t], "I"
            self.cache[key] = out
        return self.cache[key]

    def expand(self, t: str, layout: str) -> str:
        """An unbatched tensor repeated for every sample, in layout R or I."""
        key = ("expand", t, layout)
        if key not in self.cache:
            s = self.shapes[t]
            per = list(s[1:]) if layout == "R" else list(s)
            shape = self.emit("Concat", [self.P(), self.const(t, per)], f"{t}/{TAG}/shape_{layout}", axis=0)
            self.pdep.add(shape)
            out = self.emit("Expand", [t, shape], f"{t}/{TAG}/{layout}")
            self.shapes[out], self.mode[out] = s, layout
            self.cache[key] = out
        return self.cache[key]

    def batched(self, t: str) -> bool:
        return t in self.mode

    def axes_value(self, node: onnx.NodeProto, index: int, attr: str, rank: int) -> list[int] | None:
        """Normalised axes from an attribute or an input (None: absent)."""
        a = _attrs(node)
        if attr in a:
            raw = a[attr]
            raw = [raw] if isinstance(raw, int) else list(raw)
        elif len(node.input) > index and node.input[index]:
            v = self.value(node.input[index])
            if v is None:
                raise BatchDimError(f"{node.op_type} {node.name}: axes are not known at batch 1")
            raw = np.asarray(v).reshape(-1).tolist()
        else:
            return None
        return [int(x) % rank for x in raw]

    def note(self, what: str, node: onnx.NodeProto) -> None:
        self.report.changed[what].append(node.name or node.output[0])

    # -- the rules ---------------------------------------------------------------------------------------

    def run(self) -> Report:
        for node in self.g.node:
            self.visit(node)
        self.finish()
        return self.report

    def keep(self, node: onnx.NodeProto, layout: str) -> None:
        self.nodes.append(node)
        for t in node.output:
            if t:
                self.mode[t] = layout

    def fix_params(self, node: onnx.NodeProto) -> None:
        """Shape-like inputs computed from a batched tensor's Shape -> their batch-1 values."""
        for i in PARAMS.get(node.op_type, ()):
            if len(node.input) > i and node.input[i] and node.input[i] in self.pdep:
                if node.op_type == "Expand":
                    continue
                v = self.values.get(node.input[i])
                if v is None:
                    raise BatchDimError(f"{node.op_type} {node.name}: input {i} is not known at batch 1")
                node.input[i] = self.const(node.output[0], v, v.dtype)
                self.note("shape input from Shape() -> its batch-1 value", node)

    def visit(self, original: onnx.NodeProto) -> None:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        op = node.op_type
        if not any(t and self.batched(t) for t in node.input):
            if op == "Expand" and node.input[1] in self.pdep or op == "ConstantOfShape" and node.input[0] in self.pdep:
                self.keep(node, "R")  # a tensor repeated for every sample (this module's own Expand, for one)
                return
            self.nodes.append(node)
            if any(t in self.pdep for t in node.input if t):
                self.pdep.update(t for t in node.output if t)
            return
        if op in ("Shape", "Size"):
            self.nodes.append(node)
            self.pdep.update(node.output)
            return
        self.fix_params(node)
        params = PARAMS.get(op, ())
        anywhere = op in ELEMENTWISE or op in ("Concat", "GatherND")
        for k, t in enumerate(node.input):
            if t and self.batched(t) and k != 0 and not anywhere:
                raise BatchDimError(f"{op} {node.name}: a batched tensor as input {k} is not supported")
            if t in self.pdep and k not in params:
                raise BatchDimError(f"{op} {node.name}: reads {t}, a value that depends on the batch size")
        if op in ELEMENTWISE:
            self.elementwise(node)
        elif op in PER_SAMPLE:
            self.per_sample(node)
        elif op in REDUCE:
            self.reduce(node)
        elif hasattr(self, f"op_{op}"):
            getattr(self, f"op_{op}")(node)
        else:
            raise BatchDimError(f"{op} {node.name}: no batch rule for this op")

    def out_shape(self, node: onnx.NodeProto) -> tuple[int, ...]:
        return self.shapes[node.output[0]]

    def elementwise(self, node: onnx.NodeProto) -> None:
        s_out = self.out_shape(node)
        r = len(s_out)
        a = _attrs(node)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and np.size(self.value(node.input[1])) != 1:
            axis = a.get("axis", 1) % r
            if self.mode[node.input[0]] != "R" or axis == 0:
                raise BatchDimError(f"{node.op_type} {node.name}: per-axis on a batched tensor's axis {axis}")
            self.keep(node, "R")
            return
        ins = [t for t in node.input if t and self.batched(t)]
        if s_out and s_out[0] == 1 and all(self.mode[t] == "R" and len(self.shapes[t]) == r for t in ins):
            self.keep(node, "R")
            return
        for k, t in enumerate(node.input):
            if t and self.batched(t):
                node.input[k] = self.to_I_rank(t, r)
        self.note("elementwise with a per-sample tensor without batch axis", node)
        self.keep(node, "I")

    def per_sample(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        if op == "Resize" and len(node.input) > 3 and node.input[3]:
            raise BatchDimError(f"Resize {node.name}: 'sizes' is not supported (use scales)")
        if op == "Pad":
            pads = self.value(node.input[1]) if len(node.input) > 1 and node.input[1] else None
            r = len(self.shapes[node.input[0]])
            axes = self.axes_value(node, 3, "__none__", r) or list(range(r))
            if pads is None:
                raise BatchDimError(f"Pad {node.name}: pads not known at batch 1")
            pads = np.asarray(pads).reshape(2, -1)
            if 0 in axes and pads[:, axes.index(0)].any():
                raise BatchDimError(f"Pad {node.name}: pads the batch axis")
        node.input[0] = self.to_R(node.input[0], f"{op} {node.name}")
        self.keep(node, "R")

    def reduce(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        r = len(self.shapes[x])
        a = _attrs(node)
        if node.op_type in ("ArgMax", "ArgMin"):
            axes = [a.get("axis", 0) % r]
        else:
            axes = self.axes_value(node, 1, "axes", r)
            if axes is None or not axes:
                if a.get("noop_with_empty_axes", 0):
                    self.keep(node, self.mode[x])
                    return
                axes = list(range(r))
        if self.mode[x] == "R" and 0 not in axes:
            self.keep(node, "R")
            return
        node.input[0] = self.to_I(x)
        shifted = [k + 1 for k in axes]
        if node.op_type in ("ArgMax", "ArgMin"):
            _set_attr(node, "axis", shifted[0])
        elif "axes" in a:
            _set_attr(node, "axes", shifted)
        else:
            while len(node.input) < 2:
                node.input.append("")
            node.input[1] = self.const(node.output[0], shifted)
        self.note("reduction moved past the batch axis", node)
        self.keep(node, "I")

    def op_Transpose(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        perm = list(_attrs(node).get("perm", range(len(self.shapes[x]))[::-1]))
        if self.mode[x] == "R" and perm[0] == 0:
            self.keep(node, "R")
            return
        node.input[0] = self.to_I(x)
        _set_attr(node, "perm", [0] + [p + 1 for p in perm])
        self.note("Transpose moved past the batch axis", node)
        self.keep(node, "I")

    def op_Reshape(self, node: onnx.NodeProto) -> None:
        s_out = self.out_shape(node)
        if 0 in s_out:
            raise BatchDimError(f"Reshape {node.name}: empty output {list(s_out)}")
        layout = "R" if s_out and s_out[0] == 1 else "I"
        target = [-1] + list(s_out[1:] if layout == "R" else s_out)
        current = self.value(node.input[1]) if node.input[1] in self.inits else None
        if current is None or current.reshape(-1).tolist() != target:
            node.input[1] = self.const(node.output[0], target)
            self.note("Reshape shape -> -1 in the batch place", node)
        self.keep(node, layout)

    def op_Flatten(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        if self.mode[x] == "R" and _attrs(node).get("axis", 1) == 1:
            self.keep(node, "R")
            return
        s_out = self.out_shape(node)
        reshape = helper.make_node("Reshape", [x, self.const(node.output[0], [-1] + list(s_out[1:] if s_out[0] == 1 else s_out))],
                                   list(node.output), name=node.name)
        self.note("Flatten -> Reshape with -1 in the batch place", node)
        self.keep(reshape, "R" if s_out[0] == 1 else "I")

    def op_Squeeze(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        s = self.shapes[x]
        axes = self.axes_value(node, 1, "axes", len(s))
        if axes is None:
            axes = [k for k, d in enumerate(s) if d == 1]
        if self.mode[x] == "R" and 0 not in axes:
            self.keep(node, "R")
            return
        if self.mode[x] == "R":  # squeezing the per-sample batch-1 axis: the batch stays, as I
            rest = [k for k in axes if k != 0]
        else:
            rest = [k + 1 for k in axes]
        if rest:
            new = helper.make_node("Squeeze", [x, self.const(node.output[0], rest)], list(node.output), name=node.name)
        else:
            new = helper.make_node("Identity", [x], list(node.output), name=node.name)
        self.note("Squeeze kept off the batch axis", node)
        self.keep(new, "I")

    def op_Unsqueeze(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        axes = self.axes_value(node, 1, "axes", len(self.out_shape(node)))
        if self.mode[x] == "R" and 0 not in axes:
            self.keep(node, "R")
            return
        node.input[0] = self.to_I(x)
        node.input[1] = self.const(node.output[0], [k + 1 for k in axes])
        self.note("Unsqueeze moved past the batch axis", node)
        self.keep(node, "I")

    def op_Concat(self, node: onnx.NodeProto) -> None:
        s_out = self.out_shape(node)
        axis = _attrs(node)["axis"] % len(s_out)
        ins = [t for t in node.input if t]
        if axis != 0 and s_out[0] == 1 and all(self.mode.get(t, "R") == "R" and len(self.shapes[t]) == len(s_out)
                                               for t in ins):
            if all(self.batched(t) for t in ins):
                self.keep(node, "R")
                return
            for k, t in enumerate(node.input):
                if t and not self.batched(t):
                    node.input[k] = self.expand(t, "R")
            self.note("Concat: constant repeated for every sample", node)
            self.keep(node, "R")
            return
        for k, t in enumerate(node.input):
            if t:
                node.input[k] = self.to_I(t) if self.batched(t) else self.expand(t, "I")
        _set_attr(node, "axis", axis + 1)
        self.note("Concat moved past the batch axis", node)
        self.keep(node, "I")

    def op_Split(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        axis = _attrs(node).get("axis", 0) % len(self.shapes[x])
        if self.mode[x] == "R" and (axis != 0 or len(node.output) == 1):
            self.keep(node, "R")
            return
        node.input[0] = self.to_I(x)
        _set_attr(node, "axis", axis + 1)
        self.note("Split moved past the batch axis", node)
        self.keep(node, "I")

    def op_Slice(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        r = len(self.shapes[x])
        starts = self.value(node.input[1])
        axes = self.axes_value(node, 3, "__none__", r)
        if axes is None:
            axes = list(range(len(np.asarray(starts).reshape(-1))))
        if self.mode[x] == "R":
            if 0 not in axes:
                self.keep(node, "R")
                return
            raise BatchDimError(f"Slice {node.name}: slices the batch axis")
        while len(node.input) < 4:
            node.input.append("")
        node.input[3] = self.const(node.output[0], [k + 1 for k in axes])
        self.note("Slice moved past the batch axis", node)
        self.keep(node, "I")

    def op_Gather(self, node: onnx.NodeProto) -> None:
        x, idx = node.input[0], node.input[1]
        if self.batched(idx):
            raise BatchDimError(f"Gather {node.name}: batched indices are not supported")
        axis = _attrs(node).get("axis", 0) % len(self.shapes[x])
        if self.mode[x] == "R" and axis != 0:
            self.keep(node, "R")
            return
        node.input[0] = self.to_I(x)
        _set_attr(node, "axis", axis + 1)
        self.note("Gather moved past the batch axis", node)
        self.keep(node, "I")

    def op_GatherND(self, node: onnx.NodeProto) -> None:
        data, idx = node.input[0], node.input[1]
        b = _attrs(node).get("batch_dims", 0)
        if b >= 1 and all(self.mode.get(t) == "R" for t in (data, idx)):
            self.keep(node, "R")
            return
        node.input[0] = self.to_I(data) if self.batched(data) else self.expand(data, "I")
        node.input[1] = self.to_I(idx) if self.batched(idx) else self.expand(idx, "I")
        _set_attr(node, "batch_dims", b + 1)
        self.note("GatherND batch_dims + 1", node)
        self.keep(node, "I")

    def op_Expand(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        s_out = self.out_shape(node)
        if self.mode[x] == "R" and len(self.shapes[x]) == len(s_out) and s_out[0] == 1:
            self.keep(node, "R")
            return
        node.input[0] = self.to_I_rank(x, len(s_out))
        node.input[1] = self.const(node.output[0], [1] + list(s_out))
        self.note("Expand moved past the batch axis", node)
        self.keep(node, "I")

    def op_Tile(self, node: onnx.NodeProto) -> None:
        reps = self.value(node.input[1])
        if self.mode[node.input[0]] == "R" and reps is not None and int(np.asarray(reps).reshape(-1)[0]) == 1:
            self.keep(node, "R")
            return
        raise BatchDimError(f"Tile {node.name}: repeats the batch axis")

    # -- the end -----------------------------------------------------------------------------------------

    def finish(self) -> None:
        g = self.g
        outputs = {o.name for o in g.output}
        produced_before = {t for n in g.node for t in n.output}
        rename = {}
        for o in g.output:
            if o.name in self.mode and self.mode[o.name] == "I" and self.shapes[o.name][0] == 1:
                rename[o.name] = self.fresh(f"{o.name}/{TAG}/per_sample")
        for n in self.nodes:
            n.input[:] = [rename.get(t, t) for t in n.input]
            n.output[:] = [rename.get(t, t) for t in n.output]
        for old, new in rename.items():
            self.mode[new] = "I"
            self.nodes.append(helper.make_node("Squeeze", [new, self.const(old, [1])], [old],
                                               name=self.fresh(f"{old}/{TAG}/R")))
            self.report.added_nodes += 1
            self.mode[old] = "R"
        # drop what no longer feeds an output (the Shape arithmetic whose results became constants)
        needed = set(outputs)
        kept = []
        for n in reversed(self.nodes):
            if any(t in needed for t in n.output):
                kept.append(n)
                needed.update(t for t in n.input if t)
        del g.node[:]
        g.node.extend(kept[::-1])
        g.initializer.extend(self.new_inits)
        used = {t for n in g.node for t in n.input} | outputs
        inits = [i for i in g.initializer if i.name in used]
        del g.initializer[:]
        g.initializer.extend(inits)
        # declared shapes: the batch becomes the symbol, first (R) or in front (I)
        gone = produced_before - {t for n in g.node for t in n.output}  # the pruned nodes' tensors
        infos = [v for v in g.value_info if v.name not in gone]
        del g.value_info[:]
        g.value_info.extend(infos)
        for v in list(g.value_info) + list(g.output) + self.inputs:
            layout = self.mode.get(v.name)
            if layout is None or not v.type.tensor_type.HasField("shape"):
                continue
            dims = v.type.tensor_type.shape.dim
            if layout == "R":
                if len(dims) == 0:
                    continue
                dims[0].Clear()
                dims[0].dim_param = self.dim
            else:
                d = onnx.TensorShapeProto.Dimension(dim_param=self.dim)
                rest = list(dims)
                del dims[:]
                dims.extend([d] + rest)


def make_batch_dynamic(model: onnx.ModelProto, dim: str = DIM) -> Report:
    """Rewrite the model in place so that its first input and output dimension is ``dim`` and every sample
    of a batch gets what a batch-1 run would give it. Metadata (the model card) is left as it is."""
    if not any(o.domain in ("", "ai.onnx") and o.version >= 15 for o in model.opset_import):
        raise BatchDimError("opset 15 or later is needed (Shape with start/end)")
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute):
        raise BatchDimError("graphs with subgraphs (If, Loop, Scan) are not supported")
    return _Rewriter(model, dim).run()


def is_pose_model(card: dict) -> bool:
    """A pose model's card (its output: heatmaps or keypoints), not a detector's: only pose models get a dynamic
    batch (the detector sees one photo per run)."""
    return card.get("output", {}).get("kind") in ("heatmaps", "keypoints")


def fix_batch(model: onnx.ModelProto, size: int = 1) -> onnx.ModelProto:
    """The opposite, for tools that need static shapes (quant_pre_process's symbolic shape inference stops at a
    Resize on a symbolic batch): the first dimension of the inputs and outputs becomes ``size``, and declared
    intermediate shapes with a symbol are dropped. The graph itself is unchanged, so it still batches once
    ``make_batch_dynamic`` names the dimension again."""
    g = model.graph
    for v in list(_graph_inputs(g)) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = size
    kept = [v for v in g.value_info if not any(d.HasField("dim_param") for d in v.type.tensor_type.shape.dim)]
    del g.value_info[:]
    g.value_info.extend(kept)
    return model


def batch_dynamic_file(src: str | Path, dst: str | Path, dim: str = DIM) -> Report:
    model = onnx.load(str(src))
    report = make_batch_dynamic(model, dim)
    onnx.checker.check_model(model)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return report


def batch_mismatch(path: str | Path, tensors: list[np.ndarray], sizes=(1, 2, 5), options=None) -> dict[int, float]:
    """For each batch size P: the largest |batch-of-P output - batch-1 output| over the first P inputs
    (reused in turn when there are fewer) and over every output; onnxruntime, ``options`` or its defaults."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    single = [sess.run(None, {name: t}) for t in tensors]
    worst = {}
    for p in sizes:
        picks = [k % len(tensors) for k in range(p)]
        got = sess.run(None, {name: np.concatenate([tensors[k] for k in picks])})
        diff = 0.0
        for j, out in enumerate(got):
            ref = np.concatenate([single[k][j] for k in picks])
            if out.shape != ref.shape:
                return {**worst, p: float("inf")}
            diff = max(diff, float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max()))
        worst[p] = diff
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--dim", default=DIM, help=f"name of the batch dimension (default {DIM})")
    ap.add_argument("--check-images", nargs="*", default=None,
                    help="photos to check the batch on (default: tests/data); none: skip the check")
    a = ap.parse_args(argv)
    report = batch_dynamic_file(a.src, a.dst, a.dim)
    print(f"{a.dst}: {report.summary()}")
    for what, names in report.changed.items():
        print(f"  {what}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}")
    from build import cards
    from build import photos

    paths = [Path(p) for p in (a.check_images if a.check_images is not None
                               else sorted((Path(__file__).resolve().parent.parent / "tests" / "data").glob("*.[jp]*g")))]
    if paths:
        card = cards.get_card(onnx.load(a.dst, load_external_data=False))
        diffs = batch_mismatch(a.dst, photos.prepare_all(paths, card))
        print("  batch of P vs P runs, max abs diff: " + ", ".join(f"P={p}: {d:.3g}" for p, d in diffs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
