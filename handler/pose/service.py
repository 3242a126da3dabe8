"""The one use case: the bytes of a photo -> the reply (people as JSON), the drawing when asked, and timings;
and its video form, `track`: a few frames of a clip and the tracker's state -> their people with track ids.

POST /pose (app.py) and the batch jobs (records.py, for handler/batch.py and local/batch.py) answer every
photo here, so a photo gets the same reply from each; they differ only in the byte and pixel limits they
pass and in what they do with the answer. The models are loaded once per process, at cold start, from the
environment (settings.py), by `load_models`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from . import image
from .detect import Detector, open_detector
from .errors import ModelError
from .model import PoseModel
from .options import Options
from .pipeline import estimate_people, uses_detector
from .reply import annotated_image, models_json, skeleton_json, to_json, tracked_person_json
from .settings import Settings, from_env
from .source import pose_model_file
from .track import TrackOptions, model_tracker

MAX_TRACK_FRAMES = 10  # frames a POST /track request carries at most: a crowd's 10 frames take ~10 s of the 29
MAX_FRAME_PIXELS = 1920 * 1080  # a frame of POST /track at most (the page sends at most 960 px wide)


@dataclass
class Models:
    """The served pose model and person detector (None: none), and what the reply says of them."""
    pose: PoseModel
    detector: Detector | None
    described: dict = field(init=False)  # the reply's `model` and `detector` (reply.models_json)

    def __post_init__(self) -> None:
        self.described = models_json(self.pose, self.detector)


@dataclass
class Answer:
    reply: dict  # the API's JSON for the photo (reply.to_json), without the drawing and the timings
    drawing: tuple[str, bytes] | None  # (media type, bytes) when the options asked for it
    timings_ms: dict[str, float]  # decode, detect, preprocess, inference, postprocess, render

    def json(self, **extra) -> dict:
        """The reply with `extra` fields (the API's `annotated_image`), then the timings to 0.01 ms."""
        return {**self.reply, **extra, "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()}}


def answer(data: bytes, options: Options, models: Models, max_bytes: int = image.MAX_BYTES,
           max_pixels: int = image.MAX_PIXELS) -> Answer:
    """The photo in `data` (at most `max_bytes` bytes and `max_pixels` pixels) -> its Answer.

    Raises the PoseError of a photo that cannot be read (TooLarge, UnsupportedImage)."""
    started = time.perf_counter()
    rgb = image.read_photo(data, max_bytes=max_bytes, max_pixels=max_pixels)
    decoded = time.perf_counter()
    card = models.pose.card
    threshold = card.threshold if options.threshold is None else options.threshold
    found = estimate_people(rgb, models.pose, models.detector, options.max_people)
    reply = to_json(found, card, threshold, (rgb.shape[1], rgb.shape[0]), models.described)
    rendered = time.perf_counter()
    drawing = annotated_image(rgb, found, card, threshold, options.image_format) if options.return_image else None
    timings = {"decode": (decoded - started) * 1e3, **found.timings_ms,
               "render": (time.perf_counter() - rendered) * 1e3}
    return Answer(reply, drawing, timings)


def track(frames: list[bytes], state: object | None, options: Options, models: Models,
          track_options: TrackOptions = TrackOptions()) -> dict:
    """A clip's next frames (the bytes of each, in order; at most MAX_TRACK_FRAMES) and the state the previous
    reply returned (None: the clip's first frames) -> POST /track's reply: per frame its index in the clip,
    size, whether the detector ran and its people (as POST /pose's, with `track_id` and `color`), then the
    new state. Tracking a clip in pieces this way gives exactly the ids and joints of one Tracker over it.

    Raises StateError (400) for a state that is not one this returned, before any frame is decoded; the
    PoseError of a frame that cannot be read (TooLarge, UnsupportedImage) before any is tracked."""
    started = time.perf_counter()
    card = models.pose.card
    threshold = card.threshold if options.threshold is None else options.threshold
    tracker = model_tracker(models.pose, models.detector, track_options, options.max_people)
    if state is not None:
        tracker.load_state(state, len(card.joints))
    rgbs = [image.read_photo(data, max_pixels=MAX_FRAME_PIXELS) for data in frames]
    decoded = time.perf_counter()
    out = []
    for rgb in rgbs:
        index = tracker.index
        tracked = tracker.step(rgb, 0.0)  # the time only feeds smoothing, which is off
        out.append({"index": index, "detected": tracked.detected,
                    "image": {"width": rgb.shape[1], "height": rgb.shape[0]},
                    "people": [tracked_person_json(tp, card, threshold) for tp in tracked.people]})
    timings = {"decode": (decoded - started) * 1e3, "track": (time.perf_counter() - decoded) * 1e3}
    return {"frames": out, "state": tracker.to_state(), "skeleton": skeleton_json(card), **models.described,
            "threshold": threshold, "timings_ms": {k: round(v, 2) for k, v in timings.items()}}


def load_models(env: Mapping[str, str] | None = None) -> Models:
    """The served models as `env` (default: this process's environment) configures them. Any failure is a
    ModelError whose message names the cause in one line, a fault no check foresaw included."""
    try:
        settings = from_env(env)
        pose = load_pose_model(settings)
        # a model that finds the people itself (a YOLO-pose card without person_detector) needs no detector
        return Models(pose, load_detector(settings) if uses_detector(pose.card) else None)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}") from None


def load_models_or_exit(log_error: Callable[[str], None]) -> Models:
    """A function's cold start: the served models, or one line through `log_error` saying why not and exit
    status 1, with no traceback (the Lambda log then shows the cause, and the instance is not used)."""
    try:
        return load_models()
    except ModelError as exc:
        log_error(f"cold start failed: {exc.message}")
    raise SystemExit(1)


def load_pose_model(settings: Settings) -> PoseModel:
    """The served pose model: MODEL_PATH, or a copy of MODEL_S3_URI that is deleted if it cannot be served
    (so that the next start downloads it again rather than reuse it)."""
    path = pose_model_file(settings)
    try:
        return PoseModel(path, threads=settings.threads, expected_sha256=settings.model_sha256)
    except ModelError:
        if settings.model_s3_uri:
            path.unlink(missing_ok=True)
        raise


def load_detector(settings: Settings) -> Detector | None:
    """The person detector (DETECTOR_PATH, which template.yaml sets in every function; default the model
    layer's); None when DETECTOR_PATH is "none": then every photo is one person's."""
    if settings.detector_path is None:
        return None
    if not Path(settings.detector_path).is_file():  # a model-file error would not say which file is missing
        raise ModelError(f"person detector not found: DETECTOR_PATH={settings.detector_path} (is the model layer "
                         f"attached? DETECTOR_PATH=none serves without one)")
    return open_detector(settings.detector_path, threads=settings.threads)
