"""The measured report of every model x variant, side by side in one run: docs/report.md and docs/report.json.

    python build/report.py                      # everything (~10-15 min on 2 cores)
    python build/report.py --quick              # fewer runs: a smoke test (writes out/report/quick.*)
    python build/report.py --models efficientpose --variants fp32 int8-static --no-cold
    python build/report.py --file efficientpose:int8-static=out/models/efficientpose.int8.onnx

Models and variants:

- MoveNet Thunder and EfficientPose II Lite: ``fp32`` (models/<name>.onnx), ``int8-dynamic`` (the seed's recipe,
  ``quantize.py --mode dynamic``, built into out/report/), ``int8-static`` (the served file,
  models/int8/<name>.int8.onnx);
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
- agreement of the raw outputs with FP32 on 8 photos (build/bench_models.py's ``agreement``).
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
from build import bench_models  # noqa: E402
from build import evaluate  # noqa: E402
from build import photos  # noqa: E402
from pose.model import sha256_of  # noqa: E402
from pose import card as card_schema  # noqa: E402
from pose import image as pose_image  # noqa: E402
from pose.model import PoseModel  # noqa: E402

LATENCY_PHOTO = ROOT / "tests" / "data" / "pose.jpg"
VARIANTS = ("fp32", "int8-dynamic", "int8-static")
SB = "simple-baselines-r50-mpii"
MODELS = {  # name -> title, FP32 source, served INT8 (None: built by bench_models), accuracy measurable
    "movenet-thunder": {"title": "MoveNet Thunder", "accuracy": True},
    "efficientpose": {"title": "EfficientPose II Lite", "accuracy": True},
    SB: {"title": "Simple Baselines R50 MPII (random-init)", "accuracy": False},
}
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
    """models/<name>.onnx through the seed's recipe into workdir, rebuilt when its FP32 source changed."""
    from build import quantize

    src, dst = ROOT / "models" / f"{name}.onnx", workdir / f"{name}.int8-dynamic.onnx"
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
                path = {"fp32": ROOT / "models" / f"{name}.onnx",
                        "int8-static": ROOT / "models" / "int8" / f"{name}.int8.onnx"}.get(v)
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
    rgb = pose_image.decode(LATENCY_PHOTO.read_bytes())
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
from pose.image import decode
from pose.model import PoseModel
t1 = time.perf_counter()
out = {"import_ms": (t1 - t0) * 1e3}
if sys.argv[1]:
    m = PoseModel(sys.argv[1], threads=int(sys.argv[2]))
    t2 = time.perf_counter()
    rgb = decode(open(sys.argv[3], "rb").read())
    t3 = time.perf_counter()
    est = m.estimate(rgb)
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
        est = self.model.estimate(rgb)
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
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "", False
    return {"cpu": cpu, "arch": platform.machine(), "vnni": vnni, "cores": os.cpu_count(),
            "onnxruntime": ort.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "git": commit + ("-dirty" if dirty else "")}


# --- the run ------------------------------------------------------------------------------------------------


def run(a: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    overrides = {}
    for item in a.file or []:
        key, _, path = item.partition("=")
        if ":" not in key or not path:
            raise SystemExit(f"error: --file wants MODEL:VARIANT=PATH, got {item!r}")
        overrides[key] = Path(path)
    variants = resolve(a.models, a.variants, Path(a.workdir), overrides, a.rebuild)
    if not variants:
        raise SystemExit("error: no variants to measure")
    for v in variants:
        for n in v.notes:
            print(f"note: {v.key}: {n}", file=sys.stderr)
    result: dict = {"machine": machine(),
                    "settings": {"quick": a.quick, "runs": a.runs, "warmup": a.warmup, "threads": a.threads,
                                 "cold_samples": a.cold, "cold_threads": 1, "latency_photo": LATENCY_PHOTO.name},
                    "models": {m: MODELS[m]["title"] for m in a.models}, "variants": {}}
    for v in variants:
        card = read_card(v.path)
        result["variants"][v.key] = {
            "model": v.model, "variant": v.variant, "file": _display(v.path), "size_mb": v.path.stat().st_size / 1e6,
            "sha256": sha256_of(v.path), "card_name": card.get("name"), "quantization": card.get("quantization"),
            "from_sha256": (card.get("calibration") or {}).get("from_sha256"), "notes": list(v.notes)}

    if a.cold:
        print(f"cold start: {a.cold} fresh process(es) per variant ...", flush=True)
        cold = measure_cold(variants, a.cold)
        result["cold_runtime_only"] = cold.pop("runtime-only")
        for k, c in cold.items():
            result["variants"][k]["cold"] = c

    print(f"latency: {a.warmup} + {a.runs} interleaved rounds, threads {a.threads} ...", flush=True)
    lat = measure_latency(variants, a.threads, a.runs, a.warmup)
    fp32_of = {v.model: v.key for v in variants if v.variant == "fp32"}
    dyn_of = {v.model: v.key for v in variants if v.variant == "int8-dynamic"}
    for v in variants:
        row = result["variants"][v.key]
        row["latency"] = {}
        for t in a.threads:
            m = lat[(v.key, t)]
            entry = {k: m[k] for k in ("median_ms", "p10_ms", "p90_ms", "runs")}
            if v.model in fp32_of:
                entry["x_fp32"] = paired_ratio(lat[(fp32_of[v.model], t)]["times_ms"], m["times_ms"])
            if v.model in dyn_of:
                entry["x_int8_dynamic"] = paired_ratio(lat[(dyn_of[v.model], t)]["times_ms"], m["times_ms"])
            row["latency"][str(t)] = entry

    print("agreement with FP32 ...", flush=True)
    for k, agr in measure_agreement(variants).items():
        result["variants"][k]["agreement_vs_fp32"] = agr

    eval_dir = Path(a.eval_dir)
    accuracy_models = [m for m in a.models if MODELS[m]["accuracy"]]
    if a.no_accuracy:
        result["accuracy_skipped"] = "--no-accuracy"
    elif not (eval_dir / "mpii.json").is_file():
        result["accuracy_skipped"] = f"the eval set is absent ({eval_dir})"
        print(f"accuracy: skipped: {result['accuracy_skipped']}", flush=True)
    elif accuracy_models:
        labels = evaluate.load_labels(eval_dir)
        keys = {img: _rgb_key(evaluate.read_rgb(eval_dir, img))
                for _, insts in labels.values() for img in {i["image"] for i in insts}}
        for name in accuracy_models:
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

    def add(goal: str, measured: str, ok: bool | None):
        out.append({"target": goal, "measured": measured, "met": ok})

    st = v.get(f"{SB}:int8-static")
    if st:
        add("Simple Baselines R50 static INT8 <= 36 MB", f"{st['size_mb']:.1f} MB", st["size_mb"] <= 36)
        lat1 = st.get("latency", {}).get("1", {})
        if "x_fp32" in lat1:
            add("... >= 3x faster than FP32 (1 thread)", f"x{lat1['x_fp32']:.2f}", lat1["x_fp32"] >= 3)
        if "x_int8_dynamic" in lat1:
            add("... >= 8x faster than dynamic INT8 (1 thread)", f"x{lat1['x_int8_dynamic']:.2f}",
                lat1["x_int8_dynamic"] >= 8)
    for name in ("movenet-thunder", "efficientpose"):
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


# --- Markdown -----------------------------------------------------------------------------------------------


def _f(x, fmt=".1f", dash="-"):
    return dash if x is None else format(x, fmt)


def markdown(r: dict) -> str:
    m, s, vs = r["machine"], r["settings"], r["variants"]
    lines = [
        "# Measured report: every model x variant",
        "",
        f"- Machine: {m['cpu']} ({m['arch']}, VNNI {'yes' if m['vnni'] else 'no' if m['vnni'] is False else '?'}), "
        f"{m['cores']} cores shared with other work; onnxruntime {m['onnxruntime']}, Python {m['python']}, "
        f"numpy {m['numpy']}.",
        f"- Date: {m['date']}; code {m['git'] or '?'}; the run took {r['seconds']:.0f} s"
        + (" (**--quick**: a smoke test, not a measurement)" if s["quick"] else "") + ".",
        "- Rerun: `make report` (= `.venv/bin/python build/report.py`; `--quick` for a smoke test, `--help` for "
        "filters). Generated by build/report.py: do not edit by hand.",
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
    notes = [f"{k}: {n}" for k, v in vs.items() for n in v["notes"]]
    if notes:
        lines += ["", "**Warning:** " + "; ".join(notes) + "."]
    # size and speed
    lines += ["", "## Size and speed", ""]
    threads = [str(t) for t in s["threads"]]
    head = "| model | variant | quantization | size MB |"
    sep = "|---|---|---|---:|"
    for t in threads:
        head += f" {t} thr median ms (p10-p90) | x FP32 |"
        sep += "---:|---:|"
    head += " cold start ms | peak RSS MB |"
    sep += "---:|---:|"
    lines += [head, sep]
    for k, v in vs.items():
        row = f"| {r['models'][v['model']]} | {v['variant']} | {v['quantization']} | {v['size_mb']:.1f} |"
        for t in threads:
            lat = v.get("latency", {}).get(t)
            row += (f" {lat['median_ms']:.1f} ({lat['p10_ms']:.0f}-{lat['p90_ms']:.0f}) | {_f(lat.get('x_fp32'), '.2f')} |"
                    if lat else " - | - |")
        c = v.get("cold", {})
        row += f" {_f(c.get('cold_ms'), '.0f')} | {_f(c.get('peak_rss_mb'), '.0f')} |"
        lines.append(row)
    dyn_rows = [(k, v) for k, v in vs.items() if v["variant"] == "int8-static"
                and v.get("latency", {}).get(threads[0], {}).get("x_int8_dynamic")]
    if dyn_rows:
        parts = []
        for k, v in dyn_rows:
            ratios = ", ".join(f"x{v['latency'][t]['x_int8_dynamic']:.2f} ({t} thr)" for t in threads
                               if v["latency"].get(t, {}).get("x_int8_dynamic"))
            parts.append(f"{r['models'][v['model']]} {ratios}")
        lines += ["", "Static INT8 against dynamic INT8 (the seed's recipe), paired medians: " + "; ".join(parts) + "."]
    if any("cold" in v for v in vs.values()):
        lines += ["", "### Cold start (medians, ms)", "",
                  "| model | variant | process wall | import | PoseModel (sha256 + session + warm-up) | first estimate "
                  "(of which inference) | import + PoseModel + first estimate | peak RSS MB |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for k, v in vs.items():
            c = v.get("cold")
            if c:
                lines.append(f"| {r['models'][v['model']]} | {v['variant']} | {c['process_wall_ms']:.0f} | "
                             f"{c['import_ms']:.0f} | {c['session_ms']:.0f} | {c['first_estimate_ms']:.0f} "
                             f"({c['first_inference_ms']:.0f}) | {c['cold_ms']:.0f} | {c['peak_rss_mb']:.0f} |")
    # agreement
    agr = [(k, v) for k, v in vs.items() if v.get("agreement_vs_fp32")]
    if agr:
        lines += ["", "## Output agreement with FP32", "",
                  f"On {len(agr[0][1]['agreement_vs_fp32']['photos'])} photos (../shared/images, then the eval set; "
                  "they are also calibration photos): the largest absolute output difference, and the share of "
                  "joints whose location (heatmap argmax, or keypoint) is identical / within 2% of the side, "
                  "over all joints and over the joints FP32 is confident about. For Simple Baselines (random "
                  "weights) this is the only quality signal: it says how much a random deep network amplifies INT8 "
                  "rounding, not how accurate a trained model stays; **accuracy needs the real checkpoint** "
                  "(`make export SB_CKPT=...`).", "",
                  "| model | variant | max abs diff | joints identical | within 2% | confident joints within 2% |",
                  "|---|---|---:|---:|---:|---:|"]
        for k, v in agr:
            a = v["agreement_vs_fp32"]
            conf = a["confident_within_2pct"]
            lines.append(f"| {r['models'][v['model']]} | {v['variant']} | {a['max_abs_diff']:.3g} | "
                         f"{a['joints_identical']:.0%} | {a['joints_within_2pct']:.0%} | "
                         f"{'-' if conf is None else f'{conf:.0%}'} of {a['confident_joints']} |")
    # accuracy
    lines += ["", "## Accuracy on ../shared/eval", ""]
    if r.get("accuracy_skipped"):
        lines.append(f"Skipped: {r['accuracy_skipped']}.")
    else:
        lines += ["Through the service's code (build/evaluate.py). MPII: PCKh on the MPII-labelled instances; COCO: "
                  "OKS and PCK@0.2 on the COCO-labelled instances, over the joints model and labels share by name. "
                  "**no train** leaves out the 50 coco_train2017_TRAIN instances (MoveNet was trained on them): "
                  "compare models on those columns; **all** is MoveNet's own number. INT8 rows show "
                  "(INT8 - FP32) in points. Calibration used these photos too. The set is small (confidence "
                  "intervals of 8-20 points on a mean): read the joint-by-joint table below, not only the means.",
                  ""]
        cols = (("mpii", "pckh@0.5", "MPII PCKh@0.5"), ("mpii", "pckh@0.1", "MPII PCKh@0.1"),
                ("coco/no-train", "oks", "COCO OKS no train"), ("coco/no-train", "pck@0.2", "COCO PCK@0.2 no train"),
                ("coco", "oks", "COCO OKS all"), ("coco", "pck@0.2", "COCO PCK@0.2 all"))
        for protocol, title in (("crops", "On each instance's crop"), ("whole", "On the whole photo "
                                                                                 "(scored against the best-matching person)")):
            lines += [f"### {title}", "", "| model | variant | " + " | ".join(c[2] for c in cols) + " |",
                      "|---|---|" + "---:|" * len(cols)]
            for k, v in vs.items():
                acc = v.get("accuracy")
                if not acc:
                    continue
                ref = vs.get(f"{v['model']}:fp32", {}).get("accuracy") if v["variant"] != "fp32" else None
                cells = []
                for set_key, metric, _ in cols:
                    x = acc.get(f"{protocol}/{set_key}", {}).get(metric)
                    y = (ref or {}).get(f"{protocol}/{set_key}", {}).get(metric)
                    cells.append("-" if x is None else f"{x:.1f}" + (f" ({x - y:+.1f})" if y is not None else ""))
                lines.append(f"| {r['models'][v['model']]} | {v['variant']} | " + " | ".join(cells) + " |")
            n = next((v["accuracy"] for v in vs.values() if v.get("accuracy")), {})
            counts = ", ".join(f"{key}: {n[key]['instances']}" for key in n if key.startswith(protocol))
            lines += ["", f"Instances ({'one per photo' if protocol == 'whole' else 'crops'}): {counts}.", ""]
        lines += ["### The closer look: one pass -> the service's", "",
                  "The service looks again at a person who is small in the photo (handler/pose/region.py); the "
                  "tables above are with it. Here the same models with one pass only -> with the closer look.", "",
                  "| model | variant | " + " | ".join(f"{p} {c[2]}" for p in ("crops", "whole") for c in cols
                                                      if c[1] in ("pckh@0.5", "oks")) + " |",
                  "|---|---|" + "---:|" * 6]
        for k, v in vs.items():
            one, two = v.get("accuracy_one_pass"), v.get("accuracy")
            if not (one and two):
                continue
            cells = []
            for protocol in ("crops", "whole"):
                for set_key, metric, _ in cols:
                    if metric in ("pckh@0.5", "oks"):
                        a, b = (x.get(f"{protocol}/{set_key}", {}).get(metric) for x in (one, two))
                        cells.append("-" if a is None or b is None else f"{a:.1f} -> {b:.1f}")
            lines.append(f"| {r['models'][v['model']]} | {v['variant']} | " + " | ".join(cells) + " |")
        lines += ["", "### Joint by joint: each INT8 variant against its FP32", "",
                  "Joints FP32 placed right and INT8 not (lost), and the reverse (gained), at PCKh@0.5 (MPII labels) "
                  "and PCK@0.2 (COCO labels, all instances), on the same inputs; on the whole photo both predictions "
                  "are scored against the person FP32's prediction matches best. "
                  "The whole-photo means above score each variant against its own best-matching person; where "
                  "INT8's best match is another person than FP32's (counted below), the means can move the other "
                  "way than these paired counts: trust the paired counts.", "",
                  "| model | variant | protocol | MPII PCKh@0.5: lost / gained (FP32 right, of labelled) | "
                  "COCO PCK@0.2: lost / gained (FP32 right, of labelled) | most lost, net (all joints: report.json) |",
                  "|---|---|---|---:|---:|---|"]
        for k, v in vs.items():
            jv = v.get("joints_vs_fp32")
            if not jv:
                continue
            for protocol in ("crops", "whole"):
                cells, names = [], []
                for set_name in ("mpii", "coco"):
                    c = jv.get(f"{protocol}/{set_name}")
                    if not c:
                        cells.append("-")
                        continue
                    switched, rest = len(c.get("best_match_switched", [])), c.get("without_switched")
                    cells.append(f"{c['lost']} / {c['gained']} ({c['fp32_correct']} of {c['labelled']})"
                                 + (f"; on {switched} photo{'s' if switched > 1 else ''} INT8 matches another person"
                                    if switched else "")
                                 + (f", without {'them' if switched > 1 else 'it'}: {rest['lost']} / {rest['gained']}"
                                    if rest else ""))
                    names += [(lg[0] - lg[1], f"{set_name} {j} -{lg[0]}/+{lg[1]}")
                              for j, lg in c["lost_gained_by_joint"].items() if lg[0] > lg[1]]
                worst = [n for _, n in sorted(names, key=lambda x: -x[0])[:5]]
                lines.append(f"| {r['models'][v['model']]} | {v['variant']} | {protocol} | {cells[0]} | {cells[1]} | "
                             f"{', '.join(worst) or 'none'} |")
    # targets
    if r.get("targets"):
        lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|---|"]
        for t in r["targets"]:
            lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    lines += ["", "## Files", "", "| model | variant | file | sha256 | built from FP32 sha256 |", "|---|---|---|---|---|"]
    for k, v in vs.items():
        lines.append(f"| {r['models'][v['model']]} | {v['variant']} | `{v['file']}` | `{v['sha256'][:16]}` | "
                     f"{'`' + v['from_sha256'][:16] + '`' if v.get('from_sha256') else '-'} |")
    return "\n".join(lines) + "\n"


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
    ap.add_argument("--workdir", default=str(ROOT / "out" / "report"), help="where the dynamic INT8 variants go")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the dynamic (and Simple Baselines) variants")
    ap.add_argument("--md", help="Markdown output (default docs/report.md; --quick: out/report/quick.md)")
    ap.add_argument("--json", help="JSON output (default docs/report.json; --quick: out/report/quick.json)")
    a = ap.parse_args(argv)
    a.runs = a.runs or (5 if a.quick else 25)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    a.cold = a.cold if a.cold is not None else (1 if a.quick else 3)
    out_dir, stem = (ROOT / "out" / "report", "quick") if a.quick else (ROOT / "docs", "report")
    md, js = Path(a.md or out_dir / f"{stem}.md"), Path(a.json or out_dir / f"{stem}.json")
    result = run(a)
    text = markdown(result)
    for p in (md, js):
        p.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    js.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(text)
    print(f"wrote {_display(md)} and {_display(js)} in {result['seconds']:.0f} s")
    if result["changed_during_run"]:
        print(f"error: changed during the run: {', '.join(result['changed_during_run'])}; rerun", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
