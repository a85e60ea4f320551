"""jaxnets: PyTorch's tutorial networks in JAX, Flax NNX and optax.

Models are channels-last and keep PyTorch's attribute names, so weights map one
to one (the ``parity`` package converts layouts and proves equality).

The public names below are imported on first use (PEP 562): ``import jaxnets``
alone loads no JAX, so ``jaxnets --help`` and a script that only reads
:mod:`jaxnets.data` start in a fraction of a second.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    # public name: (module, attribute; None for the module itself)
    "functional": (".functional", None),
    "losses": (".losses", None),
    "optim": (".optim", None),
    "DynamicNet": ("._dynamic", "DynamicNet"),
    "torch_bias_init": ("._init", "torch_bias_init"),
    "torch_kernel_init": ("._init", "torch_kernel_init"),
    "LeNet": ("._lenet", "LeNet"),
    "Sequential": ("._two_layer", "Sequential"),
    "TwoLayerNet": ("._two_layer", "TwoLayerNet"),
    "two_layer_sequential": ("._two_layer", "two_layer_sequential"),
    "summary": (".summary", "summary"),
    "Trainer": (".train", "Trainer"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'jaxnets' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module, __name__)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # once: later lookups find it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Jaxnets(types.ModuleType):
    def __setattr__(self, name, value):
        # Importing the submodule jaxnets.summary binds the module here; `jaxnets.summary` stays the function,
        # whichever is imported first (the eager package rebound it after the submodule).
        if name in _LAZY and _LAZY[name][1] is not None and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Jaxnets


if TYPE_CHECKING:  # what type checkers and IDEs see
    from . import functional as functional
    from . import losses as losses
    from . import optim as optim
    from ._dynamic import DynamicNet as DynamicNet
    from ._init import torch_bias_init as torch_bias_init
    from ._init import torch_kernel_init as torch_kernel_init
    from ._lenet import LeNet as LeNet
    from ._two_layer import Sequential as Sequential
    from ._two_layer import TwoLayerNet as TwoLayerNet
    from ._two_layer import two_layer_sequential as two_layer_sequential
    from .summary import summary as summary
    from .train import Trainer as Trainer
