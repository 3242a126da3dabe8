"""Cold start as Lambda pays it: the layer's packages without bytecode, next to the floor.

    python -m build.coldstart                       # 9 rounds; writes out/bench/coldstart.json
    python -m build.coldstart --rounds 15 --detector none
    python -m build.coldstart --baseline main       # also the function as it is at git ref main
    python -m build.coldstart --layer-python python3.12   # the dependency layer itself, on Lambda's Python

The dependency layer ships no ``.pyc`` files unless it is built with a CPython 3.12 (``PYC_PYTHON``), and
/opt is read-only on Lambda, so every cold start compiles each module it imports. To measure that here,
this script copies the packages of handler/requirements.txt's closure (plus boto3's, which the Lambda
runtime provides) from this Python's site-packages into out/coldstart/site without a single ``.pyc``, and
the function's code (handler/, as handler/Makefile ships it: no bytecode either) into
out/coldstart/function; out/coldstart/site-pyc holds the same files (hard links) with their bytecode, as
a PYC_PYTHON build has. The copies are made once and rebuilt when the installed versions change. With ``--layer-python`` (a
CPython 3.12, as on Lambda), the packages are instead the dependency layer as layers/deps/Makefile builds
it (the cp312 wheels), once as deployed and once with PYC_PYTHON set to that Python, and the processes
run on that Python.

Each round then runs, in a rotating order, one fresh process per variant (``python -S -B``: the copies on
PYTHONPATH and nothing else; one inference thread, as Lambda's 2048 MB buys):

- ``floor``: import numpy, onnxruntime and Pillow, open the pose model's session (and the person
  detector's) with the service's options, one run each on zeros: what any such function pays;
- ``app``: import the handler module as Lambda does (models loaded and warmed up);
- ``baseline app`` (with ``--baseline REF``): the same for handler/ and handler/requirements.txt at REF;

each without bytecode and with it. Reported: medians of the time in the process up to the end of the
import (``ms``) and of the process's CPU time (user + sys: what a shared machine disturbs least), and the
median over rounds of each variant's ratio to the floor of the same round. Read the ratios, not the
absolute times: the machine may be shared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from local import function

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "handler" / "requirements.txt"
RUNTIME_PROVIDED = ("boto3",)  # in Lambda's python3.12 runtime: not in the layer, importable all the same
WORK = ROOT / "out" / "coldstart"

# The served defaults, the files a local run loads (layers/model/Makefile's).
MODEL = function.model_path(function.DEFAULT_MODEL)
DETECTOR = function.detector_path()
WATCHED = ("aws_xray_sdk", "botocore.session", "boto3")  # modules a cold start should not need

CHILD = r"""
import os, sys, time
t0 = time.perf_counter()
what, model, detector = sys.argv[1:4]
if what == "floor":
    import numpy as np, onnxruntime as ort, PIL.Image
    from pose.session import session_options
    dtypes = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}
    for path in filter(None, (model, detector)):
        s = ort.InferenceSession(path, session_options(1), providers=["CPUExecutionProvider"])
        i = s.get_inputs()[0]
        s.run(None, {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtypes[i.type])})
else:
    import app
elapsed = (time.perf_counter() - t0) * 1e3
import json
print(json.dumps({"ms": elapsed, "imported": [m for m in sys.argv[4:] if m in sys.modules]}))
"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(text: str) -> list[str]:
    lines = (ln.split("#")[0].strip() for ln in text.splitlines())
    return [ln for ln in lines if ln]


def closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions the requirement lines need, with their extras, transitively."""
    found: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = normalise(req.name)
        if key in found:
            continue
        dist = found[key] = metadata.distribution(req.name)
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                todo.append(sub)
    return found


def copy_packages(dists: dict[str, metadata.Distribution], dest: Path) -> None:
    """The distributions' files (as their RECORDs list them) into dest, without bytecode or scripts."""
    for dist in dists.values():
        for f in dist.files or []:
            if "__pycache__" in f.parts or f.suffix == ".pyc" or f.parts[0] == "..":
                continue
            src = Path(dist.locate_file(f))
            if src.is_file():
                (dest / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / f)


def link_tree(src: Path, dest: Path) -> None:
    """dest: the same files as src, as hard links (copies across file systems)."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    shutil.copytree(src, dest, copy_function=link)


def packages(requirements: str, work: Path, bytecode: bool = True) -> dict[str, Path]:
    """work/site (no bytecode) and, with `bytecode`, work/site-pyc (the same files with this Python's
    bytecode) holding the requirements' closure; made once per set of installed versions."""
    dists = closure(requirement_lines(requirements) + list(RUNTIME_PROVIDED))
    stamp = hashlib.sha256(json.dumps([sorted((k, d.version) for k, d in dists.items()), sys.version,
                                       bytecode]).encode()).hexdigest()
    site, site_pyc = work / "site", work / "site-pyc"
    if not ((work / "stamp").is_file() and (work / "stamp").read_text() == stamp):
        print(f"copying {len(dists)} distributions into {site} and {site_pyc} ...", file=sys.stderr, flush=True)
        for d in (site, site_pyc, work / "stamp"):
            shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
        copy_packages(dists, site)
        if bytecode:
            link_tree(site, site_pyc)
            subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(site_pyc)], check=True,
                           stdout=subprocess.DEVNULL)
        (work / "stamp").write_text(stamp)
    return {"no bytecode": site, "bytecode": site_pyc}


def function_code(dest: Path, ref: str | None = None) -> Path:
    """handler/'s Python files (of the working tree, or of git ref `ref`) in dest, without bytecode."""
    shutil.rmtree(dest, ignore_errors=True)
    if ref is None:
        shutil.copytree(ROOT / "handler", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "Makefile"))
        return dest
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "handler"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "--strip-components=1", "-C", str(dest)], input=archive, check=True)
    return dest


def lambda_env(model: Path, detector: Path | None) -> dict[str, str]:
    """The environment template.yaml gives the function, with this machine's paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "PYTHON"))}
    env.update(MODEL_PATH=str(model), DETECTOR_PATH=str(detector or "none"), AWS_LAMBDA_FUNCTION_MEMORY_SIZE="2048",
               MODEL_THREADS="1", POWERTOOLS_SERVICE_NAME="pose", POWERTOOLS_METRICS_NAMESPACE="PoseService",
               LOG_LEVEL="INFO", POWERTOOLS_METRICS_DISABLED="true", AWS_LAMBDA_FUNCTION_NAME="pose")
    return env


def layer(python: str, work: Path) -> dict[str, Path]:
    """The dependency layer built by its Makefile into work/layer (as deployed) and work/layer-pyc
    (PYC_PYTHON=python); rebuilt when handler/requirements.txt changes."""
    stamp = hashlib.sha256(REQUIREMENTS.read_bytes() + python.encode()).hexdigest()
    dirs = {"no bytecode": work / "layer" / "python", "bytecode": work / "layer-pyc" / "python"}
    if not ((work / "layer-stamp").is_file() and (work / "layer-stamp").read_text() == stamp):
        for bytecode, site in dirs.items():
            print(f"building the dependency layer into {site.parent} ...", file=sys.stderr, flush=True)
            subprocess.run(["make", "--no-print-directory", "-s", "-C", str(ROOT / "layers" / "deps"), "build-DepsLayer",
                            f"ARTIFACTS_DIR={site.parent}", f"PIP_PYTHON={sys.executable}",
                            f"PYC_PYTHON={python if bytecode == 'bytecode' else ''}"], check=True)
        (work / "layer-stamp").write_text(stamp)
    return dirs


def sample(what: str, function: Path, site: Path, model: Path, detector: Path | None,
           python: str = sys.executable) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**lambda_env(model, detector), "PYTHONPATH": os.pathsep.join((str(function), str(site)))}
    proc = subprocess.run([python, "-S", "-B", "-c", CHILD, what, str(model), str(detector or ""), *WATCHED],
                          env=env, cwd=function,
                          capture_output=True, text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} from {function}: the process failed:\n{proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["cpu_ms"] = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1e3
    return out


def measure(rounds: int, model: Path = MODEL, detector: Path | None = None, baseline: str | None = None,
            work: Path = WORK, layer_python: str | None = None) -> dict:
    """Every variant's medians and its paired ratio to the floor of the same bytecode and round."""
    python = layer_python or sys.executable
    sites = layer(python, work) if layer_python else packages(REQUIREMENTS.read_text(), work)
    function = function_code(work / "function")
    setups = {"floor": ("floor", function, sites), "app": ("app", function, sites)}
    if baseline and layer_python:
        raise SystemExit("error: --baseline and --layer-python do not go together")
    if baseline:
        old = subprocess.run(["git", "show", f"{baseline}:handler/requirements.txt"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        setups[f"app at {baseline}"] = ("app", function_code(work / "baseline" / "function", baseline),
                                        packages(old, work / "baseline"))
    variants = [(name, bytecode) for bytecode in ("no bytecode", "bytecode") for name in setups]

    def run(name: str, bytecode: str) -> dict:
        what, code, site = setups[name]
        return sample(what, code, site[bytecode], model, detector, python)

    for v in variants:  # one unmeasured start each: from here on the page cache holds every file
        run(*v)
    samples: dict[tuple[str, str], list[dict]] = {v: [] for v in variants}
    for r in range(rounds):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            samples[v].append(run(*v))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n}, {b} {samples[(n, b)][-1]['ms']:.0f} ms"
                                                     for n, b in variants), file=sys.stderr, flush=True)
    rows = []
    for (name, bytecode), got in samples.items():
        floor = samples[("floor", bytecode)]
        rows.append({"variant": name, "bytecode": bytecode == "bytecode",
                     **{k: statistics.median(s[k] for s in got) for k in ("ms", "cpu_ms")},
                     **{f"x_floor_{k}": statistics.median(s[k] / f[k] for s, f in zip(got, floor))
                        for k in ("ms", "cpu_ms")},
                     "imported": got[-1]["imported"]})
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    return {"rounds": rounds, "model": model.name, "detector": detector.name if detector else None,
            "python": version, "packages": "the dependency layer" if layer_python else "the venv's copy",
            "variants": rows}


def table(result: dict) -> str:
    lines = ["| variant | bytecode | ms (median) | CPU ms (median) | x floor, ms | x floor, CPU | imports of "
             + ", ".join(WATCHED) + " |", "|---|---|---:|---:|---:|---:|---|"]
    for r in result["variants"]:
        lines.append(f"| {r['variant']} | {'yes' if r['bytecode'] else 'no'} | {r['ms']:.0f} | {r['cpu_ms']:.0f} | "
                     f"{r['x_floor_ms']:.2f} | {r['x_floor_cpu_ms']:.2f} | {', '.join(r['imported']) or 'none'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--detector", default=str(DETECTOR) if DETECTOR.is_file() else "none",
                    help="the person detector's ONNX file, or none (default: the served default's, if there)")
    ap.add_argument("--baseline", metavar="REF", help="also measure handler/ as it is at this git ref")
    ap.add_argument("--layer-python", metavar="PYTHON", default=os.environ.get("PYC_PYTHON") or None,
                    help="a CPython 3.12: time the dependency layer itself on it (default: $PYC_PYTHON)")
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "coldstart.json")
    a = ap.parse_args(argv)
    detector = None if a.detector.lower() == "none" else Path(a.detector).resolve()
    result = measure(a.rounds, a.model.resolve(), detector, a.baseline, layer_python=a.layer_python)
    print(f"Cold start, {a.model.name}" + (f" + {detector.name}" if detector else " (no detector)")
          + f", 1 thread, {result['packages']} on Python {result['python']}: medians of {a.rounds} rounds, every variant in turn, a fresh "
          "process each; x floor = median of the per-round ratios to the floor with the same bytecode")
    print(table(result))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
