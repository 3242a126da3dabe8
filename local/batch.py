"""Every photo in a folder tree, through the batch function's per-photo code, on all cores.

    python -m local.batch IN OUT [--workers N] [--threads T] [--images] [--threshold X] [--max-people N]

Writes OUT/results.jsonl, one line per photo (pose/records.py: what POST /pose answers for it, with
`file` and `error`), appended and flushed as each photo completes: run it again with the same OUT and
the photos already there are skipped (resume after Ctrl-C). A file that is not a usable photo is an
error line. Then OUT/images.json (a COCO dataset file without annotations: image ids are the line
numbers of results.jsonl) and OUT/coco_results.json (COCO keypoint results), and a summary. With
--images, the annotated photos in OUT/annotated/. Each worker process loads the models once, with
--threads onnxruntime threads (default 1); --workers defaults to the cores this process may use.
The models are those of a local run (local/function.py; MODEL_PATH, MODEL, DETECTOR_PATH).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from tqdm import tqdm

from local import function

sys.path.insert(0, str(function.ROOT / "handler"))
from gather import Gathered, items_text  # noqa: E402
from pose import records  # noqa: E402
from pose.errors import BadParameter  # noqa: E402

RESULTS, COCO, IMAGES = "results.jsonl", "coco_results.json", "images.json"
_worker: dict = {}


def photos_in(folder: Path, skip: Path | None = None) -> list[str]:
    """Paths (relative, with /) of the photos under folder, by suffix, sorted; nothing under `skip`."""
    found = []
    for root, dirs, files in os.walk(folder):
        if skip is not None and Path(root).resolve() == skip.resolve():
            dirs[:] = []
            continue
        dirs.sort()
        found += [(Path(root) / f).relative_to(folder).as_posix() for f in files if records.is_photo_name(f)]
    return sorted(found)


def done_in(results: Path) -> set[str]:
    """The photos results.jsonl already has; a last line cut short (the run was killed mid-write) is dropped."""
    if not results.is_file():
        return set()
    data = results.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        results.write_bytes(data)
    return {json.loads(line)["file"] for line in data.decode("utf-8").splitlines() if line.strip()}


def _start_worker(env: dict, folder: str, out: str, options: records.Options) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops handing out photos
    from pose.model import load_detector_from_env, load_from_env

    _worker.update(pose=load_from_env(env), detector=load_detector_from_env(env), folder=Path(folder),
                   out=Path(out), options=options, ready=time.time())


def _one(name: str) -> tuple[str, float, float]:
    """One photo -> its results.jsonl line (writing its drawing when asked), when this worker was ready, and
    the CPU seconds the photo took in this worker (all its threads)."""
    cpu = time.process_time()
    path = _worker["folder"] / name
    try:
        size = path.stat().st_size
        data = None if size > records.MAX_BYTES else path.read_bytes()
    except OSError as exc:
        record = records.error_record(name, "unreadable", f"{type(exc).__name__}: {exc.strerror}")
    else:
        if data is None:
            record = records.error_record(name, "too_large", f"the file is {size} bytes; the limit is {records.MAX_BYTES}")
        else:
            record, drawing = records.photo_record(name, data, _worker["pose"], _worker["detector"], _worker["options"])
            if drawing is not None:
                media_type, image = drawing
                annotated = f"annotated/{name}.{'png' if media_type == 'image/png' else 'jpg'}"
                (_worker["out"] / annotated).parent.mkdir(parents=True, exist_ok=True)
                (_worker["out"] / annotated).write_bytes(image)
                record["annotated_image"] = annotated
    return json.dumps(record, separators=(",", ":")), _worker["ready"], time.process_time() - cpu


def write_index(out: Path) -> None:
    """images.json and coco_results.json from results.jsonl (ids: its line numbers), each replaced at once."""
    categories: list[dict] = []
    with open(out / RESULTS, encoding="utf-8") as lines, open(out / (COCO + ".part"), "w") as coco, \
            open(out / (IMAGES + ".part"), "w") as images, open(os.devnull, "w") as nowhere:
        gathered = Gathered(nowhere, coco, images)
        for image_id, line in enumerate(lines, start=1):
            record = json.loads(line)
            entry = records.image_entry(record, image_id)
            gathered.add("", items_text(records.coco_results(record, image_id)), items_text([entry] if entry else []))
            if entry and not categories:
                categories = records.categories(record)
        gathered.close(categories)
    os.replace(out / (COCO + ".part"), out / COCO)
    os.replace(out / (IMAGES + ".part"), out / IMAGES)


def run(folder: Path, out: Path, workers: int, threads: int, options: records.Options) -> dict:
    """Process the photos not yet in out/results.jsonl; the counts of this run."""
    out.mkdir(parents=True, exist_ok=True)
    photos = photos_in(folder, skip=out)
    done = done_in(out / RESULTS)
    todo = [p for p in photos if p not in done]
    env = {"MODEL_PATH": os.getenv("MODEL_PATH") or str(function.model_path()), "MODEL_THREADS": str(threads),
           "DETECTOR_PATH": os.getenv("DETECTOR_PATH") or str(function.detector_path())}
    summary = {"photos": 0, "people": 0, "errors": 0, "skipped": len(photos) - len(todo), "interrupted": False}
    started = time.time()
    ready, cpu_total = float("inf"), 0.0
    with open(out / RESULTS, "a", encoding="utf-8") as results, \
            tqdm(total=len(todo), unit="photo", disable=None, dynamic_ncols=True) as bar:
        pool = ProcessPoolExecutor(max(1, min(workers, len(todo))), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(env, str(folder), str(out), options))
        try:
            waiting = iter(todo)
            running = set()
            while True:
                for name in waiting:  # at most 4 photos per worker handed out ahead
                    running.add(pool.submit(_one, name))
                    if len(running) >= 4 * workers:
                        break
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    line, worker_ready, cpu_s = future.result()
                    cpu_total += cpu_s
                    results.write(line + "\n")
                    results.flush()
                    record = json.loads(line)
                    summary["photos"] += 1
                    summary["people"] += len(record["people"])
                    summary["errors"] += record["error"] is not None
                    ready = min(ready, worker_ready)
                    bar.update(1)
        except KeyboardInterrupt:
            summary["interrupted"] = True
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    ended = time.time()
    summary["seconds"] = round(ended - started, 2)
    # the rate once the first worker had loaded its models: what a warm function does
    summary["photos_per_s"] = round(summary["photos"] / (ended - ready), 2) if summary["photos"] else 0.0
    summary["cpu_ms_per_photo"] = round(1e3 * cpu_total / summary["photos"], 1) if summary["photos"] else 0.0
    summary["workers"], summary["threads"] = workers, threads
    if (out / RESULTS).stat().st_size:
        write_index(out)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[3:]))
    parser.add_argument("folder", type=Path, help="the photos (every image file under it, by suffix)")
    parser.add_argument("out", type=Path, help="where results.jsonl, coco_results.json and images.json go")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="worker processes (default: the cores this process may use)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per worker (default 1)")
    parser.add_argument("--images", action="store_true", help="also write the annotated photos to OUT/annotated/")
    parser.add_argument("--threshold", type=float, help="a joint is visible at this score (default: the model's)")
    parser.add_argument("--max-people", type=int, default=records.MAX_PEOPLE, help="people per photo at most")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    try:
        options = records.Options.from_job({"threshold": args.threshold, "max_people": args.max_people,
                                            "return_image": args.images})
    except BadParameter as exc:
        parser.error(exc.message)
    summary = run(args.folder, args.out, max(1, args.workers), max(1, args.threads), options)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['photos']} photos ({summary['skipped']} already done), {summary['people']} people, "
              f"{summary['errors']} errors, {summary['photos_per_s']} photos/s on {summary['workers']} workers x "
              f"{summary['threads']} threads ({summary['seconds']} s); wrote {args.out / RESULTS}, "
              f"{args.out / COCO}, {args.out / IMAGES}")
    if summary["interrupted"]:
        print("interrupted: run the same command again to go on from where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
