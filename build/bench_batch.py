"""Photos per second of the batch per-photo code at the batch function's memory sizes, from the folder CLI.

    python -m build.bench_batch [--photos 240] [--rounds 3] [--json out/bench/batch.json]

Lambda gives one vCPU per 1769 MB: the folder CLI (local/batch.py) is pinned with taskset to as many
cores of this machine and run, in rotating order, as

- 1769 MB, 1 vCPU: one worker, one onnxruntime thread;
- 3538 MB, 2 vCPU, as the batch function runs: one process, photos one after another, one session with
  two threads (handler/batch.py: threads from memory);
- 3538 MB, 2 vCPU, two worker processes with one thread each (what two 1769 MB functions would do).

The photos are the eval set's (../shared/eval/images, read in place) or, without it, tests/data, listed
again under other names (symlinks in a temporary folder) until there are --photos of them. Each run starts
fresh (no resume); its rate counts from the moment the first worker had loaded its models, as a warm
function's would. Next to it, the CPU time a photo takes (all threads of its worker): on a machine shared
with other work the wall-clock rate falls with the load, the CPU time much less, and 1000 / (CPU ms per
photo) is what one dedicated vCPU would do with one thread. Medians over --rounds. Reading from and writing
to S3 are not in it. Rerun it after the pipeline changes (a person detector costs more per photo).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# AWS list prices, us-east-1, x86, as of early 2025 (the public pricing pages of Lambda, Step Functions and
# S3 as last read; check them before relying on the figures). Free tiers are left out.
PRICES = {
    "lambda_gb_s": 0.0000166667, "lambda_request": 0.20 / 1e6,
    "sfn_transition": 0.025 / 1000,  # Standard; a Distributed Map pays one per child workflow it starts
    "express_request": 1.00 / 1e6, "express_gb_s": 0.00001667,  # Express children: 64 MB chunks
    "s3_put": 0.005 / 1000, "s3_get": 0.0004 / 1000, "s3_list": 0.005 / 1000,
}
EVAL_IMAGES = ROOT.parent / "shared" / "eval" / "images"
CONFIGS = (  # name, memory MB, cores, workers, threads
    ("1769 MB (1 vCPU): 1 worker x 1 thread", 1769, "0", 1, 1),
    ("3538 MB (2 vCPU): 1 worker x 2 threads", 3538, "0,1", 1, 2),
    ("3538 MB (2 vCPU): 2 workers x 1 thread", 3538, "0,1", 2, 1),
)


def photo_folder(count: int, into: Path) -> tuple[Path, str]:
    source = EVAL_IMAGES if EVAL_IMAGES.is_dir() else ROOT / "tests" / "data"
    photos = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for i in range(count):
        photo = photos[i % len(photos)]
        (into / f"{i:05d}-{photo.name}").symlink_to(photo.resolve())
    return into, f"{source} ({len(photos)} photos, listed to {count})"


def run(folder: Path, cores: str, workers: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = ["taskset", "-c", cores, sys.executable, "-m", "local.batch", str(folder), out,
                   "--workers", str(workers), "--threads", str(threads), "--json"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])


def plan(photos: int, rate: float, memory_mb: int, batch: int, concurrency: int, annotated: bool = False) -> dict:
    """Minutes and dollars of a run on AWS from the per-function rate (photos/s): compute only, no cold starts,
    no listing or gather time; Express children; one result object per photo (and a drawing when asked)."""
    batches = -(-photos // batch)
    seconds = photos / (rate * min(concurrency, batches))
    child_s = batch / rate
    costs = {
        "lambda": photos / rate * memory_mb / 1024 * PRICES["lambda_gb_s"] + (batches + 1) * PRICES["lambda_request"],
        "step_functions": (batches + 5) * PRICES["sfn_transition"]
        + batches * (PRICES["express_request"] + child_s * 64 / 1024 * PRICES["express_gb_s"]),
        "s3": photos * (PRICES["s3_get"] + PRICES["s3_put"] * (2 if annotated else 1))
        + batches * (PRICES["s3_put"] + PRICES["s3_get"]) + photos / 1000 * PRICES["s3_list"],
    }
    return {"minutes": seconds / 60, **costs, "total": sum(costs.values()),
            "standard_children_extra": batches * 2 * PRICES["sfn_transition"]}


def print_plan(rate: float, memory_mb: int = 1769, batch: int = 20) -> None:
    print(f"\nOn paper, at {rate:.1f} photos/s per {memory_mb} MB function, {batch} photos per batch "
          "(compute only; prices as of early 2025, us-east-1):")
    print(f"{'photos':>11} {'MaxConcurrency':>15} {'minutes':>8} {'Lambda $':>9} {'StepFn $':>9} {'S3 $':>8} {'total $':>8}")
    for photos in (100_000, 10_000_000):
        for concurrency in (100, 1000, 10_000):
            p = plan(photos, rate, memory_mb, batch, concurrency)
            print(f"{photos:>11,} {concurrency:>15,} {p['minutes']:>8.1f} {p['lambda']:>9.2f} "
                  f"{p['step_functions']:>9.2f} {p['s3']:>8.2f} {p['total']:>8.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "batch.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, described = photo_folder(args.photos, Path(tmp))
        print(f"photos: {described}")
        rates: dict[str, list[float]] = {name: [] for name, *_ in CONFIGS}
        cpu: dict[str, list[float]] = {name: [] for name, *_ in CONFIGS}
        for r in range(args.rounds):
            for name, _, cores, workers, threads in CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]:
                summary = run(folder, cores, workers, threads)
                assert summary["photos"] == args.photos and summary["errors"] == 0, summary
                rates[name].append(summary["photos_per_s"])
                cpu[name].append(summary["cpu_ms_per_photo"])
                print(f"  round {r + 1}: {name}: {summary['photos_per_s']} photos/s, "
                      f"{summary['cpu_ms_per_photo']} CPU ms/photo", flush=True)
    rows = []
    base = statistics.median(rates[CONFIGS[0][0]])
    print(f"\n{'configuration':<44} {'photos/s':>9} {'vs 1 vCPU':>10} {'CPU ms/photo':>13}")
    for name, memory, cores, workers, threads in CONFIGS:
        rate, cpu_ms = statistics.median(rates[name]), statistics.median(cpu[name])
        rows.append({"config": name, "memory_mb": memory, "vcpus": len(cores.split(",")), "workers": workers,
                     "threads": threads, "photos_per_s": rate, "cpu_ms_per_photo": cpu_ms, "runs": rates[name],
                     "cpu_runs": cpu[name]})
        print(f"{name:<44} {rate:>9.2f} {rate / base:>9.2f}x {cpu_ms:>13.1f}")
    one_thread = statistics.median(cpu[CONFIGS[0][0]])
    print(f"one dedicated vCPU, one thread: {1000 / one_thread:.1f} photos/s (1000 / CPU ms per photo)")
    print_plan(1000 / one_thread)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"photos": described, "rows": rows, "load_average": os.getloadavg()}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
