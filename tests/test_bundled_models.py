"""The FP32 source of every pose model in models/models.json: each loads in onnxruntime, carries a valid card
that matches its graph, and finds the person in pose.jpg.

onnxruntime, numpy and pillow only; the card validator is the service's (handler/ is on the path: pyproject.toml's
pytest `pythonpath`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from pose import card as card_schema

from local import catalog

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = [m.name for m in catalog.models("pose")]
POSE_JPG = (ROOT / "tests" / "data" / "pose.jpg", ROOT.parent / "shared" / "images" / "pose.jpg")

# pose.jpg (1000x667): one man in a yoga warrior pose facing the camera, arms stretched out.
# EfficientPose is a single-person model trained on person-centred MPII crops: it gets the part
# of the photo around him (as fractions of width and height); MoveNet gets the whole photo.
PERSON_CROP = {"efficientpose": (0.2, 0.3, 0.8, 1.0)}
ORT_DTYPES = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(uint8)": "uint8"}


@pytest.fixture(scope="module", params=BUNDLED)
def bundled(request):
    model = catalog.get(request.param)
    path = model.source_path
    assert path.is_file(), f"{path} is missing: make it with {model.recipe['build']} (see models/MODELS.md)"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    card = card_schema.parse(session.get_modelmeta().custom_metadata_map.get(card_schema.CARD_KEY))
    return request.param, session, card


@pytest.fixture(scope="module")
def pose_photo() -> Image.Image:
    for p in POSE_JPG:
        if p.is_file():
            return Image.open(p).convert("RGB")
    pytest.skip(f"pose.jpg is absent (looked for {', '.join(map(str, POSE_JPG))}): "
                "clone the project with ../shared beside it to run this test")


def test_bundled_model_card_parses_and_says_fp32(bundled):
    name, _, card = bundled
    assert card.quantization == "fp32"
    assert card.name and card.version and card.source and card.license
    assert len(set(card.joints)) == len(card.joints) >= 16, name
    assert all(0 <= i < len(card.joints) for pair in card.skeleton for i in pair)


def test_card_input_matches_the_graph_input(bundled):
    _, session, card = bundled
    inputs = {i.name: i for i in session.get_inputs()}
    assert card.input.name in inputs, f"card input {card.input.name!r} not among {list(inputs)}"
    graph_input = inputs[card.input.name]
    h, w = card.input.height, card.input.width
    want = [1, h, w, 3] if card.input.layout == "NHWC" else [1, 3, h, w]
    assert list(graph_input.shape[1:]) == want[1:]
    assert graph_input.shape[0] == 1 or not isinstance(graph_input.shape[0], int)  # batch: 1 or symbolic
    assert ORT_DTYPES[graph_input.type] == card.input.dtype


def test_card_output_matches_the_graph_output(bundled):
    _, session, card = bundled
    outputs = {o.name: o for o in session.get_outputs()}
    assert card.output.name in outputs, f"card output {card.output.name!r} not among {list(outputs)}"
    shape = outputs[card.output.name].shape
    n = len(card.joints)
    if card.output.kind == "keypoints":
        assert shape[-2:] == [n, 3]
    else:
        channels = shape[-1] if card.output.layout == "NHWC" else shape[1]
        assert channels == n


def letterbox(photo: Image.Image, width: int, height: int) -> tuple[np.ndarray, float, float, float]:
    """The photo scaled to fit and centred on black; returns (HWC uint8, scale, pad_x, pad_y)."""
    s = min(width / photo.width, height / photo.height)
    w, h = round(photo.width * s), round(photo.height * s)
    canvas = Image.new("RGB", (width, height))
    px, py = (width - w) // 2, (height - h) // 2
    canvas.paste(photo.resize((w, h), Image.BILINEAR), (px, py))
    return np.asarray(canvas), s, px, py


def to_tensor(rgb: np.ndarray, spec: card_schema.InputSpec) -> np.ndarray:
    x = rgb.astype(np.float32)
    if spec.color == "BGR":
        x = x[..., ::-1]
    if spec.scaling["kind"] == "range":
        lo, hi = spec.scaling["range"]
        x = lo + x / 255.0 * (hi - lo)
    elif spec.scaling["kind"] == "mean_std":
        x = (x / 255.0 - np.array(spec.scaling["mean"])) / np.array(spec.scaling["std"])
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None]).astype(spec.dtype)


def predict(session, card, photo: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Joints as (x, y) in photo pixels and their scores."""
    spec = card.input
    rgb, s, px, py = letterbox(photo, spec.width, spec.height)
    out = session.run([card.output.name], {spec.name: to_tensor(rgb, spec)})[0]
    if card.output.kind == "keypoints":
        rows = out.reshape(-1, len(card.joints), 3)[0]
        xy = np.stack([rows[:, 1] * spec.width, rows[:, 0] * spec.height], axis=1)
        scores = rows[:, 2]
    else:
        maps = out[0] if card.output.layout == "NHWC" else out[0].transpose(1, 2, 0)
        mh, mw, n = maps.shape
        flat = maps.reshape(-1, n)
        idx = flat.argmax(0)
        scores = flat.max(0)
        xy = np.stack([(idx % mw + 0.5) * spec.width / mw, (idx // mw + 0.5) * spec.height / mh], axis=1)
    return (xy - [px, py]) / s, scores


def test_model_finds_the_person_in_pose_jpg(bundled, pose_photo):
    name, session, card = bundled
    photo, ox, oy = pose_photo, 0, 0
    if name in PERSON_CROP:
        fx0, fy0, fx1, fy1 = PERSON_CROP[name]
        ox, oy = round(fx0 * photo.width), round(fy0 * photo.height)
        photo = photo.crop((ox, oy, round(fx1 * photo.width), round(fy1 * photo.height)))
    xy, scores = predict(session, card, photo)
    xy = xy + [ox, oy]
    j = {n: i for i, n in enumerate(card.joints)}
    found = scores > 0.3
    assert found.sum() >= 0.75 * len(card.joints), dict(zip(card.joints, np.round(scores, 2)))
    W, H = pose_photo.size
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) & (xy[:, 1] < H)
    assert inside[found].all(), dict(zip(card.joints, np.round(xy, 1).tolist()))
    head = j["nose"] if "nose" in j else j["head_top"]
    ankles = [j["l_ankle"], j["r_ankle"]]
    assert xy[head, 1] < xy[ankles, 1].min() - 0.3 * H, "the head should be well above the ankles"
    # he faces the camera: his right wrist is on the left of the photo (pins the card's left/right)
    assert xy[j["r_wrist"], 0] < W / 2 < xy[j["l_wrist"], 0]
