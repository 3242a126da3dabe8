"""models/models.json, the one list of bundled models: its files are there with the bytes it records, each
file's card agrees with its entry, MODELS.md documents every entry, and a broken list is refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from pose import card as card_schema

from local import catalog

ROOT = Path(__file__).resolve().parent.parent
ENTRIES = catalog.models()
FILES = sorted({(m.name, f) for m in ENTRIES for f in (m.source, m.served)})


@pytest.mark.parametrize("name, file", FILES, ids=[f for _, f in FILES])
def test_every_file_is_there_with_the_sha256_models_json_records(name, file):
    path = catalog.MODELS / file
    assert path.is_file(), f"{path} is missing (models/models.json, entry {name})"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == catalog.get(name).sha256[file]


@pytest.mark.parametrize("model", ENTRIES, ids=[m.name for m in ENTRIES])
def test_the_served_files_card_says_the_role_and_precision_of_its_entry(model):
    """A pose entry serves a pose card, a detector entry a detector card; INT8 exactly where a recipe says so."""
    meta = {p.key: p.value for p in onnx.load(str(model.served_path), load_external_data=False).metadata_props}
    parse = card_schema.parse if model.role == "pose" else card_schema.parse_detector
    card = parse(meta.get(card_schema.CARD_KEY))
    assert card.quantization.startswith("int8") is bool(model.quantize)
    assert (model.served == model.source) is (card.quantization == "fp32")


def test_models_md_documents_every_entry_and_its_files():
    text = (ROOT / "models" / "MODELS.md").read_text()
    for model in ENTRIES:
        for fact in (model.title, model.source, model.served):
            assert fact in text, f"models/MODELS.md does not mention {fact!r} ({model.name})"


@pytest.mark.parametrize("model", ENTRIES, ids=[m.name for m in ENTRIES])
def test_every_recipe_names_a_build_tool_that_exists_and_knows_the_model(model):
    words = model.recipe["build"].split()
    module = words[words.index("-m") + 1]
    assert module.startswith("build.") and (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    if "--model" in words:  # a converter of several models: this one is among its choices
        usage = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout
        assert words[words.index("--model") + 1] in usage.split("--model", 1)[1].split("]")[0], usage


def test_the_defaults_are_served_models_of_their_role():
    for role in catalog.ROLES:
        default = catalog.get(catalog.default(role))
        assert default.role == role and default.in_layer and default.name in catalog.served(role)


def test_the_layer_pairs_are_the_served_entries_in_order():
    r = subprocess.run([sys.executable, str(ROOT / "local" / "catalog.py"), "layer", "detector"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.split() == [f"{m.name}={m.served}" for m in ENTRIES if m.role == "detector" and m.in_layer]


def test_a_name_not_served_in_a_role_is_refused_with_the_served_names():
    with pytest.raises(ValueError, match="not a served pose model: the model layer has " + catalog.served("pose")[0]):
        catalog.served_path(catalog.default("detector"), "pose")
    with pytest.raises(ValueError, match="not in models/models.json"):
        catalog.get("no-such-model")


def broken(tmp_path: Path, change) -> Path:
    data = json.loads(catalog.CATALOG.read_text())
    change(data)
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change, problem", [
    (lambda d: d["default"].update(pose=d["default"]["detector"]), "default pose"),
    (lambda d: d["models"][0].update(in_layer=False), "default pose"),
    (lambda d: d["models"][0].update(role="segmenter"), "role 'segmenter'"),
    (lambda d: d["models"][1]["sha256"].popitem(), "sha256 names"),
    (lambda d: d["models"].append(d["models"][1]), "listed twice"),
], ids=["detector as pose default", "default not in the layer", "unknown role", "a file without sha256", "twice"])
def test_a_broken_list_is_refused_saying_what_is_wrong(tmp_path, change, problem):
    with pytest.raises(ValueError, match=problem):
        catalog.read(broken(tmp_path, change))


def test_the_file_is_in_the_form_a_tool_writes_it():
    text = catalog.CATALOG.read_text()
    assert text == catalog.dumps(json.loads(text))


def test_adding_an_entry_appends_it_and_a_broken_one_leaves_the_list_as_it_was(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(catalog.CATALOG.read_text())
    before = json.loads(path.read_text())
    entry = {**before["models"][1], "name": "my-pose", "in_layer": False}
    catalog.add(entry, path)
    defaults, by_name = catalog.read(path)
    assert list(by_name) == [m["name"] for m in before["models"]] + ["my-pose"] and defaults == before["default"]
    written = path.read_text()
    with pytest.raises(ValueError, match="'my-pose' added.*my-pose: listed twice"):
        catalog.add(entry, path)
    with pytest.raises(ValueError, match="role 'face'"):
        catalog.add({**entry, "name": "face", "role": "face"}, path)
    assert path.read_text() == written
