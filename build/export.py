"""Export Simple Baselines (pose_resnet) to ONNX with its model card.

    python -m build.export --checkpoint pose_resnet_50_256x256.pth.tar --arch resnet50 --dataset mpii \
        --out models/simple-baselines-r50-mpii.onnx
    python -m build.export --random-init --arch resnet50 --dataset mpii --out out/sb-r50-mpii-random.onnx

The graph: opset 17, input ``input`` (N, 3, H, W) float32 with a dynamic batch, output ``heatmaps``
(N, joints, H/4, W/4); ``batch_dim.make_batch_dynamic`` names the batch ``N`` as in every served model and
checks that no node assumes one image. The file is checked with onnx.checker and compared with PyTorch on real photos,
preprocessed by the service's own code (``pose.image``) from the card that is written into the file.

Colour order and normalisation. The official training (microsoft/human-pose-estimation.pytorch,
``lib/dataset/JointsDataset.py``) reads images with ``cv2.imread``, which yields BGR, never converts them,
and then applies torchvision's ``ToTensor`` and ``Normalize(mean=[0.485, 0.456, 0.406],
std=[0.229, 0.224, 0.225])``. Normalize works on channel positions, so the official weights were trained
on B, G, R channels normalised with the ImageNet values in their usual (R, G, B) listing: B with 0.485/0.229,
G with 0.456/0.224, R with 0.406/0.225. The card lists ``mean``/``std`` in the tensor's channel order, so
for ``--color BGR`` (the default, right for the official checkpoints) the ImageNet values are written
unchanged, which reproduces the training exactly; reordering them to (0.406, 0.456, 0.485) would be "more
correct" ImageNet statistics but not what the weights saw. ``--color RGB`` is for checkpoints trained on
RGB input (e.g. re-trained with a ``cv2.cvtColor``), with the same values in the same positions.

``--random-init`` builds generated weights (``simple_baselines.randomize``) because the real checkpoints
cannot be downloaded in this environment; the card then says ``"weights": "random-init"`` (for a real
checkpoint it gives its sha256), and such a model is for size, speed and exactness work only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from build import batch_dim
from build import cards
from build import photos
from build import simple_baselines as sb
from pose.session import session_options

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "heatmaps"
SOURCE = ("Simple Baselines for Human Pose Estimation and Tracking (Xiao, Wu, Wei, ECCV 2018), "
          "microsoft/human-pose-estimation.pytorch")
LICENSE = "MIT"
COPYRIGHT = "Copyright (c) Microsoft Corporation"


def card_for(arch: str, dataset: str, height: int, width: int, color: str = "BGR", weights: str = "random-init",
             **extra) -> dict:
    """The Simple Baselines model card (validated by the service's own parser)."""
    depth = arch.removeprefix("resnet")
    return cards.make_card(
        name=f"simple-baselines-{arch}-{dataset}",
        version=f"pose_resnet_{depth}_{height}x{width}",
        source=SOURCE,
        license=LICENSE,
        quantization="fp32",
        input={
            "name": INPUT_NAME, "height": height, "width": width, "layout": "NCHW", "dtype": "float32",
            "color": color,
            # in the tensor's channel order; unchanged ImageNet values for BGR: see the module docstring
            "scaling": {"kind": "mean_std", "mean": list(cards.IMAGENET_MEAN_RGB), "std": list(cards.IMAGENET_STD_RGB)},
        },
        output={"kind": "heatmaps", "name": OUTPUT_NAME, "layout": "NCHW"},
        joint_set_name=dataset,
        threshold=0.6,
        copyright=COPYRIGHT,
        weights=weights,
        architecture={"backbone": arch, "head": "3 x (ConvTranspose 4x4/2, 256 ch, BN, ReLU) + 1x1 conv",
                      "heatmap_size": [height // sb.HEATMAP_STRIDE, width // sb.HEATMAP_STRIDE]},
        **extra,
    )


def synthetic_batch(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images, roughly ImageNet-normalised; a stand-in when no photos are available."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, max(2, height // 16), max(2, width // 16), generator=g)
    fine = torch.randn(n, 3, height, width, generator=g) * 0.2
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) + fine


def photo_batch(card: dict, paths: list[Path], flips: bool = True) -> torch.Tensor:
    """The photos as the service feeds them, stacked (with mirrored copies when flips)."""
    x = torch.from_numpy(np.concatenate(photos.prepare_all(paths, card)))
    return torch.cat([x, x.flip(-1)]) if flips else x


def inline_identity_initializers(model: onnx.ModelProto) -> int:
    """The TorchScript exporter shares identical initializers through Identity nodes; give each its own copy."""
    inits = {i.name: i for i in model.graph.initializer}
    keep, n = [], 0
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
            n += 1
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return n


def export(model: sb.PoseResNet, out: str | Path, card: dict, opset: int = OPSET) -> onnx.ModelProto:
    """Trace to ONNX (dynamic batch), attach the card, check and save. Returns the saved model."""
    h, w = card["input"]["height"], card["input"]["width"]
    model.eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(
            model, (torch.zeros(1, 3, h, w),), str(raw), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
        m = onnx.load(str(raw))
    inline_identity_initializers(m)
    batch_dim.make_batch_dynamic(m)
    m.producer_name = "build/export.py"
    m.doc_string = f"{card['name']} ({card['weights']})"
    cards.set_card(m, card)
    onnx.checker.check_model(m, full_check=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out))
    return m


def session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A session with the service's options (pose/model.py; `threads` None: one per CPU)."""
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


@torch.no_grad()
def parity(model: sb.PoseResNet, onnx_path: str | Path, inputs: list[np.ndarray]) -> dict:
    """Max abs difference between PyTorch and onnxruntime per input, plus a batch of all of them."""
    sess = session(onnx_path)
    model.eval()
    diffs = []
    for x in inputs:
        ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {INPUT_NAME: x})[0]
        diffs.append(float(np.abs(ref - got).max()))
    batch = np.concatenate(inputs)
    ref = model(torch.from_numpy(batch)).numpy()
    got = sess.run(None, {INPUT_NAME: batch})[0]
    return {"per_image_max_abs": max(diffs), "batch": len(inputs), "batch_max_abs": float(np.abs(ref - got).max()),
            "heatmap_abs_max": float(np.abs(ref).max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="official pose_resnet checkpoint (.pth.tar / .pth)")
    src.add_argument("--random-init", action="store_true", help="generated weights (no checkpoint available)")
    ap.add_argument("--arch", choices=sorted(sb.ARCHS), default="resnet50")
    ap.add_argument("--dataset", choices=sorted(sb.DATASETS), default="mpii")
    ap.add_argument("--height", type=int, help="input height (default: the dataset's official size)")
    ap.add_argument("--width", type=int, help="input width (default: the dataset's official size)")
    ap.add_argument("--color", choices=("BGR", "RGB"), default="BGR",
                    help="channel order the weights were trained with (official checkpoints: BGR)")
    ap.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    ap.add_argument("--trust-pickle", action="store_true", help="allow full unpickling of a trusted checkpoint")
    ap.add_argument("--images", nargs="*", help="photos or folders for the parity check (and the BatchNorm "
                    "statistics of --random-init); default: ../shared/images and ../shared/eval/images")
    ap.add_argument("--max-images", type=int, default=8, help="photos used for parity / BN statistics")
    ap.add_argument("--opset", type=int, default=OPSET)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    size = sb.DATASETS[args.dataset]
    h, w = args.height or size["height"], args.width or size["width"]
    model = sb.build(args.arch, args.dataset)
    image_dirs = args.images if args.images is not None else [str(d) for d in reversed(photos.default_dirs())]
    paths = photos.list_images(image_dirs)[: args.max_images] if image_dirs else []
    probe_card = card_for(args.arch, args.dataset, h, w, args.color)

    extra = {}
    if args.checkpoint:
        try:
            weights = "sha256:" + sb.load_checkpoint(model, args.checkpoint, args.trust_pickle)
        except sb.CheckpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        extra["checkpoint"] = Path(args.checkpoint).name
    else:
        weights = "random-init"
        if paths:
            batch, bn_from = photo_batch(probe_card, paths), f"{len(paths)} photos and their mirror images"
        else:
            batch, bn_from = synthetic_batch(8, h, w, args.seed), "8 synthetic smooth-noise images"
        sb.randomize(model, batch, seed=args.seed)
        extra["random_init"] = {"seed": args.seed, "bn_statistics": bn_from,
                                "note": "generated weights, not a trained model: for size/speed/exactness work only"}

    card = card_for(args.arch, args.dataset, h, w, args.color, weights, **extra)
    export(model, args.out, card, args.opset)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB), weights {weights}")
    if paths:
        p = parity(model, args.out, photos.prepare_all(paths, card))
        print(f"parity with PyTorch on {len(paths)} photos: max abs diff {p['per_image_max_abs']:.3g} "
              f"(batch of {p['batch']}: {p['batch_max_abs']:.3g}; heatmap |max| {p['heatmap_abs_max']:.3g})")
    else:
        print("no photos found (../shared absent?): parity check skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
