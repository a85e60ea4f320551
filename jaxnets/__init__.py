"""jaxnets: PyTorch's tutorial networks in JAX, Flax NNX and optax.

Models are channels-last and keep PyTorch's attribute names, so weights map one
to one (the ``parity`` package converts layouts and proves equality).

The public names below are imported on first use (PEP 562): ``import jaxnets``
alone loads no JAX, so ``jaxnets --help`` and a script that only reads
:mod:`jaxnets.data` start in a fraction of a second.

The tree, a subpackage per concept (private implementation modules behind a
thin ``__init__.py``)::

    models/      the tutorials' models: LeNet (and its fast convolution path),
                 TwoLayerNet, Sequential, DynamicNet, torch's initialisation;
                 summary() and op_chain(), which look at a model
    nn/          torch.nn mirrored layer by layer (torch's names and layouts)
    ports/       models ported from PyTorch's examples with jaxnets.nn
    optim/       torch.optim's optimizers as optax transformations, lr_scheduler
    training/    Trainer (trainer), checkpoint, data, distributed, inference,
                 and the digits application behind ``jaxnets train`` (digits)
    interop/     PyTorch's formats: the layout table (torch_layout), weight
                 files (exchange), the torch-free .pt reader
    tutorials/   the LeNet tutorial (lenet) and the seven-stage progression
    cli.py       the ``jaxnets`` command
    losses.py, functional.py
                 torch-named losses and activations, used by models and
                 training alike, so they sit above both
    _split.py, _files.py, _cache.py, _pool.py, _extrema.py
                 helpers shared by several subpackages: microbatch splitting
                 (losses, LeNet, Trainer), atomic writes (data, exchange, the
                 digits application), the XLA compilation cache (cli, tutorials),
                 torch's max-pool pick (nn, LeNet), NaN-keeping max and min
                 (nn, optim)

Module paths of 0.1.0, before the subpackages (``jaxnets.train``,
``jaxnets.checkpoint``, ``jaxnets.exchange``, ``jaxnets._lenet``, ...), still
import: each is the moved module itself under its old name (:data:`_MOVED`),
so pickles and user code that name them keep working.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from . import _malloc

_malloc.tune()  # before anything imports JAX: glibc's malloc kept from returning XLA's buffers every step

__version__ = "0.1.0"

_LAZY = {
    # public name: (module, attribute; None for the module itself)
    "functional": (".functional", None),
    "losses": (".losses", None),
    "optim": (".optim", None),
    "DynamicNet": (".models._dynamic", "DynamicNet"),
    "torch_bias_init": (".models._init", "torch_bias_init"),
    "torch_kernel_init": (".models._init", "torch_kernel_init"),
    "LeNet": (".models._lenet", "LeNet"),
    "malloc_setting": ("._malloc", "setting"),
    "Sequential": (".models._two_layer", "Sequential"),
    "TwoLayerNet": (".models._two_layer", "TwoLayerNet"),
    "two_layer_sequential": (".models._two_layer", "two_layer_sequential"),
    "summary": (".models._summary", "summary"),
    "Trainer": (".training.trainer", "Trainer"),
}

# Where each module of 0.1.0's flat layout lives now.
_MOVED = {
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
    # jaxnets.training was the digits application; it is now the package, whose attributes include the
    # application's names (jaxnets/training/__init__.py).
    "jaxnets._pt_format": "jaxnets.interop._pt_format",
    "jaxnets.exchange": "jaxnets.interop.exchange",
    "jaxnets.torch_layout": "jaxnets.interop.torch_layout",
    "jaxnets.progression": "jaxnets.tutorials.progression",
    "jaxnets.tutorial": "jaxnets.tutorials.lenet",
}


class _MovedModules:
    """Imports a module under its 0.1.0 path as the moved module itself: one object in ``sys.modules`` twice.

    Last on ``sys.meta_path``, so it answers only for a name no file holds. ``python -m jaxnets.tutorial``
    runs the moved module as ``__main__`` (:meth:`get_code`).
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _MOVED:
            return None
        from importlib.machinery import ModuleSpec  # here: most runs never import an old name

        return ModuleSpec(fullname, self, origin=_MOVED[fullname])

    def create_module(self, spec):
        module = importlib.import_module(_MOVED[spec.name])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # The import system has just set the module's __spec__ to the old name's: give it back its own.
        module.__spec__ = module.__spec__.loader_state

    def get_code(self, fullname):
        return compile(f"import runpy\nrunpy.run_module({_MOVED[fullname]!r}, run_name='__main__', alter_sys=True)",
                       f"<{fullname}: moved to {_MOVED[fullname]}>", "exec")  # fmt: skip


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY and f"{__name__}.{name}" in _MOVED:  # a 0.1.0 module, which a sibling's import bound here
        return importlib.import_module(f"{__name__}.{name}")
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
    from ._malloc import setting as malloc_setting  # noqa: F401 - public in __all__ (sorted(_LAZY))
    from .models._dynamic import DynamicNet as DynamicNet
    from .models._init import torch_bias_init as torch_bias_init
    from .models._init import torch_kernel_init as torch_kernel_init
    from .models._lenet import LeNet as LeNet
    from .models._summary import summary as summary
    from .models._two_layer import Sequential as Sequential
    from .models._two_layer import TwoLayerNet as TwoLayerNet
    from .models._two_layer import two_layer_sequential as two_layer_sequential
    from .training.trainer import Trainer as Trainer
