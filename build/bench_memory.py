"""The pose sessions' memory settings side by side: resident memory after a crowd, peaks, and speed.

    python -m build.bench_memory [--rounds 3] [--json out/bench/memory.json]

Each variant runs in a fresh process at one inference thread (what the 2048 MB function has), with the
served pose model and the bundled detector, on photos made from the committed ones (build/limits.py):
a crowd of over 20 people asked with max_people 20, three times; tests/data/pose.jpg (one person), three
times; then a 40 MP photo of one person. It reports the resident memory after the cold start and after
the crowd, the peak during the crowd and during the 40 MP photo that follows it (what a warm instance
needs), and the median times. Variants run in turn, `--rounds` times each; the machine may be shared:
read the ratios of the times, and the memory, which hardly varies.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (onnxruntime CPU arena of the pose model's session, of the detector's, crops per session.run,
#          memory.release() after each photo)
VARIANTS = {
    "arenas, all crops in one run (before)": (True, True, 1000, False),
    "no arenas, all crops in one run": (False, False, 1000, False),
    "no arenas, runs of 8 crops": (False, False, 8, False),
    "no arenas, runs of 8 crops, heap trimmed": (False, False, 8, True),
    "detector's arena only, runs of 8 crops, heap trimmed": (False, True, 8, True),
}


def resident_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    status = Path("/proc/self/status").read_text()
    return tuple(int(status.split(f"{k}:")[1].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def child(name: str) -> dict:
    from PIL import Image

    from build import limits
    from local import function
    from pose import image, memory
    from pose.detect import open_detector
    from pose.model import PoseModel
    from pose.pipeline import estimate_people

    pose_arena, detector_arena, max_batch, trim = VARIANTS[name]
    pose = PoseModel(function.model_path(), threads=1, arena=pose_arena, max_batch=max_batch)
    detector = open_detector(function.detector_path(), threads=1, arena=detector_arena)

    def answer(data: bytes, max_people: int) -> tuple[int, float]:
        started = time.perf_counter()
        found = estimate_people(image.read_photo(data, max_pixels=64_000_000), pose, detector, max_people)
        if trim:
            memory.release()
        return len(found.people), time.perf_counter() - started

    def jpeg(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        return buf.getvalue()

    crowd, one, large = jpeg(limits.crowd()), (ROOT / "tests" / "data" / "pose.jpg").read_bytes(), \
        jpeg(limits.person_filling(10000, 4000))
    cold, _ = resident_mb()
    reset_peak()
    crowd_runs = [answer(crowd, 20) for _ in range(3)]
    after, crowd_peak = resident_mb()
    one_s = statistics.median(answer(one, 10)[1] for _ in range(3))
    reset_peak()
    answer(large, 10)
    return {"variant": name, "people_in_crowd": crowd_runs[0][0], "cold_mb": cold, "crowd_peak_mb": crowd_peak,
            "after_crowd_mb": after, "large_peak_mb": resident_mb()[1],
            "crowd_s": statistics.median(s for _, s in crowd_runs), "one_person_s": one_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "memory.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child)))
        return 0
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    env = {"MODEL_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    for _ in range(a.rounds):
        for name in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                                 cwd=ROOT, env=env, timeout=900)
            if out.returncode:
                raise RuntimeError(f"{name}: {out.stderr[-2000:]}")
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = statistics.median(r["crowd_s"] for r in runs[next(iter(VARIANTS))])
    print("| variant | cold start MB | crowd peak MB | after the crowd MB | 40 MP peak after it MB | crowd s | "
          "crowd time ratio | one person s |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    summary = []
    for name, results in runs.items():
        row = {k: statistics.median(r[k] for r in results) for k in results[0] if isinstance(results[0][k], float)}
        row["variant"], row["people_in_crowd"] = name, results[0]["people_in_crowd"]
        summary.append(row)
        print(f"| {name} | {row['cold_mb']:.0f} | {row['crowd_peak_mb']:.0f} | {row['after_crowd_mb']:.0f} | "
              f"{row['large_peak_mb']:.0f} | {row['crowd_s']:.2f} | {row['crowd_s'] / base:.2f} | "
              f"{row['one_person_s']:.3f} |")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"rounds": a.rounds, "variants": summary}, indent=1) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
