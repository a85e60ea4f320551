"""Muon with torch.optim.Muon's bfloat16 Newton-Schulz iteration, momentum and learning-rate adjustment."""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._adafactor import _lerp
from ._common import check_lr, check_nonnegative, lr_at

DEFAULT_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
_LAYOUTS = {"in_out": "(in, out): Flax and jaxnets' tutorial models", "out_in": "(out, in): torch and jaxnets.nn"}


class TorchMuonState(NamedTuple):
    """State of :func:`muon`, named after ``torch.optim.Muon``'s state.

    Attributes:
      step: int32 scalar, the number of updates applied so far (torch keeps
        none; here it indexes an lr schedule).
      momentum_buffer: pytree like the params, torch's ``momentum_buffer``.
    """

    step: jax.Array
    momentum_buffer: optax.Updates


def zeropower_via_newtonschulz(g: jax.Array, ns_coefficients=DEFAULT_NS_COEFFICIENTS, ns_steps: int = 5, eps=1e-7):
    """torch's ``_zeropower_via_newtonschulz``: ``ns_steps`` quintic iterations in bfloat16.

    The matrix is cast to bfloat16, transposed when it has more rows than
    columns, divided by its Frobenius norm (at least ``eps``), then iterated
    ``X = a X + (b A + c A @ A) @ X`` with ``A = X @ X.T``. Each product
    accumulates in float32 and each ``addmm`` rounds once to bfloat16, as
    torch's CPU kernels do (bit for bit on the shapes of the tests).

    Args:
      g: a 2-D array.
      ns_coefficients: ``(a, b, c)``.
      ns_steps: the number of iterations, < 100.
      eps: floor of the norm.

    Returns:
      A bfloat16 array of ``g``'s shape.
    """
    a, b, c = (float(v) for v in ns_coefficients)
    bf16, f32 = jnp.bfloat16, jnp.float32
    x = g.astype(bf16)
    tall = g.shape[0] > g.shape[1]
    if tall:
        x = x.T
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(f32)))).astype(bf16)
    x = (x.astype(f32) / jnp.maximum(norm, jnp.asarray(eps, bf16)).astype(f32)).astype(bf16)
    for _ in range(ns_steps):
        gram = jnp.dot(x, x.T, preferred_element_type=f32).astype(bf16)
        gram_update = (b * gram.astype(f32) + c * jnp.dot(gram, gram, preferred_element_type=f32)).astype(bf16)
        x = (a * x.astype(f32) + jnp.dot(gram_update, x, preferred_element_type=f32)).astype(bf16)
    return x.T if tall else x


def _lr_ratio(adjust_lr_fn: str | None, shape, layout: str) -> float:
    """torch's ``_adjust_lr`` ratio, with torch's ``(A, B) = (out, in)`` read from the given layout."""
    rows, cols = shape if layout == "out_in" else shape[::-1]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols))  # "match_rms_adamw"


def muon(
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = DEFAULT_NS_COEFFICIENTS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    *,
    layout: str = "in_out",
) -> optax.GradientTransformation:
    """Muon, step for step as ``torch.optim.Muon``, for 2-D parameters only.

    torch computes ``buf = lerp(buf, g, 1 - momentum)``, the direction
    ``lerp(g, buf, momentum)`` (``nesterov``) or ``buf``, orthogonalises it
    with :func:`zeropower_via_newtonschulz` (in bfloat16), then ``p *= 1 - lr
    * weight_decay`` and ``p -= lr * ratio * O``, where ``ratio`` is
    ``sqrt(max(1, out / in))`` (``adjust_lr_fn=None`` or ``"original"``) or
    ``0.2 * sqrt(max(out, in))`` (``"match_rms_adamw"``). torch reads ``(out,
    in)`` from its weight's shape; jaxnets reads it according to ``layout``:
    ``"in_out"`` (the default) for Flax ``(in, out)`` kernels, ``"out_in"`` for
    torch-layout arrays (``jaxnets.nn``). The orthogonalisation itself does not
    depend on the layout (it is transpose-equivariant, bit for bit).

    As torch's docs say, Muon is for the 2-D weights of hidden layers: give
    biases, norms, embeddings and conv kernels another optimizer, e.g. with
    :func:`jaxnets.optim.param_groups` or ``optax.multi_transform``.

    Compared with ``optax.contrib.muon``: optax runs Newton-Schulz in the
    parameter dtype (torch: bfloat16), scales by ``sqrt(max(1, rows/cols))`` of
    its own layout, has no decoupled weight decay times lr, and sends
    non-2-D parameters to Adam instead of refusing them.

    Optimizer state: a :class:`TorchMuonState` with torch's ``momentum_buffer``.

    Args:
      lr: learning rate, >= 0, or an optax schedule ``count -> lr``. A
        float32 scalar (NumPy or JAX) is torch's float32 tensor lr: ``lr *
        ratio`` and ``1 - lr * weight_decay`` are then rounded to float32, as
        torch computes them (1.7e-8 relative in the weights after one step).
      weight_decay: decoupled weight decay (times ``lr``), >= 0.
      momentum: momentum factor, >= 0.
      nesterov: use the Nesterov direction.
      ns_coefficients: ``(a, b, c)`` of the Newton-Schulz polynomial.
      eps: floor of the norm in the Newton-Schulz normalisation.
      ns_steps: Newton-Schulz iterations, an integer in ``[0, 100)``.
      adjust_lr_fn: ``None``, ``"original"`` or ``"match_rms_adamw"``.
      layout: how the 2-D parameters are laid out: ``"in_out"`` or ``"out_in"``.

    Returns:
      An ``optax.GradientTransformation``; its ``init`` refuses non-2-D and
      complex parameters and its ``update`` needs ``params``.

    Raises:
      ValueError: for the arguments ``torch.optim.Muon`` rejects.
    """
    name, torch_name = "muon", "torch.optim.Muon"
    # torch keeps a tensor lr as a tensor: lr * ratio and lr * weight_decay are then float32.
    lr_is_float32 = getattr(lr, "dtype", None) == np.float32 and np.ndim(lr) == 0
    lr = check_lr(name, torch_name, lr)
    check_nonnegative(name, torch_name, momentum=momentum, weight_decay=weight_decay)
    if adjust_lr_fn not in (None, "original", "match_rms_adamw"):
        raise ValueError(
            f"{name} got adjust_lr_fn={adjust_lr_fn!r}; expected None, 'original' or 'match_rms_adamw', as "
            f"{torch_name} does."
        )
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, numbers.Integral) or not 0 <= ns_steps < 100:
        raise ValueError(
            f"{name} got ns_steps={ns_steps!r}; expected an integer in [0, 100), as {torch_name} requires "
            "(at its first step). Pass e.g. ns_steps=5."
        )
    if not isinstance(ns_coefficients, (tuple, list)) or len(ns_coefficients) != 3:
        raise ValueError(
            f"{name} got ns_coefficients={ns_coefficients!r}; expected three numbers (a, b, c), as {torch_name} "
            f"requires. Pass e.g. ns_coefficients={DEFAULT_NS_COEFFICIENTS}."
        )
    if layout not in _LAYOUTS:
        raise ValueError(
            f"{name} got layout={layout!r}; expected one of "
            + ", ".join(f"{k!r} for {v}" for k, v in _LAYOUTS.items())
            + "."
        )
    weight_decay, momentum, eps = float(weight_decay), float(momentum), float(eps)
    ns_coefficients, ns_steps = tuple(float(c) for c in ns_coefficients), int(ns_steps)

    def init_fn(params):
        bad = []
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            if jnp.iscomplexobj(leaf):
                raise ValueError(
                    f"muon got a complex parameter at {jax.tree_util.keystr(path)}; {torch_name} does not "
                    "support complex parameters."
                )
            if jnp.ndim(leaf) != 2:
                bad.append(f"{jax.tree_util.keystr(path)} of shape {tuple(jnp.shape(leaf))}")
        if bad:
            raise ValueError(
                f"muon only supports 2-D parameters, as {torch_name} does; got {', '.join(bad)}. Give biases, "
                "norms, embeddings and conv kernels another optimizer, e.g. jaxnets.optim.param_groups or "
                "optax.multi_transform with adamw for them."
            )
        return TorchMuonState(step=jnp.zeros([], jnp.int32), momentum_buffer=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "muon's update needs the params (decoupled weight decay); call update(grads, state, params)."
            )
        step_lr = lr_at(lr, state.step)
        one = jnp.ones([], float)  # float64 under x64, as torch's Python arithmetic

        def leaf(g, buf, p):
            buf = _lerp(buf, g, one * (1 - momentum))
            direction = _lerp(g, buf, one * momentum) if nesterov else buf
            ortho = zeropower_via_newtonschulz(direction, ns_coefficients, ns_steps, eps)
            ratio = _lr_ratio(adjust_lr_fn, p.shape, layout)
            if lr_is_float32:
                adjusted_lr = np.float32(step_lr) * np.float32(ratio)
                decay = jnp.asarray(np.float32(1) - np.float32(step_lr) * np.float32(weight_decay), p.dtype)
                decay = p - decay * p  # torch: p *= (1 - lr * weight_decay), the factor in float32
            else:
                adjusted_lr = step_lr * ratio
                decay = jnp.asarray(step_lr * weight_decay, p.dtype) * p
            return -decay - jnp.asarray(adjusted_lr, p.dtype) * ortho.astype(p.dtype), buf

        out = jax.tree.map(leaf, updates, state.momentum_buffer, params)
        new_updates = jax.tree.map(lambda _, o: o[0], updates, out)
        bufs = jax.tree.map(lambda _, o: o[1], updates, out)
        return new_updates, TorchMuonState(optax.safe_increment(state.step), bufs)

    return optax.GradientTransformation(init_fn, update_fn)
