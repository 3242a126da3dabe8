"""Photos per second of the batch per-photo code at the batch function's memory sizes, from the folder CLI.

    python build/bench_batch.py [--photos 240] [--rounds 3] [--json out/bench/batch.json]

Lambda gives one vCPU per 1769 MB: the folder CLI (local/batch.py) is pinned with taskset to as many
cores of this machine and run, in rotating order, as

- 1769 MB, 1 vCPU: one worker, one onnxruntime thread;
- 3538 MB, 2 vCPU, as the batch function runs: one process, photos one after another, one session with
  two threads (handler/batch.py: threads from memory);
- 3538 MB, 2 vCPU, two worker processes with one thread each (what two 1769 MB functions would do).

The photos are the eval set's (../shared/eval/images, read in place) or, without it, tests/data, listed
again under other names (symlinks in a temporary folder) until there are --photos of them. Each run starts
fresh (no resume); its rate counts from the moment the first worker had loaded its models, as a warm
function's would. Medians over --rounds. Reading from and writing to S3 are not in it. The machine may be
shared: compare the rows of one run, and rerun after the pipeline changes (a detector costs more per photo).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
        for r in range(args.rounds):
            for name, _, cores, workers, threads in CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]:
                summary = run(folder, cores, workers, threads)
                assert summary["photos"] == args.photos and summary["errors"] == 0, summary
                rates[name].append(summary["photos_per_s"])
                print(f"  round {r + 1}: {name}: {summary['photos_per_s']} photos/s", flush=True)
    rows = []
    base = statistics.median(rates[CONFIGS[0][0]])
    print(f"\n{'configuration':<44} {'photos/s':>9} {'vs 1 vCPU':>10} {'ms/photo/vCPU':>14}")
    for name, memory, cores, workers, threads in CONFIGS:
        rate = statistics.median(rates[name])
        vcpus = len(cores.split(","))
        rows.append({"config": name, "memory_mb": memory, "vcpus": vcpus, "workers": workers, "threads": threads,
                     "photos_per_s": rate, "runs": rates[name]})
        print(f"{name:<44} {rate:>9.2f} {rate / base:>9.2f}x {1000 * vcpus / rate:>14.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"photos": described, "rows": rows}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
