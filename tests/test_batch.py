"""The served pose models take a batch of person crops: a symbolic batch dimension, and a batch of P different
crops gives each crop exactly what a run on it alone gives (build/batch_dim.py made them so). Also the build
function itself, on a toy graph that hard-codes a batch of 1 the way MoveNet's in-graph decoding does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pose.image import read_photo
from pose.image import prepare
from pose.model import PoseModel

from local import catalog

from build import batch_dim

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.model

DATA = ROOT / "tests" / "data"
# every pose model's served file, and its FP32 source where that is another file
FILES = list(dict.fromkeys(f for m in catalog.models("pose") for f in (m.served_path, m.source_path)))
# (photo, crop as fractions of width and height): people and parts of people, as a detector's boxes would give
CROPS = [("pose.jpg", (0, 0, 1, 1)), ("pose.jpg", (0.2, 0.3, 0.8, 1.0)), ("Pilots.jpg", (0, 0, 1, 1)),
         ("Pilots.jpg", (0.0, 0.0, 0.55, 1.0)), ("astronaut.png", (0.1, 0.0, 0.9, 1.0))]


def crops(model: PoseModel) -> list[np.ndarray]:
    """Five different real crops as the model's batch-1 input tensors, prepared by the service's code."""
    out = []
    for name, (x0, y0, x1, y1) in CROPS:
        rgb = read_photo((DATA / name).read_bytes())
        h, w = rgb.shape[:2]
        part = rgb[round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)]
        out.append(prepare(part, model.card.input)[0])
    assert all(not np.array_equal(out[0], t) for t in out[1:])
    return out


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.fixture(scope="module", params=FILES, ids=lambda p: p.name)
def model(request) -> PoseModel:
    return PoseModel(request.param, threads=1)  # the service's session options


def session_run(model: PoseModel, tensor: np.ndarray) -> np.ndarray:
    """One session.run on the whole batch (PoseModel.run would fall back to one run per sample on a
    fixed-batch graph, which would hide what these tests check)."""
    return model.session.run([model.card.output.name], {model.card.input.name: tensor})[0]


def test_input_and_output_batch_dimension_is_symbolic(model):
    m = onnx.load(str(model.path), load_external_data=False)
    inp = {i.name: i for i in m.graph.input}[model.card.input.name]
    out = {o.name: o for o in m.graph.output}[model.card.output.name]
    assert dims(inp)[0] == batch_dim.DIM and all(isinstance(d, int) and d > 0 for d in dims(inp)[1:])
    assert dims(out)[0] == batch_dim.DIM and all(isinstance(d, int) and d > 0 for d in dims(out)[1:])
    assert model.session.get_inputs()[0].shape[0] == batch_dim.DIM
    assert model.batched  # so the service sends all crops of a photo in one run


@pytest.mark.parametrize("p", [1, 2, 5])
def test_a_batch_of_different_crops_gives_each_crop_its_own_result(model, p):
    tensors = crops(model)[:p]
    alone = [session_run(model, t) for t in tensors]
    together = session_run(model, np.concatenate(tensors))
    assert together.shape == (p, *alone[0].shape[1:])
    # float noise at most; in practice onnxruntime computes each sample alike, bit for bit
    tolerance = 1e-5 if model.card.quantization == "fp32" else 1e-6
    for k in range(p):
        np.testing.assert_allclose(together[k:k + 1], alone[k], rtol=0, atol=tolerance)
    if p > 1:  # the crops really differ, so a mix-up would show
        assert not np.allclose(alone[0], alone[1], atol=1e-3)


def test_results_do_not_depend_on_the_place_in_the_batch(model):
    tensors = crops(model)[:3]
    forward = session_run(model, np.concatenate(tensors))
    backward = session_run(model, np.concatenate(tensors[::-1]))
    tolerance = 1e-5 if model.card.quantization == "fp32" else 1e-6
    np.testing.assert_allclose(forward, backward[::-1], rtol=0, atol=tolerance)


def test_the_served_files_need_no_further_rewrite(tmp_path):
    """make_batch_dynamic is idempotent: on a served file it changes no node and writes the same bytes."""
    for path in (m.served_path for m in catalog.models("pose", in_layer=True)):
        out = tmp_path / path.name
        report = batch_dim.batch_dynamic_file(path, out)
        assert not report.changed and report.added_nodes == 0
        assert out.read_bytes() == path.read_bytes(), path.name


# --- the build function on a toy graph -------------------------------------------------------------------


def toy_model() -> onnx.ModelProto:
    """x [1, 2, 4, 4] -> 1x1 Conv -> Reshape to [1, 3, 16] (a literal 1) -> per-channel ArgMax -> indices with a
    literal batch index 0 -> GatherND of the peaks -> [1, 3]; and the Conv output flattened by Reshape [1, 48]."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 2, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1, 3, 16], np.int64), "shape_maps"),
        numpy_helper.from_array(np.array([1, 48], np.int64), "shape_flat"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.zeros((3, 1), np.int64), "batch_index"),  # the hard-coded batch 0
        numpy_helper.from_array(np.arange(3, dtype=np.int64).reshape(3, 1), "channel_index"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
        helper.make_node("Reshape", ["y", "shape_maps"], ["maps"], name="reshape_maps"),
        helper.make_node("ArgMax", ["maps"], ["peak"], name="argmax", axis=2, keepdims=0),  # [1, 3]
        helper.make_node("Squeeze", ["peak", "axis0"], ["peak3"], name="squeeze"),  # [3]
        helper.make_node("Unsqueeze", ["peak3", "axis1"], ["peak31"], name="unsqueeze"),  # [3, 1]
        helper.make_node("Concat", ["batch_index", "channel_index", "peak31"], ["where"], name="concat", axis=1),
        helper.make_node("GatherND", ["maps", "where"], ["best3"], name="gathernd"),  # [3]
        helper.make_node("Unsqueeze", ["best3", "axis0"], ["best"], name="unsqueeze_out"),  # [1, 3]
        helper.make_node("Reshape", ["y", "shape_flat"], ["flat"], name="reshape_flat"),
    ]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("best", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("flat", TensorProto.FLOAT, [1, 48])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"pose": '{"a": "card"}'})
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def toy_inputs(p: int) -> np.ndarray:
    return np.random.default_rng(p).normal(size=(p, 2, 4, 4)).astype(np.float32)


def test_toy_graph_with_a_hard_coded_batch_of_1_fails_at_batch_3_when_only_its_dims_are_made_symbolic():
    m = toy_model()
    for v in (m.graph.input[0], *m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    with pytest.raises(Exception, match="Reshape|reshape"):
        run(m, toy_inputs(3))


def test_build_function_makes_the_toy_graph_batchable():
    original = toy_model()
    m = toy_model()
    report = batch_dim.make_batch_dynamic(m)
    onnx.checker.check_model(m, full_check=True)
    assert dims(m.graph.input[0]) == ["N", 2, 4, 4]
    assert [dims(o) for o in m.graph.output] == [["N", 3], ["N", 48]]
    assert {"reshape_maps", "reshape_flat"} <= set(report.changed["Reshape shape -> -1 in the batch place"])
    assert report.changed["GatherND batch_dims + 1"] == ["gathernd"]
    assert [(p.key, p.value) for p in m.metadata_props] == [("pose", '{"a": "card"}')]  # the card untouched
    x = toy_inputs(3)
    together = run(m, x)
    for k in range(3):
        alone = run(original, x[k:k + 1])
        for got, want in zip(together, alone):
            np.testing.assert_array_equal(got[k:k + 1], want)
    # the peaks really are per sample: each row is the max of its own maps
    y = np.einsum("oc,nchw->nohw", numpy_helper.to_array(m.graph.initializer[0])[:, :, 0, 0], x).reshape(3, 3, 16)
    np.testing.assert_allclose(together[0], y.max(axis=2), rtol=1e-5)


def test_build_function_is_idempotent_on_its_own_output():
    once = toy_model()
    batch_dim.make_batch_dynamic(once)
    twice = onnx.ModelProto()
    twice.CopyFrom(once)
    report = batch_dim.make_batch_dynamic(twice)
    assert not report.changed and report.added_nodes == 0
    assert twice.SerializeToString() == once.SerializeToString()


def test_build_function_refuses_an_op_it_cannot_make_batch_safe():
    """DynamicQuantizeLinear takes one scale over the whole tensor: a batch would mix the samples."""
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "scale", "zero"], name="dql")], "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("q", TensorProto.UINT8, [1, 4])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(batch_dim.BatchDimError, match="DynamicQuantizeLinear"):
        batch_dim.make_batch_dynamic(m)
