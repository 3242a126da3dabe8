"""A pose model: its one onnxruntime session (session.py), its card, and its looks at a photo.

The file comes from source.py and its session from session.py; ``service.load_models`` opens it once per
process, at cold start. The closer look at a person small in a photo, and every person of a photo, are the
pipeline's (pipeline.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import card as model_card
from .decode import decode
from .errors import ModelError
from .image import prepare
from .region import Region
from .session import open_session

# Crops per session.run. The run's working memory follows its batch (a crowd's 21 crops: +0.5 GB at the peak),
# and so does each crop's time on Lambda's one thread: PP-TinyPose took 24 ms a crop alone, 37 ms in a batch
# of 8; MoveNet 31 and 42 ms (build/bench_pipelines.py). A graph with a batch axis still takes any batch.
MAX_BATCH = 1


@dataclass
class Estimate:
    points: np.ndarray  # (K, 2) x, y in photo pixels
    scores: np.ndarray  # (K,)
    timings_ms: dict[str, float] = field(default_factory=dict)
    region: Region | None = None  # the part of the photo looked at closely; None: the whole photo alone


class PoseModel:
    """One ONNX pose model with its card and its one session."""

    def __init__(self, path: str | Path, threads: int | None = None, expected_sha256: str | None = None,
                 arena: bool = False, max_batch: int = MAX_BATCH):
        self.path = Path(path)
        self.session, self.sha256 = open_session(self.path, threads, expected_sha256, arena)
        self.max_batch = max_batch
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = model_card.parse(meta.get(model_card.CARD_KEY))
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if self.card.input.name not in inputs:
            raise ModelError(f"invalid model card: input '{self.card.input.name}' is not in the graph {sorted(inputs)}")
        if self.card.output.name not in outputs:
            raise ModelError(f"invalid model card: output '{self.card.output.name}' is not in the graph {sorted(outputs)}")
        # A graph with a fixed batch of 1 still serves several people: one run each.
        self.batched = inputs[self.card.input.name].shape[0] != 1
        self.threads = self.session.get_session_options().intra_op_num_threads
        try:
            self.warm_up()
        except ModelError:
            raise
        except Exception as exc:  # the card's input or output spec does not fit the graph
            raise ModelError(f"invalid model card: the model does not run as its card says: "
                             f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}") from None

    def warm_up(self) -> None:
        """One run on a blank input, decoded as the card says: a card that does not fit the graph fails here."""
        spec = self.card.input
        shape = (1, 3, spec.height, spec.width) if spec.layout == "NCHW" else (1, spec.height, spec.width, 3)
        points, scores = decode(self.card, self.run(np.zeros(shape, dtype=spec.dtype)))
        k = len(self.card.joints)
        if points.shape != (1, k, 2) or scores.shape != (1, k):
            raise ModelError(f"invalid model card: the output decodes to {points.shape[1]} joints, "
                             f"the card names {k}")

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """A batch of P inputs -> the output for P people: a session.run per `max_batch` of them (per one
        on a fixed-batch graph)."""
        step = self.max_batch if self.batched else 1
        outputs = [self.session.run([self.card.output.name], {self.card.input.name: tensor[i:i + step]})[0]
                   for i in range(0, len(tensor), step)]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def look(self, rgb: np.ndarray, regions: list[Region | None]) -> Estimate:
        """Joints of one person in each region of the photo (None: the whole photo), in session.runs of
        `max_batch` regions: points (P, K, 2) in photo pixels and scores (P, K), and the stage timings."""
        t0 = time.perf_counter()
        photo = Image.fromarray(rgb)  # once for every region: each reads only its part of it
        prepared = [prepare(photo, self.card.input, r) for r in regions]
        tensor = np.concatenate([t for t, _ in prepared])
        t1 = time.perf_counter()
        output = self.run(tensor)
        t2 = time.perf_counter()
        points, scores = decode(self.card, output)
        finite = np.isfinite(points).all(axis=-1) & np.isfinite(scores)  # a broken model's NaN or infinity:
        points, scores = np.where(finite[..., None], points, 0.0), np.where(finite, scores, 0.0)  # not a joint
        points = np.stack([box.inverse(p) if r is None else r.to_photo(box.inverse(p))
                           for p, (_, box), r in zip(points, prepared, regions)])
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return Estimate(points, scores, timings)

    def estimate(self, rgb: np.ndarray, region: Region | None = None) -> Estimate:
        """One person in the whole photo (or in `region` of it), one look: (H, W, 3) uint8 RGB -> joints
        (K, 2) in photo pixels with scores, and stage timings. pipeline.estimate_person adds the closer look."""
        batch = self.look(rgb, [region])
        return Estimate(batch.points[0], batch.scores[0], batch.timings_ms, region)
