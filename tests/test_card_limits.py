"""The model card is checked field by field at cold start: type, range and size, every number finite.

A card that passes can only produce finite input tensors and replies of bounded size; tests/test_model_faults.py
starts the function on some of these cards in a fresh process (one log line, no traceback).
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

from conftest import ROOT, served_model
from pose import card as model_card
from pose.errors import ModelError
from pose.image import to_tensor


@pytest.fixture(scope="module")
def base() -> dict:
    """MoveNet Thunder's served card (keypoints output, int32 input, raw scaling)."""
    model = onnx.load(str(served_model("movenet-thunder")), load_external_data=False)
    return json.loads({p.key: p.value for p in model.metadata_props}[model_card.CARD_KEY])


def float_input(card: dict, scaling: dict) -> dict:
    card["input"].update(dtype="float32", scaling=scaling)
    return card


BAD_CARDS = {  # name: (edit of the card dict, or the card's text; words the error must contain)
    # numbers that are not finite, or finite but so large or small that scaling overflows
    "NaN in the mean": (lambda c: float_input(c, {"kind": "mean_std", "mean": [math.nan, 0.5, 0.5],
                                                  "std": [0.2, 0.2, 0.2]}), "NaN"),
    "Infinity in the std": (lambda c: float_input(c, {"kind": "mean_std", "mean": [0.5] * 3,
                                                      "std": [math.inf, 1, 1]}), "Infinity"),
    "a mean of 1e999 (infinite once read)": ('"mean": [1e999, 0, 0]', "beyond a float's range"),
    "a std of 1e-300": (lambda c: float_input(c, {"kind": "mean_std", "mean": [0.5] * 3, "std": [1e-300, 1, 1]}),
                        "input.scaling.std"),
    "a range of +-1e308": (lambda c: float_input(c, {"kind": "range", "range": [-1e308, 1e308]}),
                           "input.scaling.range"),
    "a range of strings": (lambda c: float_input(c, {"kind": "range", "range": ["-1", "1"]}), "input.scaling.range"),
    "a range below 0 for uint8 input": (lambda c: c["input"].update(dtype="uint8", scaling={
        "kind": "range", "range": [-1, 1]}), "input.scaling.range"),
    "mean_std on an int32 input": (lambda c: c["input"].update(scaling={
        "kind": "mean_std", "mean": [0.5] * 3, "std": [0.2] * 3}), "needs input.dtype float32"),
    "NaN in an unknown field": (lambda c: c.update(calibration={"loss": math.nan}), "NaN"),
    "whole_photo of 1": (lambda c: c.update(whole_photo=1), "whole_photo must be true or false"),
    "a threshold of NaN": (lambda c: c.update(threshold=math.nan), "NaN"),
    # booleans where integers or numbers belong (True == 1 in Python)
    "a skeleton of booleans": (lambda c: c.update(skeleton=[[True, False], [False, True]]), "skeleton"),
    "flip pairs of booleans": (lambda c: c.update(flip_pairs=[[True, False]]), "flip_pairs"),
    "a threshold of true": (lambda c: c.update(threshold=True), "threshold"),
    "a schema of true": (lambda c: c.update(schema=True), "schema"),
    "an input height of true": (lambda c: c["input"].update(height=True), "input.height"),
    "an input width of 256.0": (lambda c: c["input"].update(width=256.0), "input.width"),
    # sizes: every reply repeats the names; /health returns the whole card
    "a 6 MB name": (lambda c: c.update(name="n" * 6_000_000), "the limit is 65536"),
    "a 201-character name": (lambda c: c.update(name="n" * 201), "name must be"),
    "a 201-character version": (lambda c: c.update(version="v" * 201), "version must be"),
    "a 2001-character source": (lambda c: c.update(source="s" * 2001), "source must be"),
    "a 201-character joint name": (lambda c: c["joints"].__setitem__(0, "j" * 201), "joints must be"),
    "257 joints": (lambda c: c.update(joints=[f"j{i}" for i in range(257)], sides=["center"] * 257), "joints must be"),
    "1025 limbs": (lambda c: c.update(skeleton=[[0, 1]] * 1025), "skeleton must be"),
    "an empty input name": (lambda c: c["input"].update(name=""), "input.name"),
    "an output name that is a list": (lambda c: c["output"].update(name=["x"]), "output.name"),
    "a 64 KB unknown field": (lambda c: c.update(notes="x" * 65_536), "the limit is 65536"),
    # nesting that stops the parser
    "nested 100,000 deep": ("[" * 100_000 + "]" * 100_000, "the limit is 65536"),
    "nested 30,000 deep, under the size limit": ("[" * 30_000 + "]" * 30_000, "not JSON"),
}


def card_text(base: dict, change) -> str:
    if isinstance(change, str) and change.startswith('"mean"'):
        card = float_input(json.loads(json.dumps(base)), {"kind": "mean_std", "mean": [0, 0, 0], "std": [1, 1, 1]})
        return json.dumps(card).replace('"mean": [0, 0, 0]', change)
    if isinstance(change, str):
        return change
    card = json.loads(json.dumps(base))
    change(card)
    return json.dumps(card)


@pytest.mark.parametrize("name", list(BAD_CARDS))
def test_a_card_out_of_type_range_or_size_is_refused_naming_the_field(base, name):
    change, words = BAD_CARDS[name]
    text = card_text(base, change)
    with pytest.raises(ModelError, match="invalid model card") as refused:
        model_card.parse(text)
    assert words in refused.value.message, refused.value.message
    assert len(refused.value.message) < 400


def test_the_served_cards_and_the_widest_accepted_scalings_parse(base):
    assert model_card.parse(json.dumps(base)).name == base["name"]
    for scaling, dtype in [({"kind": "range", "range": [0, 255]}, "uint8"),
                           ({"kind": "range", "range": [-1e4, 1e4]}, "float32"),
                           ({"kind": "mean_std", "mean": [-1e4, 1e4, 0], "std": [1e-4, 1e4, 1]}, "float32")]:
        card = json.loads(json.dumps(base))
        card["input"].update(dtype=dtype, scaling=scaling)
        parsed = model_card.parse(json.dumps(card))
        canvas = np.array([[[0, 128, 255]]], np.uint8).repeat(8, 0).repeat(8, 1)
        tensor = to_tensor(canvas, parsed.input)
        assert np.isfinite(tensor.astype(np.float64)).all(), scaling


@pytest.fixture(scope="module")
def detector_base() -> dict:
    """The bundled person detector's card (NanoDet)."""
    model = onnx.load(str(ROOT / "models" / "nanodet.onnx"), load_external_data=False)
    return json.loads({p.key: p.value for p in model.metadata_props}[model_card.CARD_KEY])


BAD_DETECTOR_CARDS = {
    "bins of true": (lambda c: c["output"].update(bins=True), "output.bins"),
    "a million classes": (lambda c: c["output"].update(classes=10 ** 6), "output.classes"),
    "class of false": (lambda c: c["output"].update({"class": False}), "output.class"),
    "a stride of true": (lambda c: c["output"]["grids"][0].update(stride=True), "stride"),
    "a 201-character class name": (lambda c: c["output"].update(class_name="p" * 201), "output.class_name"),
    "nine grids": (lambda c: c["output"].update(grids=c["output"]["grids"] * 3), "output.grids"),
    "a score threshold of NaN": (lambda c: c.update(score_threshold=math.nan), "NaN"),
    "an NMS IoU of true": (lambda c: c.update(nms_iou=True), "nms_iou"),
    "a std of 0": (lambda c: c["input"]["scaling"].update(std=[0, 0.2, 0.2]), "input.scaling.std"),
}


@pytest.mark.parametrize("name", list(BAD_DETECTOR_CARDS))
def test_a_detector_card_out_of_type_range_or_size_is_refused(detector_base, name):
    change, words = BAD_DETECTOR_CARDS[name]
    assert isinstance(model_card.parse_detector(json.dumps(detector_base)), model_card.DetectorCard)
    card = json.loads(json.dumps(detector_base))
    change(card)
    with pytest.raises(ModelError, match="invalid model card") as refused:
        model_card.parse_detector(json.dumps(card))
    assert words in refused.value.message, refused.value.message
