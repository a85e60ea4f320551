"""``torch.nn``, mirrored as Flax NNX modules: torch's names, signatures, layouts and numbers.

Each class takes its torch counterpart's name and constructor arguments, plus a
keyword-only ``rngs`` (``flax.nnx.Rngs``) where it draws random numbers, and
``dtype`` where torch takes one. Parameters and buffers keep torch's names and
layouts (``weight`` is ``(out, in)`` or ``(out, in / groups, *kernel)``;
``running_mean``, ``running_var``, ``num_batches_tracked``), inputs are
channels-first as in torch, and ``state_dict()`` / ``load_state_dict()`` use
torch's keys, so a torch ``state_dict`` loads as it is::

    import jax, numpy as np
    from flax import nnx
    from jaxnets import nn

    model = nn.Sequential(nn.Conv2d(1, 6, 5, rngs=nnx.Rngs(0)), nn.ReLU(), nn.Flatten())
    model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})

The idiomatic Flax models of :mod:`jaxnets` (``jaxnets.LeNet``: channels-last,
Flax kernel layouts, converted through ``parity``'s layout table) stay as they
are; :mod:`jaxnets.nn` is the other road, for porting a torch model line by line.
See :mod:`jaxnets.nn.module` for the base class and :mod:`jaxnets.nn.functional`
for the functions.
"""

from . import functional as functional
from . import init as init
from .module import Buffer as Buffer
from .module import IncompatibleKeys as IncompatibleKeys
from .module import Module as Module
from .modules import *  # noqa: F403 - the layer classes, listed in modules/__init__.py
from .modules import __dict__ as _modules_dict

__all__ = ["Buffer", "IncompatibleKeys", "Module", "functional", "init"] + sorted(
    name for name, value in _modules_dict.items() if isinstance(value, type)
)
