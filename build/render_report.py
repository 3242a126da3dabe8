"""The measured pages, rendered from their JSON alone: docs/report.json -> docs/report.md and
docs/people.json -> docs/people.md.

    python -m build.render_report                              # both pages of docs/
    python -m build.render_report out/report/quick.json        # -> out/report/quick.md

build/report.py and build/report_people.py measure (minutes) and write the JSON, then render their page
through this module; rendering again (a changed layout, a fixed sentence) needs no measuring. The JSON says
which page it is (a report has ``variants``, the people page ``pipelines``). Standard library only, so it
imports in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (label set key, metric, column title) of the accuracy tables
ACCURACY_COLUMNS = (("mpii", "pckh@0.5", "MPII PCKh@0.5"), ("mpii", "pckh@0.1", "MPII PCKh@0.1"),
                    ("coco/no-train", "oks", "COCO OKS no train"), ("coco/no-train", "pck@0.2", "COCO PCK@0.2 no train"),
                    ("coco", "oks", "COCO OKS all"), ("coco", "pck@0.2", "COCO PCK@0.2 all"))
PROTOCOLS = (("crops", "On each instance's crop"),
             ("whole", "On the whole photo (scored against the best-matching person)"))
HEADLINE_METRICS = ("pckh@0.5", "oks")  # the closer look's table shows these only
ONE_PERSON = (("whole/coco", "oks"), ("whole/coco", "pck@0.2"), ("whole/mpii", "pckh@0.5"),
              ("crops/coco", "oks"), ("crops/coco", "pck@0.2"), ("crops/mpii", "pckh@0.5"))  # people page columns


def _f(x, fmt=".1f", dash="-"):
    return dash if x is None else format(x, fmt)


def _row(r: dict, v: dict) -> str:
    """A table row's first two cells: the model's title and the variant."""
    return f"| {r['models'][v['model']]} | {v['variant']} |"


# --- docs/report.md -----------------------------------------------------------------------------------------


def header(r: dict) -> list[str]:
    """Title, machine, date, commit and command, how latency and cold start were measured, warnings."""
    m, s = r["machine"], r["settings"]
    lines = [
        "# Measured report: every model x variant",
        "",
        f"- Machine: {m['cpu']} ({m['arch']}, VNNI {'yes' if m['vnni'] else 'no' if m['vnni'] is False else '?'}), "
        f"{m['cores']} cores shared with other work; onnxruntime {m['onnxruntime']}, Python {m['python']}, "
        f"numpy {m['numpy']}.",
        f"- Date: {m['date']}; code {m['git'] or '?'}; command `{r.get('command', '?')}`; the run took "
        f"{r['seconds']:.0f} s" + (" (**--quick**: a smoke test, not a measurement)" if s["quick"] else "") + ".",
        "- Rerun: `make report` (= `.venv/bin/python -m build.report`; `--quick` for a smoke test, `--help` for "
        "filters). Measured by build/report.py into report.json, rendered from it by build/render_report.py "
        "(which renders again without measuring): do not edit by hand.",
        f"- Latency: `session.run` at batch 1 on {s['latency_photo']} as the service prepares it, sessions opened by "
        f"the service's `PoseModel(path, threads=N)`; median of {s['runs']} rounds after {s['warmup']} warm-up "
        "rounds; every round runs every variant and thread count once, in a rotating order, in one process. "
        "`x FP32` is the median over rounds of FP32 time / this variant's time in the same round. The machine is "
        "shared: compare ratios, not absolute times.",
    ]
    if s["cold_samples"]:
        rt = r.get("cold_runtime_only", {})
        lines.append(f"- Cold start: a fresh process per sample, median of {s['cold_samples']}: import (numpy, "
                     "onnxruntime, the service's pose package) + `PoseModel` (sha256, session, its warm-up run) + the "
                     "first `estimate` on the photo, 1 thread (Lambda's default 2048 MB = 1 vCPU); peak RSS is that "
                     f"process's VmHWM (the runtime alone, imports only: {_f(rt.get('peak_rss_mb'), '.0f')} MB, "
                     f"{_f(rt.get('import_ms'), '.0f')} ms). Files read from a warm page cache.")
    notes = [f"{k}: {n}" for k, v in r["variants"].items() for n in v["notes"]]
    if notes:
        lines += ["", "**Warning:** " + "; ".join(notes) + "."]
    return lines


def size_and_speed(r: dict) -> list[str]:
    """One row per variant: size, latency per thread count with its ratio to FP32, cold start and memory."""
    threads = [str(t) for t in r["settings"]["threads"]]
    head = "| model | variant | quantization | size MB |"
    sep = "|---|---|---|---:|"
    for t in threads:
        head += f" {t} thr median ms (p10-p90) | x FP32 |"
        sep += "---:|---:|"
    head += " cold start ms | peak RSS MB |"
    sep += "---:|---:|"
    lines = ["", "## Size and speed", "", head, sep]
    for v in r["variants"].values():
        row = f"{_row(r, v)} {v['quantization']} | {v['size_mb']:.1f} |"
        for t in threads:
            lat = v.get("latency", {}).get(t)
            row += (f" {lat['median_ms']:.1f} ({lat['p10_ms']:.0f}-{lat['p90_ms']:.0f}) | {_f(lat.get('x_fp32'), '.2f')} |"
                    if lat else " - | - |")
        c = v.get("cold", {})
        row += f" {_f(c.get('cold_ms'), '.0f')} | {_f(c.get('peak_rss_mb'), '.0f')} |"
        lines.append(row)
    return lines + static_against_dynamic(r, threads)


def static_against_dynamic(r: dict, threads: list[str]) -> list[str]:
    """The sentence of static INT8's speed-ups over dynamic INT8, where both were measured."""
    dyn_rows = [v for v in r["variants"].values() if v["variant"] == "int8-static"
                and v.get("latency", {}).get(threads[0], {}).get("x_int8_dynamic")]
    if not dyn_rows:
        return []
    parts = []
    for v in dyn_rows:
        ratios = ", ".join(f"x{v['latency'][t]['x_int8_dynamic']:.2f} ({t} thr)" for t in threads
                           if v["latency"].get(t, {}).get("x_int8_dynamic"))
        parts.append(f"{r['models'][v['model']]} {ratios}")
    return ["", "Static INT8 against dynamic INT8 (the seed's recipe), paired medians: " + "; ".join(parts) + "."]


def cold_start(r: dict) -> list[str]:
    """The cold start's parts per variant (medians), when it was measured."""
    if not any("cold" in v for v in r["variants"].values()):
        return []
    lines = ["", "### Cold start (medians, ms)", "",
             "| model | variant | process wall | import | PoseModel (sha256 + session + warm-up) | first estimate "
             "(of which inference) | import + PoseModel + first estimate | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for v in r["variants"].values():
        c = v.get("cold")
        if c:
            lines.append(f"{_row(r, v)} {c['process_wall_ms']:.0f} | "
                         f"{c['import_ms']:.0f} | {c['session_ms']:.0f} | {c['first_estimate_ms']:.0f} "
                         f"({c['first_inference_ms']:.0f}) | {c['cold_ms']:.0f} | {c['peak_rss_mb']:.0f} |")
    return lines


def agreement(r: dict) -> list[str]:
    """Each INT8 variant's raw outputs against its FP32's on the same photos."""
    agr = [v for v in r["variants"].values() if v.get("agreement_vs_fp32")]
    if not agr:
        return []
    lines = ["", "## Output agreement with FP32", "",
             f"On {len(agr[0]['agreement_vs_fp32']['photos'])} photos (../shared/images, then the eval set; "
             "they are also calibration photos): the largest absolute output difference, and the share of "
             "joints whose location (heatmap argmax, or keypoint) is identical / within 2% of the side, "
             "over all joints and over the joints FP32 is confident about. For Simple Baselines (random "
             "weights) this is the only quality signal: it says how much a random deep network amplifies INT8 "
             "rounding, not how accurate a trained model stays; **accuracy needs the real checkpoint** "
             "(`make export SB_CKPT=...`).", "",
             "| model | variant | max abs diff | joints identical | within 2% | confident joints within 2% |",
             "|---|---|---:|---:|---:|---:|"]
    for v in agr:
        a = v["agreement_vs_fp32"]
        conf = a["confident_within_2pct"]
        lines.append(f"{_row(r, v)} {a['max_abs_diff']:.3g} | "
                     f"{a['joints_identical']:.0%} | {a['joints_within_2pct']:.0%} | "
                     f"{'-' if conf is None else f'{conf:.0%}'} of {a['confident_joints']} |")
    return lines


def accuracy(r: dict) -> list[str]:
    """The accuracy section: means per protocol, the closer look's worth, joint by joint against FP32."""
    lines = ["", "## Accuracy on ../shared/eval", ""]
    if r.get("accuracy_skipped"):
        return lines + [f"Skipped: {r['accuracy_skipped']}."]
    lines += ["Through the service's code (build/evaluate.py). MPII: PCKh on the MPII-labelled instances; COCO: "
              "OKS and PCK@0.2 on the COCO-labelled instances, over the joints model and labels share by name. "
              "**no train** leaves out the 50 coco_train2017_TRAIN instances (MoveNet was trained on them): "
              "compare models on those columns; **all** is MoveNet's own number. INT8 rows show "
              "(INT8 - FP32) in points. Calibration used these photos too. The set is small (confidence "
              "intervals of 8-20 points on a mean): read the joint-by-joint table below, not only the means.",
              ""]
    for protocol, title in PROTOCOLS:
        lines += accuracy_means(r, protocol, title)
    return lines + closer_look(r) + joint_by_joint(r)


def accuracy_means(r: dict, protocol: str, title: str) -> list[str]:
    """One protocol's table: every variant's means, INT8 rows with their difference to FP32."""
    vs = r["variants"]
    lines = [f"### {title}", "", "| model | variant | " + " | ".join(c[2] for c in ACCURACY_COLUMNS) + " |",
             "|---|---|" + "---:|" * len(ACCURACY_COLUMNS)]
    for v in vs.values():
        acc = v.get("accuracy")
        if not acc:
            continue
        ref = vs.get(f"{v['model']}:fp32", {}).get("accuracy") if v["variant"] != "fp32" else None
        cells = []
        for set_key, metric, _ in ACCURACY_COLUMNS:
            x = acc.get(f"{protocol}/{set_key}", {}).get(metric)
            y = (ref or {}).get(f"{protocol}/{set_key}", {}).get(metric)
            cells.append("-" if x is None else f"{x:.1f}" + (f" ({x - y:+.1f})" if y is not None else ""))
        lines.append(f"{_row(r, v)} " + " | ".join(cells) + " |")
    n = next((v["accuracy"] for v in vs.values() if v.get("accuracy")), {})
    counts = ", ".join(f"{key}: {n[key]['instances']}" for key in n if key.startswith(protocol))
    return lines + ["", f"Instances ({'one per photo' if protocol == 'whole' else 'crops'}): {counts}.", ""]


def closer_look(r: dict) -> list[str]:
    """The headline metrics with one pass only -> with the service's closer look."""
    headline = [c for c in ACCURACY_COLUMNS if c[1] in HEADLINE_METRICS]
    lines = ["### The closer look: one pass -> the service's", "",
             "The service looks again at a person who is small in the photo (handler/pose/region.py); the "
             "tables above are with it. Here the same models with one pass only -> with the closer look.", "",
             "| model | variant | " + " | ".join(f"{p} {c[2]}" for p, _ in PROTOCOLS for c in headline) + " |",
             "|---|---|" + "---:|" * (len(PROTOCOLS) * len(headline))]
    for v in r["variants"].values():
        one, two = v.get("accuracy_one_pass"), v.get("accuracy")
        if not (one and two):
            continue
        cells = []
        for protocol, _ in PROTOCOLS:
            for set_key, metric, _ in headline:
                a, b = (x.get(f"{protocol}/{set_key}", {}).get(metric) for x in (one, two))
                cells.append("-" if a is None or b is None else f"{a:.1f} -> {b:.1f}")
        lines.append(f"{_row(r, v)} " + " | ".join(cells) + " |")
    return lines


def joint_by_joint(r: dict) -> list[str]:
    """Per INT8 variant and protocol: joints lost and gained against FP32, and the joints most lost."""
    lines = ["", "### Joint by joint: each INT8 variant against its FP32", "",
             "Joints FP32 placed right and INT8 not (lost), and the reverse (gained), at PCKh@0.5 (MPII labels) "
             "and PCK@0.2 (COCO labels, all instances), on the same inputs; on the whole photo both predictions "
             "are scored against the person FP32's prediction matches best. "
             "The whole-photo means above score each variant against its own best-matching person; where "
             "INT8's best match is another person than FP32's (counted below), the means can move the other "
             "way than these paired counts: trust the paired counts.", "",
             "| model | variant | protocol | MPII PCKh@0.5: lost / gained (FP32 right, of labelled) | "
             "COCO PCK@0.2: lost / gained (FP32 right, of labelled) | most lost, net (all joints: report.json) |",
             "|---|---|---|---:|---:|---|"]
    for v in r["variants"].values():
        jv = v.get("joints_vs_fp32")
        if not jv:
            continue
        for protocol, _ in PROTOCOLS:
            cells, names = [], []
            for set_name in ("mpii", "coco"):
                c = jv.get(f"{protocol}/{set_name}")
                cells.append(lost_gained_cell(c) if c else "-")
                names += [(lg[0] - lg[1], f"{set_name} {j} -{lg[0]}/+{lg[1]}")
                          for j, lg in (c or {}).get("lost_gained_by_joint", {}).items() if lg[0] > lg[1]]
            worst = [n for _, n in sorted(names, key=lambda x: -x[0])[:5]]
            lines.append(f"{_row(r, v)} {protocol} | {cells[0]} | {cells[1]} | {', '.join(worst) or 'none'} |")
    return lines


def lost_gained_cell(c: dict) -> str:
    """'lost / gained (FP32 right of labelled)', and the photos where INT8 matched another person."""
    switched, rest = len(c.get("best_match_switched", [])), c.get("without_switched")
    return (f"{c['lost']} / {c['gained']} ({c['fp32_correct']} of {c['labelled']})"
            + (f"; on {switched} photo{'s' if switched > 1 else ''} INT8 matches another person" if switched else "")
            + (f", without {'them' if switched > 1 else 'it'}: {rest['lost']} / {rest['gained']}" if rest else ""))


def video(r: dict) -> list[str]:
    """Each clip tracked: its tracks and id breaks, detection frames and speed (none in a report from before
    the section existed)."""
    v = r.get("video")
    if v is None:
        return []
    lines = ["", "## Video: tracks per clip of ../shared/video", ""]
    if v.get("skipped"):
        return lines + [f"Skipped: {v['skipped']}."]
    lines += [f"The first {v['frames_limit']} frames of each clip tracked (handler/pose/track.py, default options: "
              f"detection every 5th frame) by {v['models']['model']['name']} + "
              f"{(v['models']['detector'] or {}).get('name', 'no detector')} "
              "at 1 onnxruntime thread (build/bench_video.py's `clip_tracks`; decoding not timed). "
              "Without labelled identities, an **id break** is counted where a person stayed in view and lost "
              f"their id: a track ends with its last box inside the frame (clear of its edges by {v['edge']:.0%} "
              "of its side; not still seen on the last frame) and a new track starts within "
              f"{v['break_within']} frames on a box overlapping it (IoU {v['break_iou']} or more), one-to-one. "
              "Two people swapping ids, and a person back after longer, are not counted: a lower bound of the "
              "id switches.", "",
              f"| clip | frames | tracks | tracks of {v['min_track_frames']}+ frames | id breaks | detection frames "
              "| frames per CPU second |", "|---|---:|---:|---:|---:|---:|---:|"]
    for c in v["clips"]:
        breaks = ", ".join(f"{a}->{b}" for a, b in c["breaks"])
        lines.append(f"| {c['clip']} ({c['width']}x{c['height']}) | {c['frames']} | {c['tracks']} | {c['long_tracks']} "
                     f"| {c['id_breaks']}{f' ({breaks})' if breaks else ''} | {c['detection_frames']} "
                     f"| {_f(c['fps_per_cpu_second'], '.2f')} |")
    return lines


def targets_and_files(r: dict) -> list[str]:
    """The project's goals as this run met them, and the files measured with their hashes."""
    lines = []
    if r.get("targets"):
        lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|---|"]
        for t in r["targets"]:
            lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    lines += ["", "## Files", "", "| model | variant | file | sha256 | built from FP32 sha256 |", "|---|---|---|---|---|"]
    for v in r["variants"].values():
        lines.append(f"{_row(r, v)} `{v['file']}` | `{v['sha256'][:16]}` | "
                     f"{'`' + v['from_sha256'][:16] + '`' if v.get('from_sha256') else '-'} |")
    return lines


def report_page(r: dict) -> str:
    """The whole page of one report.json (build/report.py)."""
    sections = (header, size_and_speed, cold_start, agreement, accuracy, video, targets_and_files)
    return "\n".join(line for section in sections for line in section(r)) + "\n"


# --- docs/people.md -----------------------------------------------------------------------------------------


def people_page(r: dict) -> str:
    """The whole page of one people.json (build/report_people.py)."""
    p = r["pipelines"]
    lines = ["# Every person in a photo: measured", "",
             f"Measured on {r['date']} at commit {r.get('git') or '?'} by `{r.get('command', '?')}` (`make report`); "
             "rendered from people.json by build/render_report.py (which renders again without measuring): do not "
             "edit by hand. The eval photos are few (23 for "
             "COCO keypoint AP, 85 COCO and 38 MPII labelled persons): compare rows, not absolute figures.", "",
             "## Every person: COCO keypoint AP on coco_multi.json (pycocotools)", "",
             "| pipeline | AP | AP50 | AP75 | AR | people answered |", "|---|---|---|---|---|---|"]
    for name, row in p.items():
        if "every" in row:
            e = row["every"]
            lines.append(f"| {name} | {e['AP']:.1f} | {e['AP50']:.1f} | {e['AP75']:.1f} | {e['AR']:.1f} | {e['people']} |")
    lines += ["", "## One person: people[0] on whole photos and on each labelled person's crop", "",
              "| pipeline | " + " | ".join(f"{k} {m}" for k, m in ONE_PERSON) + " |",
              "|---|" + "---|" * len(ONE_PERSON)]
    for name, row in p.items():
        cells = [f"{row['one'][k][m]:.1f}" if m in row["one"].get(k, {}) else "-" for k, m in ONE_PERSON]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## The detectors: person box AP on coco_multi.json", "", "| file | AP | AP50 | AR |", "|---|---|---|---|"]
    for f, d in r["detector"].items():
        lines.append(f"| models/{f} | {d['AP']:.1f} | {d['AP50']:.1f} | {d['AR']:.1f} |")
    lines += ["", "## Speed", "", speed_table(r["speed"]), ""]
    return "\n".join(lines)


def speed_table(r: dict) -> str:
    """build/bench_people.py's timings: per photo, each way (one person, every person batched, a run per person,
    in the order measured) and their ratios."""
    ways = list(next(iter(r["photos"].values())))
    lines = [f"POST /pose without the image, {r['threads']} thread(s), median of {r['runs']} rounds "
             f"({r['model']}, {r['detector']}; pose graph batched: {r['batched_graph']}). "
             "Cells: ms (people found).", "",
             f"| photo | {' | '.join(ways)} | a run per person / batched | every person vs one person |",
             "|---|" + "---|" * (len(ways) + 2)]
    for label, row in r["photos"].items():
        cells = [f"{row[w]['median_ms']:.1f} ({row[w]['people']})" for w in ways]
        one, batched, each = (row[w]["median_ms"] for w in ways)
        lines.append(f"| {label} | {' | '.join(cells)} | {each / batched:.2f} | {batched / one:.2f}x |")
    rows = list(r["photos"].values())
    base = rows[0][ways[1]]["median_ms"]
    lines += ["", "Every person, batched, against pose.jpg (one person): " + ", ".join(
        f"{label} {row[ways[1]]['median_ms'] / base:.2f}x" for label, row in r["photos"].items())]
    return "\n".join(lines)


# --- either ---------------------------------------------------------------------------------------------------


def render(r: dict) -> str:
    """The page of a measured JSON: the people page when it has pipelines, else the report."""
    return people_page(r) if "pipelines" in r else report_page(r)


def render_file(json_path: Path, md_path: Path | None = None) -> Path:
    """Render json_path into md_path (default: beside it, .md); returns the page's path."""
    md_path = md_path or json_path.with_suffix(".md")
    md_path.write_text(render(json.loads(json_path.read_text())))
    return md_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", type=Path, nargs="*", default=[ROOT / "docs" / "report.json", ROOT / "docs" / "people.json"],
                    help="measured JSON files (default: docs/report.json and docs/people.json); each page is "
                         "written beside its JSON, .md")
    for path in ap.parse_args(argv).json:
        print(f"wrote {render_file(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
