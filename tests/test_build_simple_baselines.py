"""Simple Baselines build: official checkpoint layout, strict loading, ONNX export parity, exact deconv rewrite.

ResNet-50 throughout (as the official MPII checkpoint); small inputs where the input size does not matter.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from build import cards
from build import export
from build import photos
from build import rewrite
from build import simple_baselines as sb

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.tools

SMALL = 64  # input side for the export tests: a 16x16 heatmap, every layer still exercised
PHOTOS = [ROOT / "tests" / "data" / name for name in ("pose.jpg", "Pilots.jpg", "astronaut.png")]  # committed


def official_state_dict(model: torch.nn.Module) -> dict:
    """The model's weights as the official PyTorch 0.4.0 checkpoints hold them (no num_batches_tracked)."""
    return {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def r50() -> sb.PoseResNet:
    """Generated weights, BatchNorm statistics from real photos (heatmaps of a realistic scale)."""
    torch.manual_seed(0)
    card = export.card_for("resnet50", "mpii", SMALL, SMALL)
    return sb.randomize(sb.build("resnet50", "mpii"), export.photo_batch(card, PHOTOS), seed=0)


@pytest.fixture(scope="module")
def fresh() -> sb.PoseResNet:
    """A network to load checkpoints into (every load overwrites all of it)."""
    return sb.build("resnet50", "mpii")


@pytest.fixture(scope="module")
def exported(r50, tmp_path_factory) -> tuple[Path, dict]:
    card = export.card_for("resnet50", "mpii", SMALL, SMALL, "BGR", "random-init")
    path = tmp_path_factory.mktemp("export") / "sb-r50.onnx"
    export.export(r50, path, card)
    return path, card


def test_module_names_are_those_of_the_official_checkpoints():
    keys = sb.build("resnet50", "mpii").state_dict()
    for k in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_mean",
              "layer4.2.conv3.weight", "layer4.2.bn3.bias", "deconv_layers.0.weight", "deconv_layers.1.running_mean",
              "deconv_layers.3.weight", "deconv_layers.4.weight", "deconv_layers.6.weight", "deconv_layers.7.bias",
              "final_layer.weight", "final_layer.bias"):
        assert k in keys, k
    assert tuple(keys["deconv_layers.0.weight"].shape) == (2048, 256, 4, 4)
    assert tuple(keys["final_layer.weight"].shape) == (16, 256, 1, 1)
    assert not any(k.startswith(("deconv_layers.2", "deconv_layers.5", "deconv_layers.8", "fc.", "avgpool")) for k in keys)
    assert "deconv_layers.0.bias" not in keys  # DECONV_WITH_BIAS = False
    for arch, blocks in sb.ARCHS.items():
        with torch.device("meta"):  # shapes only
            sd = sb.PoseResNet(arch, 17).state_dict()
        assert sb.describe_state_dict(sd) == {"blocks": blocks, "arch": arch, "num_joints": 17}


@pytest.mark.parametrize("wrapping", ["plain", "state_dict wrapper", "module. prefix"])
def test_official_checkpoint_loads_strictly(r50, fresh, wrapping):
    sd = official_state_dict(r50)
    obj = {
        "plain": sd,
        "state_dict wrapper": {"epoch": 140, "model": "pose_resnet", "state_dict": sd, "perf": 0.88},
        "module. prefix": {"module." + k: v for k, v in sd.items()},
    }[wrapping]
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    sb.load_state_dict(fresh, obj)
    got = fresh.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_checkpoint_file_of_the_training_loop_loads_strictly(r50, fresh, tmp_path):
    """checkpoint.pth.tar as the training saves it: a wrapper around DataParallel's module.-prefixed weights."""
    sd = official_state_dict(r50)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 140, "model": "pose_resnet", "perf": 0.88,
                "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    assert sb.load_checkpoint(fresh, path) == sb.sha256_of(path)
    got = fresh.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_checkpoint_of_another_layout_fails_clearly(r50, fresh):
    sd = official_state_dict(r50)
    with pytest.raises(sb.CheckpointError) as e:  # e.g. an mmpose checkpoint
        sb.load_state_dict(fresh, {"backbone." + k: v for k, v in sd.items()})
    msg = str(e.value)
    assert "missing" in msg and "unexpected" in msg and "'backbone.'" in msg and "conv1.weight" in msg
    with torch.device("meta"):  # the checks come before any weight is copied
        deeper, coco = sb.build("resnet101", "mpii"), sb.build("resnet50", "coco")
    with pytest.raises(sb.CheckpointError, match="use --arch resnet50"):
        sb.load_state_dict(deeper, sd)
    with pytest.raises(sb.CheckpointError, match="16 joints: use --dataset mpii"):
        sb.load_state_dict(coco, sd)
    with pytest.raises(sb.CheckpointError, match="not a state dict"):
        sb.load_state_dict(fresh, {"epoch": 3, "arch": "pose_resnet"})


def test_unreadable_checkpoint_fails_clearly(tmp_path):
    bad = tmp_path / "x.pth.tar"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(sb.CheckpointError, match="cannot read checkpoint"):
        sb.load_checkpoint(sb.build("resnet50", "mpii"), bad)


def test_exported_graph_is_checked_opset_17_with_dynamic_batch_and_a_valid_card(exported):
    path, card = exported
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    assert {o.domain or "ai.onnx": o.version for o in m.opset_import}["ai.onnx"] == 17
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, SMALL, SMALL]
    assert sum(n.op_type == "ConvTranspose" for n in m.graph.node) == 3
    got = cards.get_card(m)  # validated by the service's own parser
    assert got == card
    assert got["input"]["color"] == "BGR" and got["input"]["layout"] == "NCHW"
    # mean/std in the tensor's channel order: the ImageNet values unchanged, as the BGR training used them
    assert got["input"]["scaling"] == {"kind": "mean_std", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert got["output"] == {"kind": "heatmaps", "name": "heatmaps", "layout": "NCHW"}
    assert len(got["joints"]) == 16 and got["joints"][0] == "r_ankle" and got["threshold"] == 0.6
    assert got["quantization"] == "fp32" and got["license"] == "MIT" and "Microsoft" in got["copyright"]
    assert got["weights"] == "random-init"


def test_export_matches_pytorch_on_synthetic_input_with_batch_2(r50, exported):
    path, _ = exported
    x = export.synthetic_batch(2, SMALL, SMALL, seed=5).numpy()
    with torch.no_grad():
        ref = r50(torch.from_numpy(x)).numpy()
    got = export.session(path).run(None, {"input": x})[0]
    assert got.shape == (2, 16, SMALL // 4, SMALL // 4)
    assert np.abs(ref - got).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_export_matches_pytorch_on_real_photos(r50, exported):
    path, card = exported
    p = export.parity(r50, path, photos.prepare_all(PHOTOS, card))
    assert p["per_image_max_abs"] < 1e-4 and p["batch_max_abs"] < 1e-4, p


def test_coco_card_has_17_joints_and_a_256x192_input():
    card = export.card_for("resnet50", "coco", 256, 192)
    assert len(card["joints"]) == 17 and card["joints"][0] == "nose"
    assert (card["input"]["height"], card["input"]["width"]) == (256, 192)
    assert card["architecture"]["heatmap_size"] == [64, 48]


def test_conv_weight_identity_on_a_tiny_deconv_against_torch():
    """ConvTranspose(4x4, s2, p1) with bias, BN and ReLU == the rewritten graph, on random data."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.ConvTranspose2d(5, 3, 4, 2, 1, bias=True), torch.nn.BatchNorm2d(3), torch.nn.ReLU())
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.normal_()
        net[1].bias.normal_()
    net.eval()
    x = torch.randn(2, 5, 7, 9)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                          training=torch.onnx.TrainingMode.EVAL, do_constant_folding=False)
    m = onnx.load_from_string(buf.getvalue())
    m, report = rewrite.rewrite(m)
    assert len(report.rewritten) == 1 and report.folded_bn and report.moved_relu
    assert not any(n.op_type in ("ConvTranspose", "BatchNormalization") for n in m.graph.node)
    onnx.checker.check_model(m)
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        ref = net(x).numpy()
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5


@pytest.fixture(scope="module")
def rewritten(exported) -> tuple[Path, rewrite.Report]:
    path, _ = exported
    out = path.with_name("sb-r50.rewritten.onnx")
    return out, rewrite.rewrite_file(path, out)


def test_rewrite_of_simple_baselines_is_exact_to_1e5(exported, rewritten):
    path, card = exported
    out, report = rewritten
    assert len(report.rewritten) == 3 and len(report.folded_bn) == 3 and len(report.moved_relu) == 3
    assert report.sunk_1x1 == ["/final_layer/Conv"] and not report.skipped
    m = onnx.load(str(out))
    ops = [n.op_type for n in m.graph.node]
    assert "ConvTranspose" not in ops and "BatchNormalization" not in ops and ops.count("DepthToSpace") == 3
    rewritten_card = cards.get_card(m)
    assert rewritten_card["graph_rewrites"] == [rewrite.REWRITE_NAME, rewrite.SINK_NAME]
    assert {k: v for k, v in rewritten_card.items() if k != "graph_rewrites"} == card
    feeds = [{"input": export.synthetic_batch(2, SMALL, SMALL, seed=s).numpy()} for s in (7, 8)]
    assert rewrite.max_abs_diff(path, out, feeds) < 1e-5


def test_rewrite_is_exact_on_a_real_photo(exported, rewritten):
    path, card = exported
    out, _ = rewritten
    feeds = [{"input": x} for x in photos.prepare_all(PHOTOS, card)]
    assert rewrite.max_abs_diff(path, out, feeds) < 1e-5


def test_export_cli_rejects_a_checkpoint_of_another_layout(tmp_path, capsys):
    ckpt = tmp_path / "mmpose.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}}, ckpt)
    rc = export.main(["--checkpoint", str(ckpt), "--arch", "resnet50", "--dataset", "mpii", "--images",
                      "--out", str(tmp_path / "x.onnx")])
    assert rc == 2
    assert "'backbone.'" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
