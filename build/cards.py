"""Write and read model cards (the JSON in an ONNX file's metadata_props) for the build tools.

The joint tables, skeletons and flip pairs of the two joint sets the project serves, and the class
names of the COCO detector, live here, once. The service reads them back from the ONNX file; it has
no copy of its own.
"""

from __future__ import annotations

import json

import onnx

from pose import card as card_schema  # the service's validator is the one truth

MPII_JOINTS = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)
MPII_SKELETON = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
    (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
)
COCO_JOINTS = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
    "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)
COCO_SKELETON = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)
COCO_PERSON_CLASS = 0  # "person" is the first of the 80 COCO detection classes
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def sides(joints: tuple[str, ...]) -> list[str]:
    return ["left" if j.startswith("l_") else "right" if j.startswith("r_") else "center" for j in joints]


def flip_pairs(joints: tuple[str, ...]) -> list[list[int]]:
    index = {j: i for i, j in enumerate(joints)}
    return [[i, index["r_" + j[2:]]] for i, j in enumerate(joints) if j.startswith("l_")]


def joint_set(name: str) -> dict:
    """joints, sides, skeleton and flip_pairs of 'mpii' or 'coco', as card fields."""
    joints, skeleton = {"mpii": (MPII_JOINTS, MPII_SKELETON), "coco": (COCO_JOINTS, COCO_SKELETON)}[name]
    return {
        "joints": list(joints),
        "sides": sides(joints),
        "skeleton": [list(p) for p in skeleton],
        "flip_pairs": flip_pairs(joints),
    }


def make_card(*, name: str, version: str, source: str, license: str, quantization: str, input: dict,
              output: dict, joint_set_name: str | None = None, joints: list[str] | None = None,
              threshold: float = 0.6, **extra) -> dict:
    """A complete card dict; validated by the service's own parser before it is returned."""
    card = {"schema": card_schema.SCHEMA_VERSION, "name": name, "version": version, "source": source,
            "license": license, "quantization": quantization, "input": input, "output": output,
            "threshold": threshold, **extra}
    if joint_set_name:
        card.update(joint_set(joint_set_name))
        if joints is not None:  # a model whose output order differs from the dataset's order
            order = [card["joints"].index(j) for j in joints]
            inverse = {old: new for new, old in enumerate(order)}
            card["joints"] = list(joints)
            card["sides"] = sides(tuple(joints))
            card["skeleton"] = [[inverse[a], inverse[b]] for a, b in card["skeleton"]]
            card["flip_pairs"] = flip_pairs(tuple(joints))
    elif joints is not None:  # a joint set of its own: `extra` holds its sides, skeleton (and flip_pairs)
        card["joints"] = list(joints)
    card_schema.parse(json.dumps(card))
    return card


def make_detector_card(*, name: str, version: str, source: str, license: str, quantization: str, input: dict,
                       grids: list[dict], bins: int, classes: int = 80, class_index: int = COCO_PERSON_CLASS,
                       class_name: str = "person", score_threshold: float = 0.35, nms_iou: float = 0.6,
                       **extra) -> dict:
    """A complete person detector card (output kind boxes_gfl), validated by the service's own parser."""
    return _detector_card({"kind": "boxes_gfl", "grids": grids, "bins": bins, "classes": classes,
                           "class": class_index, "class_name": class_name},
                          score_threshold=score_threshold, nms_iou=nms_iou, **extra)


def make_dets_card(*, dets: str, labels: str | None, class_index: int | None, class_name: str = "person",
                   score_threshold: float, nms_iou: float, **extra) -> dict:
    """A complete card of an end-to-end person detector (output kind dets: the graph does its own NMS),
    validated by the service's own parser; ``extra`` holds the first fields and ``input``."""
    return _detector_card({"kind": "dets", "dets": dets, "labels": labels, "class": class_index,
                           "class_name": class_name},
                          score_threshold=score_threshold, nms_iou=nms_iou, **extra)


def _detector_card(output: dict, *, name: str, version: str, source: str, license: str, quantization: str,
                   input: dict, score_threshold: float, nms_iou: float, **extra) -> dict:
    card = {"schema": card_schema.SCHEMA_VERSION, "name": name, "version": version, "source": source,
            "license": license, "quantization": quantization, "input": input, "output": output,
            "score_threshold": score_threshold, "nms_iou": nms_iou, **extra}
    card_schema.parse_detector(json.dumps(card))
    return card


def set_card(model: onnx.ModelProto, card: dict) -> onnx.ModelProto:
    """Put the card (a pose model's or a detector's) into the model's metadata_props (replacing an older one)."""
    card_schema.parse_any(json.dumps(card))
    keep = [p for p in model.metadata_props if p.key != card_schema.CARD_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key = card_schema.CARD_KEY
    entry.value = json.dumps(card, sort_keys=True)
    return model


def get_card(model: onnx.ModelProto) -> dict:
    for p in model.metadata_props:
        if p.key == card_schema.CARD_KEY:
            card_schema.parse_any(p.value)
            return json.loads(p.value)
    raise card_schema.ModelError(f"no '{card_schema.CARD_KEY}' entry in metadata_props")
