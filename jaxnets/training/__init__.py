"""Training: the Trainer, checkpoints, data, data-parallel meshes, batched inference, and the digits application.

- :mod:`jaxnets.training.trainer`: :class:`Trainer` (also ``jaxnets.Trainer``), one compiled train step
  with optional microbatches and a data-parallel mesh;
- :mod:`jaxnets.training.checkpoint`: checkpoints (NumPy bytes, SHA-256s, JSON);
- :mod:`jaxnets.training.data`: digits, MNIST, IDX and image files, keyed batches (no JAX needed);
- :mod:`jaxnets.training.distributed`: meshes and shardings for data-parallel training;
- :mod:`jaxnets.training.inference`: the forward pass of many batches in one compiled loop;
- :mod:`jaxnets.training.cifar`: CIFAR-10's python batches and ResNet-18's step for ``jaxnets train --model resnet18``;
- :mod:`jaxnets.training.digits`: the application behind ``jaxnets train``, ``evaluate`` and ``predict``
  (LeNet on handwritten digits).

Submodules are imported on first use, so ``from jaxnets.training import data`` loads no JAX.

In 0.1.0 ``jaxnets.training`` was the digits application's module. Its names are still this package's
attributes, read and set on the module :mod:`jaxnets.training.digits` itself (``training.build_model``,
``monkeypatch.setattr(training, "EVAL_GROUP", 2)``), so code written for 0.1.0 keeps working.
"""

from __future__ import annotations

import importlib
import sys
import types

_SUBMODULES = frozenset(
    {"checkpoint", "cifar", "data", "digits", "distributed", "inference", "trainer", "_checkpoint_v1"}
)


def _digits() -> types.ModuleType:
    return importlib.import_module(".digits", __name__)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "Trainer":  # without the application's imports
        return importlib.import_module(".trainer", __name__).Trainer
    if not name.startswith("__"):
        try:
            value = getattr(_digits(), name)
        except AttributeError:
            pass
        else:
            _forward(name)
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | {"Trainer"})


class _Training(types.ModuleType):
    """The application's names are properties of this class: read, set and deleted on the application module.

    A live view, never a copy (``monkeypatch.setattr`` and its undo act on :mod:`jaxnets.training.digits`);
    the property of a name is made when the name is first read or set here.
    """

    def __setattr__(self, name, value):
        if not (name in _SUBMODULES or name == "Trainer" or name.startswith("__")):
            _forward(name)
        super().__setattr__(name, value)


def _forward(name: str) -> None:
    if name not in vars(_Training):
        get = lambda self: getattr(_digits(), name)
        put = lambda self, value: setattr(_digits(), name, value)
        remove = lambda self: delattr(_digits(), name)
        setattr(_Training, name, property(get, put, remove, f"jaxnets.training.digits.{name}"))


sys.modules[__name__].__class__ = _Training
