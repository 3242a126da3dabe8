"""build/report.py --quick on one small case (EfficientPose FP32 and its served INT8): the tables have the
expected rows and columns and sane values. Speed checks only that numbers exist (never absolute times)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parent.parent
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
def report(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("report")
    proc = subprocess.run(
        [sys.executable, "-m", "build.report", "--quick", "--models", "efficientpose",
         "--variants", "fp32", "int8-static", "--runs", "3", "--md", str(out / "r.md"), "--json", str(out / "r.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (out / "r.md").read_text(), json.loads((out / "r.json").read_text())


def test_size_and_speed_table(report):
    md, data = report
    assert "--quick" in md and "onnxruntime" in md and "make report" in md
    head, rows = md_table(md, "## Size and speed")
    for col in ("model", "variant", "quantization", "size MB", "1 thr median ms (p10-p90)", "x FP32",
                "2 thr median ms (p10-p90)", "cold start ms", "peak RSS MB"):
        assert col in head, col
    assert [(r[0], r[1]) for r in rows] == [(MODEL, "fp32"), (MODEL, "int8-static")]
    for r in rows:
        cells = dict(zip(head, r))
        assert number(cells["size MB"]) > 0
        assert number(cells["1 thr median ms (p10-p90)"]) > 0
        assert number(cells["cold start ms"]) > 0 and number(cells["peak RSS MB"]) > 0
    assert set(data["variants"]) == {"efficientpose:fp32", "efficientpose:int8-static"}
    fp32, int8 = data["variants"]["efficientpose:fp32"], data["variants"]["efficientpose:int8-static"]
    assert fp32["latency"]["1"]["x_fp32"] == 1.0 and int8["latency"]["1"]["x_fp32"] > 0
    assert int8["size_mb"] < fp32["size_mb"]
    assert int8["cold"]["peak_rss_mb"] >= data["cold_runtime_only"]["peak_rss_mb"] > 0
    assert not data["changed_during_run"]
    agreement = int8["agreement_vs_fp32"]
    assert 0 <= agreement["joints_within_2pct"] <= 1 and agreement["joints"] > 0


def test_accuracy_tables(report):
    md, data = report
    if not (EVAL / "mpii.json").is_file():
        assert "Skipped: the eval set is absent" in md
        pytest.skip(f"the eval set is absent ({EVAL}): accuracy not measured; clone the project with ../shared "
                    "beside it to run this part")
    for protocol in ("### On each instance's crop", "### On the whole photo"):
        head, rows = md_table(md, protocol)
        assert head[2:] == ["MPII PCKh@0.5", "MPII PCKh@0.1", "COCO OKS no train", "COCO PCK@0.2 no train",
                            "COCO OKS all", "COCO PCK@0.2 all"]
        assert [(r[0], r[1]) for r in rows] == [(MODEL, "fp32"), (MODEL, "int8-static")]
        for r in rows:
            for cell in r[2:]:
                assert 0 <= number(cell) <= 100, r
    for v in data["variants"].values():
        acc = v["accuracy"]
        assert {"crops/mpii", "whole/mpii", "crops/coco", "crops/coco/no-train"} <= set(acc)
        assert acc["crops/mpii"]["instances"] > 0
    head, rows = md_table(md, "### Joint by joint")
    assert [(r[1], r[2]) for r in rows] == [("int8-static", "crops"), ("int8-static", "whole")]
    for c in data["variants"]["efficientpose:int8-static"]["joints_vs_fp32"].values():
        assert 0 <= c["lost"] <= c["fp32_correct"] <= c["labelled"]
        assert c["fp32_correct"] - c["lost"] + c["gained"] == c["int8_correct"]
    assert {t["target"].split(":")[0] for t in data["targets"]} >= {f"{MODEL} served INT8 within 1 point of FP32"}
