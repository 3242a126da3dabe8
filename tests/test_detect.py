"""The person detector: its card, the decoding of its outputs (synthetic, exact), NMS, the way back to
photo pixels, and the bundled NanoDet and RTMDet-nano on real photos (and, with ../shared, their person box AP)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pose import card as model_card
from pose import detect
from pose.errors import ModelError
from pose.image import read_photo

from conftest import DATA, ROOT
from local import catalog
from local.function import detector_path

FP32 = ROOT / "models" / "nanodet.onnx"
SHIPPED = detector_path("nanodet")  # the INT8 file the model layer serves as nanodet
# Measured with build/evaluate_detector.py: 39.8 (FP32) and 40.1 (the shipped INT8); the floor leaves room
# for onnxruntime versions and machines, not for a broken decoder (stretching alone costs 5 points).
AP_FLOOR = 35.0
RTMDET = detector_path("rtmdet-nano")  # the default detector, served as its FP32 file (see MODELS.md)
# Measured: 43.7 (FP32, BGR, 416 letterbox); RGB gives 41.7 and stretching 39.3, both below the floor.
RTMDET_AP_FLOOR = 42.5

CARD = {
    "schema": 1, "name": "t", "version": "1", "source": "test", "license": "MIT", "quantization": "fp32",
    "input": {"name": "in", "height": 32, "width": 48, "layout": "NCHW", "dtype": "float32", "color": "BGR",
              "scaling": {"kind": "raw"}},
    "output": {"kind": "boxes_gfl", "grids": [{"scores": "s8", "boxes": "b8", "stride": 8},
                                              {"scores": "s16", "boxes": "b16", "stride": 16}],
               "bins": 11, "classes": 2, "class": 0, "class_name": "person"},
    "score_threshold": 0.4, "nms_iou": 0.6,
}


def card(**changes) -> model_card.DetectorCard:
    d = copy.deepcopy(CARD)
    for key, value in changes.items():
        target, *path = key.split("__")
        if path:
            d[target][path[0]] = value
        else:
            d[target] = value
    return model_card.parse_detector(json.dumps(d))


def blank_outputs(c: model_card.DetectorCard) -> dict[str, np.ndarray]:
    """All-zero outputs of the right shapes for the card's 48x32 input."""
    out = {}
    for g in c.output.grids:
        cells = -(-48 // g.stride) * -(-32 // g.stride)
        out[g.scores] = np.zeros((1, cells, c.output.classes), np.float32)
        out[g.boxes] = np.zeros((1, cells, 4 * c.output.bins), np.float32)
    return out


def one_hot_sides(bins: int, sides: tuple[int, int, int, int]) -> np.ndarray:
    """Box logits whose softmax puts all weight on the given bin of each side (left, top, right, bottom)."""
    logits = np.full((4, bins), -60.0, np.float32)
    logits[np.arange(4), sides] = 60.0
    return logits.reshape(-1)


# --- decoding, exact on synthetic outputs -------------------------------------------------------------


def test_a_hot_cell_decodes_to_its_exact_box():
    c = card()
    out = blank_outputs(c)
    # stride 8 on a 48-wide input: 6 cells a row; cell 8 is column 2, row 1: centre (20, 12) in pixel-edge units
    out["s8"][0, 8, 0] = 0.9
    out["b8"][0, 8] = one_hot_sides(11, (2, 1, 3, 0))
    boxes, scores = detect.decode_boxes(c.output, out, 48, 32, 0.4)
    assert scores.tolist() == [pytest.approx(0.9)]
    # left 2 strides, top 1, right 3, bottom 0 -> edges (4, 4, 44, 12), then half a pixel to centre units
    np.testing.assert_allclose(boxes, [[3.5, 3.5, 43.5, 11.5]], atol=1e-9)


def test_cells_of_the_coarser_grid_use_its_stride_and_row_width():
    c = card()
    out = blank_outputs(c)
    out["s16"][0, 4, 0] = 0.7  # 3 cells a row: column 1, row 1, centre (24, 24)
    out["b16"][0, 4] = one_hot_sides(11, (1, 1, 1, 1))
    boxes, _ = detect.decode_boxes(c.output, out, 48, 32, 0.4)
    np.testing.assert_allclose(boxes, [[7.5, 7.5, 39.5, 39.5]], atol=1e-9)


def test_only_the_cards_class_above_the_threshold_is_decoded():
    c = card()
    out = blank_outputs(c)
    out["s8"][0, 3, 1] = 0.99  # another class
    out["s8"][0, 5, 0] = 0.39  # just below
    out["s8"][0, 7, 0] = 0.41
    boxes, scores = detect.decode_boxes(c.output, out, 48, 32, 0.4)
    assert len(boxes) == 1 and scores[0] == pytest.approx(0.41)


def test_side_distance_is_the_softmax_expectation_not_the_argmax():
    logits = np.full(11, -60.0)
    logits[[2, 4]] = 5.0  # two equal bins: halfway between them
    assert detect.softmax_expectation(logits) == pytest.approx(3.0)
    assert detect.softmax_expectation(np.zeros(11)) == pytest.approx(5.0)  # uniform: the middle
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4, 11)) * 3
    p = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    np.testing.assert_allclose(detect.softmax_expectation(x), (p * np.arange(11)).sum(-1), rtol=1e-12)


# --- NMS -------------------------------------------------------------------------------------------


def test_iou_of_hand_made_boxes():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    np.testing.assert_allclose(detect.iou_matrix(a, b), [[50 / 150, 0, 1], [50 / 150, 0, 1]])


def test_nms_drops_overlapping_lower_scores_and_keeps_the_rest_best_first():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [21, 20, 31, 30]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # box 1 overlaps box 0 by 81/119 = 0.68; box 2 overlaps box 3 by 90/110 = 0.82
    assert detect.nms(boxes, scores, 0.6, 20).tolist() == [3, 0]
    assert detect.nms(boxes, scores, 0.7, 20).tolist() == [3, 0, 1]
    assert detect.nms(boxes, scores, 0.9, 20).tolist() == [3, 0, 1, 2]
    assert detect.nms(boxes, scores, 0.6, 1).tolist() == [3]
    assert detect.nms(np.zeros((0, 4)), np.zeros(0), 0.6, 20).tolist() == []


# --- back to photo pixels --------------------------------------------------------------------------


@pytest.mark.parametrize("resize", detect.RESIZES)
def test_boxes_map_back_to_photo_pixels(resize):
    spec = card().input  # 48 x 32
    transform = detect.transform_for(200, 50, spec, resize)
    photo_boxes = np.array([[10.0, 5.0, 120.0, 40.0], [-0.5, -0.5, 199.5, 49.5]])
    in_input = transform.forward(photo_boxes.reshape(-1, 2)).reshape(-1, 4)
    np.testing.assert_allclose(detect.to_photo(in_input, transform), photo_boxes, atol=1e-9)


def test_whole_canvas_box_maps_to_the_whole_photo_stretched_and_clipped_to_it_letterboxed():
    spec = card().input
    canvas = np.array([[-0.5, -0.5, 47.5, 31.5]])
    for resize in detect.RESIZES:  # the letterbox pads above and below a wide photo: clipped away
        transform = detect.transform_for(200, 50, spec, resize)
        np.testing.assert_allclose(detect.to_photo(canvas, transform), [[-0.5, -0.5, 199.5, 49.5]], atol=1e-9)


# --- the card --------------------------------------------------------------------------------------


def test_detector_card_parses_into_its_grids():
    c = card()
    assert [(g.scores, g.boxes, g.stride) for g in c.output.grids] == [("s8", "b8", 8), ("s16", "b16", 16)]
    assert (c.output.bins, c.output.classes, c.output.class_index, c.output.class_name) == (11, 2, 0, "person")
    assert (c.score_threshold, c.nms_iou) == (0.4, 0.6)
    assert isinstance(model_card.parse_any(c.to_json()), model_card.DetectorCard)


@pytest.mark.parametrize("changes,message", [
    ({"output__kind": "boxes_yolo"}, "output.kind"),
    ({"output__grids": []}, "output.grids"),
    ({"output__grids": [{"scores": "s8", "stride": 8}]}, "'scores' and 'boxes'"),
    ({"output__grids": [{"scores": "s8", "boxes": "b8", "stride": 0}]}, "stride"),
    ({"output__grids": [{"scores": "a", "boxes": "a", "stride": 8}]}, "each output once"),
    ({"output__class": 2}, "output.class"),
    ({"output__bins": 0}, "output.bins"),
    ({"output__class_name": ""}, "class_name"),
    ({"score_threshold": 1.5}, "score_threshold"),
    ({"nms_iou": None}, "nms_iou"),
    ({"input__color": "RGBA"}, "input.color"),
    ({"schema": 2}, "schema"),
])
def test_bad_detector_cards_are_refused_naming_the_field(changes, message):
    with pytest.raises(ModelError, match="invalid model card") as e:
        card(**changes)
    assert message in str(e.value)


def test_a_pose_card_is_not_a_detector_card_and_vice_versa():
    pose = {**{k: v for k, v in CARD.items() if k not in ("output", "score_threshold", "nms_iou")},
            "output": {"kind": "keypoints", "name": "o", "encoding": "yx_score_normalized"},
            "joints": ["a", "b"], "sides": ["center", "center"], "skeleton": [[0, 1]], "threshold": 0.5}
    model_card.parse(json.dumps(pose))
    with pytest.raises(ModelError, match="pose model's card"):
        model_card.parse_detector(json.dumps(pose))
    with pytest.raises(ModelError, match="person detector's card"):
        model_card.parse(json.dumps(CARD))


# --- the bundled detector --------------------------------------------------------------------------


def opened(path: Path) -> detect.Detector:
    assert path.is_file(), f"{path} is missing: see models/MODELS.md"
    return detect.open_detector(path, threads=1)


@pytest.fixture(scope="module", params=[FP32, SHIPPED], ids=["fp32", "shipped"])
def detector(request) -> detect.Detector:
    return opened(request.param)


def test_bundled_detector_card_matches_its_graph(detector):
    c = detector.card
    assert (c.input.width, c.input.height, c.input.layout, c.input.color) == (416, 416, "NCHW", "BGR")
    assert [g.stride for g in c.output.grids] == [8, 16, 32]
    assert c.output.class_name == "person" and c.license == "Apache-2.0"
    shapes = {o.name: o.shape for o in detector.session.get_outputs()}
    for g in c.output.grids:
        assert shapes[g.scores] == [1, (416 // g.stride) ** 2, 80]
        assert shapes[g.boxes] == [1, (416 // g.stride) ** 2, 44]


def test_finds_the_three_astronauts_in_pilots_jpg(detector):
    rgb = read_photo((DATA / "Pilots.jpg").read_bytes())  # 600 x 471: three men side by side, shoulders to knees
    found = detector(rgb)
    assert len(found) >= 3, found.scores
    assert np.all(np.diff(found.scores) <= 0)
    top = found.boxes[:3]
    centres = np.sort((top[:, 0] + top[:, 2]) / 2)
    assert centres[0] < 200 and 220 < centres[1] < 380 and centres[2] > 400, top
    assert np.all(top[:, 3] - top[:, 1] > 250), top  # each a person-sized box, not a face or a badge
    assert set(found.timings_ms) == {"preprocess", "inference", "postprocess"}


# every detector of models/models.json: its FP32 source and, where that is another file, the file it is served as
EVERY_DETECTOR_FILE = list(dict.fromkeys(f for m in catalog.models("detector") for f in (m.source, m.served)))


@pytest.fixture(scope="module", params=[catalog.MODELS / f for f in EVERY_DETECTOR_FILE], ids=EVERY_DETECTOR_FILE)
def any_detector(request) -> detect.Detector:
    return opened(request.param)


def test_finds_the_one_person_in_pose_jpg_and_covers_him(any_detector):
    rgb = read_photo((DATA / "pose.jpg").read_bytes())  # 1000 x 667: one man, arms stretched out
    found = any_detector(rgb)
    assert len(found) == 1, (found.boxes, found.scores)
    # his extent by eye: left hand x 245, right hand x 755, hair y 240, feet y 640
    iou = detect.iou_matrix(found.boxes, np.array([[245.0, 240.0, 755.0, 640.0]]))[0, 0]
    assert iou > 0.85, found.boxes


def test_every_cell_above_a_zero_threshold_still_gives_at_most_max_detections(detector):
    """All 3549 cells pass: only the best MAX_CANDIDATES reach NMS (its IoU matrix is their square)."""
    found = detector(read_photo((DATA / "Pilots.jpg").read_bytes()), score_threshold=0.0, max_detections=50)
    assert len(found) == 50 and np.all(np.diff(found.scores) <= 0)
    assert found.scores[0] > 0.5


def test_open_detector_records_the_files_sha256():
    assert detect.open_detector(SHIPPED).sha256 == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()


def test_card_that_does_not_fit_the_graph_fails_at_warm_up(detector):
    d = json.loads(detector.card.to_json())
    d["output"]["grids"][0]["stride"], d["output"]["grids"][1]["stride"] = 16, 8  # swapped
    with pytest.raises(ModelError, match="has shape"):
        detect.Detector(detector.session, model_card.parse_detector(json.dumps(d))).warm_up()
    d["output"]["grids"][0]["scores"] = "nope:0"
    with pytest.raises(ModelError, match="not in the graph"):
        detect.Detector(detector.session, model_card.parse_detector(json.dumps(d)))


# --- accuracy on the shared eval set ---------------------------------------------------------------


def test_shipped_detector_person_box_ap_on_coco_multi(coco_multi):
    from build import evaluate_detector

    gt = evaluate_detector.load_gt()
    results = evaluate_detector.box_results(detect.open_detector(SHIPPED, threads=1), gt)
    ap = evaluate_detector.box_ap(gt, results)
    assert ap["AP"] > AP_FLOOR, ap


# --- output kind "dets": an end-to-end detector (its graph did NMS) ---------------------------------


DETS_CARD = {**CARD, "output": {"kind": "dets", "dets": "dets", "labels": "labels", "class": 0, "class_name": "person"}}


def dets_card(**output) -> model_card.DetectorCard:
    return model_card.parse_detector(json.dumps({**DETS_CARD, "output": {**DETS_CARD["output"], **output}}))


def dets_session(dets: list, labels: list, dets_name: str = "dets") -> ort.InferenceSession:
    """A graph with the card's 48x32 NCHW input and the outputs of an mmdeploy export, constant: dets
    [1, N, 5] float32 and labels [1, N] int64 (given as rows; other shapes as given, for the refusals)."""
    d, lab = np.asarray([dets], np.float32), np.asarray([labels], np.int64)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], [dets_name], value=numpy_helper.from_array(d)),
         helper.make_node("Constant", [], ["labels"], value=numpy_helper.from_array(lab))],
        "dets", [helper.make_tensor_value_info("in", TensorProto.FLOAT, [1, 3, 32, 48])],
        [helper.make_tensor_value_info(dets_name, TensorProto.FLOAT, [1, "N", *d.shape[2:]]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1, "L"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


ROWS = [  # x1, y1, x2, y2 in input pixel edges, score; as the graph gives them, best first
    [4, 4, 20, 30, 0.9],
    [5, 4, 21, 30, 0.8],  # overlaps the first by IoU 15/17 = 0.88 (the graph's NMS would have kept it at 0.9)
    [30, 2, 46, 12, 0.7],  # another class
    [24, 6, 40, 28, 0.45],
    [26, 6, 42, 28, 0.3],  # below the card's 0.4
    [0, 0, 0, 0, 0.0],  # mmdeploy's padding row
]
LABELS = [0, 0, 1, 0, 0, 0]
WHOLE_INPUT = np.zeros((32, 48, 3), np.uint8)  # a photo the size of the input: the letterbox is the identity


def test_dets_rows_of_the_cards_class_above_the_threshold_come_back_in_pixel_centres_best_first():
    found = detect.Detector(dets_session(ROWS, LABELS), dets_card())(WHOLE_INPUT, nms_iou=0.95)
    np.testing.assert_allclose(found.boxes, np.array([ROWS[0], ROWS[1], ROWS[3]])[:, :4] - 0.5, atol=1e-9)
    np.testing.assert_allclose(found.scores, [0.9, 0.8, 0.45], rtol=1e-6)


def test_dets_of_a_one_class_card_keep_every_label_and_never_the_padding_row():
    c = dets_card(**{"class": None})
    outputs = detect.Detector(dets_session(ROWS, LABELS), c).run(np.zeros((1, 3, 32, 48), np.float32))
    _, scores = detect.decode_boxes(c.output, outputs, 48, 32, 0.0)
    np.testing.assert_allclose(np.sort(scores)[::-1], [0.9, 0.8, 0.7, 0.45, 0.3], rtol=1e-6)


def test_dets_still_pass_the_services_nms_and_limit():
    d = detect.Detector(dets_session(ROWS, LABELS), dets_card())
    assert len(d(WHOLE_INPUT)) == 2  # the card's nms_iou 0.6 drops the 0.88 overlap the graph kept
    assert d(WHOLE_INPUT, nms_iou=0.95, max_detections=1).scores.tolist() == [pytest.approx(0.9)]


def test_an_inverted_dets_row_is_no_box():
    """A broken graph's row whose right edge is left of its left (or bottom above its top) is dropped, as
    a NaN row is: no person, never a box the drawing cannot draw."""
    rows = [[20, 4, 4, 30, 0.9], [4, 30, 20, 4, 0.8], [24, 6, 40, 28, 0.7]]
    found = detect.Detector(dets_session(rows, [0, 0, 0]), dets_card())(WHOLE_INPUT)
    np.testing.assert_allclose(found.boxes, [np.array(rows[2][:4]) - 0.5], atol=1e-9)


def test_dets_map_back_through_the_letterbox_inverse():
    d = detect.Detector(dets_session(ROWS, LABELS), dets_card())
    rgb = np.zeros((50, 200, 3), np.uint8)  # wide: 48 x 12 inside the input, 10 rows of padding above
    found = d(rgb, nms_iou=0.95)
    transform = detect.transform_for(200, 50, d.card.input)
    expected = detect.to_photo(np.array([ROWS[0], ROWS[1], ROWS[3]])[:, :4] - 0.5, transform)
    np.testing.assert_allclose(found.boxes, expected, atol=1e-9)
    assert transform.pad_y == 10 and found.boxes[0, 1] == -0.5  # the box reached into the padding: clipped


def test_dets_card_parses_and_names_the_outputs_it_reads():
    c = dets_card()
    assert (c.output.kind, c.output.dets, c.output.labels, c.output.class_index) == ("dets", "dets", "labels", 0)
    assert c.output.names == ("dets", "labels")
    assert dets_card(labels=None, **{"class": None}).output.names == ("dets",)
    assert isinstance(model_card.parse_any(c.to_json()), model_card.DetectorCard)


@pytest.mark.parametrize("output,message", [
    ({"dets": ""}, "output.dets"),
    ({"labels": 3}, "output.labels"),
    ({"labels": "dets"}, "two outputs"),
    ({"class": -1}, "output.class"),
    ({"class": True}, "output.class"),
    ({"labels": None}, "needs output.labels"),
    ({"class_name": None}, "class_name"),
])
def test_bad_dets_cards_are_refused_naming_the_field(output, message):
    with pytest.raises(ModelError, match="invalid model card") as e:
        dets_card(**output)
    assert message in str(e.value)


def test_dets_card_that_does_not_fit_the_graph_is_refused():
    with pytest.raises(ModelError, match="not in the graph"):
        detect.Detector(dets_session(ROWS, LABELS, dets_name="boxes"), dets_card())
    with pytest.raises(ModelError, match=r"need \(1, N, 5\)"):  # x1, y1, x2, y2 without a score
        detect.Detector(dets_session([r[:4] for r in ROWS], LABELS), dets_card()).warm_up()
    with pytest.raises(ModelError, match="labels need integers"):  # one label short
        detect.Detector(dets_session(ROWS, LABELS[:-1]), dets_card()).warm_up()
    detect.Detector(dets_session(ROWS, LABELS), dets_card()).warm_up()


# --- the bundled RTMDet-nano -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rtmdet() -> detect.Detector:
    return opened(RTMDET)


def test_rtmdet_card_matches_its_graph(rtmdet):
    c = rtmdet.card
    assert (c.input.width, c.input.height, c.input.layout, c.input.color) == (416, 416, "NCHW", "BGR")
    assert (c.output.kind, c.output.class_index, c.output.class_name, c.license) == ("dets", None, "person", "Apache-2.0")
    shapes = {o.name: o.shape for o in rtmdet.session.get_outputs()}
    assert shapes["dets"][0::2] == [1, 5] and shapes["labels"][0] == 1
    assert [i.shape for i in rtmdet.session.get_inputs()] == [[1, 3, 416, 416]]


def test_rtmdet_finds_the_three_astronauts_in_pilots_jpg(rtmdet):
    found = rtmdet(read_photo((DATA / "Pilots.jpg").read_bytes()))
    assert len(found) == 3, (found.boxes, found.scores)  # the fourth row scores 0.13
    centres = np.sort((found.boxes[:, 0] + found.boxes[:, 2]) / 2)
    assert centres[0] < 200 and 220 < centres[1] < 380 and centres[2] > 400, found.boxes
    assert np.all(found.boxes[:, 3] - found.boxes[:, 1] > 250), found.boxes


def test_rtmdet_is_served_as_its_fp32_file_and_its_card_says_so(rtmdet):
    """INT8 lost 26 points of box AP: the model layer serves models/rtmdet-nano.onnx itself."""
    assert RTMDET == ROOT / "models" / "rtmdet-nano.onnx"
    assert rtmdet.card.quantization == "fp32"


def test_shipped_rtmdet_person_box_ap_on_coco_multi(coco_multi):
    from build import evaluate_detector

    gt = evaluate_detector.load_gt()
    ap = evaluate_detector.box_ap(gt, evaluate_detector.box_results(detect.open_detector(RTMDET, threads=1), gt))
    assert ap["AP"] > RTMDET_AP_FLOOR, ap
