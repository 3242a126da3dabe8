"""The measured report of every model x variant, side by side in one run: docs/report.json, then docs/report.md.

    python -m build.report                      # everything (~10-15 min on 2 cores)
    python -m build.report --quick              # fewer runs: a smoke test (writes out/report/quick.*)
    python -m build.report --models efficientpose --variants fp32 int8-static --no-cold
    python -m build.report --file efficientpose:int8-static=out/models/efficientpose.int8.onnx
    python -m build.render_report               # the page again from docs/report.json, without measuring

This module measures and writes the JSON (everything the page shows, with the date, the commit and the
command); build/render_report.py renders the page from that JSON.

Models and variants:

- each pose model models/models.json serves as INT8 (MoveNet Thunder, EfficientPose II Lite): ``fp32`` (its
  source), ``int8-dynamic`` (the seed's recipe, ``quantize.py --mode dynamic``, built into out/report/),
  ``int8-static`` (the served file, models/int8/<name>.int8.onnx);
- Simple Baselines R50 MPII with random-init weights: ``fp32``, ``int8-dynamic``, ``int8-static``, as
  build/bench_models.py builds them into out/bench/. Random weights: no accuracy, only agreement with FP32.

Measurements (every session is opened by the service's own ``PoseModel(path, threads=N)``):

- size: the file's bytes;
- latency: ``session.run`` at batch 1 on tests/data/pose.jpg prepared by the service, 1 and 2 intra-op threads;
  every round runs every (variant, threads) session once, in a rotating order, in this one process, so the
  drift of a shared machine hits all alike; medians after warm-up rounds, and speed ratios as the median of the
  per-round ratios (paired, same round);
- cold start: a fresh Python process per sample: import (numpy, onnxruntime, the service's pose package) +
  ``PoseModel`` (sha256, session, the service's warm-up run) + the first ``estimate`` on pose.jpg, 1 thread (what
  Lambda's default 2048 MB buys); samples of all variants interleaved; median; peak memory = that process's
  peak RSS (VmHWM; its ru_maxrss is kept in the JSON, but on Linux it also counts the parent's memory at fork);
- accuracy (../shared/eval, through build/evaluate.py): PCKh@0.5/@0.1 on the MPII instances, OKS and PCK@0.2 on
  the COCO instances without the coco_train2017_TRAIN subset (compare models on these) and with it (MoveNet was
  trained on it), on crops and on the whole photo;
- joint by joint, each INT8 variant against its FP32 on the same inputs: joints FP32 got right and INT8 not
  (lost) and the reverse (gained), at PCKh@0.5 (MPII) and PCK@0.2 (COCO); on the whole photo both are scored
  against the person FP32's prediction matches best;
- agreement of the raw outputs with FP32 on 8 photos (build/bench_models.py's ``agreement``);
- video (../shared/video, through build/bench_video.py's ``clip_tracks``): each clip's first frames tracked by the
  served default models at 1 thread: tracks, tracks of 10+ frames, id breaks (a person who stayed in view and
  lost their id, counted without labels), detection frames, frames per CPU second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

BUILD = Path(__file__).resolve().parent
ROOT = BUILD.parent
from build import bench_models
from build import evaluate
from build import photos
from build import provenance
from build import render_report
from pose.source import sha256_of
from pose import card as card_schema  # noqa: E402
from pose import image as pose_image  # noqa: E402
from pose.model import PoseModel  # noqa: E402
from pose.pipeline import estimate_person  # noqa: E402

from local import catalog  # noqa: E402

LATENCY_PHOTO = ROOT / "tests" / "data" / "pose.jpg"
VARIANTS = ("fp32", "int8-dynamic", "int8-static")
SB = "simple-baselines-r50-mpii"
# name -> title, accuracy measurable: the pose models of models/models.json served as INT8 (each with its FP32
# source), and Simple Baselines (its files built by bench_models)
MODELS = {**{m.name: {"title": m.title, "accuracy": True} for m in catalog.models("pose") if m.quantize},
          SB: {"title": "Simple Baselines R50 MPII (random-init)", "accuracy": False}}
PCK_OF_SET = {"mpii": "pckh@0.5", "coco": "pck@0.2"}  # the joint-by-joint criterion per label set
CARD_KEY = card_schema.CARD_KEY


@dataclass
class Variant:
    model: str
    variant: str
    path: Path
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.model}:{self.variant}"


# --- the variants -------------------------------------------------------------------------------------------


def read_card(path: Path) -> dict:
    """The card of an ONNX file, read through onnxruntime's metadata (no full protobuf load)."""
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    o.log_severity_level = 3
    meta = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"]).get_modelmeta()
    return json.loads(meta.custom_metadata_map[CARD_KEY])




def dynamic_variant(name: str, workdir: Path, rebuild: bool) -> Path:
    """The FP32 source through the seed's recipe into workdir, rebuilt when that source changed."""
    from build import quantize

    src, dst = catalog.get(name).source_path, workdir / f"{name}.int8-dynamic.onnx"
    if dst.is_file() and not rebuild:
        try:
            if read_card(dst).get("calibration", {}).get("from_sha256") == sha256_of(src):
                return dst
        except Exception:  # noqa: BLE001 (a broken leftover is rebuilt)
            pass
    print(f"building {dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst} (quantize.py --mode dynamic)",
          flush=True)
    quantize.quantize(src, dst, quantize.Config(mode="dynamic"))
    return dst


def resolve(models: list[str], variants: list[str], workdir: Path, overrides: dict[str, Path],
            rebuild: bool = False) -> list[Variant]:
    out: list[Variant] = []
    for name in models:
        if name == SB:
            wanted = {v: overrides.get(f"{SB}:{v}") for v in variants}
            if any(p is None for p in wanted.values()):
                built = bench_models.build_simple_baselines(ROOT / "out" / "bench", rebuild)
                wanted = {v: p or built[v] for v, p in wanted.items()}
            out += [Variant(name, v, Path(p)) for v, p in wanted.items()]
            continue
        for v in variants:
            path = overrides.get(f"{name}:{v}")
            if path is None:
                path = {"fp32": catalog.get(name).source_path, "int8-static": catalog.get(name).served_path}.get(v)
            if path is None:
                path = dynamic_variant(name, workdir, rebuild)
            if not Path(path).is_file():
                print(f"warning: {name} {v}: {path} is absent; left out", file=sys.stderr)
                continue
            out.append(Variant(name, v, Path(path)))
    for v in out:
        card = read_card(v.path)
        if v.variant.startswith("int8") and not str(card.get("quantization", "")).startswith("int8"):
            v.notes.append(f"card says quantization '{card.get('quantization')}': not an INT8 file yet")
    return out


# --- latency ------------------------------------------------------------------------------------------------


def latency_input(model: PoseModel) -> np.ndarray:
    rgb = pose_image.read_photo(LATENCY_PHOTO.read_bytes())
    return pose_image.prepare(rgb, model.card.input)[0]


def measure_latency(variants: list[Variant], threads: list[int], runs: int, warmup: int) -> dict:
    """Per (variant key, threads): median/p10/p90 ms, and the per-round times for paired ratios."""
    sessions = {}
    for v in variants:
        for t in threads:
            m = PoseModel(v.path, threads=t)
            sessions[(v.key, t)] = (m, latency_input(m))
    keys = list(sessions)
    times: dict = {k: [] for k in keys}
    for r in range(warmup + runs):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            m, x = sessions[k]
            t0 = time.perf_counter()
            m.run(x)
            dt_ms = (time.perf_counter() - t0) * 1e3
            if r >= warmup:
                times[k].append(dt_ms)
    return {k: {"median_ms": statistics.median(v), "p10_ms": float(np.percentile(v, 10)),
                "p90_ms": float(np.percentile(v, 90)), "runs": len(v), "times_ms": v} for k, v in times.items()}


def paired_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of slow/fast: how many times faster `fast` ran in the same round."""
    return statistics.median(a / b for a, b in zip(slow, fast))


# --- agreement with FP32 ------------------------------------------------------------------------------------


def agreement_photos(n: int = 8) -> list[Path]:
    dirs = [str(d) for d in reversed(photos.default_dirs())] or [str(ROOT / "tests" / "data")]
    return photos.list_images(dirs)[:n]


def measure_agreement(variants: list[Variant], n_photos: int = 8) -> dict:
    """Each INT8 variant's outputs against its model's FP32 on the same photos (bench_models.agreement)."""
    paths = agreement_photos(n_photos)
    out, fp32 = {}, {v.model: v for v in variants if v.variant == "fp32"}
    for v in variants:
        ref = fp32.get(v.model)
        if ref is None or v is ref:
            continue
        cards = {x.key: read_card(x.path) for x in (ref, v)}
        outputs = {}
        for x in (ref, v):
            m = PoseModel(x.path, threads=2)
            outputs[x.key] = [m.run(t) for t in photos.prepare_all(paths, cards[x.key])]
            del m
        rc = cards[ref.key]
        out[v.key] = {**bench_models.agreement(outputs[ref.key], outputs[v.key], rc["output"], rc["threshold"]),
                      "photos": [p.name for p in paths]}
    return out


# --- cold start ---------------------------------------------------------------------------------------------

COLD_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy, onnxruntime
from pose.image import read_photo
from pose.model import PoseModel
from pose.pipeline import estimate_person
t1 = time.perf_counter()
out = {"import_ms": (t1 - t0) * 1e3}
if sys.argv[1]:
    m = PoseModel(sys.argv[1], threads=int(sys.argv[2]))
    t2 = time.perf_counter()
    rgb = read_photo(open(sys.argv[3], "rb").read())
    t3 = time.perf_counter()
    est = estimate_person(rgb, m)
    t4 = time.perf_counter()
    out.update(session_ms=(t2 - t1) * 1e3, photo_decode_ms=(t3 - t2) * 1e3, first_estimate_ms=(t4 - t3) * 1e3,
               first_inference_ms=est.timings_ms["inference"], cold_ms=(t2 - t0 + t4 - t3) * 1e3)
out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
try:  # VmHWM: the peak RSS of this program's own memory (ru_maxrss also counts the parent's at fork)
    out["peak_rss_mb"] = next(int(ln.split()[1]) / 1024 for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
except (OSError, StopIteration):
    out["peak_rss_mb"] = out["ru_maxrss_mb"]
print(json.dumps(out))
"""


def cold_sample(path: Path | None, threads: int) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", COLD_CHILD, str(path or ""), str(threads), str(LATENCY_PHOTO)],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "handler")}, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    wall = (time.perf_counter() - t0) * 1e3
    if proc.returncode != 0:
        raise RuntimeError(f"cold start of {path} failed: {proc.stderr.strip()[-500:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_wall_ms": wall}


def measure_cold(variants: list[Variant], reps: int, threads: int = 1) -> dict:
    samples: dict[str, list[dict]] = {v.key: [] for v in variants}
    samples["runtime-only"] = []
    for _ in range(reps):
        samples["runtime-only"].append(cold_sample(None, threads))
        for v in variants:
            samples[v.key].append(cold_sample(v.path, threads))
    out = {}
    for k, rows in samples.items():
        out[k] = {f: statistics.median(r[f] for r in rows) for f in rows[0]}
        out[k]["samples"] = len(rows)
    return out


# --- accuracy -----------------------------------------------------------------------------------------------


def _rgb_key(rgb: np.ndarray) -> tuple:
    return rgb.shape, hashlib.blake2b(np.ascontiguousarray(rgb).tobytes(), digest_size=16).hexdigest()


class Recording:
    """A PoseModel that remembers its predictions by input, so whole-photo predictions can be re-scored."""

    def __init__(self, model: PoseModel):
        self.model, self.card, self.points = model, model.card, {}

    def estimate(self, rgb: np.ndarray):
        est = estimate_person(rgb, self.model)
        self.points[_rgb_key(rgb)] = est.points
        return est


def measure_accuracy(v: Variant, eval_dir: Path) -> tuple[dict, dict, Recording]:
    rec = Recording(PoseModel(v.path, threads=2))
    results = evaluate.run(rec, eval_dir)
    return evaluate.report(results), results, rec


def whole_groups(rec: Recording, eval_dir: Path, labels: dict, keys: dict) -> dict:
    """label set -> image -> [Scored of each labelled instance on it, against the one whole-photo prediction]."""
    out: dict = {}
    for set_name, (label_joints, instances) in labels.items():
        mi, li, _ = evaluate.match(rec.card.joints, label_joints)
        if len(mi) == 0:
            continue
        scorer = evaluate.score_mpii if set_name == "mpii" else evaluate.score_coco
        for inst in instances:
            points = rec.points[keys[inst["image"]]]
            out.setdefault(set_name, {}).setdefault(inst["image"], []).append(scorer(points, inst, mi, li))
    return out


def _lost_gained(pairs: list, metric: str, joint_names: list[str]) -> dict:
    """pairs of (FP32 Scored, INT8 Scored) of one instance -> joints lost/gained, overall and per joint name."""
    a = np.stack([s.correct[metric] for s, _ in pairs])
    b = np.stack([t.correct[metric] for _, t in pairs])
    labelled = np.stack([s.labelled for s, _ in pairs])
    lost, gained = a & ~b, ~a & b
    per_joint = {j: [int(lost[:, i].sum()), int(gained[:, i].sum())] for i, j in enumerate(joint_names)
                 if lost[:, i].any() or gained[:, i].any()}
    return {"metric": metric, "instances": len(pairs), "labelled": int(labelled.sum()), "fp32_correct": int(a.sum()),
            "int8_correct": int(b.sum()), "lost": int(lost.sum()), "gained": int(gained.sum()),
            "lost_gained_by_joint": per_joint}


def compare_joints(ref: tuple, got: tuple, eval_dir: Path, labels: dict, keys: dict) -> dict:
    """Joint by joint, INT8 (got) against FP32 (ref), per protocol and label set."""
    (_, ref_results, ref_rec), (_, got_results, got_rec) = ref, got
    out = {}
    for (protocol, set_name), scored in ref_results.items():
        if protocol != "crops":
            continue
        pairs = list(zip(scored, got_results[(protocol, set_name)]))
        assert all(s.instance == t.instance for s, t in pairs)
        shared = evaluate.match(ref_rec.card.joints, labels[set_name][0])[2]
        out[f"crops/{set_name}"] = _lost_gained(pairs, PCK_OF_SET[set_name], shared)
    if any(p == "whole" for p, _ in ref_results):
        rg, gg = whole_groups(ref_rec, eval_dir, labels, keys), whole_groups(got_rec, eval_dir, labels, keys)
        for set_name, by_image in rg.items():
            pairs, switched, kept = [], [], []
            for image, group in by_image.items():
                best = max(range(len(group)), key=lambda i: evaluate.quality(group[i]))
                other = gg[set_name][image]
                pairs.append((group[best], other[best]))
                if max(range(len(other)), key=lambda i: evaluate.quality(other[i])) != best:
                    switched.append(image)
                else:
                    kept.append(pairs[-1])
            shared = evaluate.match(ref_rec.card.joints, labels[set_name][0])[2]
            row = {**_lost_gained(pairs, PCK_OF_SET[set_name], shared), "best_match_switched": switched}
            if switched and kept:
                rest = _lost_gained(kept, PCK_OF_SET[set_name], shared)
                row["without_switched"] = {k: rest[k] for k in ("instances", "labelled", "lost", "gained")}
            out[f"whole/{set_name}"] = row
    return out


# --- machine ------------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu, vnni = platform.machine(), None
    try:
        info = Path("/proc/cpuinfo").read_text()
        names = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
        vnni = "avx512_vnni" in info or "avx_vnni" in info
    except OSError:
        pass
    return {"cpu": cpu, "arch": platform.machine(), "vnni": vnni, "cores": os.cpu_count(),
            "onnxruntime": ort.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "git": provenance.commit()}


# --- the run ------------------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> dict[str, Path]:
    """--file MODEL:VARIANT=PATH items -> {"MODEL:VARIANT": PATH}."""
    overrides = {}
    for item in items:
        key, _, path = item.partition("=")
        if ":" not in key or not path:
            raise SystemExit(f"error: --file wants MODEL:VARIANT=PATH, got {item!r}")
        overrides[key] = Path(path)
    return overrides


def describe(v: Variant) -> dict:
    """A variant's file: where, how big, its hash, and what its card says of its quantization."""
    card = read_card(v.path)
    return {"model": v.model, "variant": v.variant, "file": _display(v.path), "size_mb": v.path.stat().st_size / 1e6,
            "sha256": sha256_of(v.path), "card_name": card.get("name"), "quantization": card.get("quantization"),
            "from_sha256": (card.get("calibration") or {}).get("from_sha256"), "notes": list(v.notes)}


def add_cold(result: dict, variants: list[Variant], reps: int) -> None:
    print(f"cold start: {reps} fresh process(es) per variant ...", flush=True)
    cold = measure_cold(variants, reps)
    result["cold_runtime_only"] = cold.pop("runtime-only")
    for k, c in cold.items():
        result["variants"][k]["cold"] = c


def add_latency(result: dict, variants: list[Variant], threads: list[int], runs: int, warmup: int) -> None:
    """Per variant and thread count: the latency's median and spread, and paired ratios to FP32 and dynamic INT8."""
    print(f"latency: {warmup} + {runs} interleaved rounds, threads {threads} ...", flush=True)
    lat = measure_latency(variants, threads, runs, warmup)
    fp32_of = {v.model: v.key for v in variants if v.variant == "fp32"}
    dyn_of = {v.model: v.key for v in variants if v.variant == "int8-dynamic"}
    for v in variants:
        row = result["variants"][v.key]
        row["latency"] = {}
        for t in threads:
            m = lat[(v.key, t)]
            entry = {k: m[k] for k in ("median_ms", "p10_ms", "p90_ms", "runs")}
            if v.model in fp32_of:
                entry["x_fp32"] = paired_ratio(lat[(fp32_of[v.model], t)]["times_ms"], m["times_ms"])
            if v.model in dyn_of:
                entry["x_int8_dynamic"] = paired_ratio(lat[(dyn_of[v.model], t)]["times_ms"], m["times_ms"])
            row["latency"][str(t)] = entry


def add_accuracy(result: dict, variants: list[Variant], models: list[str], eval_dir: Path) -> None:
    """Accuracy of every variant of the models that have one, one pass against the closer look, and each INT8
    variant joint by joint against its FP32."""
    labels = evaluate.load_labels(eval_dir)
    keys = {img: _rgb_key(evaluate.read_rgb(eval_dir, img))
            for _, insts in labels.values() for img in {i["image"] for i in insts}}
    for name in models:
        measured = {}
        for v in (v for v in variants if v.model == name):
            print(f"accuracy: {v.key} ...", flush=True)
            measured[v.variant] = measure_accuracy(v, eval_dir)
            result["variants"][v.key]["accuracy"] = measured[v.variant][0]
            if v.variant != "int8-dynamic":  # the closer look's worth; dynamic INT8 is too slow to bother
                one_pass = evaluate.OnePass(measured[v.variant][2].model)
                result["variants"][v.key]["accuracy_one_pass"] = evaluate.report(evaluate.run(one_pass, eval_dir))
        if "fp32" in measured:
            for variant, got in measured.items():
                if variant != "fp32":
                    result["variants"][f"{name}:{variant}"]["joints_vs_fp32"] = compare_joints(
                        measured["fp32"], got, eval_dir, labels, keys)


def accuracy_skipped(a: argparse.Namespace) -> str | None:
    """Why accuracy is not measured in this run, or None."""
    if a.no_accuracy:
        return "--no-accuracy"
    if not (Path(a.eval_dir) / "mpii.json").is_file():
        return f"the eval set is absent ({Path(a.eval_dir)})"
    return None


def add_video(result: dict, a: argparse.Namespace) -> None:
    """Each clip of ../shared/video tracked over its first a.video_frames frames (bench_video.clip_tracks), or
    why not."""
    from build import bench_video

    clips = bench_video.clips()
    skipped = "--no-video" if a.no_video else None if clips else f"the clips are absent ({bench_video.CLIPS})"
    if skipped:
        result["video"] = {"skipped": skipped}
        print(f"video: skipped: {skipped}", flush=True)
        return
    print(f"video: {len(clips)} clips, their first {a.video_frames} frames tracked ...", flush=True)
    models = bench_video.default_models()
    result["video"] = {"frames_limit": a.video_frames, "models": models.described,
                       "min_track_frames": bench_video.MIN_TRACK_FRAMES, "break_within": bench_video.BREAK_WITHIN,
                       "break_iou": bench_video.BREAK_IOU, "edge": bench_video.EDGE,
                       "clips": [bench_video.clip_tracks(p, models, a.video_frames) for p in clips]}


def run(a: argparse.Namespace, command: str) -> dict:
    """Every measurement the arguments ask for, as the JSON the page is rendered from; command: what ran it."""
    t_start = time.perf_counter()
    variants = resolve(a.models, a.variants, Path(a.workdir), parse_overrides(a.file or []), a.rebuild)
    if not variants:
        raise SystemExit("error: no variants to measure")
    for v in variants:
        for n in v.notes:
            print(f"note: {v.key}: {n}", file=sys.stderr)
    result: dict = {"machine": machine(), "command": command,
                    "settings": {"quick": a.quick, "runs": a.runs, "warmup": a.warmup, "threads": a.threads,
                                 "cold_samples": a.cold, "cold_threads": 1, "latency_photo": LATENCY_PHOTO.name},
                    "models": {m: MODELS[m]["title"] for m in a.models}, "variants": {v.key: describe(v) for v in variants}}
    if a.cold:
        add_cold(result, variants, a.cold)
    add_latency(result, variants, a.threads, a.runs, a.warmup)
    print("agreement with FP32 ...", flush=True)
    for k, agr in measure_agreement(variants).items():
        result["variants"][k]["agreement_vs_fp32"] = agr
    skipped, accuracy_models = accuracy_skipped(a), [m for m in a.models if MODELS[m]["accuracy"]]
    if skipped:
        result["accuracy_skipped"] = skipped
        print(f"accuracy: skipped: {skipped}", flush=True)
    elif accuracy_models:
        add_accuracy(result, variants, accuracy_models, Path(a.eval_dir))
    add_video(result, a)
    changed = [k for k, v in zip(result["variants"], variants) if sha256_of(v.path) != result["variants"][k]["sha256"]]
    for k in changed:
        result["variants"][k]["notes"].append("the file changed during the run: its numbers mix two versions; rerun")
    result["changed_during_run"] = changed
    result["targets"] = targets(result)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    return result


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


# --- targets ------------------------------------------------------------------------------------------------


def targets(r: dict) -> list[dict]:
    """The project's goals, checked on this run's numbers (ratios are paired medians; 1 thread, batch 1)."""
    v, out = r["variants"], []

    def add(goal: str, measured: str, ok: bool | None):  # numpy's bool_ is no JSON boolean
        out.append({"target": goal, "measured": measured, "met": None if ok is None else bool(ok)})

    st = v.get(f"{SB}:int8-static")
    if st:
        add("Simple Baselines R50 static INT8 <= 36 MB", f"{st['size_mb']:.1f} MB", st["size_mb"] <= 36)
        lat1 = st.get("latency", {}).get("1", {})
        if "x_fp32" in lat1:
            add("... >= 3x faster than FP32 (1 thread)", f"x{lat1['x_fp32']:.2f}", lat1["x_fp32"] >= 3)
        if "x_int8_dynamic" in lat1:
            add("... >= 8x faster than dynamic INT8 (1 thread)", f"x{lat1['x_int8_dynamic']:.2f}",
                lat1["x_int8_dynamic"] >= 8)
    for c in r.get("video", {}).get("clips", []):
        add(f"Identities hold on {c['clip']}: id breaks in its first {c['frames']} frames", str(c["id_breaks"]),
            c["id_breaks"] == 0)
    for name in (m for m in MODELS if m != SB):
        st, fp = v.get(f"{name}:int8-static"), v.get(f"{name}:fp32")
        if not st or not fp:
            continue
        title = MODELS[name]["title"]
        for t, lat in st.get("latency", {}).items():
            if "x_fp32" in lat:
                add(f"{title} served INT8 faster than FP32 ({t} thread{'s' if t != '1' else ''})",
                    f"x{lat['x_fp32']:.2f}", lat["x_fp32"] > 1)
        if "accuracy" in st and "accuracy" in fp:
            for key, metric, label in (("crops/mpii", "pckh@0.5", "PCKh@0.5 crops"),
                                       ("whole/mpii", "pckh@0.5", "PCKh@0.5 whole"),
                                       ("crops/coco", "oks", "OKS crops"), ("whole/coco", "oks", "OKS whole")):
                a, b = fp["accuracy"].get(key, {}).get(metric), st["accuracy"].get(key, {}).get(metric)
                if a is not None and b is not None:
                    add(f"{title} served INT8 within 1 point of FP32: {label}", f"{b - a:+.2f}", b - a >= -1.0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--file", action="append", metavar="MODEL:VARIANT=PATH", help="measure this file for that "
                    "variant instead (repeatable), e.g. efficientpose:int8-static=out/models/efficientpose.int8.onnx")
    ap.add_argument("--quick", action="store_true", help="5 latency rounds, 1 cold sample: a smoke test")
    ap.add_argument("--runs", type=int, help="latency rounds (default 25, --quick 5)")
    ap.add_argument("--warmup", type=int, help="warm-up rounds (default 3, --quick 1)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cold", type=int, help="cold-start samples per variant (default 3, --quick 1; 0: none)")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--eval-dir", default=str(evaluate.EVAL))
    ap.add_argument("--no-video", action="store_true", help="leave out the video section")
    ap.add_argument("--video-frames", type=int, help="the first frames of each clip tracked (default 150, --quick 30)")
    ap.add_argument("--workdir", default=str(ROOT / "out" / "report"), help="where the dynamic INT8 variants go")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the dynamic (and Simple Baselines) variants")
    ap.add_argument("--md", help="Markdown output (default docs/report.md; --quick: out/report/quick.md)")
    ap.add_argument("--json", help="JSON output (default docs/report.json; --quick: out/report/quick.json)")
    a = ap.parse_args(argv)
    a.runs = a.runs or (5 if a.quick else 25)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    a.cold = a.cold if a.cold is not None else (1 if a.quick else 3)
    a.video_frames = a.video_frames or (30 if a.quick else 150)
    out_dir, stem = (ROOT / "out" / "report", "quick") if a.quick else (ROOT / "docs", "report")
    md, js = Path(a.md or out_dir / f"{stem}.md"), Path(a.json or out_dir / f"{stem}.json")
    result = run(a, provenance.command(__file__, argv))
    for p in (md, js):
        p.parent.mkdir(parents=True, exist_ok=True)
    js.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(render_report.render_file(js, md).read_text())  # from the JSON as written: what a rerender reads
    print(f"wrote {_display(md)} and {_display(js)} in {result['seconds']:.0f} s")
    if result["changed_during_run"]:
        print(f"error: changed during the run: {', '.join(result['changed_during_run'])}; rerun", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
