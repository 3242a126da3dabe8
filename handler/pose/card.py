"""The model card: how to feed a model (a pose model or a person detector) and how to read its outputs.

Every served ONNX file carries one JSON document in its ``metadata_props`` under the key
``pose`` (``CARD_KEY``). The build tools write it; the service reads it at cold start and
refuses a model whose card is missing or invalid. Nothing else in the service knows anything
model-specific.

Card fields (JSON)::

    {
      "schema": 1,
      "name": "movenet-singlepose-thunder", "version": "4",
      "source": "where the weights come from", "license": "Apache-2.0",
      "quantization": "fp32" | "int8-static" | "int8-dynamic" | ...,
      "input": {
        "name": "input", "height": 256, "width": 256,
        "layout": "NHWC" | "NCHW", "dtype": "float32" | "int32" | "uint8",
        "color": "RGB" | "BGR",
        "scaling": {"kind": "raw"}                                   # 0..255 as is
                 | {"kind": "range", "range": [-1.0, 1.0]}           # 0..255 -> [lo, hi]
                 | {"kind": "mean_std", "mean": [r, g, b], "std": [r, g, b]}  # on 0..1 values
        "pad": 114                        # optional: the letterbox's fill, 0..255 (default 0, black)
      },
      "output": {"kind": "heatmaps", "name": "...", "layout": "NCHW" | "NHWC"}
              | {"kind": "keypoints", "name": "...", "encoding": "yx_score_normalized"}
              | {"kind": "yolo_pose", "name": "...",         # a single-stage YOLO-pose export (below)
                 "score_threshold": 0.25, "nms_iou": 0.7, "person_detector": false},
      "joints": ["nose", ...],            # output order
      "sides": ["center" | "left" | "right", ...],   # one per joint, for colours
      "skeleton": [[i, j], ...],          # limbs as joint index pairs
      "flip_pairs": [[i, j], ...],        # left/right twins
      "threshold": 0.6,                   # default score threshold
      "whole_photo": true,                # optional: false for a top-down model trained on person crops,
                                          # whose look at a whole photo is no answer of its own
      "score_maps": {...}                 # optional: raw scores -> probabilities (calibrate.py)
    }

A person detector's card has the same first fields and ``input``; its output and defaults differ::

    {
      ... "schema", "name", "version", "source", "license", "quantization", "input" as above ...
      "output": {"kind": "boxes_gfl",            # per grid cell: class scores and 4 x `bins` side logits
                 "grids": [{"scores": "...", "boxes": "...", "stride": 8}, ...],
                 "bins": 11, "classes": 80, "class": 0, "class_name": "person"},
      "score_threshold": 0.35,            # default minimum score of a detection
      "nms_iou": 0.6                      # default IoU above which the lower-scored box is dropped
    }

An end-to-end detector, whose graph already keeps the best boxes after its own NMS (RTMDet as
exported by mmdeploy), has the output kind ``dets``::

      "output": {"kind": "dets",
                 "dets": "...",                  # [1, N, 5]: x1, y1, x2, y2 (input pixel edges), score
                 "labels": "..." | null,         # [1, N] class indices; null: the graph has none
                 "class": 0 | null,              # the rows kept are those labelled so; null: all (one class)
                 "class_name": "person"}

``yolo_pose`` is the raw output of an Ultralytics YOLOv8/YOLO11-pose ONNX export, [1, 4 + 1 + 3K, N]: per
candidate cx, cy, w, h (input pixels), the person score, then K x (x, y, visibility score), no NMS.
``score_threshold`` is the least person score of a candidate and ``nms_iou`` the IoU above which the
lower-scored of two boxes is dropped. ``person_detector`` says how the service finds people: false (the
default), the model's own candidates are the people and no detector runs; true, with a detector the
model runs on each person's crop as the other kinds do (its best candidate there is that person).

``parse`` reads a pose model's card and ``parse_detector`` a detector's; each refuses the other kind.

The scaling and colour fields are the channel order the weights were trained with (``color``
lists the order of the three channels of the tensor); ``mean``/``std`` are given in that same
channel order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ModelError

CARD_KEY = "pose"
SCHEMA_VERSION = 1

LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "int32", "uint8")
COLORS = ("RGB", "BGR")
SIDES = ("center", "left", "right")
SCALINGS = ("raw", "range", "mean_std")
KEYPOINT_ENCODINGS = ("yx_score_normalized",)
POSE_OUTPUTS = ("heatmaps", "keypoints", "yolo_pose")
DETECTOR_OUTPUTS = ("boxes_gfl", "dets")


@dataclass(frozen=True)
class InputSpec:
    name: str
    height: int
    width: int
    layout: str
    dtype: str
    color: str
    scaling: Mapping[str, Any]
    pad: int = 0  # the letterbox's fill value, 0..255


@dataclass(frozen=True)
class OutputSpec:
    kind: str  # one of POSE_OUTPUTS
    name: str
    layout: str | None = None  # heatmaps only
    encoding: str | None = None  # keypoints only
    score_threshold: float | None = None  # yolo_pose only: least person score of a candidate
    nms_iou: float | None = None  # yolo_pose only: IoU above which the lower-scored candidate is dropped
    person_detector: bool = False  # yolo_pose only: crops from the service's detector (true) or own candidates


class _Described:
    """A card that keeps its JSON document (`raw`) as the file had it."""

    raw: Mapping[str, Any]

    def to_json(self) -> str:
        return json.dumps(self.raw, sort_keys=True)

    def describe(self) -> dict[str, Any]:
        """The card as plain JSON-able data (for /health)."""
        return json.loads(self.to_json())


@dataclass(frozen=True)
class Card(_Described):
    name: str
    version: str
    source: str
    license: str
    quantization: str
    input: InputSpec
    output: OutputSpec
    joints: tuple[str, ...]
    sides: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    threshold: float
    raw: Mapping[str, Any]
    score_maps: ScoreMaps | None = None  # raw scores -> probabilities (calibrate.py); None: scores as the model gives them
    whole_photo: bool = True  # a single-person model whose look at a whole photo is an answer of its own


@dataclass(frozen=True)
class ScoreMap:
    """A monotone map of raw scores to probabilities: linear between the knots, flat beyond them."""
    raw: tuple[float, ...]  # strictly increasing
    probability: tuple[float, ...]  # non-decreasing, in [0, 1]


@dataclass(frozen=True)
class ScoreMaps:
    """The card's `score_maps`: one map per joint (joints of one kind share theirs) and one for a person."""
    joints: tuple[ScoreMap, ...]
    person: ScoreMap


@dataclass(frozen=True)
class Grid:
    """One feature level of a detector: its two output tensors and the input pixels per cell."""
    scores: str  # [1, cells, classes], already sigmoid
    boxes: str  # [1, cells, 4 * bins]: left, top, right, bottom distance logits
    stride: int


@dataclass(frozen=True)
class BoxesSpec:
    kind: str  # "boxes_gfl": NanoDet's generalized-focal-loss head
    grids: tuple[Grid, ...]
    bins: int
    classes: int
    class_index: int  # the class detected (card field "class")
    class_name: str

    @property
    def names(self) -> tuple[str, ...]:
        """The graph outputs read."""
        return tuple(n for g in self.grids for n in (g.scores, g.boxes))


@dataclass(frozen=True)
class DetsSpec:
    kind: str  # "dets": boxes after the graph's own NMS
    dets: str  # [1, N, 5]: x1, y1, x2, y2 in input pixel edges, score
    labels: str | None  # [1, N] class indices, or None (one class, no labels read)
    class_index: int | None  # rows kept: those whose label is this (card field "class"); None: all
    class_name: str

    @property
    def names(self) -> tuple[str, ...]:
        """The graph outputs read."""
        return (self.dets,) if self.labels is None else (self.dets, self.labels)


@dataclass(frozen=True)
class DetectorCard(_Described):
    name: str
    version: str
    source: str
    license: str
    quantization: str
    input: InputSpec
    output: BoxesSpec | DetsSpec
    score_threshold: float
    nms_iou: float
    raw: Mapping[str, Any]


MAX_CARD_CHARS = 65_536  # the served cards are under 8 KB; /health returns the card whole
MAX_JOINTS = 256
MAX_PAIRS = 1024
MAX_NAME_CHARS = 200  # names, versions and the like, which replies and /health repeat
MAX_SOURCE_CHARS = 2_000
SCALE_LIMIT = 1e4  # |range ends| and |mean| at most this; std in [1 / SCALE_LIMIT, SCALE_LIMIT]
MAX_BINS, MAX_CLASSES, MAX_GRIDS = 64, 1000, 8  # a detector's (NanoDet: 11, 80, 3)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ModelError(f"invalid model card: {message}")


def _is_int(value: Any, lo: int, hi: int) -> bool:
    return type(value) is int and lo <= value <= hi  # not a boolean: True == 1


def _is_number(value: Any, lo: float, hi: float) -> bool:
    """A finite int or float (not a boolean) in [lo, hi]."""
    return type(value) in (int, float) and math.isfinite(value) and lo <= value <= hi


def _is_name(value: Any, limit: int = MAX_NAME_CHARS) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _pairs(value: Any, n: int, field: str) -> tuple[tuple[int, int], ...]:
    _require(isinstance(value, list) and len(value) <= MAX_PAIRS,
             f"{field} must be a list of at most {MAX_PAIRS} [i, j] pairs")
    pairs = []
    for p in value:
        _require(isinstance(p, list) and len(p) == 2 and all(_is_int(i, 0, n - 1) for i in p),
                 f"{field} entry {str(p)[:100]} is not a pair of joint indices below {n}")
        pairs.append((p[0], p[1]))
    return tuple(pairs)


def _scaling(s: Any, dtype: str) -> Mapping[str, Any]:
    _require(isinstance(s, dict) and s.get("kind") in SCALINGS, f"input.scaling.kind must be one of {SCALINGS}")
    if s["kind"] == "range":
        r = s.get("range")
        lo, hi = (0, 255) if dtype == "uint8" else (-SCALE_LIMIT, SCALE_LIMIT)
        _require(isinstance(r, list) and len(r) == 2 and all(_is_number(v, lo, hi) for v in r) and r[0] < r[1],
                 f"input.scaling.range must be [lo, hi] with {lo:g} <= lo < hi <= {hi:g}")
    if s["kind"] == "mean_std":
        _require(dtype == "float32", "input.scaling mean_std needs input.dtype float32")
        for key, lo, hi in (("mean", -SCALE_LIMIT, SCALE_LIMIT), ("std", 1 / SCALE_LIMIT, SCALE_LIMIT)):
            v = s.get(key)
            _require(isinstance(v, list) and len(v) == 3 and all(_is_number(x, lo, hi) for x in v),
                     f"input.scaling.{key} must be three numbers in [{lo:g}, {hi:g}]")
    return s


def _load(text: str | None) -> dict:
    """The card's JSON object: at most MAX_CARD_CHARS, every number finite."""
    _require(text is not None, f"the ONNX file has no '{CARD_KEY}' entry in its metadata_props")
    _require(len(text) <= MAX_CARD_CHARS, f"the card is {len(text)} characters; the limit is {MAX_CARD_CHARS}")
    try:
        d = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelError(f"invalid model card: not JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    _require(isinstance(d, dict), "not a JSON object")
    return d


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is beyond a float's range")
    return value


def _kind(d: dict) -> Any:
    return d["output"].get("kind") if isinstance(d.get("output"), dict) else None


def _fraction(d: dict, key: str, where: str = "") -> float:
    _require(_is_number(d.get(key), 0.0, 1.0), f"{where}{key} must be a number in [0, 1]")
    return float(d[key])


def _common(d: dict) -> InputSpec:
    """Check the fields every card has; return its input spec."""
    _require(_is_int(d.get("schema"), SCHEMA_VERSION, SCHEMA_VERSION), f"schema must be {SCHEMA_VERSION}")
    for key in ("name", "version", "source", "license", "quantization"):
        limit = MAX_SOURCE_CHARS if key == "source" else MAX_NAME_CHARS
        _require(_is_name(d.get(key), limit), f"{key} must be a non-empty string of at most {limit} characters")

    i = d.get("input")
    _require(isinstance(i, dict), "input must be an object")
    _require(_is_name(i.get("name")), f"input.name must be a string of 1 to {MAX_NAME_CHARS} characters")
    for key in ("height", "width"):
        _require(_is_int(i.get(key), 8, 4096), f"input.{key} must be an integer in [8, 4096]")
    _require(i.get("layout") in LAYOUTS, f"input.layout must be one of {LAYOUTS}")
    _require(i.get("dtype") in DTYPES, f"input.dtype must be one of {DTYPES}")
    _require(i.get("color") in COLORS, f"input.color must be one of {COLORS}")
    _require(_is_int(i.get("pad", 0), 0, 255), "input.pad must be an integer in [0, 255]")
    return InputSpec(i["name"], i["height"], i["width"], i["layout"], i["dtype"], i["color"],
                     _scaling(i.get("scaling"), i["dtype"]), i.get("pad", 0))


def parse(text: str | None) -> Card:
    """Validate a pose model's JSON card text and return a Card; raise ModelError naming the problem."""
    d = _load(text)
    _require(_kind(d) not in DETECTOR_OUTPUTS,
             f"this is a person detector's card (output.kind '{_kind(d)}'), not a pose model's")
    inp = _common(d)

    o = d.get("output")
    _require(isinstance(o, dict) and o.get("kind") in POSE_OUTPUTS, f"output.kind must be one of {POSE_OUTPUTS}")
    _require(_is_name(o.get("name")), f"output.name must be a string of 1 to {MAX_NAME_CHARS} characters")
    if o["kind"] == "heatmaps":
        _require(o.get("layout") in LAYOUTS, f"output.layout must be one of {LAYOUTS}")
        out = OutputSpec("heatmaps", o["name"], layout=o["layout"])
    elif o["kind"] == "keypoints":
        _require(o.get("encoding") in KEYPOINT_ENCODINGS, f"output.encoding must be one of {KEYPOINT_ENCODINGS}")
        out = OutputSpec("keypoints", o["name"], encoding=o["encoding"])
    else:
        out = OutputSpec("yolo_pose", o["name"], score_threshold=_fraction(o, "score_threshold", "output."),
                         nms_iou=_fraction(o, "nms_iou", "output."),
                         person_detector=_flag(o, "person_detector", False, "output."))

    joints = d.get("joints")
    _require(isinstance(joints, list) and 0 < len(joints) <= MAX_JOINTS and all(_is_name(j) for j in joints),
             f"joints must be a list of 1 to {MAX_JOINTS} names of 1 to {MAX_NAME_CHARS} characters")
    _require(len(set(joints)) == len(joints), "joint names must be unique")
    n = len(joints)
    sides = d.get("sides")
    _require(isinstance(sides, list) and len(sides) == n and all(s in SIDES for s in sides),
             f"sides must list one of {SIDES} per joint")
    threshold = _fraction(d, "threshold")

    return Card(
        name=d["name"], version=d["version"], source=d["source"], license=d["license"],
        quantization=d["quantization"], input=inp, output=out,
        joints=tuple(joints), sides=tuple(sides),
        skeleton=_pairs(d.get("skeleton"), n, "skeleton"),
        flip_pairs=_pairs(d.get("flip_pairs", []), n, "flip_pairs"),
        threshold=float(threshold), raw=d, score_maps=_score_maps(d.get("score_maps"), n),
        whole_photo=_flag(d, "whole_photo", True),
    )


def _flag(d: dict, key: str, default: bool, where: str = "") -> bool:
    value = d.get(key, default)
    _require(type(value) is bool, f"{where}{key} must be true or false")
    return value


MAX_KNOTS = 64


def _score_map(value: Any, field: str) -> ScoreMap:
    _require(isinstance(value, dict), f"{field} must be an object with 'raw' and 'probability'")
    raw, probability = value.get("raw"), value.get("probability")
    _require(isinstance(raw, list) and isinstance(probability, list) and 2 <= len(raw) == len(probability) <= MAX_KNOTS
             and all(_is_number(v, -SCALE_LIMIT, SCALE_LIMIT) for v in raw)
             and all(_is_number(v, 0.0, 1.0) for v in probability),
             f"{field} must have 'raw' and 'probability': 2 to {MAX_KNOTS} numbers each, probabilities in [0, 1]")
    _require(all(a < b for a, b in zip(raw, raw[1:])), f"{field}.raw must be strictly increasing")
    _require(all(a <= b for a, b in zip(probability, probability[1:])), f"{field}.probability must not decrease")
    return ScoreMap(tuple(map(float, raw)), tuple(map(float, probability)))


def _score_maps(value: Any, n: int) -> ScoreMaps | None:
    """The optional `score_maps`: {"joints": [{"joints": [i, ...], "raw": [...], "probability": [...]}, ...]
    covering every joint once, "person": {"raw": [...], "probability": [...]}, and free text on how they
    were fitted (`fitted`)}."""
    if value is None:
        return None
    _require(isinstance(value, dict) and isinstance(value.get("joints"), list) and len(value["joints"]) <= n,
             "score_maps must be an object with 'joints' (a list of at most one map per joint) and 'person'")
    maps: list[ScoreMap | None] = [None] * n
    for i, group in enumerate(value["joints"]):
        field = f"score_maps.joints[{i}]"
        _require(isinstance(group, dict) and isinstance(group.get("joints"), list)
                 and all(_is_int(j, 0, n - 1) for j in group["joints"]), f"{field}.joints must list joint indices")
        fitted = _score_map(group, field)
        for j in group["joints"]:
            _require(maps[j] is None, f"score_maps gives joint {j} two maps")
            maps[j] = fitted
    _require(all(m is not None for m in maps), "score_maps must give every joint a map")
    return ScoreMaps(tuple(maps), _score_map(value.get("person"), "score_maps.person"))



def parse_detector(text: str | None) -> DetectorCard:
    """Validate a person detector's JSON card text and return a DetectorCard; raise ModelError naming the problem."""
    d = _load(text)
    _require(_kind(d) not in POSE_OUTPUTS, f"this is a pose model's card (output.kind '{_kind(d)}'), not a detector's")
    inp = _common(d)

    o = d.get("output")
    _require(isinstance(o, dict) and o.get("kind") in DETECTOR_OUTPUTS, f"output.kind must be one of {DETECTOR_OUTPUTS}")
    _require(_is_name(o.get("class_name")), f"output.class_name must be a string of 1 to {MAX_NAME_CHARS} characters")
    out = _DETECTOR_OUTPUT_PARSERS[o["kind"]](o, inp)
    return DetectorCard(
        name=d["name"], version=d["version"], source=d["source"], license=d["license"],
        quantization=d["quantization"], input=inp, output=out,
        score_threshold=_fraction(d, "score_threshold"), nms_iou=_fraction(d, "nms_iou"), raw=d,
    )


def _boxes_gfl(o: dict, inp: InputSpec) -> BoxesSpec:
    for key, most in (("bins", MAX_BINS), ("classes", MAX_CLASSES)):
        _require(_is_int(o.get(key), 1, most), f"output.{key} must be an integer in [1, {most}]")
    _require(_is_int(o.get("class"), 0, o["classes"] - 1),
             f"output.class must be a class index below output.classes ({o['classes']})")
    grids = o.get("grids")
    _require(isinstance(grids, list) and 0 < len(grids) <= MAX_GRIDS, f"output.grids must list 1 to {MAX_GRIDS} grids")
    parsed = []
    for g in grids:
        _require(isinstance(g, dict) and _is_name(g.get("scores")) and _is_name(g.get("boxes")),
                 f"output.grids entry {str(g)[:100]} must name its 'scores' and 'boxes' outputs")
        _require(_is_int(g.get("stride"), 1, min(inp.width, inp.height)),
                 f"output.grids entry {str(g)[:100]} needs an integer stride in [1, input size]")
        parsed.append(Grid(g["scores"], g["boxes"], g["stride"]))
    names = [n for g in parsed for n in (g.scores, g.boxes)]
    _require(len(set(names)) == len(names), "output.grids must name each output once")
    return BoxesSpec(o["kind"], tuple(parsed), o["bins"], o["classes"], o["class"], o["class_name"])


def _dets(o: dict, inp: InputSpec) -> DetsSpec:
    _require(_is_name(o.get("dets")), f"output.dets must be a string of 1 to {MAX_NAME_CHARS} characters")
    labels, class_index = o.get("labels"), o.get("class")
    _require(labels is None or _is_name(labels), "output.labels must be null or an output name")
    _require(labels != o["dets"], "output.labels and output.dets must be two outputs")
    _require(class_index is None or _is_int(class_index, 0, MAX_CLASSES - 1),
             f"output.class must be null (one class) or a class index below {MAX_CLASSES}")
    _require(class_index is None or labels is not None, "output.class needs output.labels to pick its rows")
    return DetsSpec(o["kind"], o["dets"], labels, class_index, o["class_name"])


# detector output kind -> its parser (the output object, the parsed input) -> its spec
_DETECTOR_OUTPUT_PARSERS = {"boxes_gfl": _boxes_gfl, "dets": _dets}


def parse_any(text: str | None) -> Card | DetectorCard:
    """A pose model's card or a detector's, by its output kind (for tools that handle both)."""
    return parse_detector(text) if _kind(_load(text)) in DETECTOR_OUTPUTS else parse(text)
