"""A segment decoded from its last keyframe (video_io.frame_index, Seek) against the same segment decoded from
the clip's start: the same frames, indices, times and tracks.json, for clips with B-frames and short GOPs, a
variable frame rate, and (with ../shared/video) the basketball clip; and the decoding work it saves."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from conftest import SHARED

av = pytest.importorskip("av", reason="PyAV is not installed: pip install -r requirements-dev.txt")
video = pytest.importorskip("local.video")

import video_io  # noqa: E402
from pose.segments import plan_segments  # noqa: E402
from pose.track import TrackOptions  # noqa: E402
from test_video import models, photo_frames  # noqa: E402,F401  (models: the fixture)

BASKETBALL = SHARED / "video" / "mmaction2_test_video_structuralize.mp4"
GOP = 8  # frames from one keyframe to the next: short, so that a segment's seek skips most of the clip


def gop_clip(path: Path, frames: list[np.ndarray], gop: int = GOP, times_ms: list[int] | None = None,
             faststart: bool = True) -> Path:
    """An H.264 MP4 with B-frames (2 between references) and a keyframe every `gop` frames, at 10 fps or at
    `times_ms` (a variable frame rate); the index at the front (faststart) unless told otherwise."""
    with av.open(str(path), "w", options={"movflags": "+faststart"} if faststart else {}) as container:
        stream = container.add_stream("libx264", rate=10, options={"g": str(gop), "keyint_min": str(gop), "bf": "2",
                                                                   "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        if times_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def vfr_times(count: int, seed: int = 1) -> list[int]:
    """Frame times in ms, 20 to 150 ms apart at random: a variable frame rate."""
    steps = np.random.default_rng(seed).integers(20, 150, count - 1)
    return [0] + np.cumsum(steps).tolist()


def decoded(path: Path, first: int, seek: video_io.Seek | None) -> tuple[list, int]:
    """frames() from `first` (from `seek`'s keyframe when given) -> [(index, time, rgb)], frames decoded."""
    clip = video_io.open_clip(path)
    return list(video_io.frames(clip, first=first, seek=seek)), clip.decoded


def assert_same_frames(path: Path, firsts: list[int]) -> video_io.FrameIndex:
    index = video_io.frame_index(video_io.open_clip(path))
    assert index is not None and len(index.keyframes) > 1
    for first in firsts:
        seek = index.seek(first)
        (sought, _), (whole, _) = decoded(path, first, seek), decoded(path, first, None)
        assert [(i, t) for i, t, _ in sought] == [(i, t) for i, t, _ in whole], first  # exact: indices and times
        assert all(np.array_equal(a, b) for (_, _, a), (_, _, b) in zip(sought, whole)), first
    return index


def test_a_clip_with_b_frames_seeks_to_the_same_frames(tmp_path):
    path = gop_clip(tmp_path / "b.mp4", photo_frames(40))
    index = assert_same_frames(path, [0, 3, 8, 13, 27, 39])
    assert index.keyframes == list(range(0, 40, GOP))
    with av.open(str(path)) as container:  # the clip does have B-frames: decoding and presentation orders differ
        order = [p.pts for p in container.demux(video=0) if p.size]
    assert order != sorted(order)


def test_a_variable_frame_rate_clip_seeks_to_the_same_frames_and_times(tmp_path):
    times = vfr_times(40)
    path = gop_clip(tmp_path / "vfr.mp4", photo_frames(40), times_ms=times)
    assert_same_frames(path, [0, 9, 17, 30, 39])
    frames, _ = decoded(path, 30, video_io.frame_index(video_io.open_clip(path)).seek(30))
    assert [round(t * 1000) for _, t, _ in frames] == times[30:]  # each frame's own time, not index / fps


def test_the_basketball_clip_seeks_to_the_same_frames():
    if not BASKETBALL.is_file():
        pytest.skip(f"{BASKETBALL} is absent: clone the project with ../shared beside it to run this test")
    firsts = [45, 250, 270, 299]  # before the second keyframe (250), on it, after it, the last frame
    index = assert_same_frames(BASKETBALL, firsts)
    assert index.keyframes == [0, 250] and len(index.pts) == 300


def segmented_tracks(path: Path, out: Path, models, seeking: bool, seconds: float = 1.0) -> dict:
    """tracks.json of `python -m local.video CLIP OUT --segment-seconds 1 --overlap-seconds 0.3`, its segments
    decoded from their keyframes, or from the clip's start (no index: the fallback)."""
    with mock.patch.object(video, "frame_index", video.frame_index if seeking else lambda clip: None):
        video.track_clip(path, out, models, TrackOptions(), segmenting=video.Segmenting(seconds, 0.3))
    return json.loads((out / "tracks.json").read_text())


@pytest.mark.model
@pytest.mark.parametrize("kind", ["b-frames", "variable frame rate"])
def test_tracks_json_is_the_same_seeking_or_decoding_from_the_start(tmp_path, models, kind):
    times = vfr_times(36) if kind == "variable frame rate" else None
    path = gop_clip(tmp_path / "clip.mp4", photo_frames(36), times_ms=times)
    sought = segmented_tracks(path, tmp_path / "sought", models, seeking=True)
    whole = segmented_tracks(path, tmp_path / "whole", models, seeking=False)
    assert len(sought["segments"]) >= 3 and sought["frame_count"] == 36
    assert sought == whole
    assert {p["track_id"] for f in sought["frames"] for p in f["people"]} == {1}


@pytest.mark.model
def test_the_basketball_clips_last_segment_tracks_the_same_seeking_or_not(models):
    if not BASKETBALL.is_file():
        pytest.skip(f"{BASKETBALL} is absent: clone the project with ../shared beside it to run this test")
    from pose.track import model_tracker
    import io

    index = video_io.frame_index(video_io.open_clip(BASKETBALL))
    records, work = [], []
    for seek in (index.seek(255), None):  # from the keyframe at 250, or from frame 0
        clip, out = video_io.open_clip(BASKETBALL), io.StringIO()
        video_io.track_segment(clip, 255, 300, model_tracker(models.pose, models.detector, TrackOptions()), out, seek)
        records.append(out.getvalue())
        work.append(clip.decoded)
    assert records[0] == records[1] and records[0].count("\n") == 45
    assert work == [50, 300]


def test_the_last_segment_decodes_its_own_frames_not_the_clip(tmp_path):
    path = gop_clip(tmp_path / "long.mp4", photo_frames(120, width=160))
    plan = plan_segments(120, 10, 3.5, 0.5)
    assert len(plan) == 4
    start = plan[-1][0]
    index = video_io.frame_index(video_io.open_clip(path))
    (sought, with_seek), (whole, without) = decoded(path, start, index.seek(start)), decoded(path, start, None)
    assert [i for i, _, _ in sought] == [i for i, _, _ in whole] == list(range(start, 120))
    assert without == 120  # every frame of the clip, for its last quarter
    assert with_seek <= 120 - start + GOP  # its own frames and at most a GOP before them
    print(f"last of 4 segments (frames {start}-119 of 120, GOP {GOP}): {with_seek} frames decoded seeking, "
          f"{without} from the start")


def test_without_an_index_or_a_usable_seek_the_frames_are_decoded_from_the_start(tmp_path):
    path = gop_clip(tmp_path / "b.mp4", photo_frames(24))
    whole, work = decoded(path, 18, None)
    wrong = video_io.Seek(pts=123_456_789, index=16, start_pts=0)  # no keyframe there: the seek is refused
    fallback, fallback_work = decoded(path, 18, wrong)
    assert [(i, t) for i, t, _ in fallback] == [(i, t) for i, t, _ in whole] and work == 24
    assert fallback_work >= 24


def test_a_truncated_clip_seeks_to_the_frames_that_decode(tmp_path):
    path = gop_clip(tmp_path / "whole.mp4", photo_frames(60))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 9 // 10])
    index = video_io.frame_index(video_io.open_clip(cut))
    assert index is not None and 10 < len(index.pts) < 60
    first = index.keyframes[-1] - 2
    clip = video_io.open_clip(cut)
    sought = [i for i, _, _ in video_io.frames(clip, first=first, seek=index.seek(first))]
    whole_clip = video_io.open_clip(cut)
    whole = [i for i, _, _ in video_io.frames(whole_clip, first=first)]
    assert sought == whole and sought and clip.truncated and whole_clip.truncated
