"""Weights (and anything shaped like them: gradients, optimizer moments) between torch and jaxnets.

Both directions copy: JAX can alias the CPU buffer of a NumPy array made from a
torch tensor, and torch's in-place optimizer steps would then change the
"copied" weights behind JAX's back. Both directions are strict: missing,
unexpected and mis-shaped keys are reported together, and nothing is changed
unless everything fits.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flax import nnx

from jaxnets.interop.exchange import state_from_torch_arrays, to_torch_arrays

from .layout import StateDictMismatch
from .torch_models import to_numpy

__all__ = ["StateDictMismatch", "load_torch_state_dict", "state_from_torch", "to_torch_state_dict"]


def state_from_torch(
    state_dict: Mapping, template, *, flatten_shapes: dict | None = None, what: str = "the state_dict"
) -> nnx.State:
    """A torch-layout dict (tensors or arrays) as an ``nnx.State`` in jaxnets' layout.

    :func:`jaxnets.exchange.state_from_torch_arrays` for torch tensors too, with
    ``casting="same_kind"``: values are rounded to the template's dtypes (e.g.
    a float64 torch reference into a float32 model), as torch's own
    ``load_state_dict`` does.

    Args:
      state_dict: ``{torch_name: tensor or array}``, e.g. ``module.state_dict()``
        or ``{n: p.grad for n, p in module.named_parameters()}``.
      template: a jaxnets model or parameter state; gives structure and dtypes.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.

    Returns:
      A new ``nnx.State`` of the template's parameter structure, holding copies.

    Raises:
      StateDictMismatch: listing every missing, unexpected and mis-shaped key,
        and every value that does not cast to its template dtype (e.g. complex).
    """
    if isinstance(state_dict, Mapping):
        state_dict = {k: to_numpy(v) for k, v in state_dict.items()}
    return state_from_torch_arrays(template, state_dict, casting="same_kind", flatten_shapes=flatten_shapes, what=what)


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping, *, flatten_shapes: dict | None = None) -> None:
    """Copy a torch ``state_dict`` into a jaxnets model, in place (torch: ``load_state_dict(strict=True)``).

    Args:
      model: the jaxnets model to overwrite, e.g. ``jaxnets.LeNet(rngs=...)``.
      state_dict: ``torch_module.state_dict()``, or the same keys with NumPy arrays.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.

    Raises:
      StateDictMismatch: listing every missing, unexpected and mis-shaped key;
        the model is left unchanged.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"load_torch_state_dict expects a jaxnets (nnx) model; got {type(model).__name__}.")
    nnx.update(model, state_from_torch(state_dict, model, flatten_shapes=flatten_shapes))


def to_torch_state_dict(model_or_state, *, flatten_shapes: dict | None = None) -> dict[str, torch.Tensor]:
    """A dict of new torch tensors in PyTorch's layout and naming.

    ``torch_module.load_state_dict(to_torch_state_dict(model), strict=True)``
    accepts it. Works on any ``nnx.State`` of the model's parameter structure
    too, such as gradients from ``jax.grad``.

    Args:
      model_or_state: a jaxnets model or an ``nnx.State`` of its parameters.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.

    Returns:
      ``{torch_name: tensor}`` in torch's parameter order; the tensors own their memory.
    """
    arrays = to_torch_arrays(model_or_state, flatten_shapes=flatten_shapes)  # new arrays: tensors may share them
    return {name: torch.from_numpy(a) for name, a in arrays.items()}
