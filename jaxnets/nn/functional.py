"""``torch.nn.functional``, mirrored: the same names, arguments, layouts and gradients.

Inputs are channels-first (NCHW...) as in torch. Where torch's gradient at a
kink differs from what the obvious JAX expression gives (``hardtanh`` passes no
gradient at its bounds, ``hardswish`` takes the middle branch's slope at -3
and 3, ``jnp.clip`` would split the gradient), the expression is written so
that JAX differentiates the branch torch differentiates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

# Activations ---------------------------------------------------------------


def relu(x: jax.Array) -> jax.Array:
    """``F.relu``: gradient 0 at exactly 0."""
    return jnp.where(x > 0, x, jnp.zeros_like(x))


def threshold(x: jax.Array, threshold: float, value: float) -> jax.Array:
    """``F.threshold``: ``x`` where ``x > threshold``, else ``value``."""
    return jnp.where(x > threshold, x, jnp.asarray(value, x.dtype))


def hardtanh(x: jax.Array, min_val: float = -1.0, max_val: float = 1.0) -> jax.Array:
    """``F.hardtanh``: clamp to ``[min_val, max_val]``; the gradient is 0 at the bounds, as torch's."""
    inside = (x > min_val) & (x < max_val)
    return jnp.where(inside, x, jnp.where(x <= min_val, min_val, max_val).astype(x.dtype))


def relu6(x: jax.Array) -> jax.Array:
    """``F.relu6``: ``hardtanh(x, 0, 6)``."""
    return hardtanh(x, 0.0, 6.0)


def leaky_relu(x: jax.Array, negative_slope: float = 0.01) -> jax.Array:
    """``F.leaky_relu``: slope ``negative_slope`` for ``x <= 0`` (also the gradient at 0)."""
    return jnp.where(x > 0, x, x * negative_slope)


def elu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """``F.elu``: ``alpha * (exp(x) - 1)`` for ``x <= 0``."""
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))


def selu(x: jax.Array) -> jax.Array:
    """``F.selu`` with torch's constants."""
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return scale * elu(x, alpha)


def celu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """``F.celu``: ``alpha * (exp(x / alpha) - 1)`` for ``x <= 0``."""
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0) / alpha))


def gelu(x: jax.Array, approximate: str = "none") -> jax.Array:
    """``F.gelu``: the exact erf form by default (``jax.nn.gelu`` defaults to the tanh form)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu got approximate={approximate!r}; expected 'none' (torch's default) or 'tanh'.")
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def sigmoid(x: jax.Array) -> jax.Array:
    """``torch.sigmoid``."""
    return jax.nn.sigmoid(x)


def tanh(x: jax.Array) -> jax.Array:
    """``torch.tanh``."""
    return jnp.tanh(x)


def silu(x: jax.Array) -> jax.Array:
    """``F.silu``: ``x * sigmoid(x)``."""
    return x * jax.nn.sigmoid(x)


def softplus(x: jax.Array, beta: float = 1.0, threshold: float = 20.0) -> jax.Array:
    """``F.softplus``: ``log1p(exp(beta * x)) / beta``, and ``x`` itself where ``beta * x > threshold``."""
    bx = x * beta
    linear = bx > threshold
    return jnp.where(linear, x, jnp.log1p(jnp.exp(jnp.where(linear, 0, bx))) / beta)


def mish(x: jax.Array) -> jax.Array:
    """``F.mish``: ``x * tanh(softplus(x))``."""
    return x * jnp.tanh(softplus(x))


def hardswish(x: jax.Array) -> jax.Array:
    """``F.hardswish``: ``x * relu6(x + 3) / 6``, with torch's slopes -0.5 at -3 and 1.5 at 3."""
    middle = x * (x + 3) / 6
    return jnp.where(x < -3, jnp.zeros_like(x), jnp.where(x <= 3, middle, x))


def hardsigmoid(x: jax.Array) -> jax.Array:
    """``F.hardsigmoid``: ``relu6(x + 3) / 6``; the gradient is 0 at -3 and 3, as torch's."""
    inside = (x > -3) & (x < 3)
    return jnp.where(inside, x / 6 + 0.5, jnp.where(x <= -3, 0, 1).astype(x.dtype))


def logsigmoid(x: jax.Array) -> jax.Array:
    """``F.logsigmoid``."""
    return jax.nn.log_sigmoid(x)


def hardshrink(x: jax.Array, lambd: float = 0.5) -> jax.Array:
    """``F.hardshrink``: 0 on ``[-lambd, lambd]``, ``x`` outside."""
    return jnp.where((x >= -lambd) & (x <= lambd), jnp.zeros_like(x), x)


def softshrink(x: jax.Array, lambd: float = 0.5) -> jax.Array:
    """``F.softshrink``: ``x - lambd`` above ``lambd``, ``x + lambd`` below ``-lambd``, else 0."""
    return jnp.where(x > lambd, x - lambd, jnp.where(x < -lambd, x + lambd, jnp.zeros_like(x)))


def softsign(x: jax.Array) -> jax.Array:
    """``F.softsign``: ``x / (1 + |x|)``."""
    return x / (1 + jnp.abs(x))


def tanhshrink(x: jax.Array) -> jax.Array:
    """``F.tanhshrink``: ``x - tanh(x)``."""
    return x - jnp.tanh(x)


def prelu(x: jax.Array, weight: jax.Array) -> jax.Array:
    """``F.prelu``: ``weight * x`` for ``x <= 0``, one weight per channel (dim 1) or one for all."""
    if weight.size == 1:
        weight = weight.reshape(())
    else:
        if x.ndim < 2 or x.shape[1] != weight.size:
            channels = x.shape[1] if x.ndim >= 2 else None
            raise ValueError(
                f"prelu got {weight.size} weights for an input of shape {x.shape} ({channels} channels on dim 1); "
                "expected num_parameters equal to the channels, or 1."
            )
        weight = weight.reshape((-1,) + (1,) * (x.ndim - 2))
    return jnp.where(x > 0, x, weight * x)


def glu(x: jax.Array, dim: int = -1) -> jax.Array:
    """``F.glu``: the first half of ``dim`` gated by the sigmoid of the second."""
    if x.shape[dim] % 2:
        raise ValueError(f"glu: halving dimension {dim} of shape {x.shape} needs an even size.")
    a, b = jnp.split(x, 2, axis=dim)
    return a * jax.nn.sigmoid(b)


def _softmax_dim(ndim: int, dim: int | None) -> int:
    # torch's legacy rule for dim=None (it warns; so does this docstring).
    if dim is None:
        return 0 if ndim in (0, 1, 3) else 1
    return dim


def _over(fn, x: jax.Array, dim: int | None) -> jax.Array:
    # torch accepts dim 0 or -1 for a 0-D input and treats it as one element.
    if x.ndim == 0:
        return fn(x.reshape(1), axis=0).reshape(())
    return fn(x, axis=_softmax_dim(x.ndim, dim))


def softmax(x: jax.Array, dim: int | None = None) -> jax.Array:
    """``F.softmax``; ``dim=None`` follows torch's deprecated rule (0 for 0-, 1- and 3-D input, else 1)."""
    return _over(jax.nn.softmax, x, dim)


def log_softmax(x: jax.Array, dim: int | None = None) -> jax.Array:
    """``F.log_softmax``; ``dim=None`` as in :func:`softmax`."""
    return _over(jax.nn.log_softmax, x, dim)


def softmin(x: jax.Array, dim: int | None = None) -> jax.Array:
    """``F.softmin``: ``softmax(-x)``."""
    return _over(jax.nn.softmax, -x, dim)


# Linear and convolution ----------------------------------------------------


def linear(x: jax.Array, weight: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """``F.linear``: ``x @ weight.T + bias`` with torch's ``(out, in)`` weight."""
    y = jnp.matmul(x, weight.T)
    return y if bias is None else y + bias


def bilinear(x1: jax.Array, x2: jax.Array, weight: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """``F.bilinear``: ``y[..., o] = x1 @ weight[o] @ x2 + bias[o]``."""
    y = jnp.einsum("...i,oij,...j->...o", x1, weight, x2)
    return y if bias is None else y + bias


def _ntuple(value, n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ValueError(f"{name} must be an int or {n} ints; got {value!r}.")
    return value


_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def conv_padding(padding, kernel_size: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int]]:
    """torch's ``padding`` (an int, ints, ``"valid"`` or ``"same"``) as ``(low, high)`` pairs per spatial dim.

    ``"same"`` pads ``dilation * (kernel - 1)`` in all, the smaller half before,
    as torch does when that total is odd.
    """
    n = len(kernel_size)
    if padding == "valid":
        return [(0, 0)] * n
    if padding == "same":
        pairs = []
        for k, d in zip(kernel_size, dilation, strict=True):
            total = d * (k - 1)
            pairs.append((total // 2, total - total // 2))
        return pairs
    return [(p, p) for p in _ntuple(padding, n, "padding")]


def conv(
    x: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> jax.Array:
    """``F.conv1d/2d/3d`` for a batched channels-first ``x`` and torch's ``(out, in / groups, *k)`` weight.

    A ``padding_mode`` other than ``"zeros"`` pads the input first (reflect,
    replicate or circular, as ``nn.ConvNd`` does) and convolves without padding.
    """
    n = weight.ndim - 2
    stride = _ntuple(stride, n, "stride")
    dilation = _ntuple(dilation, n, "dilation")
    pads = conv_padding(padding, weight.shape[2:], dilation)
    if padding_mode != "zeros":
        x = jnp.pad(x, [(0, 0), (0, 0), *pads], mode=_PAD_MODES[padding_mode])
        pads = [(0, 0)] * n
    spatial = "DHW"[-n:] if n <= 3 else None
    dims = ("NC" + spatial, "OI" + spatial, "NC" + spatial)
    y = lax.conv_general_dilated(
        x,
        weight,
        window_strides=stride,
        padding=pads,
        rhs_dilation=dilation,
        dimension_numbers=dims,
        feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
    )
    if bias is not None:
        y = y + bias.reshape((-1,) + (1,) * n)
    return y


# Dropout -------------------------------------------------------------------


def dropout(x: jax.Array, p: float = 0.5, training: bool = True, *, key: jax.Array | None = None) -> jax.Array:
    """``F.dropout``: zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    torch draws from its global generator; here the caller passes ``key``
    (needed only when ``training`` and ``0 < p``). ``p == 1`` gives zeros, as
    in torch.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    if key is None:
        raise ValueError("dropout in training mode needs a `key` (jax.random.key) for its mask.")
    keep = jax.random.bernoulli(key, 1 - p, x.shape)
    return jnp.where(keep, x / (1 - p), jnp.zeros_like(x))


# Normalisation -------------------------------------------------------------


def batch_norm(
    x: jax.Array,
    running_mean: jax.Array | None,
    running_var: jax.Array | None,
    weight: jax.Array | None = None,
    bias: jax.Array | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """``F.batch_norm``, functional: returns ``(y, new_running_mean, new_running_var)``.

    In training the batch statistics normalise (biased variance) and the running
    statistics move by ``momentum`` towards the batch mean and the *unbiased*
    batch variance, as torch's do (and leave them alone for an empty batch);
    torch updates them in place, this returns them.
    """
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        n = math.prod(x.shape[a] for a in axes)
        if n == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean.reshape(shape)), axis=axes)
        if running_mean is not None and n > 0:  # torch leaves the statistics alone for an empty batch
            running_mean = (1 - momentum) * running_mean + momentum * lax.stop_gradient(mean)
            running_var = (1 - momentum) * running_var + momentum * lax.stop_gradient(var) * (n / (n - 1))
    else:
        mean, var = running_mean, running_var
    y = (x - mean.reshape(shape)) * lax.rsqrt(var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y, running_mean, running_var


def layer_norm(
    x: jax.Array,
    normalized_shape: Sequence[int],
    weight: jax.Array | None = None,
    bias: jax.Array | None = None,
    eps: float = 1e-5,
) -> jax.Array:
    """``F.layer_norm`` over the last ``len(normalized_shape)`` dims (biased variance; torch's eps 1e-5)."""
    normalized_shape = tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(normalized_shape) :]) != normalized_shape:
        raise ValueError(
            f"layer_norm: input of shape {tuple(x.shape)} does not end in normalized_shape {normalized_shape}."
        )
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    y = (x - mean) * lax.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
