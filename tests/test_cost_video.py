"""build/cost_video.py: the video steps measured on a clip, and an hour of it priced on paper."""

from __future__ import annotations

import json

import pytest

from build import cost_video
from local import function

av = pytest.importorskip("av", reason="PyAV is not installed: pip install -r requirements-dev.txt")

from test_video import photo_frames, write_clip  # noqa: E402

ROW = {"clip": "c.mp4", "size": "1920x1080", "frames": 300, "load_s": 1.0, "index_ms": 0.1, "track_ms": 100.0,
       "draw_ms": 50.0}


def test_the_map_concurrencies_are_the_state_machines():
    machine = json.loads(cost_video.ASL.read_text())
    states = machine["States"]["Clips"]["ItemProcessor"]["States"]
    assert cost_video.map_concurrency("Segments") == states["Segments"]["MaxConcurrency"]
    assert cost_video.map_concurrency("Draw") == states["Draw"]["MaxConcurrency"]
    assert cost_video.map_concurrency("Clips") == machine["States"]["Clips"]["MaxConcurrency"]


def test_an_hour_on_paper_adds_up():
    hour = cost_video.hour_on_paper(ROW, 1, 30)
    assert hour["segments"] == 125  # 30 s segments starting 29 s apart
    frames = 3600 * 30
    cpu = frames * 0.1e-3 + frames * 30 / 29 * 0.1 + frames * 0.05 + 2 * 125 * 1.0
    assert hour["cpu_h"] == pytest.approx(cpu / 3600)
    assert hour["usd"] == pytest.approx(cpu * 1769 / 1024 * cost_video.LAMBDA_X86_GB_SECOND)
    assert cost_video.hour_on_paper(ROW, 2, 30)["usd"] > 1.9 * hour["usd"]
    assert hour["segment_track_s"] == pytest.approx(1.0 + 900 * 0.1)


@pytest.mark.model
def test_the_steps_are_measured_on_a_clip(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, photo_frames(8))
    env = {"MODEL_PATH": str(function.model_path()), "DETECTOR_PATH": str(function.detector_path()),
           "MODEL_THREADS": "1"}
    row = cost_video.measure(clip, env)
    assert row["frames"] == 8
    assert row["track_ms"] > row["index_ms"] > 0 and row["draw_ms"] > 0 and row["load_s"] > 0
    assert "| clip.mp4 |" in cost_video.table([row], 1, 30)
