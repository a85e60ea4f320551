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


def _check_floating(x, fn: str, arg: str = "input") -> None:
    # torch refuses integer inputs to normalisations and losses ("not implemented for 'Long'"), said plainly here.
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{fn} expects a floating-point `{arg}`; got dtype {dtype}. Cast it first, e.g. x.astype(jnp.float32)."
        )


def group_norm(
    input: jax.Array,
    num_groups: int,
    weight: jax.Array | None = None,
    bias: jax.Array | None = None,
    eps: float = 1e-5,
) -> jax.Array:
    """``F.group_norm``: normalise ``(N, C, *)`` over each group of ``C / num_groups`` channels and the rest.

    Statistics per sample and group (biased variance), torch's eps of 1e-5
    (Flax's ``nnx.GroupNorm`` defaults to 1e-6), then a per-channel affine.
    """
    x = input
    _check_floating(x, "group_norm")
    if x.ndim < 2:
        raise ValueError(f"Expected at least 2 dimensions for input tensor but received {x.ndim}")
    n, c = x.shape[:2]
    if num_groups <= 0 or c % num_groups:
        raise ValueError(
            f"Expected number of channels in input to be divisible by num_groups, but got input of shape "
            f"{list(x.shape)} and num_groups={num_groups}"
        )
    values = (n * c // num_groups) * math.prod(x.shape[2:])
    if values == 1:  # torch's _verify_batch_size, over [N * C / G, G, *spatial] with the G left out
        raise ValueError(
            "Expected more than 1 value per channel when training, got input size "
            f"{[n * c // num_groups, num_groups, *x.shape[2:]]}"
        )
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.ndim != 1 or p.shape[0] != c):
            raise ValueError(
                f"Expected {name} to be a vector of size equal to the number of channels in input, but got {name} "
                f"of shape {list(p.shape)} and input of shape {list(x.shape)}"
            )
    grouped = x.reshape(n, num_groups, -1)  # (N, C, *) -> (N, G, C / G * prod(*))
    mean = jnp.mean(grouped, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(grouped - mean), axis=-1, keepdims=True)
    y = ((grouped - mean) * lax.rsqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def instance_norm(
    input: jax.Array,
    running_mean: jax.Array | None = None,
    running_var: jax.Array | None = None,
    weight: jax.Array | None = None,
    bias: jax.Array | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """``F.instance_norm``, functional: returns ``(y, new_running_mean, new_running_var)``.

    Each sample's channel is normalised over its own spatial positions (biased
    variance) when ``use_input_stats``, else by the running statistics. As in
    torch, the running statistics (when given and ``use_input_stats``) move by
    ``momentum`` towards the batch average of the per-instance means and
    *unbiased* variances; torch updates them in place, this returns them.
    """
    x = input
    _check_floating(x, "instance_norm")
    if x.ndim < 2:
        raise ValueError(f"instance_norm expects input of shape (N, C, *); got shape {tuple(x.shape)}.")
    if not use_input_stats and (running_mean is None or running_var is None):
        raise ValueError("Expected running_mean and running_var to be defined when use_input_stats is false")
    axes = tuple(range(2, x.ndim))
    channel = (1, -1) + (1,) * (x.ndim - 2)
    if use_input_stats:
        n = math.prod(x.shape[2:])
        if n == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {tuple(x.shape)}")
        mean = jnp.mean(x, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
        if running_mean is not None and n > 0:
            batch_mean = lax.stop_gradient(jnp.mean(mean.reshape(x.shape[:2]), axis=0))
            batch_var = lax.stop_gradient(jnp.mean(var.reshape(x.shape[:2]), axis=0)) * (n / (n - 1))
            running_mean = (1 - momentum) * running_mean + momentum * batch_mean
            running_var = (1 - momentum) * running_var + momentum * batch_var
    else:
        mean, var = running_mean.reshape(channel), running_var.reshape(channel)
    y = (x - mean) * lax.rsqrt(var + eps)
    if weight is not None:
        y = y * weight.reshape(channel)
    if bias is not None:
        y = y + bias.reshape(channel)
    return y, running_mean, running_var


def rms_norm(
    input: jax.Array,
    normalized_shape: Sequence[int],
    weight: jax.Array | None = None,
    eps: float | None = None,
) -> jax.Array:
    """``F.rms_norm``: ``x / sqrt(mean(x**2) + eps) * weight`` over the last ``len(normalized_shape)`` dims.

    ``eps=None`` is torch's rule: the machine epsilon of the computation type,
    ``finfo(float64).eps`` for float64 input and ``finfo(float32).eps`` for
    float32, float16 and bfloat16 (which are computed in float32 and cast back).
    """
    x = input
    _check_floating(x, "rms_norm")
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(normalized_shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k :]) != normalized_shape:
        raise ValueError(
            f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
            f"[*{', '.join(map(str, normalized_shape))}], but got input of size{list(x.shape)}"
        )
    if weight is not None and tuple(weight.shape) != normalized_shape:
        raise ValueError(
            f"Expected weight to be of same shape as normalized_shape, but got weight of shape {list(weight.shape)} "
            f"and normalized_shape = {list(normalized_shape)}"
        )
    compute = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    if eps is None:
        eps = float(jnp.finfo(compute).eps)
    xc = x.astype(compute)
    axes = tuple(range(x.ndim - k, x.ndim))
    y = (xc * lax.rsqrt(jnp.mean(jnp.square(xc), axis=axes, keepdims=True) + eps)).astype(x.dtype)
    return y if weight is None else y * weight


def local_response_norm(
    input: jax.Array, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> jax.Array:
    """``F.local_response_norm`` across channels of ``(N, C, *)``, torch's formula.

    ``x / (k + alpha * avg(x**2))**beta``, the average taken, as torch does with
    an average pool, over the ``size`` channels ``c - size // 2`` to
    ``c + (size - 1) // 2``, zero-padded at the ends and always divided by
    ``size``.
    """
    x = input
    _check_floating(x, "local_response_norm")
    if x.ndim < 3:
        raise ValueError(f"Expected 3D or higher dimensionality input (got {x.ndim} dimensions)")
    if size <= 0:
        raise ValueError(f"local_response_norm: size must be positive; got size={size}.")
    if x.size == 0:
        return x
    c = x.shape[1]
    sq = jnp.square(x)
    padded = jnp.pad(sq, [(0, 0), (size // 2, (size - 1) // 2)] + [(0, 0)] * (x.ndim - 2))
    window = padded[:, 0:c]
    for i in range(1, size):
        window = window + padded[:, i : i + c]
    div = jnp.power(window / size * alpha + k, beta)
    return x / div
