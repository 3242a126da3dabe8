"""One photo -> its batch record; records -> COCO keypoint results and the images index.

A record is what POST /pose answers for the photo (reply.to_json with its timings, without the
annotated image) plus the photo's name in `file` and `error` null. A photo that cannot be used
(not an image, over the limits, corrupt, missing) is `{"file", "people": [], "error": {"code",
"message"}}`: an error record, never an exception. The batch function (handler/batch.py, photos in
S3) and the folder CLI (local/batch.py) both make their records here, so a photo gets the same
record either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import image
from .errors import BadParameter, PoseError
from .pipeline import MAX_PEOPLE, Detector, estimate_people
from .reply import annotated_image, models_json, to_json

# S3 objects and files are not capped at 6 MB like API requests. Decoding, the pipeline and the drawing
# peak at about 13 bytes per pixel (measured: +0.53 GB at 40 MP, +1.06 GB at 80 MP), so 64 MP stays near
# 0.85 GB, which leaves room in the batch function's 1769 MB for the runtime, the models and the next
# photo's bytes being downloaded. 64 MB holds a 64 MP JPEG at any quality.
MAX_BYTES = 64_000_000
MAX_PIXELS = 64_000_000
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")  # what is taken for a photo
MAX_PEOPLE_LIMIT = 20


@dataclass(frozen=True)
class Options:
    threshold: float | None = None  # None: the model's
    max_people: int = MAX_PEOPLE
    annotate: bool = False  # also make the annotated image

    @classmethod
    def from_job(cls, job: dict) -> "Options":
        """A batch job's `threshold`, `max_people` and `return_image` (each optional); BadParameter when wrong."""
        threshold, max_people, annotate = job.get("threshold"), job.get("max_people", MAX_PEOPLE), \
            job.get("return_image", False)
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not 0.0 <= threshold <= 1.0):
            raise BadParameter("'threshold' must be a number in [0, 1]")
        if isinstance(max_people, bool) or not isinstance(max_people, int) or not 1 <= max_people <= MAX_PEOPLE_LIMIT:
            raise BadParameter(f"'max_people' must be an integer in [1, {MAX_PEOPLE_LIMIT}]")
        if not isinstance(annotate, bool):
            raise BadParameter("'return_image' must be true or false")
        return cls(None if threshold is None else float(threshold), max_people, annotate)


def is_photo_name(name: str) -> bool:
    return name.lower().endswith(SUFFIXES)


def error_record(name: str, code: str, message: str) -> dict:
    return {"file": name, "people": [], "error": {"code": code, "message": message}}


def failed_record(name: str, error: PoseError) -> dict:
    """The record of a photo that `error` keeps from its result."""
    return error_record(name, error.code, error.message)


def photo_record(name: str, data: bytes, pose, detector: Detector | None,
                 options: Options = Options()) -> tuple[dict, tuple[str, bytes] | None]:
    """The photo's record and, with options.annotate, its annotated image (media type, bytes)."""
    try:
        started = time.perf_counter()
        rgb = image.decode(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        decoded = time.perf_counter()
        threshold = pose.card.threshold if options.threshold is None else options.threshold
        found = estimate_people(rgb, pose, detector, options.max_people)
        reply = to_json(found, pose.card, threshold, (rgb.shape[1], rgb.shape[0]), models_json(pose, detector))
        rendered = time.perf_counter()
        drawing = annotated_image(rgb, found, pose.card, threshold) if options.annotate else None
        timings = {"decode": (decoded - started) * 1e3, **found.timings_ms,
                   "render": (time.perf_counter() - rendered) * 1e3}
        reply["timings_ms"] = {k: round(v, 2) for k, v in timings.items()}
        return {"file": name, **reply, "error": None}, drawing
    except PoseError as exc:
        return failed_record(name, exc), None
    except Exception as exc:  # one photo's failure must not stop the other photos of the batch
        return error_record(name, PoseError.code, f"{type(exc).__name__}: {str(exc)[:200]}"), None


def image_entry(record: dict, image_id: int) -> dict | None:
    """The photo's entry in images.json (COCO's `images`); None for an error record."""
    if record.get("error"):
        return None
    return {"id": image_id, "file_name": record["file"], "width": record["image"]["width"],
            "height": record["image"]["height"]}


def coco_results(record: dict, image_id: int) -> list[dict]:
    """COCO keypoint results, one per person: every joint as x, y and its score, in the model's joint order
    (COCO's 17 for the default model); pycocotools reads x and y and uses the person's score to rank."""
    return [{"image_id": image_id, "category_id": 1,
             "keypoints": [v for j in person["joints"] for v in (j["x"], j["y"], j["score"])],
             "score": person["score"]}
            for person in record.get("people", [])]


def categories(record: dict) -> list[dict]:
    """COCO's `categories` for images.json from a record: the person, its joint names and skeleton (1-based)."""
    names = [j["name"] for j in record.get("joints", [])]
    skeleton = [[a + 1, b + 1] for a, b in (limb["pair"] for limb in record.get("skeleton", []))]
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": names, "skeleton": skeleton}]
