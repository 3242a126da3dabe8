"""Every photo in a folder tree, through the batch function's per-photo code, on all cores.

    python -m local.batch IN OUT [--workers N] [--threads T] [--images] [--threshold X] [--max-people N]

Writes OUT/results.jsonl, one line per photo (pose/records.py: what POST /pose answers for it, with
`file` and `error`), appended and flushed as each photo completes: run it again with the same OUT and
the photos already there are skipped (resume after Ctrl-C or a kill). One run at a time per OUT (OUT/.lock).
A file that is not a usable photo (not a regular file, too large, broken, or one whose worker process died
twice) is an error line. Then OUT/images.json (a COCO dataset file without annotations: image ids are the line
numbers of results.jsonl) and OUT/coco_results.json (COCO keypoint results), and a summary. With
--images, the annotated photos in OUT/annotated/. Each worker process loads the models once, with
--threads onnxruntime threads (default 1); --workers defaults to the cores this process may use.
The models are those of a local run (local/function.py; MODEL_PATH, MODEL, DETECTOR_PATH).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import multiprocessing
import os
import signal
import stat
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from local import function

from gather import Gathered, items_text
from pose import records
from pose.errors import BadParameter, NotFound, PoseError, TooLarge, Unreadable, WorkerDied
from pose.options import Options

RESULTS, COCO, IMAGES, LOCK = "results.jsonl", "coco_results.json", "images.json", ".lock"
SPECIAL_FILES = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
_worker: dict = {}


class Refused(Exception):
    """The run cannot start or go on, for the reason its message says (OUT in use, results.jsonl not the
    CLI's, no models)."""


class ModelsNotLoaded(Exception):
    """Raised by every photo of a worker whose models did not load: the run stops, no photo is marked done."""


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
    """The photos results.jsonl already has. A last line cut short (the run was killed mid-write) is cut off
    in place (one truncate: the finished lines are never rewritten, so a kill now loses none of them)."""
    if not results.is_file():
        return set()
    done, end = set(), 0
    with open(results, "r+b") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.endswith(b"\n"):
                lines.truncate(end)
                break
            try:
                done.add(json.loads(line)["file"])
            except (ValueError, KeyError, TypeError):
                raise Refused(f"{results} line {number} is not a photo's record; move the file away to start "
                              f"over") from None
            end += len(line)
    return done


@contextlib.contextmanager
def locked(out: Path):
    """OUT/.lock held for the run: a second run on the same OUT is Refused instead of doing the same photos
    again into the same results.jsonl. An flock: it ends with this process however it ends."""
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 20).decode("ascii", "replace").strip() or "?"
            raise Refused(f"another run (pid {holder}) is writing to {out}; wait for it to end, or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def read_photo(path: Path, name: str) -> bytes | dict:
    """The file's bytes, or the error record saying why there are none. Regular files only (through a symlink
    too): reading a FIFO waits forever for a writer and a device such as /dev/zero never ends. Never more than
    MAX_BYTES + 1 bytes are read, whatever the size said: the file may grow while it is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: opening a FIFO must not wait either
    except FileNotFoundError:
        return records.error_record(name, NotFound.code, "no such file (deleted after the listing?)")
    except OSError as exc:
        return records.error_record(name, Unreadable.code, f"{type(exc).__name__}: {exc.strerror}")
    with open(fd, "rb") as file:
        status = os.fstat(fd)
        size = status.st_size
        if not stat.S_ISREG(status.st_mode):
            kind = SPECIAL_FILES.get(stat.S_IFMT(status.st_mode), "a special file")
            return records.error_record(name, Unreadable.code, f"not a regular file ({kind})")
        if size <= records.MAX_BYTES:
            try:
                data = file.read(records.MAX_BYTES + 1)
            except OSError as exc:
                return records.error_record(name, Unreadable.code, f"{type(exc).__name__}: {exc.strerror}")
            size = len(data)
    if size > records.MAX_BYTES:
        return records.error_record(name, TooLarge.code, f"the file is {size} bytes or more; the limit is "
                                                       f"{records.MAX_BYTES}")
    return data


def _start_worker(env: dict, folder: str, out: str, options: Options, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops handing out photos
    threading.Thread(target=_end_with, args=(parent,), daemon=True).start()
    from pose import service

    _worker.update(folder=Path(folder), out=Path(out), options=options)
    try:
        _worker.update(models=service.load_models(env), ready=time.time())
    except PoseError as exc:  # said by each photo (_one), not a dead pool whose photos would look like culprits
        _worker["failed"] = exc.message


def _end_with(parent: int) -> None:
    """Ends this worker once its parent is gone: a killed CLI never tells its pool, whose workers would
    otherwise wait for photos forever."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _one(name: str) -> tuple[str, float, float]:
    """One photo -> its results.jsonl line (writing its drawing when asked), when this worker was ready, and
    the CPU seconds the photo took in this worker (all its threads)."""
    if "failed" in _worker:
        raise ModelsNotLoaded(_worker["failed"])
    cpu = time.process_time()
    record = data = read_photo(_worker["folder"] / name, name)
    if isinstance(data, bytes):
        record, drawing = records.photo_record(name, data, _worker["models"], _worker["options"])
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


def _worked(todo: list[str], workers: int, new_pool) -> Iterator[tuple[str, float, float]]:
    """_one's answer for each photo of todo, as they complete on new_pool(photos left)'s worker processes, at
    most 4 photos per worker handed out ahead. A worker that dies (the OOM killer, a signal) breaks the pool
    and fails every photo in flight: those are done again one at a time on a new pool, so the photo that kills
    a worker again gets a worker_died record and the others their real ones. Any other exception out of _one
    is that photo's internal_error record; ModelsNotLoaded stops it all."""
    waiting, suspects, running = deque(todo), deque(), {}
    pool, alone = None, False
    try:
        while waiting or suspects or running:
            if pool is None:
                pool = new_pool(len(waiting) + len(suspects))
            try:
                if not running:
                    alone = bool(suspects)
                queue = suspects if alone else waiting
                while queue and len(running) < (1 if alone else 4 * workers):
                    running[pool.submit(_one, queue[0])] = queue[0]
                    queue.popleft()
            except BrokenProcessPool:  # a worker died since the last wait: the pool's futures say so below
                if not running:  # none in flight: no photo to blame
                    pool.shutdown()
                    pool = None
                    continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            if any(isinstance(future.exception(), BrokenProcessPool) for future in finished):
                finished = wait(running).done  # a broken pool fails all its futures at once
                pool.shutdown()
                pool = None
            for future in finished:
                name = running.pop(future)
                try:
                    answer = future.result()
                except BrokenProcessPool:
                    if not alone:
                        suspects.append(name)
                        continue
                    answer = _failed(name, WorkerDied.code, "its worker process died on it, twice (out of memory? "
                                                          "killed?)")
                except ModelsNotLoaded:
                    raise
                except Exception as exc:  # out of _one itself, e.g. writing the drawing: still only this photo's
                    answer = _failed(name, PoseError.code, f"{type(exc).__name__}: {str(exc)[:200]}")
                yield answer
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _failed(name: str, code: str, message: str) -> tuple[str, float, float]:
    """_one's answer for a photo whose _one did not answer."""
    return json.dumps(records.error_record(name, code, message), separators=(",", ":")), float("inf"), 0.0


def run(folder: Path, out: Path, workers: int, threads: int, options: Options) -> dict:
    """Process the photos not yet in out/results.jsonl; the counts of this run. Refused when another run
    holds out, or when the workers cannot load the models (the photos done until then are kept and indexed)."""
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):
        return _run(folder, out, workers, threads, options)


def _run(folder: Path, out: Path, workers: int, threads: int, options: Options) -> dict:
    photos = photos_in(folder, skip=out)
    done = done_in(out / RESULTS)
    todo = [p for p in photos if p not in done]
    env = {"MODEL_PATH": os.getenv("MODEL_PATH") or str(function.model_path()), "MODEL_THREADS": str(threads),
           "DETECTOR_PATH": os.getenv("DETECTOR_PATH") or str(function.detector_path())}
    summary = {"photos": 0, "people": 0, "errors": 0, "skipped": len(photos) - len(todo), "interrupted": False}
    started = time.time()
    ready, cpu_total, stopped = float("inf"), 0.0, None

    def new_pool(photos: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max(1, min(workers, photos)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(env, str(folder), str(out), options, os.getpid()))

    with open(out / RESULTS, "a", encoding="utf-8") as results, \
            tqdm(total=len(todo), unit="photo", disable=None, dynamic_ncols=True) as bar, \
            contextlib.closing(_worked(todo, workers, new_pool)) as answers:
        try:
            for line, worker_ready, cpu_s in answers:
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
        except ModelsNotLoaded as exc:
            stopped = Refused(f"the models did not load: {exc}")
    ended = time.time()
    summary["seconds"] = round(ended - started, 2)
    # the rate once the first worker had loaded its models: what a warm function does
    summary["photos_per_s"] = round(summary["photos"] / (ended - ready), 2) if summary["photos"] else 0.0
    summary["cpu_ms_per_photo"] = round(1e3 * cpu_total / summary["photos"], 1) if summary["photos"] else 0.0
    summary["workers"], summary["threads"] = workers, threads
    if (out / RESULTS).stat().st_size:
        write_index(out)
    if stopped:
        raise stopped
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
    parser.add_argument("--max-people", type=int, default=Options.max_people, help="people per photo at most")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    if args.out.resolve() == args.folder.resolve():
        parser.error(f"OUT is IN ({args.folder}): the results need a folder of their own (the photos under OUT "
                     f"are never read, so this would find none)")
    try:
        options = records.job_options({"threshold": args.threshold, "max_people": args.max_people,
                                       "return_image": args.images})
    except BadParameter as exc:
        parser.error(exc.message)
    try:
        summary = run(args.folder, args.out, max(1, args.workers), max(1, args.threads), options)
    except (Refused, OSError) as exc:  # OSError: OUT not writable, disk full...: said, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
