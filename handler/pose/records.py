"""One photo -> its batch record; records -> COCO keypoint results and the images index.

A record is what POST /pose answers for the photo (service.answer: the reply with its timings, without
the annotated image) plus the photo's name in `file` and `error` null. A photo that cannot be used
(not an image, over the limits, corrupt, missing) is `{"file", "people": [], "error": {"code",
"message"}}`: an error record, never an exception. The batch function (handler/batch.py, photos in
S3) and the folder CLI (local/batch.py) both make their records here, so a photo gets the same
record either way.
"""

from __future__ import annotations

from .errors import PoseError
from .options import Options, parse as parse_options
from .service import Models, answer

# S3 objects and files are not capped at 6 MB like API requests. Decoding, the pipeline and the drawing
# peak at about 13 bytes per pixel (measured: +0.53 GB at 40 MP, +1.06 GB at 80 MP), so 64 MP stays near
# 0.85 GB, which leaves room in the batch function's 1769 MB for the runtime, the models and the next
# photo's bytes being downloaded. 64 MB holds a 64 MP JPEG at any quality.
MAX_BYTES = 64_000_000
MAX_PIXELS = 64_000_000
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")  # what is taken for a photo
JOB_OPTIONS = ("threshold", "max_people", "return_image")  # what a job may ask: its drawings are PNG (JPEG if large)


def job_options(job: dict) -> Options:
    """A batch job's `threshold`, `max_people` and `return_image` (each optional, as POST /pose takes them;
    no drawing unless asked) -> Options; BadParameter when one is wrong."""
    return parse_options({name: job[name] for name in JOB_OPTIONS if name in job}, return_image=False)


def is_photo_name(name: str) -> bool:
    return name.lower().endswith(SUFFIXES)


def error_record(name: str, code: str, message: str) -> dict:
    return {"file": name, "people": [], "error": {"code": code, "message": message}}


def failed_record(name: str, error: PoseError) -> dict:
    """The record of a photo that `error` keeps from its result."""
    return error_record(name, error.code, error.message)


def photo_record(name: str, data: bytes, models: Models,
                 options: Options = Options()) -> tuple[dict, tuple[str, bytes] | None]:
    """The photo's record and, with options.return_image, its annotated image (media type, bytes)."""
    try:
        answered = answer(data, options, models, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        return {"file": name, **answered.json(), "error": None}, answered.drawing
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
