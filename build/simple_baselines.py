"""Simple Baselines ("pose_resnet", Xiao, Wu and Wei, ECCV 2018) in plain torch.nn, and its checkpoint loader.

The network: a ResNet backbone (Bottleneck blocks, stride in the 3x3 conv: the "pytorch" style of the
official configs) without its pooling and classifier, then three ConvTranspose2d(4x4, stride 2, padding 1,
no bias, 256 channels) each followed by BatchNorm2d and ReLU, then a 1x1 conv (with bias) giving one heatmap
per joint at a quarter of the input resolution (256x256 -> 64x64 for MPII, 256x192 -> 64x48 for COCO).

Module names are exactly those of the official checkpoints (microsoft/human-pose-estimation.pytorch,
e.g. ``pose_resnet_50_256x256.pth.tar``), so they load with ``strict=True``::

    conv1, bn1, layer1..layer4 (Bottleneck: conv1 bn1 conv2 bn2 conv3 bn3 [downsample.0 downsample.1]),
    deconv_layers.{0,3,6} (ConvTranspose2d), deconv_layers.{1,4,7} (BatchNorm2d), ReLU at 2, 5, 8,
    final_layer

``load_checkpoint`` accepts a plain state dict, a ``{"state_dict": ...}`` wrapper (the training
``checkpoint.pth.tar``) and keys prefixed ``module.`` (saved from ``DataParallel``), and loads strictly:
a checkpoint of another layout, depth or joint count fails with a message naming what differs.

``randomize`` gives generated weights with realistic activations (for builds and benchmarks where the
real checkpoints cannot be downloaded): He-initialised convolutions, random BatchNorm affine parameters,
running statistics measured on a real batch (so every BatchNorm normalises what it actually sees, as in
a trained network), and a final layer scaled so that heatmaps peak near 1 like trained ones.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from pose.source import sha256_of

ARCHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}
DATASETS = {  # joints and the official input size (height, width)
    "mpii": {"num_joints": 16, "height": 256, "width": 256},
    "coco": {"num_joints": 17, "height": 256, "width": 192},
}
BN_MOMENTUM = 0.1
DECONV_CHANNELS = 256
HEATMAP_STRIDE = 4


class CheckpointError(ValueError):
    """The checkpoint cannot be read, or its keys or shapes are not those of the network."""


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class PoseResNet(nn.Module):
    """Simple Baselines: ResNet backbone, three 2x deconvolutions, a 1x1 conv to heatmaps."""

    def __init__(self, arch: str = "resnet50", num_joints: int = 16, deconv_channels: int = DECONV_CHANNELS):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; one of {sorted(ARCHS)}")
        self.arch = arch
        self.num_joints = num_joints
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), ARCHS[arch])):
            layer, inplanes = _make_layer(inplanes, planes, blocks, stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", layer)
        deconv: list[nn.Module] = []
        for _ in range(3):
            deconv += [
                nn.ConvTranspose2d(inplanes, deconv_channels, kernel_size=4, stride=2, padding=1,
                                   output_padding=0, bias=False),
                nn.BatchNorm2d(deconv_channels, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]
            inplanes = deconv_channels
        self.deconv_layers = nn.Sequential(*deconv)
        self.final_layer = nn.Conv2d(deconv_channels, num_joints, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


def _make_layer(inplanes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out, momentum=BN_MOMENTUM),
        )
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out


def build(arch: str = "resnet50", dataset: str = "mpii") -> PoseResNet:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; one of {sorted(DATASETS)}")
    return PoseResNet(arch, DATASETS[dataset]["num_joints"])


# --- checkpoints ------------------------------------------------------------------------------------------




def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> Any:
    """torch.load on CPU; tensors and plain containers only unless the file is trusted."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # pickle.UnpicklingError and friends
        hint = "" if trust_pickle else (" (it holds more than tensors; if you trust the file, "
                                        "pass --trust-pickle to load it with full unpickling)")
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0][:300]}{hint}") from None


def extract_state_dict(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    """A plain state dict from a plain dict, a {"state_dict": ...} wrapper, with or without 'module.'."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"no state dict in the checkpoint (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"the checkpoint is not a state dict: entries that are not tensors, e.g. {bad[:3]}")
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):
        return OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return OrderedDict(obj.items())


def describe_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """arch and joint count as the keys and shapes of an official-layout state dict say."""
    blocks = []
    for i in range(1, 5):
        idx = {int(m.group(1)) for k in sd if (m := re.match(rf"layer{i}\.(\d+)\.", k))}
        blocks.append(max(idx) + 1 if idx else 0)
    arch = next((a for a, b in ARCHS.items() if tuple(blocks) == b), None)
    w = sd.get("final_layer.weight")
    return {"blocks": tuple(blocks), "arch": arch, "num_joints": int(w.shape[0]) if w is not None else None}


def load_state_dict(model: PoseResNet, obj: Any) -> None:
    """Load a checkpoint object (see extract_state_dict) strictly; CheckpointError says what differs."""
    sd = extract_state_dict(obj)
    want = set(model.state_dict())
    # Checkpoints from PyTorch 0.4.0 (the official ones) have no BatchNorm num_batches_tracked; that
    # buffer is not a weight, and BatchNorm fills it in when absent, so it is not counted as missing.
    missing = sorted(k for k in want - set(sd) if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(set(sd) - want)
    if missing or unexpected:
        found = describe_state_dict(sd)
        lines = [f"checkpoint keys do not match Simple Baselines {model.arch} "
                 f"({len(missing)} missing, {len(unexpected)} unexpected)"]
        if missing:
            lines.append(f"  missing, e.g.: {missing[:5]}")
        if unexpected:
            lines.append(f"  unexpected, e.g.: {unexpected[:5]}")
        prefixes = sorted({k.split(".", 1)[0] + "." for k in unexpected if "." in k} - {k.split(".", 1)[0] + "." for k in want})
        if prefixes:
            lines.append(f"  unknown top-level names {prefixes[:5]}: not the official pose_resnet layout "
                         "(conv1, bn1, layer1..4, deconv_layers, final_layer)?")
        if found["arch"] and found["arch"] != model.arch:
            lines.append(f"  the checkpoint looks like {found['arch']} (blocks per stage {found['blocks']}); "
                         f"use --arch {found['arch']}")
        raise CheckpointError("\n".join(lines))
    shapes = model.state_dict()
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs network {tuple(shapes[k].shape)}"
             for k, v in sd.items() if tuple(v.shape) != tuple(shapes[k].shape)]
    if wrong:
        hint = ""
        n = describe_state_dict(sd)["num_joints"]
        if n is not None and n != model.num_joints:
            ds = next((d for d, v in DATASETS.items() if v["num_joints"] == n), None)
            hint = f"\n  the checkpoint has {n} joints" + (f": use --dataset {ds}" if ds else "")
        raise CheckpointError(f"checkpoint shapes do not match Simple Baselines {model.arch}: {wrong[:5]}{hint}")
    model.load_state_dict(sd, strict=True)


def load_checkpoint(model: PoseResNet, path: str | Path, trust_pickle: bool = False) -> str:
    """Load a checkpoint file strictly into model; returns the file's sha256."""
    load_state_dict(model, read_checkpoint(path, trust_pickle))
    return sha256_of(path)


# --- generated weights ------------------------------------------------------------------------------------


@torch.no_grad()
def randomize(model: PoseResNet, batch: torch.Tensor, seed: int = 0) -> PoseResNet:
    """Random weights whose activations look like a trained network's (see the module docstring).

    batch: (N, 3, H, W) preprocessed inputs (real photos, ideally) used to measure the BatchNorm
    running statistics and the heatmap scale. Deterministic for a given seed and batch.
    """
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            # He init on the fan-in (for a ConvTranspose2d the per-output fan-in is C_in * k * k / stride^2)
            fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.weight.shape[0] * 4
            m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=g)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            # the last BN of a residual branch is small in trained ResNets (which keeps deep random
            # networks from amplifying small perturbations, such as INT8 rounding, chaotically)
            lo, hi = (0.05, 0.25) if name.endswith("bn3") else (0.5, 1.0)
            m.weight.uniform_(lo, hi, generator=g)
            m.bias.normal_(0.0, 0.1, generator=g)
    # running statistics: one training-mode pass with a cumulative average over one batch makes the
    # running mean/var those of the batch, layer by layer as eval mode will see them
    saved = {}
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            saved[m] = m.momentum
            m.momentum = None
            m.reset_running_stats()
    model.train()
    try:
        model(batch)
    finally:
        model.eval()
        for m, momentum in saved.items():
            m.momentum = momentum
    # heatmaps: zero-mean, peaking near 1 like the Gaussian targets of training
    out = model(batch)
    mean = out.mean(dim=(0, 2, 3))
    peak = (out - mean[None, :, None, None]).amax(dim=(2, 3)).mean(dim=0).clamp_min(1e-6)
    model.final_layer.weight.div_(peak[:, None, None, None])
    model.final_layer.bias.copy_(-mean / peak)
    return model
