"""What the dynamic batch costs and buys: the served models at batch 1 before and after build/batch_dim.py, and a
batch of P person crops in one run against P runs of one crop.

    python -m build.bench_batch_dim --json out/bench/batch-dim.json   # the served pose models, as `make bench` runs it
    python -m build.bench_batch_dim --models models/int8/movenet-thunder.int8.onnx --runs 30 --sizes 2 4 8
    python -m build.bench_batch_dim --old movenet-thunder=/tmp/movenet-thunder.fixed.onnx

Sessions are the service's own (``pose.model.PoseModel(path, threads)``: graph optimisation ALL, one intra-op
thread by default, no spinning), each case one ``session.run`` call per run. Inputs are real crops of the photos in tests/data prepared by the service's
code (``pose.image.prepare`` through build/photos.py), all different. Each round runs every case once, in an
order that rotates from round to round, so the machine's drift hits all cases alike:

- ``fixed, P=1`` and ``dynamic, P=1``: the same crop through the file as it was with a batch fixed at 1 and
  through the served file; the old file is the newest version in git history whose input batch is a fixed 1
  (``git show``), or ``--old name=path``;
- ``batch, P=n``: n crops in one ``session.run``; ``loop, P=n``: the same n crops, one run each.

Reported: medians over the rounds in ms, and the median of the per-round ratios (paired: fixed / dynamic, loop
/ batch), so a ratio above 1 means the served file, or the batch, is faster. The machine may be shared: read
the ratios, not the absolute times. The script also checks that the batch gives each crop its own result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from build import photos
from pose.model import PoseModel

BUILD = Path(__file__).resolve().parent
ROOT = BUILD.parent

DATA = ROOT / "tests" / "data"
# crops as fractions (x0, y0, x1, y1) of each photo in tests/data: whole photos and parts, as person boxes give
BOXES = [(0, 0, 1, 1), (0.2, 0.3, 0.8, 1.0), (0.0, 0.0, 0.55, 1.0), (0.4, 0.0, 1.0, 0.7)]


def crops(card: dict, n: int) -> list[np.ndarray]:
    """n different batch-1 input tensors: crops of the committed photos, prepared as the service does."""
    spec = photos.input_spec(card)
    out = []
    for box in BOXES:
        for path in sorted(DATA.glob("*.jpg")) + sorted(DATA.glob("*.png")):
            rgb = photos.load_rgb(path)
            h, w = rgb.shape[:2]
            part = rgb[round(box[1] * h):round(box[3] * h), round(box[0] * w):round(box[2] * w)]
            out.append(photos.pose_image.prepare(part, spec)[0])
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} crops from {DATA}; {n} needed")


def fixed_batch(model: onnx.ModelProto) -> bool:
    d = model.graph.input[0].type.tensor_type.shape.dim[0]
    return d.HasField("dim_value") and d.dim_value == 1


def old_from_git(path: Path, workdir: Path) -> tuple[Path, str] | None:
    """The newest committed version of path whose input batch is a fixed 1, written to workdir; None if none."""
    rel = path.resolve().relative_to(ROOT)
    try:
        commits = subprocess.run(["git", "log", "--format=%H", "--", str(rel)], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.split()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    for commit in commits:
        blob = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=ROOT, capture_output=True).stdout
        if blob and fixed_batch(onnx.load_from_string(blob)):
            out = workdir / f"{path.stem}.{commit[:10]}.onnx"
            out.write_bytes(blob)
            return out, commit
    return None


def one_run(model: PoseModel):
    """The model's session.run on a whole batch (PoseModel.run would split a batch for a fixed-batch graph)."""
    outputs, name = [model.card.output.name], model.card.input.name
    return lambda tensor: model.session.run(outputs, {name: tensor})[0]


def measure(path: Path, old: Path | None, sizes: list[int], runs: int, warmup: int, threads: int) -> dict:
    new = PoseModel(path, threads=threads)
    card = json.loads(new.card.to_json())
    tensors = crops(card, max(sizes + [1]))
    run = one_run(new)
    cases = {}
    if old is not None:
        old_run = one_run(PoseModel(old, threads=threads))
        cases["fixed, P=1"] = lambda: old_run(tensors[0])
        cases["dynamic, P=1"] = lambda: run(tensors[0])
    batches = {p: np.concatenate(tensors[:p]) for p in sizes}
    for p in sizes:
        cases[f"batch, P={p}"] = lambda p=p: run(batches[p])
        cases[f"loop, P={p}"] = lambda p=p: [run(t) for t in tensors[:p]]
    # the batch gives each crop its own result (else the timing compares different work)
    check = {}
    for p in sizes:
        together = run(batches[p])
        alone = np.concatenate([run(t) for t in tensors[:p]])
        check[p] = float(np.abs(together.astype(np.float64) - alone.astype(np.float64)).max())
    names = list(cases)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(warmup + runs):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            cases[k]()
            if r >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(num: str, den: str) -> float:
        return statistics.median(a / b for a, b in zip(times[num], times[den]))

    result = {"model": str(path.relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path),
              "quantization": card["quantization"], "threads": threads, "runs": runs, "median_ms": med,
              "batch_vs_runs_max_abs_diff": check, "sizes": {}}
    if old is not None:
        result["batch1_fixed_over_dynamic"] = paired("fixed, P=1", "dynamic, P=1")
    for p in sizes:
        result["sizes"][p] = {"batch_ms": med[f"batch, P={p}"], "loop_ms": med[f"loop, P={p}"],
                              "loop_over_batch": paired(f"loop, P={p}", f"batch, P={p}"),
                              "batch_ms_per_crop": med[f"batch, P={p}"] / p}
    return result


def print_result(r: dict) -> None:
    print(f"{r['model']} ({r['quantization']}), {r['threads']} thread(s), medians of {r['runs']} rounds")
    if "batch1_fixed_over_dynamic" in r:
        m = r["median_ms"]
        print(f"  P=1: fixed-batch file {m['fixed, P=1']:.1f} ms, dynamic-batch file {m['dynamic, P=1']:.1f} ms, "
              f"fixed/dynamic x{r['batch1_fixed_over_dynamic']:.3f} (paired median; >1: the new file is faster)")
    for p, s in r["sizes"].items():
        print(f"  P={p}: one batched run {s['batch_ms']:.1f} ms ({s['batch_ms_per_crop']:.1f} ms/crop), "
              f"{p} runs {s['loop_ms']:.1f} ms, runs/batch x{s['loop_over_batch']:.3f}; "
              f"max abs diff batch vs runs {r['batch_vs_runs_max_abs_diff'][p]:.2g}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", type=Path, help="default: the pose models in models/int8 (not the detector)")
    ap.add_argument("--old", action="append", default=[], help="name=path of a fixed-batch file to compare at P=1 "
                    "(name: the file name without .int8.onnx); default: from git history")
    ap.add_argument("--sizes", nargs="*", type=int, default=[2, 4, 8])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the results here too (e.g. out/bench/batch.json)")
    a = ap.parse_args(argv)
    given = dict(item.split("=", 1) for item in a.old)
    if a.models is None:
        from build import batch_dim
        from build import cards

        a.models = [p for p in sorted((ROOT / "models" / "int8").glob("*.int8.onnx"))
                    if batch_dim.is_pose_model(cards.get_card(onnx.load(str(p), load_external_data=False)))]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_batch.") as tmp:
        for path in a.models:
            name = path.name.removesuffix(".onnx").removesuffix(".int8")
            old, source = (Path(given[name]), given[name]) if name in given else (old_from_git(path, Path(tmp)) or (None, None))
            if old is None:
                print(f"{path.name}: no fixed-batch version in git history (and no --old): P=1 comparison skipped")
            r = measure(path, old, a.sizes, a.runs, a.warmup, a.threads)
            r["fixed_batch_file"] = source if isinstance(source, str) else None
            print_result(r)
            results.append(r)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"cpu": _cpu(), "results": results}, indent=1))
        print(f"wrote {a.json}")
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
