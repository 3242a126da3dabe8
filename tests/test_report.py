"""The measured pages: rendering (build/render_report.py) from the committed docs/*.json, in milliseconds, and one
small real measuring run (build/report.py --quick on EfficientPose FP32 and its served INT8) whose JSON the
renderer turns into the page it wrote. Speed checks only that numbers exist (never absolute times)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from build import render_report

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EVAL = ROOT.parent / "shared" / "eval"
MODEL = "EfficientPose II Lite"


def md_table(text: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The first Markdown table after `heading`: its header cells and its body rows' cells."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return rows[0], rows[2:]


def number(cell: str) -> float:
    return float(cell.split()[0])


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads((DOCS / "report.json").read_text())


@pytest.fixture(scope="module")
def committed_people() -> dict:
    return json.loads((DOCS / "people.json").read_text())


# --- rendering, from the committed JSON -----------------------------------------------------------------------


@pytest.mark.parametrize("stem", ["report", "people"])
def test_each_committed_page_is_its_committed_json_rendered(stem):
    page = render_report.render(json.loads((DOCS / f"{stem}.json").read_text()))
    assert page == (DOCS / f"{stem}.md").read_text(), f"rerun: python -m build.render_report docs/{stem}.json"


def test_render_file_writes_the_page_beside_its_json(tmp_path, committed):
    js = tmp_path / "quick.json"
    js.write_text(json.dumps(committed))
    assert render_report.main([str(js)]) == 0
    assert (tmp_path / "quick.md").read_text() == render_report.render(committed)


def test_report_page_carries_date_commit_and_command(committed):
    page = render_report.render(committed)
    m = committed["machine"]
    assert f"Date: {m['date']}; code {m['git']}; command `{committed['command']}`" in page
    assert "build/render_report.py" in page and "do not edit by hand" in page


def test_size_and_speed_table_has_a_row_per_variant_with_its_numbers(committed):
    head, rows = md_table(render_report.render(committed), "## Size and speed")
    for col in ("model", "variant", "quantization", "size MB", "1 thr median ms (p10-p90)", "x FP32",
                "2 thr median ms (p10-p90)", "cold start ms", "peak RSS MB"):
        assert col in head, col
    expected = [(committed["models"][v["model"]], v["variant"]) for v in committed["variants"].values()]
    assert [(r[0], r[1]) for r in rows] == expected
    for r, v in zip(rows, committed["variants"].values()):
        cells = dict(zip(head, r))
        assert number(cells["size MB"]) == pytest.approx(v["size_mb"], abs=0.05)
        assert number(cells["1 thr median ms (p10-p90)"]) == pytest.approx(v["latency"]["1"]["median_ms"], abs=0.05)
        assert number(cells["cold start ms"]) == pytest.approx(v["cold"]["cold_ms"], abs=0.5)


def test_accuracy_tables_show_int8_against_its_fp32(committed):
    page = render_report.render(committed)
    for protocol, title in render_report.PROTOCOLS:
        head, rows = md_table(page, f"### {title}")
        assert head[2:] == [c[2] for c in render_report.ACCURACY_COLUMNS]
        for r in rows:
            v = committed["variants"][next(k for k, v in committed["variants"].items()
                                           if (committed["models"][v["model"]], v["variant"]) == (r[0], r[1]))]
            x = v["accuracy"][f"{protocol}/mpii"]["pckh@0.5"]
            assert number(r[2]) == pytest.approx(x, abs=0.05)
            if v["variant"] != "fp32":  # the difference to FP32, in points
                ref = committed["variants"][f"{v['model']}:fp32"]["accuracy"][f"{protocol}/mpii"]["pckh@0.5"]
                assert r[2].endswith(f"({x - ref:+.1f})")
    head, rows = md_table(page, "### Joint by joint")
    int8 = [v for v in committed["variants"].values() if v.get("joints_vs_fp32")]
    assert [(r[1], r[2]) for r in rows] == [(v["variant"], p) for v in int8 for p, _ in render_report.PROTOCOLS]


def test_targets_say_yes_only_where_met(committed):
    _, rows = md_table(render_report.render(committed), "## Targets")
    assert [r[2] for r in rows] == ["yes" if t["met"] else "no" for t in committed["targets"]]
    assert "no" in [r[2] for r in rows]  # the committed run missed some: a "False" read as true would hide them


def test_a_run_without_accuracy_or_cold_start_says_so(committed):
    r = copy.deepcopy(committed)
    r["accuracy_skipped"] = "--no-accuracy"
    r["settings"].update(quick=True, cold_samples=0)
    for v in r["variants"].values():
        for key in ("accuracy", "accuracy_one_pass", "joints_vs_fp32", "cold"):
            v.pop(key, None)
    page = render_report.render(r)
    assert "Skipped: --no-accuracy." in page and "(**--quick**: a smoke test, not a measurement)" in page
    assert "### Cold start" not in page and "- Cold start:" not in page and "## Targets" in page


def test_people_page_carries_date_commit_command_and_its_tables(committed_people):
    page = render_report.render(committed_people)
    p = committed_people
    assert f"Measured on {p['date']} at commit {p['git']} by `{p['command']}`" in page
    _, rows = md_table(page, "## Every person")
    assert [r[0] for r in rows] == [name for name, row in p["pipelines"].items() if "every" in row]
    _, rows = md_table(page, "## One person")
    assert [r[0] for r in rows] == list(p["pipelines"])
    head, rows = md_table(page, "## Speed")
    assert head[1:4] == list(next(iter(p["speed"]["photos"].values())))
    assert [r[0] for r in rows] == list(p["speed"]["photos"])


# --- one small real measuring run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("report")
    proc = subprocess.run(
        [sys.executable, "-m", "build.report", "--quick", "--models", "efficientpose",
         "--variants", "fp32", "int8-static", "--runs", "3", "--video-frames", "10", "--md", str(out / "r.md"), "--json", str(out / "r.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (out / "r.md").read_text(), json.loads((out / "r.json").read_text())


def test_measuring_writes_the_json_the_page_is_rendered_from(measured):
    md, data = measured
    assert render_report.render(data) == md
    assert data["command"].startswith("python -m build.report --quick --models efficientpose")
    assert data["machine"]["git"] and data["machine"]["date"]
    assert all(isinstance(t["met"], bool) for t in data["targets"])


def test_measured_numbers_are_sane(measured):
    _, data = measured
    assert set(data["variants"]) == {"efficientpose:fp32", "efficientpose:int8-static"}
    fp32, int8 = data["variants"]["efficientpose:fp32"], data["variants"]["efficientpose:int8-static"]
    assert fp32["latency"]["1"]["x_fp32"] == 1.0 and int8["latency"]["1"]["x_fp32"] > 0
    assert fp32["latency"]["1"]["median_ms"] > 0 and fp32["latency"]["2"]["runs"] == 3
    assert int8["size_mb"] < fp32["size_mb"]
    assert int8["cold"]["peak_rss_mb"] >= data["cold_runtime_only"]["peak_rss_mb"] > 0
    assert not data["changed_during_run"]
    agreement = int8["agreement_vs_fp32"]
    assert 0 <= agreement["joints_within_2pct"] <= 1 and agreement["joints"] > 0


def test_measured_accuracy_and_joint_by_joint_counts_add_up(measured):
    md, data = measured
    if not (EVAL / "mpii.json").is_file():
        assert data["accuracy_skipped"].startswith("the eval set is absent")
        pytest.skip(f"the eval set is absent ({EVAL}): accuracy not measured; clone the project with ../shared "
                    "beside it to run this part")
    for v in data["variants"].values():
        acc = v["accuracy"]
        assert {"crops/mpii", "whole/mpii", "crops/coco", "crops/coco/no-train"} <= set(acc)
        assert acc["crops/mpii"]["instances"] > 0 and 0 <= acc["crops/mpii"]["pckh@0.5"] <= 100
    for c in data["variants"]["efficientpose:int8-static"]["joints_vs_fp32"].values():
        assert 0 <= c["lost"] <= c["fp32_correct"] <= c["labelled"]
        assert c["fp32_correct"] - c["lost"] + c["gained"] == c["int8_correct"]
    assert {t["target"].split(":")[0] for t in data["targets"]} >= {f"{MODEL} served INT8 within 1 point of FP32"}


def test_measured_video_tracks_each_clip_or_says_why_not(measured):
    _, data = measured
    from build import bench_video

    if not bench_video.clips():
        assert data["video"]["skipped"].startswith("the clips are absent")
        pytest.skip(f"the clips are absent ({bench_video.CLIPS}): clone the project with ../shared beside it")
    rows = data["video"]["clips"]
    assert [r["clip"] for r in rows] == [p.name for p in bench_video.clips()]
    for r in rows:
        assert r["frames"] == 10 and 1 <= r["detection_frames"] < 10 and r["fps_per_cpu_second"] > 0
        assert r["long_tracks"] <= r["tracks"] and r["id_breaks"] == len(r["breaks"]) <= r["tracks"]


# --- the video section, rendered from a measured block added to the committed JSON ------------------------------

VIDEO = {"frames_limit": 150, "min_track_frames": 10, "break_within": 10, "break_iou": 0.3, "edge": 0.02,
         "models": {"model": {"name": "pp-tinypose-256x192"}, "detector": {"name": "rtmdet-nano-person"}},
         "clips": [{"clip": "a.mp4", "frames": 150, "width": 426, "height": 240, "tracks": 2, "long_tracks": 2,
                    "id_breaks": 0, "breaks": [], "detection_frames": 30, "fps_per_cpu_second": 10.63},
                   {"clip": "b.avi", "frames": 150, "width": 768, "height": 576, "tracks": 17, "long_tracks": 13,
                    "id_breaks": 2, "breaks": [[4, 9], [6, 12]], "detection_frames": 34, "fps_per_cpu_second": 4.25}]}


def test_video_section_has_a_row_per_clip_with_its_id_breaks(committed):
    page = render_report.render({**committed, "video": VIDEO})
    head, rows = md_table(page, "## Video: tracks per clip")
    assert head == ["clip", "frames", "tracks", "tracks of 10+ frames", "id breaks", "detection frames",
                    "frames per CPU second"]
    assert rows == [["a.mp4 (426x240)", "150", "2", "2", "0", "30", "10.63"],
                    ["b.avi (768x576)", "150", "17", "13", "2 (4->9, 6->12)", "34", "4.25"]]
    assert "pp-tinypose-256x192 + rtmdet-nano-person" in page and "within 10 frames" in page
    assert page.index("## Video") < page.index("## Targets")


def test_video_section_says_why_it_was_skipped_and_is_absent_from_older_reports(committed):
    page = render_report.render({**committed, "video": {"skipped": "the clips are absent (../shared/video)"}})
    assert "## Video: tracks per clip of ../shared/video\n\nSkipped: the clips are absent (../shared/video)." in page
    assert "## Video" not in render_report.render({k: v for k, v in committed.items() if k != "video"})


def test_id_breaks_are_targets_met_only_at_zero(committed):
    from build import report

    got = {t["target"]: t for t in report.targets({**committed, "video": VIDEO})}
    assert got["Identities hold on a.mp4: id breaks in its first 150 frames"]["met"] is True
    assert got["Identities hold on b.avi: id breaks in its first 150 frames"] == {
        "target": "Identities hold on b.avi: id breaks in its first 150 frames", "measured": "2", "met": False}


def test_a_report_without_the_clips_says_so(tmp_path, monkeypatch):
    import argparse

    from build import bench_video, report

    monkeypatch.setattr(bench_video, "CLIPS", tmp_path / "video")
    result: dict = {}
    report.add_video(result, argparse.Namespace(no_video=False, video_frames=150))
    assert result == {"video": {"skipped": f"the clips are absent ({tmp_path / 'video'})"}}
    report.add_video(result, argparse.Namespace(no_video=True, video_frames=150))
    assert result == {"video": {"skipped": "--no-video"}}
