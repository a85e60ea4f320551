"""A ``print(net)``-style summary of a model: layers, parameter shapes and counts."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx


def _layer_line(layer) -> tuple[str, str]:
    """``(description, parameter shapes)`` of one child; a nested module's whole summary has no shapes."""
    if isinstance(layer, nnx.Conv):
        ks = tuple(layer.kernel_size)
        pad = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
        desc = (
            f"Conv({layer.in_features} -> {layer.out_features}, kernel_size={ks}, "
            f"strides={tuple(layer.strides or (1,) * len(ks))}, padding={pad})"
        )
    elif isinstance(layer, nnx.Linear):
        desc = f"Linear({layer.in_features} -> {layer.out_features})"
    elif isinstance(layer, nnx.Module):
        return summary(layer, params=False), ()
    else:
        return f"{getattr(layer, '__name__', type(layer).__name__)}()", ()
    shapes = tuple(
        f"{name} {tuple(v.shape)}"
        for name, v in (("kernel", layer.kernel), ("bias", getattr(layer, "bias", None)))
        if v is not None
    )
    return desc, shapes


def _children(module: nnx.Module):
    for name, value in vars(module).items():
        if isinstance(value, nnx.List):  # nnx.Sequential keeps its children in a List.
            for i, child in enumerate(value):
                yield str(i), child
        elif isinstance(value, nnx.Module) and not name.startswith("_"):
            yield name, value


def summary(model: nnx.Module, *, params: bool = True) -> str:
    """Describe ``model`` the way ``print(net)`` does in PyTorch, with parameter shapes.

    Args:
      model: an ``nnx.Module``.
      params: append the count of parameter arrays and values.

    Returns:
      A multi-line string such as::

        LeNet(
          (conv1): Conv(1 -> 6, kernel_size=(5, 5), strides=(1, 1), padding=VALID)   kernel (5, 5, 1, 6)   bias (6,)
          (conv2): Conv(6 -> 16, kernel_size=(5, 5), strides=(1, 1), padding=VALID)  kernel (5, 5, 6, 16)  bias (16,)
          ...
        )
    """
    lines = [f"{type(model).__name__}("]
    rows = [(f"  ({name}): ", *_layer_line(child)) for name, child in _children(model)]
    # Each column (description, kernel shape, bias shape) as wide as its longest cell, two spaces between.
    cells = [(head + desc, *shapes) for head, desc, shapes in rows if shapes]
    widths = [
        max((len(row[i]) for row in cells if len(row) > i), default=0) for i in range(max(map(len, cells), default=0))
    ]
    for head, desc, shapes in rows:
        if shapes:
            line = "  ".join(
                f"{cell:<{width}}" for cell, width in zip((head + desc, *shapes), widths, strict=False)
            ).rstrip()
        else:
            line = head + desc.replace("\n", "\n  ")
        lines.append(line)
    lines.append(")")
    if params:
        leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
        total = sum(int(np.prod(leaf.shape)) for leaf in leaves)
        lines.append(f"{len(leaves)} parameter arrays, {total:,} values")
    return "\n".join(lines)
