"""The public API of 0.1.0 still imports after the move into subpackages (#16), as the same objects.

``data/public_api_0.1.0.json`` lists every public module of 0.1.0 (commit 595acaa, the flat layout) with its
public names: its ``__all__``, or else the names not starting with ``_`` that jaxnets defines or re-exports
from jaxnets, plus its constants (imported third-party functions, classes and modules left out). It was
collected from that tree before anything moved, so a name lost in a move fails here.
"""

import importlib
import json
import pickle
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
import setuptools

import jaxnets

REPO = Path(__file__).resolve().parents[1]
API = json.loads((Path(__file__).parent / "data" / "public_api_0.1.0.json").read_text())

# Where each module of the flat layout lives now (written out here, not read from jaxnets._MOVED, so that a
# wrong entry there fails).
MOVED = {
    "jaxnets._checks": "jaxnets.models._checks",
    "jaxnets._dynamic": "jaxnets.models._dynamic",
    "jaxnets._fastconv": "jaxnets.models._fastconv",
    "jaxnets._init": "jaxnets.models._init",
    "jaxnets._lenet": "jaxnets.models._lenet",
    "jaxnets._two_layer": "jaxnets.models._two_layer",
    "jaxnets.graph": "jaxnets.models._graph",
    "jaxnets.summary": "jaxnets.models._summary",
    "jaxnets._checkpoint_v1": "jaxnets.training._checkpoint_v1",
    "jaxnets.checkpoint": "jaxnets.training.checkpoint",
    "jaxnets.data": "jaxnets.training.data",
    "jaxnets.distributed": "jaxnets.training.distributed",
    "jaxnets.inference": "jaxnets.training.inference",
    "jaxnets.train": "jaxnets.training.trainer",
    "jaxnets._pt_format": "jaxnets.interop._pt_format",
    "jaxnets.exchange": "jaxnets.interop.exchange",
    "jaxnets.torch_layout": "jaxnets.interop.torch_layout",
    "jaxnets.progression": "jaxnets.tutorials.progression",
    "jaxnets.tutorial": "jaxnets.tutorials.lenet",
}
# The digits application was the module jaxnets.training; the package of that name now answers for it.
NEW_HOME = {**MOVED, "jaxnets.training": "jaxnets.training.digits"}

# The top-level names and the subpackage that holds each now.
TOP_LEVEL = {
    "DynamicNet": "jaxnets.models",
    "LeNet": "jaxnets.models",
    "Sequential": "jaxnets.models",
    "TwoLayerNet": "jaxnets.models",
    "summary": "jaxnets.models",
    "torch_bias_init": "jaxnets.models",
    "torch_kernel_init": "jaxnets.models",
    "two_layer_sequential": "jaxnets.models",
    "Trainer": "jaxnets.training",
}

NAMES = [(module, name) for module, names in API.items() for name in names]


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, "-c", code] if code else [sys.executable, *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip


def test_the_pinned_list_covers_the_flat_layout():
    # Guards the data file itself: an empty or truncated list would make every test below pass.
    assert len(NAMES) > 800
    assert {"jaxnets", "jaxnets.train", "jaxnets.training", "jaxnets.optim", "jaxnets.nn"} <= set(API)
    assert set(MOVED) - {m for m in MOVED if m.rpartition(".")[2].startswith("_")} <= set(API)
    assert {"Trainer", "distributed"} == set(API["jaxnets.train"])


@pytest.mark.parametrize("module", sorted(API))
def test_every_name_of_0_1_0_imports_from_its_old_module(module):
    m = importlib.import_module(module)
    missing = [name for name in API[module] if not hasattr(m, name)]
    assert not missing, f"{module} lost {missing}"


@pytest.mark.parametrize("module", sorted(set(API) & set(NEW_HOME)))
def test_every_name_of_a_moved_module_is_the_same_object_at_its_new_path(module):
    old, new = importlib.import_module(module), importlib.import_module(NEW_HOME[module])
    assert new.__name__ == NEW_HOME[module]
    different = [name for name in API[module] if getattr(old, name) is not getattr(new, name)]
    assert not different, f"{module} and {NEW_HOME[module]} differ in {different}"


def test_top_level_names_are_the_subpackages_objects():
    assert set(jaxnets.__all__) >= set(API["jaxnets"]) - {"__version__"}
    for name, package in TOP_LEVEL.items():
        assert getattr(jaxnets, name) is getattr(importlib.import_module(package), name), name
    assert jaxnets.Trainer.__module__ == "jaxnets.training.trainer"
    assert jaxnets.LeNet.__module__ == "jaxnets.models._lenet"


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()), ids=sorted(MOVED))
def test_an_old_module_path_is_the_moved_module_itself(old, new):
    module = importlib.import_module(old)
    assert module is importlib.import_module(new) is sys.modules[old] is sys.modules[new]
    assert module.__name__ == module.__spec__.name == new  # its own spec, not the old name's
    assert not Path(REPO, *old.split(".")).with_suffix(".py").exists()  # no copy left behind


def test_from_old_modules_import_names_in_a_fresh_process():
    # A fresh interpreter: nothing imported before, so each old path must resolve on its own; and none of
    # it may pull in torch.
    code = (
        "import sys, types\n"
        "from jaxnets import data, checkpoint, exchange, training, train, inference, distributed, summary\n"
        "from jaxnets import losses, functional, tutorial, progression, torch_layout\n"
        "from jaxnets.train import Trainer\n"
        "from jaxnets.training import build_model, TrainConfig\n"
        "from jaxnets._lenet import flat_features\n"
        "import jaxnets, jaxnets.checkpoint, jaxnets.train, jaxnets.summary\n"
        "assert jaxnets.checkpoint is checkpoint and jaxnets.train is train and train.Trainer is Trainer\n"
        "assert Trainer is jaxnets.Trainer and build_model is training.digits.build_model\n"
        "assert isinstance(summary, types.FunctionType) and jaxnets.summary is summary\n"
        "assert jaxnets.distributed is distributed and jaxnets.LeNet is tutorial.LeNet\n"
        "print('torch' in sys.modules)\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False"]


def test_importing_the_old_paths_leaves_torch_out():
    code = (
        f"import importlib, sys\nfor m in {sorted(MOVED)!r}: importlib.import_module(m)\nprint('torch' in sys.modules)"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False"]


def test_the_training_package_imports_data_without_jax_or_the_application():
    code = (
        "import sys\nfrom jaxnets.training import data\nimport jaxnets.data\n"
        "print(jaxnets.data is data, 'jax' in sys.modules, 'jaxnets.training.digits' in sys.modules)"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "False", "False"]


def test_setting_an_application_name_on_the_training_package_sets_it_on_the_application(monkeypatch):
    from jaxnets.training import digits

    before = digits.EVAL_GROUP
    monkeypatch.setattr(jaxnets.training, "EVAL_GROUP", before + 5)  # how tests patched jaxnets.training in 0.1.0
    assert digits.EVAL_GROUP == jaxnets.training.EVAL_GROUP == before + 5
    monkeypatch.undo()
    assert digits.EVAL_GROUP == before
    assert "EVAL_GROUP" not in vars(jaxnets.training)
    with pytest.raises(AttributeError, match="module 'jaxnets.training' has no attribute 'no_such_name'"):
        jaxnets.training.no_such_name  # noqa: B018


def test_a_pickle_that_names_an_old_module_loads():
    # pickle stores a class by module and name: files written with 0.1.0 name jaxnets.train, jaxnets.data, ...
    assert pickle.loads(b"cjaxnets.train\nTrainer\n.") is jaxnets.Trainer
    assert pickle.loads(b"cjaxnets.data\nDataset\n.") is importlib.import_module("jaxnets.training.data").Dataset
    assert pickle.loads(b"cjaxnets._lenet\nLeNet\n.") is jaxnets.LeNet


@pytest.mark.parametrize(
    ("module", "usage"),
    [
        ("jaxnets.tutorial", "usage: python -m jaxnets.tutorial"),
        ("jaxnets.progression", "usage: python -m jaxnets.progression"),
        ("jaxnets.tutorials.lenet", "usage: python -m jaxnets.tutorial"),
        ("jaxnets.tutorials.progression", "usage: python -m jaxnets.progression"),
    ],
)
def test_python_m_runs_old_and_new_module_paths(module, usage):
    proc = _run("", "-m", module, "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(usage), proc.stdout


def test_package_discovery_finds_every_subpackage():
    # What setuptools puts in a wheel: pyproject's [tool.setuptools.packages.find] over the tree.
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = set(setuptools.find_packages(str(REPO), include=find["include"]))
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "jaxnets").rglob("__init__.py")}
    assert {"jaxnets.models", "jaxnets.training", "jaxnets.interop", "jaxnets.tutorials"} <= on_disk
    assert on_disk <= found, on_disk - found


def test_old_module_names_resolve_only_to_the_table():
    # The finder answers for the 0.1.0 names only; any other missing module is still an ImportError.
    with pytest.raises(ModuleNotFoundError, match="jaxnets.no_such_module"):
        importlib.import_module("jaxnets.no_such_module")
    assert isinstance(importlib.import_module("jaxnets.training"), types.ModuleType)
    assert hasattr(importlib.import_module("jaxnets.training"), "__path__")  # the package, not an alias
