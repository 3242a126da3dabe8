"""The web page's clip view in a real browser (Debian's Chromium through Playwright, as tests/test_web.py):
a real clip chosen, its frames sent to POST /track by the page, then played back with every tracked person
drawn over it, and the list of tracks.

Two clips: one made from tests/data/Pilots.jpg (three people sliding across; always there) and the first 2 s
of the basketball clip in ../shared/video (two players; skipped with a message when ../shared is absent). Each
is written as H.264 MP4 when this Chromium plays it (Debian's does), else as VP9 WebM. What the page drew
for a frame (window.__drawn, with window.__drawnFrame) is checked against that frame of the /track replies it
received. Screenshots: /tmp/web-clip-<name>.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, people_frames
from test_web import CHROMIUM, browser, open_page, playwright, rgb, server  # noqa: F401 (fixtures)

av = pytest.importorskip("av", reason="PyAV is not installed: pip install -r requirements-dev.txt")

pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) to test the web page",
)]

BASKETBALL = SHARED / "video" / "mmaction2_test_video_structuralize.mp4"
TRACKED_MS = 180_000  # 20-30 frames through the API on a shared 2-core machine


@pytest.fixture(scope="module")
def plays_h264(browser) -> bool:  # noqa: F811
    page = browser.new_page()
    try:
        return bool(page.evaluate("() => document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')"))
    finally:
        page.close()


def write_clip(path: Path, frames, fps: int, h264: bool) -> Path:
    """RGB frames -> a clip this Chromium plays: H.264 MP4, else VP9 WebM."""
    path = path.with_suffix(".mp4" if h264 else ".webm")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if h264 else "libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for rgb_frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb_frame), format="rgb24")))
        container.mux(stream.encode())
    return path


def first_seconds(path: Path, seconds: float) -> tuple[list[np.ndarray], int]:
    """The frames of a clip's first `seconds` (even sides) and its frame rate, rounded."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = round(float(stream.average_rate))
        frames = []
        for frame in container.decode(stream):
            if len(frames) >= seconds * fps:
                break
            rgb_frame = frame.to_ndarray(format="rgb24")
            frames.append(rgb_frame[: rgb_frame.shape[0] // 2 * 2, : rgb_frame.shape[1] // 2 * 2])
    return frames, fps


def track_on_the_page(page, base: str, clip: Path) -> list[dict]:
    """Choose `clip` on the page and wait until it is tracked; the /track replies it received, in order."""
    replies = []
    page.on("response", lambda r: r.url.endswith("/track") and r.ok and replies.append(r.json()))
    page.goto(f"{base}/")
    page.wait_for_selector("#api-status[data-state=ready]")
    assert "10 s" in page.inner_text("#clip-hint")  # the limit is said on the page
    page.set_input_files("#clip-file", str(clip))
    page.wait_for_selector("#clip-result[data-state=done], #clip-result[data-state=error]", timeout=TRACKED_MS)
    if page.get_attribute("#clip-result", "data-state") == "error":
        pytest.fail(f"the page shows an error: {page.inner_text('#error')}")
    return replies


def show_frame(page, index: int) -> list[dict]:
    """Seek the page's video into frame `index` (10 a second) and return the marks drawn for it."""
    page.evaluate("t => { const v = document.getElementById('clip-video'); v.pause(); v.currentTime = t; }",
                  (index + 0.5) / 10)
    page.wait_for_function("i => window.__drawnFrame === i", arg=index)
    return page.evaluate("() => window.__drawn")


def assert_drew_frame(page, marks: list[dict], frame: dict, threshold: float) -> None:
    """The marks are the frame's people: a box and a label per person, in the track's colour and with its id,
    and a dot per visible joint where the reply puts it (canvas = frame pixels)."""
    people = frame["people"]
    boxes = [m for m in marks if m["kind"] == "box"]
    labels = [m for m in marks if m["kind"] == "label"]
    assert [rgb(page, m["color"]) for m in boxes] == [rgb(page, p["color"]) for p in people]
    assert [m["text"] for m in labels] == [str(p["track_id"]) for p in people]
    assert [rgb(page, m["color"]) for m in labels] == [rgb(page, p["color"]) for p in people]
    for mark, person in zip(boxes, people):
        assert (mark["x"], mark["y"]) == pytest.approx((person["box"]["left"] + 0.5, person["box"]["top"] + 0.5))
    dots = [m for m in marks if m["kind"] == "joint"]
    expected = [(p, j, joint) for p, person in enumerate(people)
                for j, joint in enumerate(person["joints"]) if joint["score"] >= threshold]
    assert [(m["person"], m["joint"]) for m in dots] == [(p, j) for p, j, _ in expected]
    assert [c for m in dots for c in m["center"]] == \
        pytest.approx([c for _, _, joint in expected for c in (joint["x"] + 0.5, joint["y"] + 0.5)])


def check_clip(page, base: str, clip: Path, name: str, least_tracks: int) -> list[dict]:
    replies = track_on_the_page(page, base, clip)
    frames = [f for reply in replies for f in reply["frames"]]
    assert [f["index"] for f in frames] == list(range(len(frames)))  # every frame once, in order, state carried
    assert len(replies) == -(-len(frames) // 5) and len(frames) >= 19
    threshold = float(page.input_value("#threshold"))
    # the track list: every track of the replies, with its colour and the frames it was seen on
    seen: dict[int, list[int]] = {}
    colors = {}
    for f in frames:
        for p in f["people"]:
            seen.setdefault(p["track_id"], []).append(f["index"])
            colors[p["track_id"]] = p["color"]
    listed = page.eval_on_selector_all("#tracks li", """items => items.map(li => [Number(li.dataset.track),
        li.querySelector('.track-id').style.color, li.textContent])""")
    assert [t for t, _, _ in listed] == sorted(seen)
    assert len(seen) >= least_tracks
    for track_id, color, text in listed:
        assert rgb(page, color) == rgb(page, colors[track_id])
        count = len(seen[track_id])
        assert f"{count} frame" in text and f"{seen[track_id][0] / 10:.1f}–{seen[track_id][-1] / 10:.1f} s" in text
    # what is drawn over the video follows its time: a frame near the start, the middle and the end
    for index in (1, len(frames) // 2, len(frames) - 2):
        assert_drew_frame(page, show_frame(page, index), frames[index], threshold)
    page.screenshot(path=f"/tmp/web-clip-{name}.png", full_page=True)
    assert page.problems == []
    return frames


def test_a_clip_from_the_photos_is_tracked_and_played_with_its_tracks(server, browser, plays_h264, tmp_path):  # noqa: F811
    clip = write_clip(tmp_path / "pilots", people_frames(25, width=480), 10, plays_h264)
    with open_page(browser, viewport={"width": 1280, "height": 1100}) as page:
        frames = check_clip(page, server[0], clip, "pilots", least_tracks=2)
    assert sum(bool(f["people"]) for f in frames) >= len(frames) - 1


def test_the_basketball_clip_is_tracked_and_played_with_its_tracks(server, browser, plays_h264, tmp_path):  # noqa: F811
    if not BASKETBALL.is_file():
        pytest.skip(f"{BASKETBALL} is absent: clone the project with ../shared beside it to run this test")
    frames, fps = first_seconds(BASKETBALL, 2.0)
    clip = write_clip(tmp_path / "basketball", frames, fps, plays_h264)
    with open_page(browser, viewport={"width": 1280, "height": 1100}) as page:
        tracked = check_clip(page, server[0], clip, "basketball", least_tracks=2)
    # the two players keep their ids: two tracks seen on most of the frames
    counts = sorted((sum(p["track_id"] == t for f in tracked for p in f["people"])
                     for t in {p["track_id"] for f in tracked for p in f["people"]}), reverse=True)
    assert counts[1] >= 0.8 * len(tracked)
