#!/usr/bin/env python3
"""Build both Lambda layers without SAM and check the deployment stays under Lambda's size limit.

Lambda refuses a function whose code plus all its layers, unzipped, exceed 250 MB
(262,144,000 bytes). This script

1. builds the dependency layer into ``layers/deps/build/python`` and the model layer into
   ``layers/model/build/model`` with the very Makefile targets ``sam build`` runs
   (``make -C layers/deps build-DepsLayer ARTIFACTS_DIR=...``, and so on), and the function's
   code into a temporary directory with ``handler/Makefile``;
2. prints the unzipped size of each part, the largest distributions of the dependency layer
   and each model file;
3. exits 1 when the total is over the limit (2 when a build fails).

Usage::

    python layers/build_layers.py                  # build all, measure, check
    python layers/build_layers.py --skip-build     # measure what is already built
    python layers/build_layers.py --models pp-tinypose-256x192=pp-tinypose-256x192.onnx \
        --detectors nanodet=int8/nanodet.int8.onnx   # name=file under --model-dir (default models/)
    python layers/build_layers.py --no-model       # deps + function; reserve MODEL_BUDGET
    python layers/build_layers.py --pyc-python python3.12   # precompile the deps layer
    python layers/build_layers.py --video          # the video function instead: its code + the video layer

The measuring functions are imported by tests/test_layers.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ROOT / "layers"
HANDLER = ROOT / "handler"
DEPS_BUILD = LAYERS / "deps" / "build"
MODEL_BUILD = LAYERS / "model" / "build"
VIDEO_BUILD = LAYERS / "video" / "build"

# Lambda: function code + all layers, unzipped (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
LAMBDA_UNZIPPED_LIMIT = 262_144_000
# What to keep free for the model layer when it is not built (--no-model, and the tests).
MODEL_BUDGET = 64 * 1024 * 1024

# Logical ids in template.yaml; each Makefile has a build-<id> target.
DEPS_TARGET = "build-DepsLayer"
MODEL_TARGET = "build-ModelLayer"
VIDEO_TARGET = "build-VideoLayer"
FUNCTION_TARGET = "build-PoseFunction"


def tree_size(path: Path) -> int:
    """Bytes of all regular files under path (what Lambda counts: the unzipped size)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            p = Path(dirpath, name)
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def distribution_sizes(site: Path) -> dict[str, int]:
    """Bytes per installed distribution in a pip --target directory, from the RECORD files.

    Files that no RECORD lists are counted under "(other)". Files a RECORD lists that were
    removed after install (pruning) are not counted.
    """
    owned: dict[Path, str] = {}
    for record in site.glob("*.dist-info/RECORD"):
        dist = record.parent.name.split("-")[0].lower().replace("_", "-")
        for line in record.read_text(encoding="utf-8").splitlines():
            rel = line.rsplit(",", 2)[0] if line else ""
            if rel:
                owned[(site / rel).resolve()] = dist
    sizes: dict[str, int] = {}
    for dirpath, _dirnames, filenames in os.walk(site):
        for name in filenames:
            p = Path(dirpath, name)
            if p.is_symlink():
                continue
            dist = owned.get(p.resolve(), "(other)")
            sizes[dist] = sizes.get(dist, 0) + p.stat().st_size
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


@dataclass
class Part:
    name: str
    path: Path | None  # None: a reserved budget, not a built directory
    size: int
    where: str = ""  # what to print as its place (default: path relative to the repository)


def check(parts: list[Part], limit: int = LAMBDA_UNZIPPED_LIMIT) -> tuple[int, bool]:
    """Total bytes of the parts and whether it is within the limit."""
    total = sum(p.size for p in parts)
    return total, total <= limit


def mb(n: int) -> str:
    """Lambda's "250 MB" is 250 MiB, so sizes are shown in MiB."""
    return f"{n / 2**20:8.1f} MiB"


def report(parts: list[Part], limit: int = LAMBDA_UNZIPPED_LIMIT, top: int = 10) -> bool:
    total, ok = check(parts, limit)
    print("Unzipped sizes (Lambda counts function code + all layers):")
    for p in parts:
        where = p.where or (
            "reserved" if p.path is None else str(p.path.relative_to(ROOT) if p.path.is_relative_to(ROOT) else p.path)
        )
        print(f"  {p.name:<22}{mb(p.size)}  {p.size:>11,d} B  {where}")
    print(f"  {'total':<22}{mb(total)}  {total:>11,d} B  = {100 * total / limit:.1f}% of the limit")
    print(f"  {'limit':<22}{mb(limit)}  {limit:>11,d} B  headroom {mb(limit - total).strip()}")
    for p in parts:
        if p.path is None or not p.path.is_dir():
            continue
        if p.path.name == "python":
            print(f"Largest distributions in {p.name}:")
            for dist, size in list(distribution_sizes(p.path).items())[:top]:
                print(f"  {dist:<28}{mb(size)}")
        elif p.path.name == "model":
            print(f"Files in {p.name}:")
            for f in sorted(p.path.iterdir()):
                print(f"  {f.name:<40}{mb(tree_size(f))}")
    print("OK: within the limit" if ok else f"FAIL: over the limit of {limit:,d} B (Lambda: 250 MiB unzipped)")
    return ok


def make(directory: Path, target: str, artifacts_dir: Path, **variables: str) -> None:
    """Run one build-<LogicalId> target the way sam build does (ARTIFACTS_DIR set)."""
    cmd = ["make", "--no-print-directory", "-C", str(directory), target, f"ARTIFACTS_DIR={artifacts_dir}"]
    cmd += [f"{k}={v}" for k, v in variables.items()]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build_deps(artifacts_dir: Path = DEPS_BUILD, pyc_python: str | None = None) -> Path:
    variables = {"PIP_PYTHON": sys.executable}
    if pyc_python:
        variables["PYC_PYTHON"] = pyc_python
    make(LAYERS / "deps", DEPS_TARGET, artifacts_dir, **variables)
    return artifacts_dir / "python"


def build_model(artifacts_dir: Path = MODEL_BUILD, model_dir: Path | None = None, models: str | None = None,
                detectors: str | None = None) -> Path:
    variables = {}
    if model_dir is not None:
        variables["MODEL_DIR"] = str(model_dir.resolve())
    if models is not None:
        variables["MODELS"] = models
    if detectors is not None:
        variables["DETECTORS"] = detectors
    make(LAYERS / "model", MODEL_TARGET, artifacts_dir, **variables)
    return artifacts_dir / "model"


def build_video(artifacts_dir: Path = VIDEO_BUILD) -> Path:
    """The video function's one layer: python/ (the dependencies and PyAV) and model/ (the defaults)."""
    make(LAYERS / "video", VIDEO_TARGET, artifacts_dir, PIP_PYTHON=sys.executable)
    return artifacts_dir


def build_function(artifacts_dir: Path) -> Path:
    make(HANDLER, FUNCTION_TARGET, artifacts_dir)
    return artifacts_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-build", action="store_true", help="measure the existing layers/*/build dirs")
    ap.add_argument("--no-model", action="store_true", help=f"leave out the model layer; reserve {MODEL_BUDGET:,d} B")
    ap.add_argument("--model-dir", type=Path, help="where the name=file pairs' files are (default: models/)")
    ap.add_argument("--models", help="space-separated name=file pose models (default: those of models/models.json)")
    ap.add_argument("--detectors", help="space-separated name=file person detectors (default: those of models/models.json)")
    ap.add_argument(
        "--pyc-python",
        default=os.environ.get("PYC_PYTHON") or None,
        help="a CPython 3.12 to precompile the dependency layer with (faster cold starts; default: $PYC_PYTHON)",
    )
    ap.add_argument("--video", action="store_true", help="the video function: its code and the video layer")
    ap.add_argument("--limit", type=int, default=LAMBDA_UNZIPPED_LIMIT, help="bytes (default: %(default)s)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pose-function-") as tmp:
        if args.video:
            return video_function(Path(tmp), args.skip_build, args.limit)
        try:
            if args.skip_build:
                deps = DEPS_BUILD / "python"
                model = None if args.no_model else MODEL_BUILD / "model"
                for d in [deps] + ([model] if model else []):
                    if not d.is_dir():
                        print(f"{d} is not built (run without --skip-build)", file=sys.stderr)
                        return 2
                function = build_function(Path(tmp))
            else:
                deps = build_deps(pyc_python=args.pyc_python)
                model = None if args.no_model else build_model(model_dir=args.model_dir, models=args.models,
                                                               detectors=args.detectors)
                function = build_function(Path(tmp))
        except subprocess.CalledProcessError as e:
            print(f"build failed: {e}", file=sys.stderr)
            return 2

        # The function is built in a temporary directory: name its Makefile's output instead.
        parts = [
            Part("function code", function, tree_size(function), where="handler/ (app.py, pose/)"),
            Part("deps layer", deps, tree_size(deps)),
        ]
        if model is None:
            parts.append(Part("model budget", None, MODEL_BUDGET))
        else:
            parts.append(Part("model layer", model, tree_size(model)))
        return 0 if report(parts, args.limit) else 1


def video_function(tmp: Path, skip_build: bool, limit: int) -> int:
    """--video: the video function's code and its one layer against the limit."""
    try:
        layer = VIDEO_BUILD if skip_build else build_video()
        function = build_function(tmp)
    except subprocess.CalledProcessError as e:
        print(f"build failed: {e}", file=sys.stderr)
        return 2
    if not layer.is_dir():
        print(f"{layer} is not built (run without --skip-build)", file=sys.stderr)
        return 2
    parts = [Part("function code", function, tree_size(function), where="handler/ (video.py, pose/)"),
             Part("video layer python/", layer / "python", tree_size(layer / "python")),
             Part("video layer model/", layer / "model", tree_size(layer / "model"))]
    return 0 if report(parts, limit) else 1


if __name__ == "__main__":
    sys.exit(main())
