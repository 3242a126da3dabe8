"""PP-TinyPose 256x192 (models/pp-tinypose-256x192.onnx, made by build/convert_openvino.py from the committed
OpenVINO IR in models/sources/tinypose_256_192/): it computes what OpenVINO computes on the IR, the converter
reproduces it byte for byte, and the service's own pipeline places the joints of pose.jpg where the default
model does.

The first two need ``openvino`` (requirements-dev.txt) and are skipped, saying so, without it.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from build import cards, convert_openvino
from conftest import DATA, ROOT, served_model
from pose.detect import open_detector
from pose.image import read_photo
from pose.model import PoseModel
from pose.pipeline import estimate_people
from pose.source import sha256_of

pytestmark = pytest.mark.model

MODEL = convert_openvino.OUT
DETECTOR = ROOT / "models" / "int8" / "nanodet.int8.onnx"


def _openvino():
    return pytest.importorskip("openvino", reason="openvino is not installed (pip install -r requirements-dev.txt): "
                                                  "the comparison with OpenVINO itself cannot run")


def test_card_and_graph_are_what_the_integration_needs():
    card = cards.get_card(onnx.load(str(MODEL), load_external_data=False))
    assert (card["name"], card["license"], card["quantization"]) == ("pp-tinypose-256x192", "Apache-2.0", "fp32")
    assert card["input"] == {"name": "image", "height": 256, "width": 192, "layout": "NCHW", "dtype": "float32",
                             "color": "RGB", "scaling": {"kind": "mean_std", "mean": [0.485, 0.456, 0.406],
                                                         "std": [0.229, 0.224, 0.225]}}
    assert card["output"] == {"kind": "heatmaps", "name": "conv2d_441.tmp_1", "layout": "NCHW"}
    assert card["joints"] == list(cards.COCO_JOINTS)
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, out.name, out.shape) == ("image", ["N", 3, 256, 192], "conv2d_441.tmp_1", ["N", 17, 64, 48])


def test_onnx_matches_openvino_on_the_committed_photos():
    """Same photos, the service's preprocessing; OpenVINO on the untouched IR. Measured: at most 2.0e-5
    (heatmap peaks 0.92-0.98), the same argmax cell for every joint."""
    _openvino()
    model = onnx.load(str(MODEL))
    tensors = convert_openvino.photo_tensors(model)
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    ours = [session.run(None, {"image": t})[0] for t in tensors]
    theirs = convert_openvino.openvino_outputs(convert_openvino.SOURCE_DIR / "model.xml", tensors)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape == (1, 17, 64, 48)
        assert b.max() > 0.5  # a real heatmap, not a blank
        assert np.abs(a - b).max() < 1e-4
        assert (a.reshape(17, -1).argmax(1) == b.reshape(17, -1).argmax(1)).all()


def test_the_converter_reproduces_the_committed_file():
    _openvino()
    rebuilt = convert_openvino.convert().SerializeToString()
    assert hashlib.sha256(rebuilt).hexdigest() == sha256_of(MODEL), \
        "rerun build/convert_openvino.py and update models/MODELS.md (the tool versions may differ)"


def test_an_op_it_does_not_know_is_refused_by_name():
    ov = _openvino()
    from openvino import opset8

    image = opset8.parameter([1, 3, 8, 8], np.float32, name="image")
    heat = opset8.sigmoid(image)
    heat.output(0).set_names({"heat"})
    with pytest.raises(convert_openvino.ConversionError, match=r"does not translate: Sigmoid"):
        convert_openvino.to_onnx(ov.Model([heat], [image], "tiny"), "heat")


def test_served_it_places_pose_jpg_joints_where_movenet_does():
    """The service's pipeline with the bundled detector: one person, each joint within 5% of their box's
    diagonal from MoveNet Thunder's (the default before; measured: at most 1.9%), and confidently scored."""
    rgb = read_photo((DATA / "pose.jpg").read_bytes())
    detector = open_detector(DETECTOR, threads=1)
    tiny = estimate_people(rgb, PoseModel(MODEL, threads=1), detector).people
    movenet = estimate_people(rgb, PoseModel(served_model("movenet-thunder"), threads=1), detector).people
    assert len(tiny) == len(movenet) == 1
    left, top, right, bottom = movenet[0].box
    distance = np.hypot(*(tiny[0].points - movenet[0].points).T) / np.hypot(right - left, bottom - top)
    print(json.dumps({"distance / diagonal": np.round(distance, 3).tolist()}))
    assert distance.max() < 0.05
    assert (tiny[0].scores > 0.6).all()
