"""Read a computation's op chain from its jaxpr: the JAX counterpart of walking ``loss.grad_fn``.

PyTorch records the graph while it runs and lets you walk it backwards from
``loss.grad_fn``. JAX traces a function into a jaxpr instead, before anything
runs. :func:`op_chain` lists the jaxpr's operations in execution order with
PyTorch-like names, folding the bias ``add`` into its ``conv2d``/``linear`` and
dropping pure layout bookkeeping, so LeNet's MSE loss reads::

    conv2d -> relu -> max_pool2d -> conv2d -> relu -> max_pool2d -> view
    -> linear -> relu -> linear -> relu -> linear -> mse_loss
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

_NAMES = {
    "conv_general_dilated": "conv2d",
    "dot_general": "linear",
    "reduce_window_max": "max_pool2d",
}
# Pure layout bookkeeping, e.g. LeNet(impl="fast") moving the batch axis last and back.
_LAYOUT = {"reshape", "broadcast_in_dim", "convert_element_type", "squeeze", "expand_dims", "transpose"}
_WITH_BIAS = {"conv2d", "linear"}
# Fused ops of jaxnets, listed as the ops they compute.
_FUSED = {"conv2d_relu_max_pool2d": ("conv2d", "relu", "max_pool2d")}


def _eqn_name(eqn) -> str:
    prim = eqn.primitive.name
    if "name" in eqn.params and prim in ("jit", "pjit", "closed_call", "core_call"):
        return str(eqn.params["name"])  # a named sub-function, e.g. jax.jit(mse_loss)
    if prim == "custom_jvp_call":  # jax.nn.relu is a custom_jvp around jit(relu)
        inner = eqn.params["call_jaxpr"].jaxpr.eqns
        if len(inner) == 1 and "name" in inner[0].params:
            return str(inner[0].params["name"])
    return _NAMES.get(prim, prim)


def op_chain(fn: Callable[..., Any], *args, **kwargs) -> list[str]:
    """The operations ``fn(*args, **kwargs)`` performs, in order, with PyTorch-like names.

    Args:
      fn: any JAX-traceable function, e.g. a loss of a model's output.
      *args: example arguments (only their shapes and dtypes matter).
      **kwargs: example keyword arguments.

    Returns:
      Names such as ``["conv2d", "relu", "max_pool2d", ..., "mse_loss"]``. A
      sub-function wrapped in ``jax.jit`` appears as one entry with its name.
    """
    jaxpr = jax.make_jaxpr(fn)(*args, **kwargs).jaxpr
    chain: list[str] = []
    for eqn in jaxpr.eqns:
        name = _eqn_name(eqn)
        if name in _LAYOUT:
            ins, outs = eqn.invars[0].aval, eqn.outvars[0].aval
            # A reshape that folds (N, H, W, C) into (N, H*W*C) is torch's x.view(-1, n).
            if name == "reshape" and len(ins.shape) > 2 and len(outs.shape) == 2:
                chain.append("view")
            continue
        if name == "add" and chain and chain[-1] in _WITH_BIAS:
            continue  # the bias of the layer just before
        chain.extend(_FUSED.get(name, (name,)))
    return chain


def format_chain(chain: list[str], per_line: int = 6) -> str:
    """Lay out an op chain like the tutorial's ``input -> conv2d -> ...`` diagram."""
    rows = [chain[i : i + per_line] for i in range(0, len(chain), per_line)]
    lines = ["input -> " + " -> ".join(rows[0])] if rows else ["input"]
    lines += ["      -> " + " -> ".join(row) for row in rows[1:]]
    return "\n".join(lines)
