"""COCO keypoint AP on labelled video frames: the tracker against the photo pipeline on the same frames.

    python -m build.eval_video                       # the 23 photos of ../shared/eval/coco_multi.json, 10 frames each
    python -m build.eval_video --frames 6 --photos 3 # a smaller run

No labelled clip exists, so each photo of coco_multi.json (every person on it labelled) becomes a short clip
(`camera`): `--frames` frames of a slow camera move, a crop window that pans PAN pixels right and down and
zooms in by ZOOM of its side per frame, each window resized to the first one's size; its labels are moved the
same way (`frame_labels`: joints outside the frame become unlabelled, boxes and areas scaled). Every frame is
answered twice, by the served default models at one onnxruntime thread:

- the tracker (track.model_tracker, default options: detection every 5th frame), a fresh one per clip, stepping
  through the clip's frames in order;
- the photo pipeline (pipeline.estimate_people, what POST /pose does), frame by frame;

and both are scored by pycocotools over all frames (evaluate.keypoint_ap, at most 20 people a frame). The
issue's goal: the tracker within 1 point of the photo pipeline. Both are also scored on the tracker's detection
frames and on its followed frames apart: where a gap comes from. `--min-score` tracks with another TrackOptions
min_score, `--keep-score` with hysteresis (tracks started from min_score, kept down to keep_score); docs/video.md
has what they and the followed people's scores cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from build import evaluate, provenance
from pose.pipeline import estimate_people
from pose.track import TrackOptions, model_tracker

PAN = 2.0  # pixels the window moves right and down per frame
ZOOM = 0.005  # fraction of its side the window shrinks by per frame
START = 0.9  # the first window's side, of the photo's
FPS = 10.0


def window(width: int, height: int, i: int) -> tuple[float, float, float, float]:
    """Frame i's crop window (left, top, right, bottom) on a width x height photo: START of the photo at frame 0,
    a margin of PAN from its top-left corner, then PAN further right and down and ZOOM smaller each frame."""
    w, h = START * width * (1 - ZOOM * i), START * height * (1 - ZOOM * i)
    left = top = PAN * (i + 1)
    return left, top, left + w, top + h


def camera(rgb: np.ndarray, frames: int) -> list[np.ndarray]:
    """The photo as a clip: each frame's window resized to the first window's size."""
    height, width = rgb.shape[:2]
    size = (round(START * width), round(START * height))
    photo = Image.fromarray(rgb)
    return [np.asarray(photo.resize(size, Image.Resampling.BILINEAR, box=window(width, height, i)))
            for i in range(frames)]


def frame_labels(photo: dict, annotations: list[dict], i: int, image_id: int) -> tuple[dict, list[dict]]:
    """Frame i's COCO image entry and its annotations: the photo's labels moved as `camera` moves its pixels.
    A joint out of the frame becomes unlabelled (v 0), num_keypoints counts the rest; bbox is moved, scaled and
    clipped to the frame, area scaled; segmentation is left out (keypoint AP does not read it)."""
    left, top, right, _ = window(photo["width"], photo["height"], i)
    width, height = round(START * photo["width"]), round(START * photo["height"])
    scale = width / (right - left)
    image = {"id": image_id, "file_name": f"{photo['file_name']}#{i}", "width": width, "height": height}
    out = []
    for a in annotations:
        k = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        xy = (k[:, :2] - (left, top)) * scale
        keep = (k[:, 2] > 0) & (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
        k = np.where(keep[:, None], np.concatenate([xy, k[:, 2:]], axis=1), 0.0)
        x, y, w, h = a["bbox"]
        x0, y0 = np.clip([(x - left) * scale, (y - top) * scale], 0, [width, height])
        x1, y1 = np.clip([(x + w - left) * scale, (y + h - top) * scale], 0, [width, height])
        out.append({"id": a["id"] * 100 + i, "image_id": image_id, "category_id": a["category_id"],
                    "iscrowd": a["iscrowd"], "area": a["area"] * scale ** 2, "num_keypoints": int(keep.sum()),
                    "keypoints": [round(float(v), 2) for v in k.ravel()],
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]})
    return image, out


def measure(models, eval_dir: Path, frames: int, photos: int | None = None,
            options: TrackOptions = TrackOptions()) -> dict:
    """Both ways over every frame of every photo's clip: their keypoint AP, the tracker's on its detection and
    followed frames apart and with detector scores, the frames, detection frames and CPU seconds of each."""
    gt_photos = evaluate.coco_labels(eval_dir)
    index = evaluate.coco_joint_index(gt_photos, models.pose.card.joints)
    dataset = {"images": [], "annotations": [], "categories": gt_photos.dataset["categories"]}
    results: dict[str, list] = {"photo": [], "tracker": []}
    detected_ids, followed_ids, cpu = [], [], {"photo": 0.0, "tracker": 0.0}
    for photo_id in sorted(gt_photos.getImgIds())[:photos]:
        photo = gt_photos.loadImgs(photo_id)[0]
        annotations = gt_photos.loadAnns(gt_photos.getAnnIds(imgIds=photo_id))
        clip = camera(evaluate.read_rgb(eval_dir, f"images/{photo['file_name']}"), frames)
        tracker = model_tracker(models.pose, models.detector, options)
        for i, rgb in enumerate(clip):
            image_id = photo_id * 100 + i
            image, labels = frame_labels(photo, annotations, i, image_id)
            dataset["images"].append(image)
            dataset["annotations"] += labels
            t0 = time.process_time()
            tracked = tracker.step(rgb, i / FPS)
            t1 = time.process_time()
            people = estimate_people(rgb, models.pose, models.detector, evaluate.COCO_MAX_PEOPLE).people
            t2 = time.process_time()
            cpu["tracker"] += t1 - t0
            cpu["photo"] += t2 - t1
            (detected_ids if tracked.detected else followed_ids).append(image_id)
            results["photo"] += evaluate.keypoint_results(image_id, people, index)
            results["tracker"] += evaluate.keypoint_results(image_id, [tp.person for tp in tracked.people], index)
    gt = evaluate.coco_labels(dataset=dataset)
    out = {name: evaluate.keypoint_ap(gt, r) for name, r in results.items()}
    for name, ids in (("tracker, detection frames", detected_ids), ("tracker, followed frames", followed_ids)):
        out[name] = evaluate.keypoint_ap(gt, results["tracker"], ids)
    for name, ids in (("photo, detection frames", detected_ids), ("photo, followed frames", followed_ids)):
        out[name] = evaluate.keypoint_ap(gt, results["photo"], ids)
    n = len(detected_ids) + len(followed_ids)
    return {"ap": out, "photos": len(dataset["images"]) // frames, "frames": n, "detection_frames": len(detected_ids),
            "scored_people": sum(a["num_keypoints"] > 0 and not a["iscrowd"] for a in dataset["annotations"]),
            "cpu_s": {k: round(v, 2) for k, v in cpu.items()}}


def table(r: dict) -> str:
    lines = ["| answered by | AP | AP50 | AP75 | AR | people answered |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {a['AP']:.1f} | {a['AP50']:.1f} | {a['AP75']:.1f} | {a['AR']:.1f} | {a['people']} |"
              for name, a in r["ap"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10, help="frames of each photo's clip (default 10)")
    ap.add_argument("--photos", type=int, help="the first N photos only (default: all 23)")
    ap.add_argument("--min-score", type=float, default=TrackOptions.min_score,
                    help=f"the tracker's min_score (default {TrackOptions.min_score})")
    ap.add_argument("--keep-score", type=float, help="the tracker's keep_score (default: min_score)")
    ap.add_argument("--eval-dir", type=Path, default=evaluate.EVAL)
    a = ap.parse_args(argv)
    if not (a.eval_dir / "coco_multi.json").is_file():
        print(f"skipped: the eval set is absent ({a.eval_dir}): clone the project with ../shared beside it")
        return 0
    from build.bench_video import default_models

    models = default_models()
    r = measure(models, a.eval_dir, a.frames, a.photos, TrackOptions(min_score=a.min_score, keep_score=a.keep_score))
    print(f"{dt.date.today()}, commit {provenance.commit()}, `{provenance.command(__file__, argv)}`, "
          f"{models.pose.card.name} + {models.detector.card.name}, 1 thread, tracker min_score {a.min_score} keep_score {a.keep_score}: {r['photos']} clips of {a.frames} frames, "
          f"{r['frames']} frames ({r['detection_frames']} detection frames for the tracker), "
          f"{r['scored_people']} scored person-frames; CPU s photo {r['cpu_s']['photo']}, tracker {r['cpu_s']['tracker']}\n")
    print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
