"""The one layout table between PyTorch and jaxnets: names, shapes and transposes.

Every conversion between the frameworks goes through :func:`layout`: weight
files in :mod:`jaxnets.exchange`, and weights, gradients and optimizer state in
``parity`` (which re-exports this module as ``parity.layout``). It lists, in
PyTorch's parameter order, one :class:`Entry` per parameter:

=====================  ======================  ==========================================
PyTorch                jaxnets (Flax NNX)      rule
=====================  ======================  ==========================================
``conv1.weight``       ``conv1/kernel``        OIHW ``(O, I, kh, kw)`` <-> HWIO ``(kh, kw, I, O)``
``fc2.weight``         ``fc2/kernel``          ``(out, in)`` <-> ``(in, out)``
``fc1.weight``         ``fc1/kernel``          the same, plus the row permutation between
                                               torch's (C, H, W) flatten order and JAX's
                                               (H, W, C): without it the shapes still fit
                                               and the outputs are silently wrong
``*.bias``             ``*/bias``              unchanged
``0.weight``           ``layers/0/kernel``     ``nn.Sequential`` child ``i`` is ``layers/i``
any key                the same path           a :mod:`jaxnets.nn` (torch-mirror) model: torch's
                                               names and layouts, buffers included
=====================  ======================  ==========================================

Inputs are NCHW in torch and NHWC here: :func:`to_nhwc` and :func:`to_nchw`.
:func:`check_state_dict` checks a whole ``state_dict`` against the table and
raises one :class:`StateDictMismatch` listing everything that does not fit.

This module imports NumPy and Flax only, never torch.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flax import nnx

_LEAF_NAMES = {"kernel": "weight", "bias": "bias"}


@dataclass(frozen=True)
class Entry:
    """How one parameter maps between the frameworks.

    Attributes:
      torch_name: the ``state_dict`` key, e.g. ``"fc1.weight"``.
      jax_path: the path in the ``nnx.State``, e.g. ``("fc1", "kernel")``.
      kind: ``"conv"``, ``"linear"``, ``"flatten_linear"``, ``"bias"`` or ``"same"`` (a jaxnets.nn array).
      jax_shape: the shape in jaxnets.
      torch_shape: the shape in PyTorch.
      flatten_chw: ``(C, H, W)`` of the feature map that a ``flatten_linear`` reads.
    """

    torch_name: str
    jax_path: tuple
    kind: str
    jax_shape: tuple
    torch_shape: tuple
    flatten_chw: tuple | None = None

    def to_torch(self, a) -> np.ndarray:
        """A jaxnets-layout array (or anything NumPy reads) in PyTorch's layout, as a new NumPy array."""
        a = np.asarray(a)
        if self.kind == "conv":
            return _owned(a.transpose(3, 2, 0, 1))  # (kh, kw, I, O) -> (O, I, kh, kw)
        if self.kind == "linear":
            return _owned(a.T)  # (in, out) -> (out, in)
        if self.kind == "flatten_linear":
            c, h, w = self.flatten_chw
            out = a.shape[1]
            # rows (h, w, c) -> columns (c, h, w): (H*W*C, out) -> (H, W, C, out) -> (out, C, H, W)
            return _owned(a.reshape(h, w, c, out).transpose(3, 2, 0, 1).reshape(out, c * h * w))
        return _owned(a)

    def from_torch(self, t) -> np.ndarray:
        """A PyTorch-layout array (a NumPy copy of a tensor) in jaxnets' layout, as a new NumPy array."""
        t = np.asarray(t)
        if self.kind == "conv":
            return _owned(t.transpose(2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O)
        if self.kind == "linear":
            return _owned(t.T)
        if self.kind == "flatten_linear":
            c, h, w = self.flatten_chw
            out = t.shape[0]
            # (out, C*H*W) -> (out, C, H, W) -> (H, W, C, out) -> (H*W*C, out)
            return _owned(t.reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, out))
        return _owned(t)


def _owned(a: np.ndarray) -> np.ndarray:
    # A C-ordered copy with canonical strides: np.ascontiguousarray keeps odd strides on axes of size 1
    # (e.g. C = 1 after a transpose), which torch.from_numpy passes on and ops such as .view() then reject.
    return np.array(a, order="C", copy=True)


def _torch_name(path: tuple) -> str:
    parts = []
    for i, key in enumerate(path):
        if key == "layers" and i + 1 < len(path) and isinstance(path[i + 1], int):
            continue  # nnx.Sequential keeps children in `layers`; torch names them 0, 1, 2
        parts.append(str(_LEAF_NAMES.get(key, key)) if i == len(path) - 1 else str(key))
    return ".".join(parts)


def _mirror(model_or_state):
    """The :mod:`jaxnets.nn` module class when ``model_or_state`` is a torch-mirror model, else None."""
    nn = sys.modules.get("jaxnets.nn")  # imported by whoever built a jaxnets.nn model
    if nn is not None and isinstance(model_or_state, nn.Module):
        return nn
    return None


def _params(model_or_state) -> nnx.State:
    nn = _mirror(model_or_state)
    if nn is not None:  # torch's state_dict holds the buffers too
        return nnx.state(model_or_state, (nnx.Param, nn.Buffer))
    if isinstance(model_or_state, nnx.Module):
        return nnx.state(model_or_state, nnx.Param)
    if isinstance(model_or_state, nnx.State):
        return model_or_state
    raise TypeError(
        f"expected a jaxnets (nnx) model or an nnx.State of its parameters; got {type(model_or_state).__name__}."
    )


def _shape(value) -> tuple:
    return tuple(np.shape(value[...] if isinstance(value, nnx.Variable) else value))


def layout(model_or_state, *, flatten_shapes: dict[str, tuple[int, int, int]] | None = None) -> list[Entry]:
    """The table for one model: an :class:`Entry` per parameter, in PyTorch's parameter order.

    A linear layer that follows convolutions reads a flattened feature map, and
    torch flattens (C, H, W) where JAX flattens (H, W, C). Its ``(C, H, W)`` is
    taken from ``flatten_shapes`` when given (keyed by the torch layer name,
    e.g. ``{"fc1": (16, 5, 5)}``), else inferred: C from the last convolution's
    output channels and a square H = W.

    Args:
      model_or_state: a jaxnets model, or an ``nnx.State`` with its parameter
        structure (e.g. gradients).
      flatten_shapes: ``(C, H, W)`` per flattening linear layer, for feature
        maps that are not square.

    Returns:
      The entries, ordered like ``torch_module.named_parameters()`` for the
      jaxnets models (layers in order, weight before bias).
    """
    if _mirror(model_or_state) is not None:
        return _mirror_layout(model_or_state)
    flat = [(tuple(path), value) for path, value in nnx.to_flat_state(_params(model_or_state))]
    flatten_shapes = dict(flatten_shapes or {})
    layers: dict[tuple, dict] = {}
    for path, value in flat:
        if path[-1] not in _LEAF_NAMES:
            raise ValueError(
                f"the layout table does not know how to map the parameter {'/'.join(map(str, path))!r} to PyTorch: "
                f"it maps kernels and biases of nnx.Linear and nnx.Conv (leaf names {sorted(_LEAF_NAMES)})."
            )
        layers.setdefault(path[:-1], {})[path[-1]] = _shape(value)
    entries: list[Entry] = []
    conv_channels = None  # output channels of the last convolution seen
    flattened = False
    for layer, leaves in layers.items():  # nnx states iterate in sorted order: conv1 < conv2 < fc1 < fc2
        kernel = leaves.get("kernel")
        name = _torch_name(layer + ("kernel",)).rsplit(".", 1)[0]
        if kernel is not None:
            if len(kernel) == 4:
                kind, torch_shape, chw = "conv", (kernel[3], kernel[2], kernel[0], kernel[1]), None
                conv_channels, flattened = kernel[3], False
            elif len(kernel) == 2:
                kind, torch_shape, chw = "linear", (kernel[1], kernel[0]), None
                if name in flatten_shapes or (conv_channels is not None and not flattened):
                    chw = tuple(flatten_shapes.get(name) or _square_chw(name, kernel[0], conv_channels))
                    if math.prod(chw) != kernel[0]:
                        raise ValueError(
                            f"flatten_shapes[{name!r}] = {chw} holds {math.prod(chw)} features, but {name}'s kernel "
                            f"has {kernel[0]} inputs."
                        )
                    kind, flattened = "flatten_linear", True
            else:
                raise ValueError(
                    f"the layout table maps 2-D (linear) and 4-D (2-D conv) kernels; {name} has shape {kernel}."
                )
            entries.append(Entry(f"{name}.weight", layer + ("kernel",), kind, kernel, torch_shape, chw))
        if "bias" in leaves:
            entries.append(Entry(f"{name}.bias", layer + ("bias",), "bias", leaves["bias"], leaves["bias"]))
    return entries


def _mirror_layout(model) -> list[Entry]:
    """A :mod:`jaxnets.nn` model's table: its paths are torch's keys and its layouts torch's, buffers included."""
    paths = {".".join(map(str, path)): tuple(path) for path, _ in nnx.to_flat_state(_params(model))}
    entries = []
    for name, value in model.state_dict().items():
        if name not in paths:
            raise ValueError(
                f"{name} is a parameter shared with another layer; the layout table maps each array once, so "
                "load and save this model with its own state_dict() and load_state_dict()."
            )
        entries.append(Entry(name, paths[name], "same", tuple(value.shape), tuple(value.shape)))
    return entries


def _square_chw(name: str, features: int, channels: int) -> tuple[int, int, int]:
    side = math.isqrt(features // channels) if features % channels == 0 else 0
    if side * side * channels != features:
        raise ValueError(
            f"{name} reads {features} features after a convolution with {channels} channels, which is not a "
            f"square feature map; pass flatten_shapes={{{name!r}: (C, H, W)}}."
        )
    return channels, side, side


class StateDictMismatch(ValueError):
    """A state_dict that does not fit the model: lists every missing, unexpected and mis-shaped key."""


def check_state_dict(
    entries: Sequence[Entry],
    state_dict: Mapping,
    what: str = "the state_dict",
    *,
    more_problems: Sequence[str] = (),
) -> None:
    """Raise one :class:`StateDictMismatch` unless ``state_dict`` has exactly the table's keys and torch shapes.

    Args:
      entries: the model's table, from :func:`layout`.
      state_dict: ``{torch_name: array or tensor}``; only keys and shapes are read.
      what: how the message names the state_dict, e.g. ``"weights file 'w.pt'"``.
      more_problems: further lines to report in the same error (e.g. wrong dtypes).

    Raises:
      StateDictMismatch: listing every missing, unexpected and mis-shaped key,
        the extra problems, and the expected keys.
    """
    expected = {e.torch_name: e for e in entries}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k}: got {tuple(np.shape(state_dict[k]))}, expected {expected[k].torch_shape}"
        for k in expected
        if k in state_dict and tuple(np.shape(state_dict[k])) != tuple(expected[k].torch_shape)
    ]
    if missing or unexpected or misshaped or more_problems:
        lines = [f"{what} does not fit the model; nothing was changed."]
        if missing:
            lines.append(f"  missing keys: {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {', '.join(map(str, unexpected))}")
        if misshaped:
            lines.append("  wrong shapes (torch layout): " + "; ".join(misshaped))
        lines += [f"  {problem}" for problem in more_problems]
        lines.append(f"  expected keys: {', '.join(expected)}")
        raise StateDictMismatch("\n".join(lines))


def to_nhwc(x) -> np.ndarray:
    """Images ``(N, C, H, W)`` (torch) -> ``(N, H, W, C)`` (jaxnets), as a new NumPy array."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"to_nhwc expects a batch of images (N, C, H, W); got shape {x.shape}.")
    return _owned(x.transpose(0, 2, 3, 1))


def to_nchw(x) -> np.ndarray:
    """Images ``(N, H, W, C)`` (jaxnets) -> ``(N, C, H, W)`` (torch), as a new NumPy array."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"to_nchw expects a batch of images (N, H, W, C); got shape {x.shape}.")
    return _owned(x.transpose(0, 3, 1, 2))
