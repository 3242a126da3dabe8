"""Photo -> person boxes: a detector's preprocessing, the decoding of its outputs, and NMS.

The detector's card (``card.DetectorCard``) says everything model-specific; each output kind is one
row of ``KINDS`` (its decoder and the check of its output shapes):

- ``boxes_gfl``, NanoDet's head: for each grid cell of each feature level, class scores (already
  sigmoid) and, for each side of the box (left, top, right, bottom), ``bins`` logits over the distances
  0, 1, ..., bins - 1 strides from the cell centre; the distance is the softmax expectation over them.
- ``dets``, an end-to-end detector (RTMDet as mmdeploy exports it): the graph has run its own NMS and
  gives at most a fixed number of rows x1, y1, x2, y2, score (and a label per row). The service's NMS
  after it removes nothing unless asked for a lower IoU than the graph's; it still sets the limit.

Coordinates: in photo pixels with pixel centres on integers (as in ``image``), so a box that covers
a whole W x H photo is (-0.5, -0.5, W - 0.5, H - 0.5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnxruntime as ort

from . import card as model_card
from .card import BoxesSpec, DetectorCard, DetsSpec, InputSpec
from .errors import ModelError
from .image import Letterbox, to_tensor
from .session import open_session

RESIZES = ("letterbox", "stretch")
MAX_CANDIDATES = 1000  # best-scored cells that go into NMS (its IoU matrix is candidates squared)


@dataclass
class Detections:
    """People found in a photo, best first."""
    boxes: np.ndarray  # (D, 4) float64: left, top, right, bottom in photo pixels
    scores: np.ndarray  # (D,)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)


def transform_for(width: int, height: int, spec: InputSpec, resize: str = "letterbox") -> Letterbox:
    """The photo -> model input transform: aspect kept and padded ('letterbox'), or 'stretch'ed to fill."""
    if resize == "stretch":
        return Letterbox(width, height, spec.width, spec.height, 0, 0)
    return Letterbox.fit(width, height, spec.width, spec.height)


def prepare(rgb: np.ndarray, spec: InputSpec, resize: str = "letterbox") -> tuple[np.ndarray, Letterbox]:
    """(H, W, 3) uint8 RGB photo -> the detector's input tensor (batch of 1) and the transform used."""
    box = transform_for(rgb.shape[1], rgb.shape[0], spec, resize)
    return to_tensor(box.apply(rgb, spec.width, spec.height, pad=spec.pad), spec), box


def softmax_expectation(logits: np.ndarray) -> np.ndarray:
    """(..., bins) logits -> (...,) expected bin index under their softmax."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (z * np.arange(logits.shape[-1])).sum(axis=-1) / z.sum(axis=-1)


def decode_boxes(spec: BoxesSpec | DetsSpec, outputs: Mapping[str, np.ndarray], in_w: int, in_h: int,
                 score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The detector's outputs (batch of 1) -> ((N, 4) boxes in input pixels, (N,) scores) of the card's
    class scoring at least ``score_threshold``, in no particular order, by the decoder of the output kind."""
    boxes, scores = KINDS[spec.kind].decode(spec, outputs, in_w, in_h, score_threshold)
    # a broken model's NaN, infinity or inverted box (right of its left or above its top): no box
    valid = np.isfinite(boxes).all(axis=1) & np.isfinite(scores) & (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
    return boxes[valid], scores[valid]


def decode_gfl(spec: BoxesSpec, outputs: Mapping[str, np.ndarray], in_w: int, in_h: int,
               score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """NanoDet's grids -> the boxes and scores of the cells whose score for the card's class is at least
    ``score_threshold``.

    Cell i of a grid of stride s, gw = ceil(in_w / s) cells wide, has its centre at
    ((i % gw + 0.5) s, (i // gw + 0.5) s) in input coordinates whose pixel edges are integers; the
    boxes are returned with pixel centres on integers (half a pixel less).
    """
    all_boxes, all_scores = [], []
    for g in spec.grids:
        scores = outputs[g.scores][0, :, spec.class_index]
        cells = np.flatnonzero(scores >= score_threshold)
        gw = -(-in_w // g.stride)
        centres = np.stack([(cells % gw + 0.5) * g.stride, (cells // gw + 0.5) * g.stride], axis=1)
        logits = outputs[g.boxes][0, cells].astype(np.float64).reshape(len(cells), 4, spec.bins)
        dist = softmax_expectation(logits) * g.stride  # (N, 4): left, top, right, bottom
        all_boxes.append(np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1) - 0.5)
        all_scores.append(scores[cells].astype(np.float64))
    return np.concatenate(all_boxes), np.concatenate(all_scores)


def decode_dets(spec: DetsSpec, outputs: Mapping[str, np.ndarray], in_w: int, in_h: int,
                score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """An end-to-end detector's rows -> the boxes and scores of the rows of the card's class (every row
    when it has none) scoring at least ``score_threshold`` and above 0 (a row of score 0 is the exporter's
    padding: mmdeploy appends one zero row). Boxes come in pixel edges, as the grids' do."""
    dets = outputs[spec.dets][0].astype(np.float64)
    keep = (dets[:, 4] >= score_threshold) & (dets[:, 4] > 0)
    if spec.class_index is not None:
        keep &= outputs[spec.labels][0] == spec.class_index
    return dets[keep, :4] - 0.5, dets[keep, 4]


def check_gfl(spec: BoxesSpec, outputs: Mapping[str, np.ndarray], inp: InputSpec) -> None:
    """Each grid's outputs have the cells its stride makes of the input, and classes or 4 x bins values."""
    for g in spec.grids:
        cells = -(-inp.width // g.stride) * -(-inp.height // g.stride)
        for name, width in ((g.scores, spec.classes), (g.boxes, 4 * spec.bins)):
            if outputs[name].shape != (1, cells, width):
                raise ModelError(f"invalid model card: output '{name}' has shape {outputs[name].shape}; "
                                 f"stride {g.stride} on a {inp.width}x{inp.height} input needs (1, {cells}, {width})")


def check_dets(spec: DetsSpec, outputs: Mapping[str, np.ndarray], inp: InputSpec) -> None:
    """dets is (1, N, 5); labels, when read, (1, N) integers."""
    shape = outputs[spec.dets].shape
    if len(shape) != 3 or shape[0] != 1 or shape[2] != 5:
        raise ModelError(f"invalid model card: output '{spec.dets}' has shape {shape}; dets need (1, N, 5)")
    if spec.labels is not None:
        labels = outputs[spec.labels]
        if labels.shape != shape[:2] or labels.dtype.kind not in "iu":
            raise ModelError(f"invalid model card: output '{spec.labels}' is {labels.dtype} {labels.shape}; "
                             f"labels need integers of shape {shape[:2]}")


@dataclass(frozen=True)
class OutputKind:
    """How the service reads one detector output kind."""
    decode: Callable[..., tuple[np.ndarray, np.ndarray]]  # (spec, outputs, in_w, in_h, threshold) -> boxes, scores
    check: Callable[..., None]  # (spec, outputs of a run, input spec): raise ModelError if the shapes do not fit


KINDS = {"boxes_gfl": OutputKind(decode_gfl, check_gfl), "dets": OutputKind(decode_dets, check_dets)}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) and (M, 4) boxes (left, top, right, bottom) -> (N, M) intersection over union."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_detections: int) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best first. A box is dropped when its
    IoU with a kept, higher-scored box is above ``iou``; at most ``max_detections`` are kept."""
    order = np.argsort(-scores, kind="stable")
    overlaps = iou_matrix(boxes[order], boxes[order]) > iou
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if len(keep) == max_detections:
            break
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]
    return order[np.asarray(keep, dtype=np.int64)]


def to_photo(boxes: np.ndarray, transform: Letterbox) -> np.ndarray:
    """(N, 4) boxes in input pixels -> photo pixels, clipped to the photo."""
    corners = transform.inverse(boxes.reshape(-1, 2)).reshape(-1, 4)
    lo, hi = -0.5, np.array([transform.width, transform.height]) - 0.5
    corners[:, :2] = np.clip(corners[:, :2], lo, hi)
    corners[:, 2:] = np.clip(corners[:, 2:], lo, hi)
    return corners


class Detector:
    """A person detector: one onnxruntime session and its card."""

    def __init__(self, session: ort.InferenceSession, card: DetectorCard, resize: str = "letterbox"):
        names = {o.name for o in session.get_outputs()}
        missing = [n for n in card.output.names if n not in names]
        if missing:
            raise ModelError(f"invalid model card: outputs {missing} are not in the graph {sorted(names)}")
        if card.input.name not in {i.name for i in session.get_inputs()}:
            raise ModelError(f"invalid model card: input '{card.input.name}' is not in the graph")
        self.session, self.card, self.resize = session, card, resize
        self.sha256: str | None = None  # of the file, when opened by open_detector
        self.output_names = list(card.output.names)

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.card.input.name: tensor})))

    def __call__(self, rgb: np.ndarray, score_threshold: float | None = None, nms_iou: float | None = None,
                 max_detections: int = 20) -> Detections:
        """(H, W, 3) uint8 RGB photo -> the people in it, best first, with stage timings.

        The service's NMS runs for every output kind: after a graph's own NMS (kind ``dets``) it drops only
        what a lower ``nms_iou`` than the graph's asks for, and it keeps at most ``max_detections``."""
        threshold = self.card.score_threshold if score_threshold is None else score_threshold
        iou = self.card.nms_iou if nms_iou is None else nms_iou
        spec = self.card.input
        t0 = time.perf_counter()
        tensor, transform = prepare(rgb, spec, self.resize)
        t1 = time.perf_counter()
        outputs = self.run(tensor)
        t2 = time.perf_counter()
        boxes, scores = decode_boxes(self.card.output, outputs, spec.width, spec.height, threshold)
        best = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
        boxes, scores = boxes[best], scores[best]
        keep = nms(boxes, scores, iou, max_detections)
        result = Detections(to_photo(boxes[keep], transform), scores[keep])
        t3 = time.perf_counter()
        result.timings_ms = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return result

    def warm_up(self) -> None:
        """One run on a blank input: the outputs must have the shapes the card implies."""
        spec, out = self.card.input, self.card.output
        shape = (1, 3, spec.height, spec.width) if spec.layout == "NCHW" else (1, spec.height, spec.width, 3)
        KINDS[out.kind].check(out, self.run(np.zeros(shape, dtype=spec.dtype)), spec)


def open_detector(path: str | Path, threads: int | None = 1, expected_sha256: str | None = None,
                  arena: bool = False) -> Detector:
    """Open the detector ONNX file with the service's session options, read its card, and warm it up."""
    session, sha256 = open_session(Path(path), threads, expected_sha256, arena)
    card = model_card.parse_detector(session.get_modelmeta().custom_metadata_map.get(model_card.CARD_KEY))
    detector = Detector(session, card)
    detector.sha256 = sha256
    detector.warm_up()
    return detector
