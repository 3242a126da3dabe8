"""Serve your own ONNX pose model: write its card, check it on photos, quantize it, add it to models.json.

    python -m build.add_model MY.onnx --name my-pose --kind heatmaps --joints coco17 \\
        --color RGB --scaling imagenet --licence MIT --origin "my Simple Baselines fine-tune, 2026-05" \\
        [--size 256x192] [--layout NCHW] [--in-layer] [--no-quantize] [--no-eval] [--catalog models/models.json]

The facts the graph cannot tell are given on the command line: the output kind (``heatmaps``, ``keypoints``
or ``yolo_pose``), the joint set (``coco17``, ``mpii16`` or a JSON file, below), the colour order, the
scaling (``raw``, ``range LO HI``, ``mean_std`` with ``--mean``/``--std`` on 0..1 values in the input's
channel order, or ``imagenet``), the licence and the origin. The input's name, dtype, size and layout and
the output's name (and a heatmap output's layout) are read from the graph; ``--size``/``--layout`` are needed
only where its dimensions are symbolic, and are checked against it where they are not.

Then, in order (nothing is added when a step fails):

1. the card (handler/pose/card.py, built by build/cards.py) goes into a copy, ``NAME.onnx`` beside the catalog
   (models/ by default);
2. the copy opens in the service (pose.model.PoseModel: the card must fit the graph) and answers the committed
   photos (tests/data) through the service's pipeline (pose.pipeline.estimate_people, with the default person
   detector when the card asks for one), every output finite; with ../shared/eval, a quick accuracy figure:
   COCO keypoint AP on coco_multi.json for a model of COCO's 17 joints, PCKh@0.5 on the MPII photos (the
   whole-photo protocol of build/evaluate.py) for others;
3. unless ``--no-quantize``, a bounded search of static INT8 recipes (``CANDIDATES``, each built by
   build/make_models.py with build/quantize.py, calibrated on ../shared/images with augmentation): a
   candidate is kept only if its accuracy is within ``--tolerance`` points of FP32 (with the eval set), its
   joints stay within ``--max-moved`` % of the input side of FP32's (mean, on the eval photos and crops, or
   on the committed photos without them), and it is ``--min-speedup`` (1.1) times faster at one thread, FP32
   and INT8 run side by side; the most accurate (then fastest) such candidate is served as
   ``int8/NAME.int8.onnx`` and its recipe goes into models.json (``make model ONLY=NAME`` rebuilds it);
   otherwise the FP32 copy is served and ``why_fp32`` records what each candidate cost;
4. the entry (with both files' sha256) is appended to the catalog by local/catalog.py's ``add``, and a
   provenance section to the MODELS.md beside it; what is left to do by hand is printed (with
   ``--in-layer``: the name in template.yaml's ModelName AllowedValues and the title in its Description).

A joint set file is ``{"joints": [names in output order], "skeleton": [[i, j], ...]}``; when every name is
one of COCO's or MPII's (as build/cards.py spells them: ``l_shoulder``, ``head_top``...) the skeleton may be
left out and is that set's, reordered. The search takes minutes at most for a model of the bundled ones' size
on 2 cores; ``--no-eval`` skips the eval set (seconds for a small model).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from build import card_yolo_pose, cards, evaluate, make_models, photos
from local import catalog
from pose import card as card_schema
from pose.detect import open_detector
from pose.errors import ModelError
from pose.image import prepare
from pose.model import PoseModel
from pose.pipeline import estimate_people, uses_detector
from pose.source import sha256_of

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "data"
CHECK_PHOTOS = ("pose.jpg", "Pilots.jpg", "astronaut.png")  # the committed photos of people (their PROVENANCE.md)
JOINT_SETS = {"coco17": "coco", "mpii16": "mpii"}  # build/cards.py's tables
DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT32: "int32", onnx.TensorProto.UINT8: "uint8"}
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # a file name, /opt/model/<name>.onnx and a template value

# The static INT8 recipes tried, in models.json's form (build/make_models.py builds each): MinMax, U8S8,
# per-channel weights, heads and in-graph decoding FP32 (quantize.py's defaults), calibrated on the
# project's photos with augmentation as EfficientPose's recipe is; then the same with the last two
# convolutions kept FP32, and with the first one (it reads the normalised photo; NanoDet's recipe).
BASE_RECIPE = {"sources": ["shared"], "augment": {"crops": 24, "seed": 0},
               "config": {"preset": "u8s8", "method": "minmax", "ops": None, "exclude_nodes": [],
                          "exclude_last_convs": 0}}
CANDIDATES = {
    "static": {},
    "static, last 2 convs FP32": {"config": {"exclude_last_convs": 2}},
    "static, first conv FP32": {"fp32_prefix_convs": 0},
}
TOLERANCE = 1.0  # accuracy points INT8 may lose (COCO AP or PCKh@0.5)
# Mean joint displacement from FP32's, % of the input's longer side, on the eval photos and crops (2026-12-02):
# the served INT8 files 1.2 (MoveNet) and 3.9 (EfficientPose); PP-TinyPose's "static" candidate, which
# collapses (COCO AP 49.9 -> 4.7), 52.8. A guard against a collapse; with the eval set, accuracy decides.
MAX_MOVED = 5.0
MIN_SPEEDUP = 1.1  # FP32 / INT8 median latency at one thread: faster than a shared machine's noise
LATENCY_RUNS = 20


class AddError(Exception):
    """The model cannot be added as asked (the message says why); nothing was added."""


# --- the card ------------------------------------------------------------------------------------------------


def joint_fields(spec: str) -> dict:
    """--joints -> build/cards.make_card's joint arguments (a named set, or a file's names and skeleton)."""
    if spec in JOINT_SETS:
        return {"joint_set_name": JOINT_SETS[spec]}
    data = json.loads(Path(spec).read_text())
    joints = data.get("joints") if isinstance(data, dict) else None
    if not isinstance(joints, list) or not joints:
        raise AddError(f"{spec}: a joint set file is {{\"joints\": [names], \"skeleton\": [[i, j], ...]}}")
    for name, table in (("coco", cards.COCO_JOINTS), ("mpii", cards.MPII_JOINTS)):
        if "skeleton" not in data and set(joints) <= set(table) and len(joints) == len(table):
            return {"joint_set_name": name, "joints": joints}
    if "skeleton" not in data:
        raise AddError(f"{spec}: its joints are not COCO's or MPII's names: give its 'skeleton'")
    return {"joints": joints, "sides": data.get("sides", cards.sides(tuple(joints))), "skeleton": data["skeleton"],
            "flip_pairs": data.get("flip_pairs", [])}


def dims(value: onnx.ValueInfoProto) -> list:
    """A graph input's or output's shape: ints where fixed, None where symbolic."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def input_facts(model: onnx.ModelProto, a: argparse.Namespace) -> dict:
    """The card's input: name, dtype and (where fixed) size and layout from the graph, the rest from `a`."""
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    if len(graph_inputs) != 1:
        raise AddError(f"expected one graph input (a photo), found {[i.name for i in graph_inputs]}")
    value = graph_inputs[0]
    shape, dtype = dims(value), DTYPES.get(value.type.tensor_type.elem_type)
    if len(shape) != 4 or dtype is None:
        raise AddError(f"input {value.name!r}: expected a 4-d float32, int32 or uint8 tensor, found {shape}")
    layout = a.layout or ("NCHW" if shape[1] == 3 != shape[3] else "NHWC" if shape[3] == 3 != shape[1] else None)
    if layout is None:
        raise AddError(f"input {value.name!r} {shape}: its layout is not clear from the graph: give --layout")
    channels, fixed = (shape[1], shape[2:]) if layout == "NCHW" else (shape[3], shape[1:3])
    size = a.size or (tuple(fixed) if None not in fixed else None)
    if size is None:
        raise AddError(f"input {value.name!r} {shape}: its size is symbolic: give --size HxW")
    if channels not in (3, None) or any(f not in (None, s) for f, s in zip(fixed, size)):
        raise AddError(f"input {value.name!r} {shape} is not {layout} of 3 channels and height x width "
                       f"{size[0]}x{size[1]}")
    out = {"name": value.name, "height": size[0], "width": size[1], "layout": layout, "dtype": dtype,
           "color": a.color, "scaling": scaling(a)}
    return {**out, "pad": a.pad} if a.pad is not None else out


def scaling(a: argparse.Namespace) -> dict:
    """--scaling (and --range, --mean, --std) -> the card's input.scaling."""
    if a.scaling == "range":
        return {"kind": "range", "range": list(a.range or (0.0, 1.0))}
    if a.scaling == "imagenet":
        mean, std = cards.IMAGENET_MEAN_RGB, cards.IMAGENET_STD_RGB
        order = slice(None) if a.color == "RGB" else slice(None, None, -1)
        return {"kind": "mean_std", "mean": list(mean[order]), "std": list(std[order])}
    if a.scaling == "mean_std":
        if not (a.mean and a.std):
            raise AddError("--scaling mean_std needs --mean R G B and --std R G B (on 0..1 values)")
        return {"kind": "mean_std", "mean": a.mean, "std": a.std}
    return {"kind": "raw"}


def output_facts(model: onnx.ModelProto, a: argparse.Namespace, joints: int) -> dict:
    """The card's output: the graph's output (the one named by --output, or the only one) read as --kind."""
    outputs = {o.name: dims(o) for o in model.graph.output}
    name = a.output or (next(iter(outputs)) if len(outputs) == 1 else None)
    if name not in outputs:
        raise AddError(f"the graph's outputs are {sorted(outputs)}: name the one to read with --output")
    if a.kind == "keypoints":
        return {"kind": "keypoints", "name": name, "encoding": "yx_score_normalized"}
    if a.kind == "yolo_pose":
        return {"kind": "yolo_pose", "name": name, "score_threshold": a.score_threshold, "nms_iou": a.nms_iou,
                "person_detector": a.detector}
    shape = outputs[name]
    layout = "NHWC" if len(shape) == 4 and shape[3] == joints and shape[1] != joints else "NCHW"
    return {"kind": "heatmaps", "name": name, "layout": layout}


def write_card(a: argparse.Namespace, dst: Path) -> dict:
    """a.src with its card -> dst (weights unchanged); returns the card."""
    model = onnx.load(str(a.src))
    joint_args = joint_fields(a.joints)
    joints = len(joint_args.get("joints") or cards.joint_set(joint_args["joint_set_name"])["joints"])
    extra = {} if a.whole_photo else {"whole_photo": False}
    try:
        card = cards.make_card(name=a.name, version=a.model_version, source=a.origin, license=a.licence,
                               quantization="fp32", input=input_facts(model, a),
                               output=output_facts(model, a, joints), threshold=a.threshold, **joint_args, **extra)
    except ModelError as exc:
        raise AddError(str(exc)) from None
    cards.set_card(model, card)
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return card


# --- the check -----------------------------------------------------------------------------------------------


def default_detector(card: card_schema.Card):
    """The service's default person detector when the card asks for one (uses_detector), else None."""
    if not uses_detector(card):
        return None
    return open_detector(catalog.get(catalog.default("detector")).served_path, threads=2)


def check_photos(path: Path) -> list[str]:
    """The file opens in the service and answers each committed photo through its pipeline with finite
    outputs and joints; one line a photo. AddError (or ModelError) saying what failed."""
    model = PoseModel(path, threads=2)  # the card must fit the graph: PoseModel runs it once on a blank input
    detector, lines = default_detector(model.card), []
    for name in CHECK_PHOTOS:
        rgb = photos.load_rgb(PHOTOS / name)
        raw = model.run(prepare(rgb, model.card.input)[0])
        if not np.isfinite(raw).all():
            raise AddError(f"{name}: the model's output on the whole photo is not finite (NaN or infinity): "
                           "are the input's scaling and colour order right?")
        people = estimate_people(rgb, model, detector).people
        if not all(np.isfinite(p.points).all() and np.isfinite(p.scores).all() for p in people):
            raise AddError(f"{name}: the pipeline placed joints that are not finite")
        sure = [int((p.scores >= model.card.threshold).sum()) for p in people]
        lines.append(f"{name}: people {len(people)}, joints scoring at least {model.card.threshold:g}: {sure}")
    return lines


def accuracy(path: Path) -> tuple[str, float] | None:
    """The quick accuracy figure on ../shared/eval through the service's pipeline: (what, points), or None
    (no eval set, or joints it cannot score)."""
    if not (evaluate.EVAL / "coco_multi.json").is_file():
        return None
    model = PoseModel(path, threads=2)
    pipeline = evaluate.Pipeline(model, default_detector(model.card), evaluate.COCO_MAX_PEOPLE)
    if set(cards.COCO_JOINTS) <= set(model.card.joints):
        return "COCO keypoint AP", evaluate.coco_multi(pipeline.people, model.card.joints)["AP"]
    if model.card.output.kind == "yolo_pose" or not set(cards.MPII_JOINTS) & set(model.card.joints):
        return None  # its own people may be none, which the one-person protocol cannot score
    scored = evaluate.run(pipeline, protocols=("whole",))
    return "MPII PCKh@0.5", evaluate.summarise(scored[("whole", "mpii")])["pckh@0.5"]


# --- the recipe search ---------------------------------------------------------------------------------------


def agreement_inputs(use_eval: bool) -> list[np.ndarray]:
    """What INT8's joints are compared with FP32's on: the eval set's photos and labelled people's crops, or
    without it the committed photos, mirrored and cropped (seeded apart from the calibration's crops)."""
    if use_eval and (evaluate.EVAL / "mpii.json").is_file():
        rgbs, crops = {}, []
        for _, instances in evaluate.load_labels().values():
            for inst in instances:
                rgbs.setdefault(inst["image"], evaluate.read_rgb(evaluate.EVAL, inst["image"]))
                crops.append(evaluate.crop_of(rgbs[inst["image"]], inst["crop"])[0])
        return [*rgbs.values(), *crops]
    return [x for i, name in enumerate(CHECK_PHOTOS) for x in make_models.augmented_rgbs(
        photos.load_rgb(PHOTOS / name), crops=8, seed=777 + i, photometric=False)]


def looks(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The model's joints (K, 2) on each input, one look at it whole (no detector, no closer look)."""
    model = PoseModel(path, threads=2)
    return [model.look(x, [None]).points[0] for x in inputs]


def moved(points: list[np.ndarray], reference: list[np.ndarray], inputs: list[np.ndarray]) -> float:
    """Mean distance of joints from the reference's, in % of each input's longer side."""
    d = [np.linalg.norm(p - r, axis=1) / max(x.shape[:2]) for p, r, x in zip(points, reference, inputs)]
    return round(100 * float(np.concatenate(d).mean()), 3)


def recipes() -> dict[str, dict]:
    """CANDIDATES as whole recipes: BASE_RECIPE with each one's overrides (its config merged)."""
    out = {}
    for label, override in CANDIDATES.items():
        recipe = copy.deepcopy(BASE_RECIPE)
        recipe.update({k: v for k, v in override.items() if k != "config"})
        recipe["config"].update(override.get("config", {}))
        out[label] = recipe
    return out


def search(name: str, src: Path, workdir: Path, inputs: list[np.ndarray], use_eval: bool) -> list[dict]:
    """Each candidate recipe built from src and measured against it: a row with its file, accuracy (None
    without the eval set), joints moved (%) and speed-up at one thread, or its error."""
    reference, rows = looks(src, inputs), []
    for i, (label, recipe) in enumerate(recipes().items()):
        dst = workdir / f"{name}.{i}.int8.onnx"
        print(f"  {label} ...", flush=True)
        try:
            make_models.build(name, recipe, dst=dst, src=src)
            ms = make_models.latency({"fp32": src, "int8": dst}, threads=1, runs=LATENCY_RUNS)
            figure = accuracy(dst) if use_eval else None
            rows.append({"label": label, "recipe": recipe, "path": dst, "accuracy": figure and figure[1],
                         "moved": moved(looks(dst, inputs), reference, inputs),
                         "speedup": round(ms["fp32"] / ms["int8"], 2)})
        except FileNotFoundError as exc:  # no calibration photos: no candidate can be built
            return [{"label": label, "error": str(exc)}]
        except Exception as exc:  # noqa: BLE001  a graph quantize.py cannot take: this candidate fails
            rows.append({"label": label, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
    return rows


def failures(row: dict, fp32: float | None, tolerance: float, max_moved: float,
             min_speedup: float = MIN_SPEEDUP) -> list[str]:
    """Why a candidate may not be served (empty: it may)."""
    if "error" in row:
        return ["it could not be built"]
    out = []
    if fp32 is not None and row["accuracy"] is not None and row["accuracy"] < fp32 - tolerance:
        out.append(f"loses more than {tolerance:g} point(s)")
    if row["moved"] > max_moved:
        out.append(f"moves joints more than {max_moved:g}%")
    if row["speedup"] < min_speedup:
        out.append(f"is not x{min_speedup:g} faster")
    return out


def choose(rows: list[dict], fp32: float | None, tolerance: float, max_moved: float,
           min_speedup: float = MIN_SPEEDUP) -> dict | None:
    """The most accurate, then fastest, candidate without failures; None if every one has some."""
    fine = [r for r in rows if not failures(r, fp32, tolerance, max_moved, min_speedup)]
    return max(fine, key=lambda r: (r["accuracy"] if r["accuracy"] is not None else 0.0, r["speedup"]),
               default=None)


def describe(row: dict, fp32: tuple[str, float] | None) -> str:
    """One candidate's figures, as models.json's `why` quotes them."""
    if "error" in row:
        return f"{row['label']}: {row['error']}"
    figure = f"{fp32[0]} {fp32[1]:.1f} -> {row['accuracy']:.1f}, " if fp32 and row["accuracy"] is not None else ""
    return (f"{row['label']}: {figure}joints moved {row['moved']:.2f}% of the input side from FP32's, "
            f"x{row['speedup']:.2f} at one thread")


def quantized(a: argparse.Namespace, src: Path, fp32: tuple[str, float] | None) -> tuple[str, dict | None, str]:
    """Search INT8 recipes for the FP32 file src (unless --no-quantize): (the served file, relative to src's
    folder; the INT8 recipe for models.json, or None; why)."""
    if a.no_quantize:
        return src.name, None, "not quantized: added with --no-quantize"
    date = dt.date.today().isoformat()
    print(f"quantizing: {len(CANDIDATES)} static INT8 recipes, each against FP32", flush=True)
    with tempfile.TemporaryDirectory(prefix="add_model.") as tmp:
        rows = search(a.name, src, Path(tmp), agreement_inputs(not a.no_eval), not a.no_eval)
        limits = (fp32 and fp32[1], a.tolerance, a.max_moved, a.min_speedup)
        for row in rows:
            print(f"  {describe(row, fp32)}: " + (", ".join(failures(row, *limits)) or "within the limits"))
        best = choose(rows, *limits)
        if best is None:
            return src.name, None, (f"build/add_model.py on {date}: no static INT8 recipe was within tolerance and "
                                    "faster: " + "; ".join(describe(r, fp32) for r in rows))
        served = f"int8/{a.name}.int8.onnx"
        (src.parent / "int8").mkdir(exist_ok=True)
        shutil.move(best["path"], src.parent / served)
    why = f"chosen by build/add_model.py on {date} among {len(rows)} static recipes: {describe(best, fp32)}"
    return served, {**best["recipe"], "why": why}, why


# --- the list ------------------------------------------------------------------------------------------------


def entry(a: argparse.Namespace, argv: list[str], served: str, recipe: dict | None, why: str) -> dict:
    """The model's models.json entry; its files (under the catalog's folder) must be written."""
    folder, source = a.catalog.parent, f"{a.name}.onnx"
    return {"name": a.name, "title": a.title or a.name, "role": "pose", "licence": a.licence, "origin": a.origin,
            "in_layer": a.in_layer, "source": source, "served": served,
            "sha256": {f: sha256_of(folder / f) for f in dict.fromkeys([source, served])},
            "recipe": {"build": "python -m build.add_model " + shlex.join(argv), "quantize": recipe,
                       **({} if recipe else {"why_fp32": why})}}


def provenance(e: dict, card: dict, why: str) -> str:
    """A MODELS.md section for the entry: what a reader needs to trace the file (to be completed by hand)."""
    return (f"\n## {e['title']}\n\n"
            f"`{e['source']}` ({card['output']['kind']} output, {len(card['joints'])} joints, input "
            f"{card['input']['width']}x{card['input']['height']} {card['input']['layout']} {card['input']['color']}), "
            f"served as `{e['served']}`: {why}. Licence: {e['licence']}. Origin: {e['origin']}. "
            f"Added on {dt.date.today().isoformat()} by `{e['recipe']['build']}`.\n")


def todo(e: dict, card: dict, folder: Path) -> list[str]:
    """What is left to do by hand once the entry is in the list."""
    steps = [f"complete the '{e['title']}' section of MODELS.md (who made the weights, how; the licence text "
             "in models/LICENSES/ if it is a new one)"]
    if e["in_layer"]:
        steps.append(f"template.yaml: add `- {e['name']}` to ModelName's AllowedValues and '{e['title']}' to its "
                     "Description (tests/test_template.py checks both against models.json); `make layers`")
    else:
        detector = "true" if uses_detector(card_schema.parse(json.dumps(card))) else "false"
        steps.append(f"serve it without the layer: upload {folder / e['served']} to S3 and deploy with "
                     f"ModelS3Uri=s3://... ModelSha256={e['sha256'][e['served']]} DetectPeople={detector}")
    return steps + ["`make test` (tests/test_models_catalog.py checks the files, sha256 and cards)"]


def add(a: argparse.Namespace, argv: list[str]) -> tuple[dict, dict]:
    """Card, check, quantization and entry, in order; the files written are removed if a step fails."""
    folder = a.catalog.parent
    if not NAME.match(a.name) or a.name in catalog.read(a.catalog)[1]:
        raise AddError(f"{a.name!r} is in {a.catalog} already, or not a name of lower-case letters, digits, '.-_'")
    src, int8 = folder / f"{a.name}.onnx", folder / "int8" / f"{a.name}.int8.onnx"
    if src.exists() or int8.exists():
        raise AddError(f"{src} or {int8} exists already: remove it, or pick another --name")
    try:
        card = write_card(a, src)
        print(f"{src}: card written ({card['output']['kind']}, {len(card['joints'])} joints); the committed photos:")
        for line in check_photos(src):
            print(f"  {line}")
        fp32 = None if a.no_eval else accuracy(src)
        print(f"  FP32 on ../shared/eval: {fp32[0]} {fp32[1]:.1f}" if fp32 else "  (no accuracy figure: "
              + ("--no-eval)" if a.no_eval else "no eval set, or joints it cannot score)"))
        served, recipe, why = quantized(a, src, fp32)
        e = entry(a, argv, served, recipe, why)
        catalog.add(e, a.catalog)
    except BaseException:
        src.unlink(missing_ok=True)
        int8.unlink(missing_ok=True)
        raise
    models_md = folder / "MODELS.md"
    if models_md.is_file():
        with models_md.open("a") as f:
            f.write(provenance(e, card, why))
    return e, card


def size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="the ONNX pose model (its weights are copied unchanged)")
    ap.add_argument("--name", required=True, help="its name in models.json, replies and /opt/model/<name>.onnx")
    ap.add_argument("--title", help="its title in docs and the template's description (default: the name)")
    ap.add_argument("--kind", required=True, choices=card_schema.POSE_OUTPUTS, help="how to read its output")
    ap.add_argument("--joints", required=True, help="coco17, mpii16 or a JSON file (the module's docstring)")
    ap.add_argument("--color", "--colour", required=True, choices=card_schema.COLORS, help="channel order")
    ap.add_argument("--scaling", required=True, choices=("raw", "range", "mean_std", "imagenet"))
    ap.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"), help="range: 0..255 -> [LO, HI] (0 1)")
    ap.add_argument("--mean", type=float, nargs=3, help="mean_std: on 0..1 values, in the input's channel order")
    ap.add_argument("--std", type=float, nargs=3, help="mean_std: on 0..1 values, in the input's channel order")
    ap.add_argument("--licence", "--license", required=True, help="of the weights, e.g. Apache-2.0, AGPL-3.0")
    ap.add_argument("--origin", required=True, help="who made the weights and from what (the card's source)")
    ap.add_argument("--size", type=size, help="HxW, e.g. 256x192 (default: the graph's)")
    ap.add_argument("--layout", choices=card_schema.LAYOUTS, help="the input's (default: the graph's)")
    ap.add_argument("--pad", type=int, help="the letterbox's fill, 0..255 (default 0; Ultralytics: 114)")
    ap.add_argument("--output", help="the graph output to read (default: its only one)")
    ap.add_argument("--threshold", type=float, default=0.5, help="default joint score threshold (0.5)")
    ap.add_argument("--crops-only", dest="whole_photo", action="store_false",
                    help="trained on person crops: its look at a whole photo is no answer of its own")
    ap.add_argument("--score-threshold", type=float, default=card_yolo_pose.SCORE_THRESHOLD, help="yolo_pose")
    ap.add_argument("--nms-iou", type=float, default=card_yolo_pose.NMS_IOU, help="yolo_pose")
    ap.add_argument("--detector", action="store_true", help="yolo_pose: run on the person detector's crops")
    ap.add_argument("--model-version", default="1", help="the card's version")
    ap.add_argument("--in-layer", action="store_true", help="the model layer ships it (then edit template.yaml)")
    ap.add_argument("--no-quantize", action="store_true", help="serve the FP32 file, no INT8 search")
    ap.add_argument("--no-eval", action="store_true", help="no accuracy on ../shared/eval (the search then "
                    "decides on agreement with FP32 on the committed photos)")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE, help="accuracy points INT8 may lose")
    ap.add_argument("--max-moved", type=float, default=MAX_MOVED, help="mean joint shift from FP32, %% of side")
    ap.add_argument("--min-speedup", type=float, default=MIN_SPEEDUP, help="FP32/INT8 latency INT8 must reach "
                    "(0: INT8 for its size alone)")
    ap.add_argument("--catalog", type=Path, default=catalog.CATALOG, help="the list; files go beside it")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    try:
        e, card = add(a, argv)
    except (AddError, ModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.catalog}: added {e['name']}, served as {e['served']}")
    print("left to do by hand:")
    for step in todo(e, card, a.catalog.parent):
        print(f"- {step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
