"""`python -m build.add_model`: a user's ONNX pose model of each output kind gets its card, opens in the service,
answers a committed photo and lands in a copy of models.json (never the real one); a bundled model re-added
answers as the bundled one; facts that contradict the graph, a card that does not fit it and a model whose
output is not finite are refused with nothing added; the INT8 choice keeps only a candidate within tolerance."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_yolo_pose import ROWS, yolo_file

from build import add_model, cards
from local import catalog
from pose import card as card_schema
from pose.detect import open_detector
from pose.model import PoseModel
from pose.pipeline import estimate_people

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests" / "data" / "pose.jpg"
FACTS = {  # kind -> the facts its synthetic file needs on the command line
    "heatmaps": ["--kind", "heatmaps", "--joints", "coco17", "--color", "RGB", "--scaling", "imagenet"],
    "keypoints": ["--kind", "keypoints", "--joints", "coco17", "--color", "RGB", "--scaling", "raw"],
    "yolo_pose": ["--kind", "yolo_pose", "--color", "RGB", "--scaling", "range", "--range", "0", "1", "--pad", "114"],
}


def save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def heatmap_file(path: Path, tail: list[onnx.NodeProto] = ()) -> Path:
    """A Simple-Baselines-shaped graph: image [N, 3, 64, 48] -> conv stride 2, ReLU -> 1x1 conv -> 17 heatmaps
    [N, 17, 32, 24]; seeded weights. `tail` nodes map `raw` to the output `heatmaps` (default: identity)."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(0, 0.3, (8, 3, 3, 3)), rng.normal(0, 0.3, (17, 8, 1, 1))
    nodes = [helper.make_node("Conv", ["image", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]), helper.make_node("Conv", ["r1", "w2"], ["raw"]),
             *(tail or [helper.make_node("Identity", ["raw"], ["heatmaps"])])]
    inits = [numpy_helper.from_array(w.astype(np.float32), name) for name, w in (("w1", w1), ("w2", w2))]
    return save(helper.make_graph(
        nodes, "heatmaps", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 48])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 17, 32, 24])], inits), path)


def keypoints_file(path: Path) -> Path:
    """MoveNet's layout: input [1, 64, 64, 3] int32, output [1, 1, 17, 3] (y, x normalised, score), constant."""
    rows = np.stack([np.linspace(0.2, 0.8, 17), np.linspace(0.3, 0.7, 17), np.full(17, 0.9)], axis=1)
    return save(helper.make_graph(
        [helper.make_node("Constant", [], ["kpts"], value=numpy_helper.from_array(rows[None, None].astype(np.float32)))],
        "keypoints", [helper.make_tensor_value_info("input", TensorProto.INT32, [1, 64, 64, 3])],
        [helper.make_tensor_value_info("kpts", TensorProto.FLOAT, [1, 1, 17, 3])]), path)


def synthetic(kind: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """A small ONNX model of this output kind and its command-line facts."""
    if kind == "heatmaps":
        return heatmap_file(tmp_path / "mine.onnx"), FACTS[kind]
    if kind == "keypoints":
        return keypoints_file(tmp_path / "mine.onnx"), FACTS[kind]
    joints = tmp_path / "joints.json"  # the synthetic YOLO graph has 3 joints: a joint set of its own
    joints.write_text(json.dumps({"joints": ["nose", "l_eye", "r_eye"], "skeleton": [[0, 1], [0, 2]]}))
    return yolo_file(tmp_path / "mine.onnx", ROWS), [*FACTS[kind], "--joints", str(joints)]


@pytest.fixture()
def folder(tmp_path) -> Path:
    """A copy of models.json and MODELS.md: what the command writes to, instead of models/."""
    out = tmp_path / "models"
    out.mkdir()
    for name in ("models.json", "MODELS.md"):
        shutil.copy(catalog.MODELS / name, out / name)
    return out


def add(src: Path, facts: list[str], folder: Path, *more: str, name: str = "my-pose") -> int:
    return add_model.main([str(src), "--name", name, *facts, "--licence", "MIT", "--origin", "tests",
                           "--no-eval", "--catalog", str(folder / "models.json"), *more])


@pytest.mark.parametrize("kind", card_schema.POSE_OUTPUTS)
def test_a_model_of_each_kind_gets_its_card_answers_a_photo_and_lands_in_the_list(kind, tmp_path, folder):
    real = catalog.CATALOG.read_text()
    src, facts = synthetic(kind, tmp_path)
    assert add(src, facts, folder, "--no-quantize", "--title", "My Pose") == 0
    path = folder / "my-pose.onnx"
    model = PoseModel(path, threads=1)
    assert (model.card.name, model.card.output.kind, model.card.quantization) == ("my-pose", kind, "fp32")
    detector = open_detector(catalog.get(catalog.default("detector")).served_path, threads=1)
    people = estimate_people(add_model.photos.load_rgb(PHOTO), model, detector).people
    assert people and all(np.isfinite(p.points).all() for p in people)
    _, by_name = catalog.read(folder / "models.json")
    e = by_name["my-pose"]
    assert (e.source, e.served, e.role, e.in_layer, e.quantize) == ("my-pose.onnx", "my-pose.onnx", "pose", False, None)
    assert e.sha256 == {"my-pose.onnx": add_model.sha256_of(path)} and "--no-quantize" in e.recipe["why_fp32"]
    assert "## My Pose" in (folder / "MODELS.md").read_text()
    assert catalog.CATALOG.read_text() == real


def test_the_input_and_output_facts_are_read_from_the_graph(tmp_path, folder):
    assert add(heatmap_file(tmp_path / "h.onnx"), FACTS["heatmaps"], folder, "--no-quantize") == 0
    card = cards.get_card(onnx.load(str(folder / "my-pose.onnx")))
    assert card["input"] == {"name": "image", "height": 64, "width": 48, "layout": "NCHW", "dtype": "float32",
                             "color": "RGB", "scaling": {"kind": "mean_std", "mean": list(cards.IMAGENET_MEAN_RGB),
                                                         "std": list(cards.IMAGENET_STD_RGB)}}
    assert card["output"] == {"kind": "heatmaps", "name": "heatmaps", "layout": "NCHW"}
    assert card["joints"] == list(cards.COCO_JOINTS) and card["skeleton"] == [list(p) for p in cards.COCO_SKELETON]
    assert add(keypoints_file(tmp_path / "k.onnx"), FACTS["keypoints"], folder, "--no-quantize", name="k") == 0
    keypoints = cards.get_card(onnx.load(str(folder / "k.onnx")))["input"]
    assert (keypoints["layout"], keypoints["dtype"], keypoints["height"]) == ("NHWC", "int32", 64)


@pytest.mark.parametrize("more, error", [
    (["--size", "128x128"], "is not NCHW of 3 channels and height x width 128x128"),
    (["--joints", "mpii16"], "decodes to 17 joints, the card names 16"),
    (["--name", "movenet-thunder"], "in .* already"),
    (["--name", "My Pose"], "not a name of lower-case letters"),
], ids=["size against the graph", "joints against the graph", "a name taken", "a bad name"])
def test_a_fact_the_graph_or_the_list_contradicts_is_refused_and_nothing_is_added(more, error, tmp_path, folder,
                                                                                   capsys):
    before = (folder / "models.json").read_text()
    assert add(heatmap_file(tmp_path / "h.onnx"), FACTS["heatmaps"], folder, "--no-quantize", *more) == 2
    assert re.search(error, capsys.readouterr().err)
    assert (folder / "models.json").read_text() == before and not (folder / "my-pose.onnx").exists()


def test_a_model_whose_output_is_not_finite_is_refused(tmp_path, folder, capsys):
    """sqrt(heatmap - 1): NaN wherever a heatmap is under 1, as a wrong scaling can make a model answer."""
    one = numpy_helper.from_array(np.ones(1, np.float32), "one")
    tail = [helper.make_node("Constant", [], ["one"], value=one), helper.make_node("Sub", ["raw", "one"], ["s"]),
            helper.make_node("Sqrt", ["s"], ["heatmaps"])]
    assert add(heatmap_file(tmp_path / "nan.onnx", tail), FACTS["heatmaps"], folder, "--no-quantize") == 2
    assert "pose.jpg: the model's output on the whole photo is not finite" in capsys.readouterr().err
    assert not (folder / "my-pose.onnx").exists()


def test_a_bundled_model_re_added_under_another_name_answers_as_the_bundled_one(folder):
    bundled = catalog.get("movenet-thunder").source_path
    facts = ["--kind", "keypoints", "--joints", "coco17", "--color", "RGB", "--scaling", "raw"]
    assert add(bundled, facts, folder, "--no-quantize", name="movenet-again") == 0
    mine, theirs = PoseModel(folder / "movenet-again.onnx", threads=1), PoseModel(bundled, threads=1)
    assert (mine.card.input, mine.card.output, mine.card.joints) == (theirs.card.input, theirs.card.output,
                                                                     theirs.card.joints)
    detector = open_detector(catalog.get(catalog.default("detector")).served_path, threads=1)
    for photo in ("pose.jpg", "Pilots.jpg"):
        rgb = add_model.photos.load_rgb(ROOT / "tests" / "data" / photo)
        a, b = estimate_people(rgb, mine, detector).people, estimate_people(rgb, theirs, detector).people
        assert len(a) == len(b) and all(np.array_equal(p.points, q.points) for p, q in zip(a, b))


ROW = {"label": "static", "accuracy": 44.5, "moved": 1.0, "speedup": 1.5}


@pytest.mark.parametrize("rows, fp32, chosen", [
    ([ROW, {**ROW, "label": "b", "accuracy": 44.9, "speedup": 1.2}], 45.0, "b"),  # the most accurate
    ([ROW, {**ROW, "label": "b", "accuracy": 43.9}], 45.0, "static"),  # b loses 1.1 points
    ([{**ROW, "speedup": 1.05}], 45.0, None),  # not faster beyond noise
    ([{**ROW, "moved": 6.0}], 45.0, None),  # joints moved too far
    ([{"label": "static", "error": "RuntimeError: no kernel"}, {**ROW, "label": "b"}], 45.0, "b"),
    ([{**ROW, "accuracy": None}, {**ROW, "label": "b", "accuracy": None, "speedup": 1.8}], None, "b"),  # no eval set
])
def test_int8_is_served_only_within_tolerance_and_faster(rows, fp32, chosen):
    best = add_model.choose(rows, fp32, tolerance=1.0, max_moved=5.0)
    assert (best and best["label"]) == chosen


@pytest.mark.tools  # quantizes
def test_the_search_tries_every_candidate_and_records_its_choice(tmp_path, folder, capsys):
    """On a small heatmap model, calibrated on ../shared/images: whichever way it goes, the entry says why and
    its files, card and recipe agree (the INT8 file's card says int8; FP32 served has no recipe)."""
    if not add_model.photos.PROJECT_IMAGES.is_dir():
        pytest.skip(f"no calibration photos: {add_model.photos.PROJECT_IMAGES} is absent")
    assert add(heatmap_file(tmp_path / "h.onnx"), FACTS["heatmaps"], folder) == 0
    out = capsys.readouterr().out
    assert all(f"  {label}: joints moved" in out for label in add_model.CANDIDATES), out
    e = catalog.read(folder / "models.json")[1]["my-pose"]
    card = cards.get_card(onnx.load(str(folder / e.served)))
    assert card["quantization"].startswith("int8") is bool(e.quantize) is (e.served == "int8/my-pose.int8.onnx")
    assert e.sha256 == {f: add_model.sha256_of(folder / f) for f in {e.source, e.served}}
    if e.quantize:
        assert e.quantize["config"]["method"] == "minmax" and "chosen by build/add_model.py" in e.quantize["why"]
    else:
        assert all(label in e.recipe["why_fp32"] for label in add_model.CANDIDATES)


@pytest.mark.tools  # quantizes
def test_an_int8_choice_is_served_with_a_recipe_make_model_rebuilds(tmp_path, folder):
    """With no speed asked of it (--min-speedup 0), a candidate that keeps the joints is served as int8/; its
    recipe in the list, given to build/make_models.py as `make model` gives it, makes the same graph."""
    if not add_model.photos.PROJECT_IMAGES.is_dir():
        pytest.skip(f"no calibration photos: {add_model.photos.PROJECT_IMAGES} is absent")
    assert add(heatmap_file(tmp_path / "h.onnx"), FACTS["heatmaps"], folder, "--min-speedup", "0") == 0
    e = catalog.read(folder / "models.json")[1]["my-pose"]
    assert e.served == "int8/my-pose.int8.onnx" and "why_fp32" not in e.recipe
    served = onnx.load(str(folder / e.served))
    assert cards.get_card(served)["quantization"] == "int8-static-qdq-u8s8"
    assert e.sha256 == {f: add_model.sha256_of(folder / f) for f in (e.source, e.served)}
    again = tmp_path / "again.onnx"
    add_model.make_models.build("my-pose", e.quantize, dst=again, src=folder / e.source)
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(again)).graph.initializer}
    assert {i.name: numpy_helper.to_array(i).tolist() for i in served.graph.initializer} == \
        {name: w.tolist() for name, w in weights.items()}
