"""The bundled models, read from models/models.json: the one list of them.

Each entry names a model and says its role ("pose" or "detector"), its FP32 source file and the file the
model layer serves (both under models/), their sha256, licence, a short origin (models/MODELS.md has the
full provenance), whether the model layer ships it, and its recipe (the command that builds the source;
the INT8 quantization recipe, or null where the FP32 file is served). "default" names the default pose
model and the default person detector.

Everything but the Lambda function reads the list here: the model layer's Makefile (run as a script, see
``main``), local/, the build tools, the tests. The function itself gets its files from its environment
(MODEL_PATH, DETECTOR_PATH), so handler/ never needs this file. Standard library only.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

MODELS = Path(__file__).resolve().parent.parent / "models"
CATALOG = MODELS / "models.json"
ROLES = ("pose", "detector")


@dataclass(frozen=True)
class Model:
    """One entry of models.json; `source` and `served` are paths relative to models/."""

    name: str
    title: str
    role: str
    licence: str
    origin: str
    in_layer: bool
    source: str
    served: str
    sha256: dict
    recipe: dict

    @property
    def source_path(self) -> Path:
        return MODELS / self.source

    @property
    def served_path(self) -> Path:
        return MODELS / self.served

    @property
    def quantize(self) -> dict | None:
        """The INT8 recipe build/make_models.py runs, or None: the FP32 file is served."""
        return self.recipe.get("quantize")


def read(path: Path) -> tuple[dict[str, str], dict[str, Model]]:
    """A models.json checked: (the defaults by role, the entries by name in the file's order)."""
    return parse(json.loads(path.read_text()), str(path))


def parse(data: dict, where: str = "models.json") -> tuple[dict[str, str], dict[str, Model]]:
    """The list checked: ValueError listing what is wrong (an unknown role, sha256 not of exactly the entry's
    files, a name twice, a default that is not a served model of its role)."""
    entries = [Model(**entry) for entry in data["models"]]
    by_name = {m.name: m for m in entries}
    problems = [f"{m.name}: role {m.role!r} is not one of {ROLES}" for m in entries if m.role not in ROLES]
    problems += [f"{m.name}: sha256 names {sorted(m.sha256)}, not its files {sorted({m.source, m.served})}"
                 for m in entries if set(m.sha256) != {m.source, m.served}]
    problems += [f"{name}: listed twice" for name in by_name if [m.name for m in entries].count(name) > 1]
    for role in ROLES:
        name = data["default"].get(role)
        if name not in by_name or by_name[name].role != role or not by_name[name].in_layer:
            problems.append(f"default {role} {name!r} is not a {role} the model layer serves")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    return data["default"], by_name


def dumps(data: dict) -> str:
    """models.json's text: two-space indents, one key a line, so that a tool's write and a person's edit of
    one entry give the same small diff (tests/test_models_catalog.py keeps the file in this form)."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def add(entry: dict, path: Path = CATALOG) -> None:
    """Append one model to the list at `path`, after checking the list with it (nothing is written if not)."""
    data = json.loads(path.read_text())
    data["models"].append(entry)
    parse(data, f"{path} with {entry.get('name')!r} added")
    path.write_text(dumps(data))
    _load.cache_clear()


@functools.cache
def _load() -> tuple[dict[str, str], dict[str, Model]]:
    return read(CATALOG)


def models(role: str | None = None, in_layer: bool | None = None) -> list[Model]:
    """The entries in the list's order, optionally only those of one role and/or (not) in the model layer."""
    return [m for m in _load()[1].values()
            if (role is None or m.role == role) and (in_layer is None or m.in_layer is in_layer)]


def get(name: str) -> Model:
    """The entry called `name`; ValueError naming the known ones if there is none."""
    by_name = _load()[1]
    if name not in by_name:
        raise ValueError(f"{name!r} is not in models/models.json: it lists {', '.join(by_name)}")
    return by_name[name]


def served(role: str) -> list[str]:
    """The names the model layer serves in a role ("pose": template.yaml's ModelName values)."""
    return [m.name for m in models(role, in_layer=True)]


def default(role: str) -> str:
    """The default pose model ("pose") or person detector ("detector")."""
    return _load()[0][role]


def served_path(name: str, role: str | None = None) -> Path:
    """The file the model layer serves as /opt/model/<name>.onnx; ValueError if `name` is not served
    (in `role`, when given)."""
    model = get(name)
    if not model.in_layer or role not in (None, model.role):
        kind = {"pose": "pose model", "detector": "person detector"}.get(role, "model")
        raise ValueError(f"{name!r} is not a served {kind}: the model layer has "
                         f"{', '.join(served(role) if role else served('pose') + served('detector'))}")
    return model.served_path


def layer_pairs(role: str) -> str:
    """name=file pairs (file under models/) of the served models of a role: the model layer's list."""
    return " ".join(f"{m.name}={m.served}" for m in models(role, in_layer=True))


def default_pair(role: str) -> str:
    """The default's name=file pair (the video layer carries only the defaults: layers/video/Makefile)."""
    model = get(default(role))
    return f"{model.name}={model.served}"


def main(argv: list[str]) -> int:
    """`python local/catalog.py layer pose|detector`: the name=file pairs layers/model/Makefile copies;
    `python local/catalog.py default pose|detector`: the default's name (the Makefile's MODEL);
    `python local/catalog.py default-pair pose|detector`: the default's name=file pair (layers/video/Makefile)."""
    commands = {"layer": layer_pairs, "default": default, "default-pair": default_pair}
    if len(argv) != 2 or argv[0] not in commands or argv[1] not in ROLES:
        print(f"usage: python local/catalog.py {'|'.join(commands)} {'|'.join(ROLES)}", file=sys.stderr)
        return 2
    print(commands[argv[0]](argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
