"""Real person photos for the build tools, preprocessed exactly as the service does.

The photos are read where they lie (never copied into the repository):

- ``../shared/eval/images``: the internal evaluation set (read only; not redistributable);
- ``../shared/images``: the three photos cleared for the project (see their PROVENANCE.md).

Preprocessing is the service's own: ``pose.image.read_photo`` (EXIF, colour modes) then ``pose.image.prepare``
(letterbox, colour order, scaling and layout as the model card says), or for a person detector's card
``pose.detect.prepare``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from pose import card as card_schema
from pose import detect as pose_detect
from pose import image as pose_image

ROOT = Path(__file__).resolve().parent.parent

SHARED = ROOT.parent / "shared"
EVAL_IMAGES = SHARED / "eval" / "images"
PROJECT_IMAGES = SHARED / "images"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}

# photo (H, W, 3) uint8 RGB, the card's input spec -> (the model's (1, ...) input tensor, the transform used)
Prepare = Callable[[np.ndarray, card_schema.InputSpec], tuple]


def default_dirs() -> list[Path]:
    """The photo folders that exist here (none in a fresh clone without ../shared)."""
    return [d for d in (EVAL_IMAGES, PROJECT_IMAGES) if d.is_dir()]


def list_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files from files and folders, sorted by name within a folder, duplicates dropped."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    seen, unique = set(), []
    for f in found:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def input_spec(card: dict) -> card_schema.InputSpec:
    """The card's input as the service parses it (validating the card, a pose model's or a detector's)."""
    return card_schema.parse_any(json.dumps(card)).input


def preprocess_for(card: dict) -> Prepare:
    """The service's preprocessing for the model of this card: a detector's or a pose model's."""
    return pose_detect.prepare if isinstance(card_schema.parse_any(json.dumps(card)), card_schema.DetectorCard) \
        else pose_image.prepare


def load_rgb(path: str | Path) -> np.ndarray:
    return pose_image.read_photo(Path(path).read_bytes())


def prepare(path: str | Path, card: dict) -> np.ndarray:
    """One photo -> the model's (1, ...) input tensor, as the service would feed it."""
    tensor, _ = preprocess_for(card)(load_rgb(path), input_spec(card))
    return tensor


def prepare_all(paths: Iterable[str | Path], card: dict, prepare: Prepare | None = None) -> list[np.ndarray]:
    """The photos as the model's input tensors, by ``prepare`` (default: the service's, for the card's kind)."""
    spec, prepare = input_spec(card), prepare or preprocess_for(card)
    return [prepare(load_rgb(p), spec)[0] for p in paths]
