"""The ``yolo_pose`` output kind (Ultralytics YOLOv8/YOLO11-pose ONNX exports), on small synthetic graphs of
the exact output layout: one Constant output [1, 4 + 1 + 3K, N] of candidates (cx, cy, w, h, person score,
then K x (x, y, score) in input pixels whose edges are integers), no NMS in the graph."""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from conftest import local_server
from pose import card as model_card
from pose.decode import decode, yolo_pose_candidates
from pose.errors import ModelError
from pose.image import prepare
from pose.model import PoseModel
from pose.pipeline import estimate_people, uses_detector

JOINTS = ["nose", "l_eye", "r_eye"]
WIDTH, HEIGHT = 64, 48  # the synthetic model's input

# candidates as the graph gives them: cx, cy, w, h, person score, then (x, y, score) per joint
A = [20, 20, 10, 20, 0.9, 18, 12, 0.8, 22, 12, 0.7, 20, 28, 0.6]
ECHO_OF_A = [21, 20, 10, 20, 0.8, 19, 12, 0.8, 23, 12, 0.7, 21, 28, 0.6]  # box IoU with A 9/11 = 0.82
C = [45, 24, 12, 24, 0.5, 43, 16, 0.9, 47, 16, 0.4, 45, 34, 0.3]
FAINT = [45, 10, 4, 4, 0.2, 44, 9, 0.9, 46, 9, 0.9, 45, 11, 0.9]  # under the card's score threshold 0.25
ROWS = [FAINT, ECHO_OF_A, C, A]


def card_dict(**output) -> dict:
    return {"schema": 1, "name": "yolo-pose-synthetic", "version": "1", "source": "tests", "license": "MIT",
            "quantization": "fp32",
            "input": {"name": "images", "height": HEIGHT, "width": WIDTH, "layout": "NCHW", "dtype": "float32",
                      "color": "RGB", "scaling": {"kind": "range", "range": [0.0, 1.0]}, "pad": 114},
            "output": {"kind": "yolo_pose", "name": "output0", "score_threshold": 0.25, "nms_iou": 0.7,
                       "person_detector": False, **output},
            "joints": JOINTS, "sides": ["center", "left", "right"], "skeleton": [[0, 1], [0, 2]], "threshold": 0.5}


def card(**output) -> model_card.Card:
    return model_card.parse(json.dumps(card_dict(**output)))


def layout(rows: list[list[float]]) -> np.ndarray:
    """Candidate rows -> the export's output tensor [1, 4 + 1 + 3K, N] float32."""
    return np.asarray(rows, np.float32).T[None]


def yolo_file(path: Path, rows: list[list[float]], card_json: dict | None = None) -> Path:
    """A graph with the export's input `images` [1, 3, H, W] and a constant `output0` of these candidates."""
    out = layout(rows)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["output0"], value=numpy_helper.from_array(out))], "yolo_pose",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, HEIGHT, WIDTH])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    entry = model.metadata_props.add()
    entry.key, entry.value = model_card.CARD_KEY, json.dumps(card_json or card_dict())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def model(tmp_path) -> PoseModel:
    return PoseModel(yolo_file(tmp_path / "yolo.onnx", ROWS), threads=1)


def test_candidates_read_the_exports_layout_in_pixel_centres():
    c = yolo_pose_candidates(card(), layout([A, C]))
    np.testing.assert_allclose(c.boxes[0], [[15, 10, 25, 30], [39, 12, 51, 36]] - np.float64(0.5))
    np.testing.assert_allclose(c.points[0, 0], [[17.5, 11.5], [21.5, 11.5], [19.5, 27.5]])
    np.testing.assert_allclose(c.scores[0], [[0.8, 0.7, 0.6], [0.9, 0.4, 0.3]], rtol=1e-6)
    np.testing.assert_allclose(c.person[0], [0.9, 0.5], rtol=1e-6)


def test_the_decoder_table_gives_each_inputs_best_candidate():
    """A crop holds one person: the table's decoder answers (P, K, 2) and (P, K) as every kind does."""
    points, scores = decode(card(), np.concatenate([layout(ROWS), layout([FAINT, C, FAINT, FAINT])]))
    assert points.shape == (2, 3, 2) and scores.shape == (2, 3)
    np.testing.assert_allclose(points[:, 0], [[17.5, 11.5], [42.5, 15.5]])  # A, then C
    np.testing.assert_allclose(scores[1], [0.9, 0.4, 0.3], rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 5 + 3 * 4, 10), (1, 5 + 3 * 3), (1, 5 + 3 * 3, 0), (1, 2, 5 + 3 * 3, 10)])
def test_an_output_that_does_not_fit_the_card_is_refused_not_reshaped(shape):
    with pytest.raises(ModelError, match="invalid model card: the yolo_pose output of shape"):
        decode(card(), np.zeros(shape, np.float32))


def test_a_graph_of_another_joint_count_is_refused_when_opened(tmp_path):
    rows = [row + [0.0, 0.0, 0.0] for row in ROWS]  # four joints a candidate; the card names three
    with pytest.raises(ModelError, match="yolo_pose output of shape \\(1, 17, 4\\)"):
        PoseModel(yolo_file(tmp_path / "four.onnx", rows), threads=1)


@pytest.mark.parametrize("output,message", [
    ({"score_threshold": None}, "output.score_threshold"),
    ({"nms_iou": 1.5}, "output.nms_iou"),
    ({"person_detector": "yes"}, "output.person_detector"),
    ({"kind": "yolo"}, "output.kind must be one of"),
])
def test_a_yolo_pose_card_with_a_bad_field_is_refused(output, message):
    with pytest.raises(ModelError, match=message):
        card(**output)


def test_a_bad_pad_is_refused_and_no_pad_means_black():
    d = card_dict()
    d["input"]["pad"] = 256
    with pytest.raises(ModelError, match="input.pad"):
        model_card.parse(json.dumps(d))
    del d["input"]["pad"]
    assert model_card.parse(json.dumps(d)).input.pad == 0


def test_the_letterbox_fills_with_the_cards_pad_value():
    tensor, box = prepare(np.full((24, 64, 3), 255, np.uint8), card().input)  # 12 rows of padding above and below
    assert (box.pad_x, box.pad_y) == (0, 12)
    assert np.allclose(tensor[0, :, :12], 114 / 255) and np.allclose(tensor[0, :, 36:], 114 / 255)
    assert np.allclose(tensor[0, :, 12:36], 1.0)


def test_without_a_detector_the_models_candidates_above_the_threshold_after_nms_are_the_people(model):
    found = estimate_people(np.zeros((HEIGHT, WIDTH, 3), np.uint8), model, None)
    assert [p.score for p in found.people] == pytest.approx([0.9, 0.5])  # the echo of A fell to NMS, FAINT below 0.25
    a, c = found.people
    np.testing.assert_allclose(a.points, [[17.5, 11.5], [21.5, 11.5], [19.5, 27.5]])
    np.testing.assert_allclose(c.scores, [0.9, 0.4, 0.3], rtol=1e-6)
    assert a.box == pytest.approx((14.5, 9.5, 24.5, 29.5)) and a.region is None
    assert set(found.timings_ms) == {"detect", "preprocess", "inference", "postprocess"}


def test_max_people_and_the_cards_nms_iou_set_who_is_kept(tmp_path):
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    strict = PoseModel(yolo_file(tmp_path / "a.onnx", ROWS), threads=1)
    assert [p.score for p in estimate_people(rgb, strict, None, max_people=1).people] == pytest.approx([0.9])
    loose = PoseModel(yolo_file(tmp_path / "b.onnx", ROWS, card_dict(nms_iou=0.9)), threads=1)
    assert [p.score for p in estimate_people(rgb, loose, None).people] == pytest.approx([0.9, 0.8, 0.5])


def test_people_come_back_in_photo_pixels_through_the_letterbox_inverse(model):
    """A 128 x 48 photo is 64 x 24 in the input, 12 rows below its top: x_photo = x_in / 0.5 and
    y_photo = (y_in - 12) / 0.5 in pixel edges, half a pixel less in pixel centres."""
    a = estimate_people(np.zeros((48, 128, 3), np.uint8), model, None).people[0]
    np.testing.assert_allclose(a.points, [[35.5, -0.5], [43.5, -0.5], [39.5, 31.5]])
    assert a.box == pytest.approx((29.5, -0.5, 49.5, 35.5))  # its top, in the padding, is clipped to the photo


class Boxes:
    """A person detector that always finds one box and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, rgb):
        self.calls += 1
        return type("Found", (), {"boxes": np.array([[10.0, 5.0, 40.0, 45.0]]), "scores": np.array([0.8])})()


def test_the_card_says_whether_the_detector_finds_the_people(tmp_path):
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    own, detector = PoseModel(yolo_file(tmp_path / "a.onnx", ROWS), threads=1), Boxes()
    assert len(estimate_people(rgb, own, detector).people) == 2 and detector.calls == 0
    crops = PoseModel(yolo_file(tmp_path / "b.onnx", ROWS, card_dict(person_detector=True)), threads=1)
    found = estimate_people(rgb, crops, detector).people
    assert detector.calls == 1 and found[0].region is not None  # the crop's person: its best candidate, A
    assert found[0].scores == pytest.approx([0.8, 0.7, 0.6])


def test_the_handler_serves_a_yolo_pose_model_with_the_same_reply(tmp_path):
    """The local API (local.serve, the Lambda handler behind it) with the synthetic model as MODEL_PATH."""
    buf = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (90, 90, 90)).save(buf, format="PNG")
    body = json.dumps({"image": base64.b64encode(buf.getvalue()).decode(), "return_image": False})
    with local_server(yolo_file(tmp_path / "yolo.onnx", ROWS), log_dir=tmp_path) as (_process, base):
        request = urllib.request.Request(f"{base}/pose", body.encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            reply = json.loads(response.read())
    assert set(reply) == {"people", "joints", "keypoints", "skeleton", "image", "model", "detector",
                          "threshold", "timings_ms", "region"}
    assert [p["score"] for p in reply["people"]] == pytest.approx([0.9, 0.5])
    first = reply["people"][0]
    assert first["keypoints"][:3] == [17.5, 11.5, 2] and first["joints"][0]["score"] == pytest.approx(0.8)
    assert first["box"] == {"left": 14.5, "top": 9.5, "width": 10.0, "height": 20.0} and first["region"] is None
    assert reply["model"]["name"] == "yolo-pose-synthetic" and reply["threshold"] == 0.5
    assert reply["detector"] is None  # the layer's detector is not even opened for a model that finds people


def test_the_detector_is_loaded_only_for_a_model_that_uses_it(tmp_path):
    from local import function
    from pose.service import load_models

    env = {"DETECTOR_PATH": str(function.detector_path()), "MODEL_THREADS": "1"}
    own = load_models({**env, "MODEL_PATH": str(yolo_file(tmp_path / "a.onnx", ROWS))})
    crops = load_models({**env, "MODEL_PATH": str(yolo_file(tmp_path / "b.onnx", ROWS, card_dict(person_detector=True)))})
    assert own.detector is None and crops.detector is not None


def ultralytics_export(path: Path, joints: int = 17, side: int = 64, task: str = "pose") -> Path:
    """A graph shaped as `yolo export format=onnx` writes one, with its metadata: one candidate, its joints
    along a diagonal."""
    row = [32, 32, 20, 40, 0.9] + [v for j in range(joints) for v in (10 + 2 * j, 12 + 2 * j, 0.8)]
    out = layout([row])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["output0"], value=numpy_helper.from_array(out))], "main_graph",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in {"task": task, "imgsz": f"[{side}, {side}]", "kpt_shape": f"[{joints}, 3]"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_an_ultralytics_export_gets_a_card_the_service_serves(tmp_path):
    from build import card_yolo_pose

    src = ultralytics_export(tmp_path / "export.onnx")
    assert card_yolo_pose.main([str(src), "--out", str(tmp_path / "served.onnx"), "--license", "MIT"]) == 0
    served = PoseModel(tmp_path / "served.onnx", threads=1)
    assert (served.card.output.kind, served.card.input.pad, served.card.output.score_threshold) == ("yolo_pose", 114, 0.25)
    assert served.card.joints[0] == "nose" and len(served.card.joints) == 17 and not served.card.output.person_detector
    people = estimate_people(np.zeros((64, 64, 3), np.uint8), served, None).people
    assert len(people) == 1 and people[0].points[16] == pytest.approx([41.5, 43.5])


@pytest.mark.parametrize("export,message", [
    ({"joints": 5}, "5 joints"),
    ({"task": "detect"}, "not an Ultralytics pose export"),
])
def test_an_export_the_card_tool_cannot_describe_is_refused(tmp_path, capsys, export, message):
    from build import card_yolo_pose

    src = ultralytics_export(tmp_path / "export.onnx", **export)
    assert card_yolo_pose.main([str(src), "--out", str(tmp_path / "served.onnx")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "served.onnx").exists()


def test_the_measurement_skips_clearly_without_the_export(tmp_path, capsys):
    from build import measure_yolo_pose

    assert measure_yolo_pose.main([str(tmp_path / "absent.onnx")]) == 0
    assert capsys.readouterr().out.startswith("skipped: no YOLO-pose export at")


def test_the_measured_copy_scores_people_from_the_asked_threshold(tmp_path):
    from build import measure_yolo_pose

    copy = measure_yolo_pose.served_copy(ultralytics_export(tmp_path / "export.onnx"), 0.001, tmp_path / "copy.onnx")
    assert PoseModel(copy, threads=1).card.output.score_threshold == 0.001


def test_only_a_yolo_pose_card_can_do_without_the_detector():
    assert not uses_detector(card()) and uses_detector(card(person_detector=True))
    heatmaps = card_dict()
    heatmaps["output"] = {"kind": "heatmaps", "name": "output0", "layout": "NCHW"}
    assert uses_detector(model_card.parse(json.dumps(heatmaps)))
