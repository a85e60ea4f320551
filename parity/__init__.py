"""parity: prove that jaxnets computes what the PyTorch tutorials compute, and port weights between them.

- :func:`load_torch_state_dict` / :func:`to_torch_state_dict`: weights (and
  gradients, and any state shaped like the parameters) in both directions,
  through one layout table (:mod:`jaxnets.torch_layout`; ``from parity.layout import ...`` re-exports it).
- :func:`optimizer_state_from_torch` / :func:`load_optimizer_state_into_torch`:
  every jaxnets.optim optimizer's state (LBFGS's too) and a schedule's position,
  so a run continues across frameworks.
- :func:`compare`: a torch model and its JAX port on the same weights and
  inputs, layer by layer; the report names the first layer that diverges.
- :func:`check_init`: whether a torch layer and its port draw their initial
  weights from the same law (pooled over instances, Kolmogorov-Smirnov).
- :mod:`parity.torch_models`: the seeds' PyTorch code as reference models.
- :mod:`parity.ports`: the rows of the ported real models (:mod:`jaxnets.ports`
  against :mod:`parity.reference_models`).
- :mod:`parity.precision`: the tolerances of every check, defined once.

``python -m parity`` runs the whole check matrix. This package imports torch;
``jaxnets`` never does.

The names below are imported on first use, so ``import parity.torch_models``
(the seed's PyTorch models alone) loads no JAX.
"""

import importlib
import sys
import types

_LAZY = {
    "StateDictMismatch": ".convert",
    "compare": ".compare",
    "check_init": ".init_check",
    "load_torch_state_dict": ".convert",
    "state_from_torch": ".convert",
    "to_torch_state_dict": ".convert",
    "Entry": ".layout",
    "layout": ".layout",
    "to_nchw": ".layout",
    "to_nhwc": ".layout",
    "load_optimizer_state_into_torch": ".optim_state",
    "optimizer_state_from_torch": ".optim_state",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'parity' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Parity(types.ModuleType):
    def __setattr__(self, name, value):
        # Importing the submodule parity.layout (or parity.compare) binds it here; `parity.layout` and
        # `parity.compare` stay the functions, as `parity.layout` was when this package imported everything
        # eagerly and rebound the name after the submodule.
        if name in ("layout", "compare") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Parity
