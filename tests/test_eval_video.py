"""build/eval_video.py: a photo made into a clip by a slow camera move, its labels moved with its pixels, and
(with the eval set) COCO keypoint AP of the tracker and of the photo pipeline over a few such clips."""

from __future__ import annotations

import numpy as np
import pytest

from build import eval_video

PHOTO = {"id": 7, "file_name": "p.jpg", "width": 320, "height": 240}


def annotation(joints: list[tuple[float, float]]) -> dict:
    keypoints = [v for x, y in joints for v in (x, y, 2)] + [0, 0, 0] * (17 - len(joints))
    return {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 900.0, "num_keypoints": len(joints),
            "keypoints": keypoints, "bbox": [100.0, 80.0, 30.0, 30.0]}


def test_labels_move_with_the_pixels_frame_by_frame():
    rgb = np.zeros((240, 320, 3), np.uint8)
    joints = [(60.0, 50.0), (250.0, 190.0), (160.0, 120.0)]
    for x, y in joints:
        rgb[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255  # a bright 3x3 dot centred on the joint
    frames = eval_video.camera(rgb, 10)
    assert {f.shape for f in frames} == {(216, 288, 3)}
    for i in (0, 5, 9):
        _, (label,) = eval_video.frame_labels(PHOTO, [annotation(joints)], i, 700 + i)
        k = np.asarray(label["keypoints"]).reshape(-1, 3)
        for x, y, v in k[:3]:
            ys, xs = np.nonzero(frames[i][..., 0] > 60)
            near = (abs(xs - x) < 4) & (abs(ys - y) < 4)
            assert v == 2 and near.any(), (i, x, y)
            assert np.average(xs[near], weights=frames[i][ys[near], xs[near], 0]) == pytest.approx(x, abs=1.0)
            assert np.average(ys[near], weights=frames[i][ys[near], xs[near], 0]) == pytest.approx(y, abs=1.0)
    scale = 288 / (eval_video.window(320, 240, 9)[2] - eval_video.window(320, 240, 9)[0])
    assert label["area"] == pytest.approx(900 * scale ** 2) and label["image_id"] == 709


def test_a_joint_the_window_leaves_out_becomes_unlabelled():
    _, (label,) = eval_video.frame_labels(PHOTO, [annotation([(1.0, 1.0), (160.0, 120.0)])], 4, 704)
    k = np.asarray(label["keypoints"]).reshape(-1, 3)
    assert k[0].tolist() == [0, 0, 0] and k[1][2] == 2 and label["num_keypoints"] == 1


def test_tracker_and_photo_pipeline_are_scored_on_the_same_frames(coco_multi):
    from build.bench_video import default_models

    r = eval_video.measure(default_models(), coco_multi.parent, frames=6, photos=2)
    assert (r["photos"], r["frames"], r["detection_frames"]) == (2, 12, 4)  # frames 0 and 5 of each clip
    ap = r["ap"]
    assert 30 < ap["photo"]["AP"] <= 100 and 0 < ap["tracker"]["AP"] <= 100
    # on a detection frame the tracker answers with the photo pipeline's people (those it tracks): alike AP
    assert ap["tracker, detection frames"]["AP"] == pytest.approx(ap["photo, detection frames"]["AP"], abs=5)
    assert ap["tracker, detection frames"]["people"] <= ap["photo, detection frames"]["people"]
