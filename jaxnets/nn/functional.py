"""``torch.nn.functional``, mirrored: the same names, arguments, layouts and gradients.

Inputs are channels-first (NCHW...) as in torch. Where torch's gradient at a
kink differs from what the obvious JAX expression gives (``hardtanh`` passes no
gradient at its bounds, ``hardswish`` takes the middle branch's slope at -3
and 3, ``jnp.clip`` would split the gradient), the expression is written so
that JAX differentiates the branch torch differentiates.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import _extrema
from .._pool import max_pool_pick as max_pool_pick  # one rule for the mirror pools and LeNet's fast path
from . import _random

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


# Above this many elements in the stacked patches (``N * C * taps * output
# positions``) or this many kernel taps, XLA:CPU's own convolution beat the taps
# in the measurements in :func:`conv`'s docstring.
_TAPS_MAX_PATCH_ELEMENTS = 6_000_000
_TAPS_MAX_TAPS = 49


def _conv_lax(x, weight, stride, pads, dilation, groups):
    n = weight.ndim - 2
    spatial = "DHW"[-n:] if n <= 3 else None
    dims = ("NC" + spatial, "OI" + spatial, "NC" + spatial)
    return lax.conv_general_dilated(
        x,
        weight,
        window_strides=stride,
        padding=pads,
        rhs_dilation=dilation,
        dimension_numbers=dims,
        feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
    )


def _conv_out_shape(x_shape, weight_shape, stride, pads, dilation) -> tuple[int, ...]:
    return tuple(
        (size + lo + hi - d * (k - 1) - 1) // s + 1
        for size, k, s, (lo, hi), d in zip(x_shape[2:], weight_shape[2:], stride, pads, dilation, strict=True)
    )


def _live_offsets(size, k, stride, lo, dilation, out) -> tuple[int, int]:
    """The kernel offsets ``[a, b)`` along one dim whose taps read some of the input, not only its zero padding.

    Offset ``o`` reads padded positions ``o * dilation + j * stride`` for ``j <
    out``; it is live when one of them falls in ``[lo, lo + size)``. The
    bounding range of the live offsets is returned (dead offsets inside it, if
    any, are kept; they add zeros); with none live, ``(0, 1)``, one all-zero tap.
    """
    live = []
    for o in range(k):
        j = max(0, -(-(lo - o * dilation) // stride))  # the first position at or past the input's start
        if j < out and o * dilation + j * stride < lo + size:
            live.append(o)
    return (live[0], live[-1] + 1) if live else (0, 1)


def _conv_taps(x, weight, stride, pads, dilation, groups):
    """The convolution as its kernel's strided slices of the padded input, stacked, and one ``dot_general``.

    Taps that read only the zero padding (ResNet-18's layer4 at 1x1 pixels:
    8 of a 3x3 kernel's 9) are left out, with their rows of the weight: they
    add zeros. In :func:`jaxnets.ports.resnet18`'s benchmark train step (batch
    32, 3x32x32, SGD) this took the step from 99-108 / 107-121 to 83-98 /
    94-108 ms (min / median over rounds of 10 steps, three runs, each in one
    process alternating with the full kernel, 2026-12-06; docs/benchmark.md).
    """
    batch, channels = x.shape[:2]
    out_channels, group_channels = weight.shape[:2]
    out = _conv_out_shape(x.shape, weight.shape, stride, pads, dilation)
    live = [
        _live_offsets(size, k, s, lo, d, m)
        for size, k, s, (lo, _), d, m in zip(x.shape[2:], weight.shape[2:], stride, pads, dilation, out, strict=True)
    ]
    weight = lax.slice(weight, (0, 0, *(a for a, _ in live)), (out_channels, group_channels, *(b for _, b in live)))
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0), *((lo, hi, 0) for lo, hi in pads)])
    # (N, C, *S) -> (C, N, *S): the patches' columns are then (batch, position), one GEMM for the whole batch.
    x = jnp.swapaxes(x, 0, 1)
    taps = []
    for offsets in itertools.product(*(range(a, b) for a, b in live)):
        start = (0, 0, *(o * d for o, d in zip(offsets, dilation, strict=True)))
        limit = (
            channels,
            batch,
            *(o * d + (m - 1) * s + 1 for o, d, m, s in zip(offsets, dilation, out, stride, strict=True)),
        )
        taps.append(lax.slice(x, start, limit, (1, 1, *stride)))
    # (C, taps, N, *out) -> (groups, C / groups * taps, N * positions), rows in the order of the weight's flattening
    patches = jnp.stack(taps, axis=1).reshape(groups, group_channels * len(taps), batch * math.prod(out))
    w = weight.reshape(groups, out_channels // groups, group_channels * len(taps))
    # (groups, O / groups, N * positions), the groups as the dot's batch dimension
    y = lax.dot_general(w, patches, (((2,), (1,)), ((0,), (0,))), precision=lax.Precision.HIGHEST)
    return jnp.swapaxes(y.reshape(out_channels, batch, *out), 0, 1)


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

    On CPU, for 1 to 3 spatial dims and patches that are not too large, the
    convolution is computed as *taps*: the zero-padded input's strided slices,
    one per kernel position (dilation and stride in the slices' starts and
    strides), stacked into patches ``(groups, in / groups * taps, N * positions)``
    and multiplied by the weight reshaped to ``(groups, out / groups, in / groups
    * taps)`` in one ``dot_general`` (groups as its batch dimension,
    ``Precision.HIGHEST``). XLA:CPU's own convolution is slow at small spatial
    sizes: at batch 32, float32, XLA's default flags, 2 cores, a jitted forward
    (and ``jax.grad`` of a sum of it, the forward and backward) took, in one
    run per shape (medians of its repeats; lax's times moved by up to a third
    between runs),

    ===========================================  ==============  ================
    shape                                        forward ms      fwd + bwd ms
                                                 lax -> taps     lax -> taps
    ===========================================  ==============  ================
    ResNet-18 stem 7x7 s2, 3 -> 64, 32x32          2.6 -> 1.9      15.9 -> 13.7
    ResNet-18 3x3, 64, 8x8                         2.5 -> 1.6       7.2 -> 4.8
    ResNet-18 3x3 s2, 64 -> 128, 8x8               1.1 -> 0.8       4.9 -> 2.2
    ResNet-18 1x1 s2 shortcut, 64 -> 128, 8x8      0.29 -> 0.24     1.4 -> 0.8
    ResNet-18 3x3, 256, 2x2                         22 -> 1.2        47 -> 3.9
    ResNet-18 3x3, 512, 1x1                         15 -> 1.2        30 -> 4.4
    3x3, 512, 4x4                                   18 -> 15         52 -> 40
    depthwise 3x3, 64 groups, 16x16                 23 -> 3.5        56 -> 26
    3x3x3, 8 -> 16, 16^3, batch 4                  7.7 -> 4.0        38 -> 17
    LeNet 5x5, 1 -> 6, 32x32, batch 64             2.6 -> 2.2        17 -> 6.4
    LeNet 5x5, 6 -> 16, 14x14, batch 64           0.73 -> 0.92      4.7 -> 3.9
    LeNet 5x5, 1 -> 6, 32x32, batch 1             0.16 -> 0.20     0.42 -> 0.23
    ===========================================  ==============  ================

    and lax won where the patches get large: 3x3, 64, 32x32 (29 against 87 ms
    forward, 118 against 129 fwd + bwd), 3x3, 128, 16x16 (14 against 47, 53
    against 77), DCGAN's 4x4 s2, 64 -> 128, 32x32 at batch 64 (32 against 88,
    176 against 179), and long 1-D kernels (64 taps, 16 channels, length 1000,
    batch 8: 2.6 against 32, 9.5 against 64). So taps are used up to 49 kernel
    taps and 6 million patch elements (``N * in * taps * output positions``);
    beyond either, and for empty shapes, ``lax.conv_general_dilated``. The rule
    is coarse: the MNIST example's 3x3, 32 -> 64, 26x26 at batch 64 (10.6
    million patch elements) goes to lax although taps won there (53 -> 48,
    127 -> 84). In ResNet-18 (:func:`jaxnets.ports.resnet18`, batch 32,
    3x32x32, every conv on the taps) the jitted eval forward went from 166-171
    to 27-28 ms, and the benchmark's SGD train step (``resnet18_train``) from
    367-377 to 98-103 ms (two runs each, alternating).

    ``lax.platform_dependent`` picks the taps on CPU only: on GPU and TPU this
    stays ``lax.conv_general_dilated`` (that path is not run by this project's
    tests, which run on CPU). No custom VJP, so forward-mode autodiff
    (``jax.jvp``, ``jax.jacfwd``) works through every layer built on this, unlike
    LeNet's im2col convolution (:mod:`jaxnets.models._fastconv`), which also
    covers only VALID, stride-1, 2-D, ungrouped convolutions of batch-last maps.
    """
    n = weight.ndim - 2
    stride = _ntuple(stride, n, "stride")
    dilation = _ntuple(dilation, n, "dilation")
    pads = conv_padding(padding, weight.shape[2:], dilation)
    if padding_mode != "zeros":
        x = jnp.pad(x, [(0, 0), (0, 0), *pads], mode=_PAD_MODES[padding_mode])
        pads = [(0, 0)] * n
    args = (x, weight, stride, pads, dilation, groups)
    if _taps_pay(*args):
        y = lax.platform_dependent(
            x,
            weight,
            cpu=lambda x, w: _conv_taps(x, w, stride, pads, dilation, groups),
            default=lambda x, w: _conv_lax(x, w, stride, pads, dilation, groups),
        )
    else:
        y = _conv_lax(*args)
    if bias is not None:
        y = y + bias.reshape((-1,) + (1,) * n)
    return y


def _taps_pay(x, weight, stride, pads, dilation, groups) -> bool:
    """Whether :func:`_conv_taps` is used (on CPU): the rule measured in :func:`conv`'s docstring."""
    n = weight.ndim - 2
    if not 1 <= n <= 3 or x.ndim != n + 2 or x.shape[1] != weight.shape[1] * groups:
        return False  # lax's own errors for malformed arguments
    out = _conv_out_shape(x.shape, weight.shape, stride, pads, dilation)
    taps = math.prod(weight.shape[2:])
    if min(*x.shape, *weight.shape, *out) <= 0:
        return False
    return taps <= _TAPS_MAX_TAPS and x.shape[0] * x.shape[1] * taps * math.prod(out) <= _TAPS_MAX_PATCH_ELEMENTS


# Dropout -------------------------------------------------------------------


def dropout(x: jax.Array, p: float = 0.5, training: bool = True, *, key: jax.Array | None = None) -> jax.Array:
    """``F.dropout``: zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    torch draws from its global generator; here the caller passes ``key``
    (needed only when ``training`` and ``0 < p``). ``p == 1`` gives zeros, as
    in torch. The mask compares ``jax.random.bits(key, x.shape, jnp.uint32)``
    with an integer threshold (see ``jaxnets/nn/_random.py``), so the drop
    probability is ``p`` rounded to the nearest multiple of ``2**-32``. The
    hash, written out as ``uint32`` arithmetic, took the Transformer
    benchmark's train step from 77-79 ms to 61-64 ms (median of 8 rounds in
    one process); packing the mask 32 to a word so that it is hashed once,
    not in each of its users, from 62.0 / 64.4 to 55.4 / 59.9 ms (min / median
    of 30 rounds; docs/benchmark.md, "ResNet-18 and Transformer encoder").
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    if key is None:
        raise ValueError("dropout in training mode needs a `key` (jax.random.key) for its mask.")
    keep = _random.keep_mask(key, p, x.shape)
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


# Pooling -------------------------------------------------------------------
#
# Every pooling function builds its windows explicitly rather than calling
# lax.reduce_window: the maximum is then picked by max_pool_pick, the FIRST
# maximal element in torch's scan order (the kernel's leading dim outermost; the
# last NaN where there are NaNs), and only that element gets the gradient, as
# torch's CPU kernels do on ties; reduce_window's gradient (select_and_scatter)
# would pick its own tie-break. max_pool reads its windows as one strided slice
# per kernel position and selects the picked one, so its gradient is selects and
# strided pads; the other pools gather theirs (an index array per spatial dim),
# and windows of different sizes (adaptive pools) are padded to the largest and masked.


def _pool_input(x: jax.Array, n: int, name: str) -> tuple[jax.Array, bool]:
    if x.ndim not in (n + 1, n + 2):
        raise ValueError(
            f"{name}: expected a {n + 1}D (unbatched) or {n + 2}D (batched) input, channels first; "
            f"got shape {tuple(x.shape)}."
        )
    if any(s == 0 for s in x.shape[-n - 1 :]):
        raise ValueError(f"{name}: expected non-zero channel and spatial sizes; got input shape {tuple(x.shape)}.")
    batched = x.ndim == n + 2
    return (x if batched else x[None]), batched


def _windows(x: jax.Array, starts, sizes, fill) -> tuple[jax.Array, jax.Array, list]:
    """Windows of batched ``x`` (N, C, *spatial): ``(N, C, *out, prod(k))``, and a mask of the real elements.

    ``starts[d]`` and ``sizes[d]`` are (out_d, k_d) integer arrays giving, for
    output position o and window offset j, the input index along spatial dim d
    and whether it is inside the input (``sizes`` is a boolean mask). Elements
    outside are ``fill``. Also returns, per dim, the (out_d, k_d) index arrays.
    """
    n = len(starts)
    valid = jnp.ones((), bool)
    for d in range(n):
        idx, ok = starts[d], sizes[d]
        ok = ok & (idx >= 0) & (idx < x.shape[2 + 2 * d])
        axis = 2 + 2 * d
        x = jnp.take(x, jnp.clip(idx, 0, x.shape[axis] - 1).reshape(-1), axis=axis)
        x = x.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :])
        shape = [1] * (2 + 2 * n)
        shape[2 + 2 * d], shape[3 + 2 * d] = idx.shape
        valid = valid & ok.reshape(shape)
    x = jnp.where(valid, x, jnp.asarray(fill, x.dtype))
    # (N, C, o1, k1, o2, k2, ...) -> (N, C, o1, o2, ..., k1, k2, ...)
    perm = [0, 1, *range(2, 2 + 2 * n, 2), *range(3, 3 + 2 * n, 2)]
    x = x.transpose(perm)
    valid = jnp.broadcast_to(valid, [1, 1, *valid.shape[2:]]).transpose(perm)
    k = math.prod(x.shape[2 + n :])
    return x.reshape(*x.shape[: 2 + n], k), valid.reshape(*valid.shape[: 2 + n], k)


def _flat_indices(starts, spatial) -> jax.Array:
    """Per output position and window element, torch's flat per-channel input index: (*out, prod(k))."""
    n = len(starts)
    flat = jnp.zeros((), jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
    for d in range(n):
        stride = math.prod(spatial[d + 1 :])
        shape = [1] * (2 * n)
        shape[d], shape[n + d] = starts[d].shape
        flat = flat + starts[d].reshape(shape) * stride
    out = [s.shape[0] for s in starts]
    return jnp.broadcast_to(flat, (*out, *[s.shape[1] for s in starts])).reshape(*out, -1)


def _pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's ``pooling_output_shape``: the last window must start inside the input or the left padding."""
    span = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = span // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_args(name, n, x, kernel_size, stride, padding, dilation, ceil_mode):
    k = _ntuple(kernel_size, n, "kernel_size")
    empty = stride is None or (not isinstance(stride, int) and len(tuple(stride)) == 0)
    s = k if empty else _ntuple(stride, n, "stride")
    p = _ntuple(padding, n, "padding")
    dil = _ntuple(dilation, n, "dilation")
    if any(v <= 0 for v in k):
        raise ValueError(f"{name}: kernel_size must be greater than zero; got {k}.")
    if any(v <= 0 for v in s):
        raise ValueError(f"{name}: stride must be greater than zero; got {s}.")
    if any(v <= 0 for v in dil):
        raise ValueError(f"{name}: dilation must be greater than zero; got {dil}.")
    if any(v < 0 for v in p) or any(2 * pi > ki for pi, ki in zip(p, k, strict=True)):
        raise ValueError(
            f"{name}: pad should be at most half of kernel size (as torch checks, dilation aside), but got "
            f"pad={p} and kernel_size={k}."
        )
    spatial = x.shape[2:]
    out = [
        _pool_out_size(L, ki, si, pi, di, ceil_mode) for L, ki, si, pi, di in zip(spatial, k, s, p, dil, strict=True)
    ]
    if any(o < 1 for o in out):
        raise ValueError(
            f"{name}: given input size {tuple(x.shape[1:])}, the calculated output size "
            f"{(x.shape[1], *out)} is too small (kernel_size={k}, stride={s}, padding={p}, dilation={dil})."
        )
    # NumPy, so that they stay static under jit (max_pool derives its padding mask from them).
    starts = [
        (np.arange(o, dtype=np.int32) * si - pi)[:, None] + np.arange(ki, dtype=np.int32)[None, :] * di
        for o, ki, si, pi, di in zip(out, k, s, p, dil, strict=True)
    ]
    return k, s, p, dil, out, starts


def max_pool(
    x: jax.Array,
    n: int,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    name: str = "max_pool",
):
    """``F.max_pool1d/2d/3d`` over the last ``n`` dims of a channels-first input, batched or not.

    Padding is ``-inf``. The maximum is the first maximal element in torch's
    scan order (the last NaN in a window holding NaNs), which also receives
    the gradient on ties, as torch CPU does; ``return_indices`` gives torch's
    flat per-channel input indices.

    The windows are one strided slice of the padded input per kernel position,
    and the value is the picked slice's element, selected: the backward pass is
    selects and strided pads, which XLA fuses, where a gather of the windows
    made it a scatter-add into zeros. At ResNet-18's stem (3x3, stride 2,
    padding 1, 32 x 64 x 16 x 16, float32) the jitted forward and backward took
    3.0 against 10.2 ms (fastest of 20 rounds, one process, 2026-12-07), and
    the benchmark's ResNet-18 train step 93 against 101 ms (fastest of 12,
    alternating in one process).
    """
    x, batched = _pool_input(x, n, name)
    k, s, p, dil, out, starts = _pool_args(name, n, x, kernel_size, stride, padding, dilation, ceil_mode)
    taps, real = _strided_windows(x, k, s, p, dil, out, starts, -jnp.inf)
    wins = lax.stop_gradient(jnp.stack(taps))  # (prod(k), N, C, *out), each tap contiguous; only compared
    # One element of each window, never padding: torch scans only the input (its -inf ties a real -inf).
    picked = max_pool_pick(wins, wins.max(axis=0), (0,), valid=real[:, None, None])
    # The picked tap, selected: the gradient of a select and a strided slice is a select and a strided
    # pad, which XLA fuses into one loop; a gather's is a scatter-add into zeros, which XLA:CPU runs
    # element by element.
    y = taps[-1]
    for q in range(len(taps) - 2, -1, -1):
        y = jnp.where(picked[q], taps[q], y)
    if not batched:
        y = y[0]
    if not return_indices:
        return y
    arg = jnp.argmax(picked, axis=0)
    flat = _flat_indices(starts, x.shape[2:])
    flat = jnp.broadcast_to(flat, arg.shape[:2] + flat.shape)
    idx = jnp.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return y, (idx if batched else idx[0])


def _strided_windows(x: jax.Array, k, s, p, d, out, starts, fill) -> tuple[list[jax.Array], np.ndarray]:
    """The windows of batched ``x`` (N, C, *spatial) as ``prod(k)`` strided slices, each ``(N, C, *out)``.

    Slice ``q`` holds element ``q`` of every window, in torch's scan order (the kernel's leading dim
    outermost): ``x`` padded by ``p`` (and on the far side as far as the last window reaches, for
    ``ceil_mode``) with ``fill``, read from ``offset * d`` with step ``s``. The same windows as
    :func:`_windows`' gathers, without a gather. Also returns a boolean ``(prod(k), *out)`` array:
    True where slice ``q`` reads the input, False where it reads padding (``starts``: :func:`_pool_args`'
    input index of each output position and offset, per dim).
    """
    pads = [(0, 0, 0), (0, 0, 0)]
    for size, ki, si, pi, di, oi in zip(x.shape[2:], k, s, p, d, out, strict=True):
        pads.append((pi, max(0, (oi - 1) * si + (ki - 1) * di + 1 - (size + pi)), 0))
    # (k_1, ..., k_n, out_1, ..., out_n): whether offset j of output position o reads the input, per dim and all.
    n, real = len(k), np.ones((), bool)
    for dim, (st, size) in enumerate(zip(starts, x.shape[2:], strict=True)):
        shape = [1] * (2 * n)
        shape[dim], shape[n + dim] = st.shape[1], st.shape[0]
        real = real & ((st >= 0) & (st < size)).T.reshape(shape)
    x = lax.pad(x, jnp.asarray(fill, x.dtype), pads)
    taps = []
    for offsets in itertools.product(*(range(ki) for ki in k)):  # row-major, as real's leading dims
        start = (0, 0, *(o * di for o, di in zip(offsets, d, strict=True)))
        limit = (*x.shape[:2], *(o * di + (oi - 1) * si + 1 for o, di, oi, si in zip(offsets, d, out, s, strict=True)))
        taps.append(lax.slice(x, start, limit, (1, 1, *s)))
    return taps, np.broadcast_to(real, (*k, *out)).reshape(-1, *out)


def _first_max(wins: jax.Array, valid: jax.Array) -> jax.Array:
    """Index along the last axis of the element torch picks: :func:`max_pool_pick` of the windows, never a filler."""
    return jnp.argmax(max_pool_pick(wins, wins.max(axis=-1), (-1,), valid=valid), axis=-1)


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``F.max_pool1d``: input ``(N, C, L)`` or ``(C, L)``."""
    return max_pool(x, 1, kernel_size, stride, padding, dilation, ceil_mode, return_indices, "max_pool1d")


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``F.max_pool2d``: input ``(N, C, H, W)`` or ``(C, H, W)``."""
    return max_pool(x, 2, kernel_size, stride, padding, dilation, ceil_mode, return_indices, "max_pool2d")


def max_pool3d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``F.max_pool3d``: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""
    return max_pool(x, 3, kernel_size, stride, padding, dilation, ceil_mode, return_indices, "max_pool3d")


def avg_pool(
    x: jax.Array,
    n: int,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    name: str = "avg_pool",
) -> jax.Array:
    """``F.avg_pool1d/2d/3d``, with torch's divisor.

    The divisor is ``divisor_override`` if given; else, per dim, the window
    clipped to the padded input (``count_include_pad``) or to the input itself,
    multiplied over dims, as torch's kernels compute it.
    """
    x, batched = _pool_input(x, n, name)
    if divisor_override is not None and divisor_override == 0:
        raise ValueError(f"{name}: divisor must be not zero; got divisor_override={divisor_override}.")
    k, _, p, _, out, starts = _pool_args(name, n, x, kernel_size, stride, padding, 1, ceil_mode)
    wins, _ = _windows(x, starts, [jnp.ones(s.shape, bool) for s in starts], 0)
    total = wins.sum(-1)
    if divisor_override is not None:
        y = total / divisor_override
    else:
        div = jnp.ones((), x.dtype)
        for d in range(n):
            L = x.shape[2 + d]
            start = starts[d][:, 0]
            end = jnp.minimum(start + k[d], L + p[d])
            size = end - start if count_include_pad else jnp.minimum(end, L) - jnp.maximum(start, 0)
            shape = [1] * n
            shape[d] = out[d]
            div = div * size.reshape(shape).astype(x.dtype)
        y = total / div
    return y if batched else y[0]


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """``F.avg_pool1d``: input ``(N, C, L)`` or ``(C, L)``."""
    return avg_pool(x, 1, kernel_size, stride, padding, ceil_mode, count_include_pad, None, "avg_pool1d")


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """``F.avg_pool2d``: input ``(N, C, H, W)`` or ``(C, H, W)``."""
    return avg_pool(x, 2, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, "avg_pool2d")


def avg_pool3d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """``F.avg_pool3d``: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""
    return avg_pool(x, 3, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, "avg_pool3d")


def _adaptive_bins(x: jax.Array, n: int, output_size, name: str):
    spatial = x.shape[2:]
    sizes = (output_size,) * n if isinstance(output_size, int) or output_size is None else tuple(output_size)
    if len(sizes) == 1 and n > 1:
        sizes = sizes * n
    if len(sizes) != n:
        raise ValueError(f"{name}: output_size must be an int, None or {n} of them; got {output_size!r}.")
    sizes = [L if o is None else o for o, L in zip(sizes, spatial, strict=True)]
    if any(not isinstance(o, int) or o < 0 for o in sizes):
        raise ValueError(f"{name}: output_size must be non-negative ints (or None: keep the input size); got {sizes}.")
    starts, masks = [], []
    for o, L in zip(sizes, spatial, strict=True):
        start = [(i * L) // o for i in range(o)]
        end = [-((-(i + 1) * L) // o) for i in range(o)]
        width = max([e - s for s, e in zip(start, end, strict=True)], default=1)
        j = jnp.arange(width)[None, :]
        starts.append(jnp.asarray(start)[:, None] + j)
        masks.append(j < (jnp.asarray(end) - jnp.asarray(start))[:, None])
    return sizes, starts, masks


def adaptive_avg_pool(x: jax.Array, n: int, output_size, name: str = "adaptive_avg_pool") -> jax.Array:
    """``F.adaptive_avg_poolNd``: bin ``i`` of a size-``L`` dim is ``[floor(i L / out), ceil((i + 1) L / out))``."""
    x, batched = _pool_input(x, n, name)
    sizes, starts, masks = _adaptive_bins(x, n, output_size, name)
    wins, valid = _windows(x, starts, masks, 0)
    y = wins.sum(-1) / valid.sum(-1).astype(x.dtype)
    return y if batched else y[0]


def adaptive_max_pool(x: jax.Array, n: int, output_size, return_indices: bool = False, name: str = "adaptive_max_pool"):
    """``F.adaptive_max_poolNd``: torch's bins; the first maximal element in scan order wins (and gets the gradient)."""
    x, batched = _pool_input(x, n, name)
    sizes, starts, masks = _adaptive_bins(x, n, output_size, name)
    wins, valid = _windows(x, starts, masks, -jnp.inf)
    arg = _first_max(wins, valid)
    y = jnp.take_along_axis(wins, arg[..., None], axis=-1)[..., 0]
    if not batched:
        y = y[0]
    if not return_indices:
        return y
    flat = _flat_indices(starts, x.shape[2:])
    flat = jnp.broadcast_to(flat, arg.shape[:2] + flat.shape)
    idx = jnp.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return y, (idx if batched else idx[0])


def adaptive_avg_pool1d(x, output_size):
    """``F.adaptive_avg_pool1d``."""
    return adaptive_avg_pool(x, 1, output_size, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(x, output_size):
    """``F.adaptive_avg_pool2d``."""
    return adaptive_avg_pool(x, 2, output_size, "adaptive_avg_pool2d")


def adaptive_avg_pool3d(x, output_size):
    """``F.adaptive_avg_pool3d``."""
    return adaptive_avg_pool(x, 3, output_size, "adaptive_avg_pool3d")


def adaptive_max_pool1d(x, output_size, return_indices=False):
    """``F.adaptive_max_pool1d``."""
    return adaptive_max_pool(x, 1, output_size, return_indices, "adaptive_max_pool1d")


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """``F.adaptive_max_pool2d``."""
    return adaptive_max_pool(x, 2, output_size, return_indices, "adaptive_max_pool2d")


def adaptive_max_pool3d(x, output_size, return_indices=False):
    """``F.adaptive_max_pool3d``."""
    return adaptive_max_pool(x, 3, output_size, return_indices, "adaptive_max_pool3d")


def lp_pool(x: jax.Array, n: int, norm_type: float, kernel_size, stride=None, ceil_mode=False, name="lp_pool"):
    """``F.lp_poolNd``, torch's formula: ``(sign(a) * relu(|a|) * prod(k)) ** (1 / p)``, ``a = avg_pool(x ** p)``."""
    k = _ntuple(kernel_size, n, "kernel_size")
    out = avg_pool(jnp.power(x, norm_type), n, k, stride, 0, ceil_mode, True, None, name)
    return (_signed_relu_abs(out) * math.prod(k)) ** (1.0 / norm_type)


@jax.custom_jvp
def _signed_relu_abs(a: jax.Array) -> jax.Array:
    """torch's ``sign(a) * relu(abs(a))`` with torch's gradient, NaN included.

    torch's derivative is ``sign(a) * [not |a| <= 0] * sign(a)``: relu's
    backward passes a NaN (``NaN <= 0`` is false) and abs's multiplies by
    ``sign(NaN) = NaN``, so a NaN window (negative inputs to a fractional
    power) has a NaN gradient, where JAX's own rules would give 0.
    """
    return jnp.sign(a) * jnp.where(jnp.abs(a) <= 0, 0, jnp.abs(a))


@_signed_relu_abs.defjvp
def _signed_relu_abs_jvp(primals, tangents):
    (a,), (t,) = primals, tangents
    sign = jnp.sign(a)
    return _signed_relu_abs(a), t * jnp.where(jnp.abs(a) <= 0, 0, sign) * sign


def lp_pool1d(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    """``F.lp_pool1d``."""
    return lp_pool(x, 1, norm_type, kernel_size, stride, ceil_mode, "lp_pool1d")


def lp_pool2d(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    """``F.lp_pool2d``."""
    return lp_pool(x, 2, norm_type, kernel_size, stride, ceil_mode, "lp_pool2d")


def lp_pool3d(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    """``F.lp_pool3d``."""
    return lp_pool(x, 3, norm_type, kernel_size, stride, ceil_mode, "lp_pool3d")


# Padding -------------------------------------------------------------------


def _pad_source(i: jax.Array, size: int, mode: str) -> jax.Array:
    """The input index that output index ``i`` (shifted by the left pad) copies, for the non-constant modes."""
    if mode == "replicate":
        return jnp.clip(i, 0, size - 1)
    if mode == "circular":
        return jnp.mod(i, size)
    period = 2 * (size - 1)  # reflect, without repeating the edge
    if period == 0:
        return jnp.zeros_like(i)
    m = jnp.mod(jnp.abs(i), period)
    return jnp.where(m >= size, period - m, m)


def pad(input: jax.Array, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> jax.Array:
    """``F.pad``: ``pad`` pairs ``(left, right)`` from the LAST dim backwards, as torch; negative values crop.

    Modes ``"constant"`` (``value``, default 0), ``"reflect"``, ``"replicate"``
    and ``"circular"``. Output index ``i`` of a padded dim copies input index
    ``i - left`` (reflected or clamped), so cropping and padding compose as
    torch's; ``"circular"`` crops first and wraps the cropped dim, as torch.
    """
    x = input
    pad = tuple(pad)
    if len(pad) % 2 or any(not isinstance(p, int) for p in pad):
        raise ValueError(f"pad: padding length must be even, ints as (left, right) pairs; got pad={pad!r}.")
    if len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: padding length {len(pad)} is too large for a {x.ndim}-D input (at most {2 * x.ndim}).")
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise ValueError(
            f"pad: mode must be 'constant', 'reflect', 'replicate' or 'circular'; got {mode!r}. Zeros is 'constant'."
        )
    if mode != "constant" and value not in (None, 0, 0.0):
        raise ValueError(f"pad: padding mode {mode!r} doesn't take in a value argument; got value={value!r}.")
    npad = len(pad) // 2
    if mode != "constant":
        # torch pads the last 1, 2 or 3 dims of a batched or unbatched input in these modes.
        if npad > 3 or x.ndim not in (npad + 1, npad + 2):
            raise ValueError(
                f"pad: {mode} padding of {npad} dims needs a {npad + 1}D or {npad + 2}D input (at most 3 padded "
                f"dims); got a {x.ndim}D input of shape {tuple(x.shape)}."
            )
    for d in range(npad):
        axis = x.ndim - 1 - d
        left, right = pad[2 * d], pad[2 * d + 1]
        if mode == "circular" and (left < 0 or right < 0):
            # torch crops first and wraps the cropped dim (its wrap starts at the cropped edge).
            crop = slice(max(-left, 0), x.shape[axis] - max(-right, 0))
            x = x[(slice(None),) * axis + (crop,)]
            left, right = max(left, 0), max(right, 0)
        size = x.shape[axis]
        out = size + left + right
        if out < 0 or (out == 0 and mode != "constant"):
            raise ValueError(
                f"pad: the padded size of dim {axis} would be {out} (size {size}, padding ({left}, {right})); "
                "it must be positive."
            )
        if mode == "reflect" and (left >= size or right >= size):
            raise ValueError(f"pad: reflect padding ({left}, {right}) must be less than the size {size} of dim {axis}.")
        if mode == "circular" and (left > size or right > size):
            raise ValueError(f"pad: circular padding ({left}, {right}) may be at most the size {size} of dim {axis}.")
        if mode in ("replicate", "reflect", "circular") and size == 0:
            raise ValueError(f"pad: {mode} padding needs a non-empty dim {axis}; got shape {tuple(x.shape)}.")
        i = jnp.arange(out) - left
        if mode == "constant":
            src = jnp.clip(i, 0, max(size - 1, 0))
            ok = (i >= 0) & (i < size)
            y = (
                jnp.take(x, src, axis=axis)
                if size
                else jnp.zeros((*x.shape[:axis], out, *x.shape[axis + 1 :]), x.dtype)
            )
            shape = [1] * x.ndim
            shape[axis] = out
            fill = jnp.asarray(0 if value is None else value, x.dtype)
            x = jnp.where(ok.reshape(shape), y, fill)
        else:
            x = jnp.take(x, _pad_source(i, size, mode), axis=axis)
    return x


# Transposed convolution ----------------------------------------------------


def conv_transpose(
    x: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
) -> jax.Array:
    """``F.conv_transpose1d/2d/3d`` for a batched channels-first ``x`` and torch's ``(in, out / groups, *k)`` weight.

    The gradient of a convolution with respect to its input: the input dilated
    by ``stride``, padded ``dilation * (k - 1) - padding`` before and that plus
    ``output_padding`` after, convolved with the kernel flipped and its in/out
    axes swapped per group. Output size ``(L - 1) s - 2 p + d (k - 1) + output_padding + 1``.

    On CPU its derivatives (a ``custom_jvp``, so forward and reverse mode both work) are those of
    :func:`_transposed_taps`, the same map written as the adjoint of the strided-slice convolution: XLA:CPU
    computed the weight gradient of the input-dilated convolution as a convolution with a window as large as the
    image, and DCGAN's generator (batch 64, forward and backward) took 33 s; 0.8 s this way (2 cores, the test
    suite's XLA flags, 2026-12-07). Values and gradients agree with the input-dilated convolution's to 1e-14 in
    float64 (tests/test_nn_extra.py).
    """
    n = weight.ndim - 2
    stride = _ntuple(stride, n, "stride")
    dilation = _ntuple(dilation, n, "dilation")
    padding = _ntuple(padding, n, "padding")
    output_padding = _ntuple(output_padding, n, "output_padding")
    cin, cout_g, *k = weight.shape
    pads = [
        (di * (ki - 1) - pi, di * (ki - 1) - pi + oi)
        for ki, pi, di, oi in zip(k, padding, dilation, output_padding, strict=True)
    ]
    spatial = "DHW"[-n:]

    def dilated(x, weight):
        w = weight.reshape(groups, cin // groups, cout_g, *k)
        w = jnp.swapaxes(w, 1, 2).reshape(groups * cout_g, cin // groups, *k)
        w = jnp.flip(w, axis=tuple(range(2, 2 + n)))
        return lax.conv_general_dilated(
            x,
            w,
            window_strides=(1,) * n,
            padding=pads,
            lhs_dilation=stride,
            rhs_dilation=dilation,
            dimension_numbers=("NC" + spatial, "OI" + spatial, "NC" + spatial),
            feature_group_count=groups,
            precision=lax.Precision.HIGHEST,
        )

    out = [(size - 1) * s + 1 + lo + hi - di * (ki - 1)
           for size, s, (lo, hi), di, ki in zip(x.shape[2:], stride, pads, dilation, k, strict=True)]  # fmt: skip
    if min(*x.shape, *weight.shape, *out) > 0 and all(p >= 0 for p in padding):
        y_shape = (x.shape[0], groups * cout_g, *out)
        taps = functools.partial(_transposed_taps, y_shape=y_shape, stride=stride, pads=[(p, p) for p in padding],
                                 dilation=dilation, groups=groups)  # fmt: skip

        @jax.custom_jvp
        def on_cpu(x, weight):
            return dilated(x, weight)

        @on_cpu.defjvp
        def _(primals, tangents):  # bilinear: d(x * w) = dx * w + x * dw, each a transposed taps convolution
            (x, weight), (dx, dweight) = primals, tangents
            return on_cpu(x, weight), taps(dx, weight) + taps(x, dweight)

        y = lax.platform_dependent(x, weight, cpu=on_cpu, default=dilated)
    else:
        y = dilated(x, weight)
    if bias is not None:
        y = y + bias.reshape((-1,) + (1,) * n)
    return y


def _transposed_taps(x, weight, y_shape, stride, pads, dilation, groups):
    """``conv_transpose`` as torch defines it, the adjoint in its input of :func:`_conv_taps` with the same weight.

    ``linear_transpose`` of the convolution whose weight is the transposed convolution's own ``(in, out / groups,
    *k)`` weight (it maps the output's channels back to the input's): strided slices become padding, the product
    a product. On CPU :func:`conv_transpose` differentiates through this (its forward stays the input-dilated
    convolution, faster there): the gradient in the weight is then a product too, where XLA:CPU computes that
    of the input-dilated convolution as a convolution with a window as large as the image.
    """
    spec = jax.ShapeDtypeStruct(y_shape, x.dtype)
    (y,) = jax.linear_transpose(lambda y: _conv_taps(y, weight, stride, pads, dilation, groups), spec)(x)
    return y


def _conv_transpose_nd(n, name, x, weight, bias, stride, padding, output_padding, groups, dilation):
    if x.ndim not in (n + 1, n + 2):
        raise ValueError(f"{name}: expected a {n + 1}D (unbatched) or {n + 2}D (batched) input; got {tuple(x.shape)}.")
    batched = x.ndim == n + 2
    y = conv_transpose(x if batched else x[None], weight, bias, stride, padding, output_padding, groups, dilation)
    return y if batched else y[0]


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``F.conv_transpose1d``: input ``(N, C, L)`` or ``(C, L)``."""
    return _conv_transpose_nd(1, "conv_transpose1d", x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``F.conv_transpose2d``: input ``(N, C, H, W)`` or ``(C, H, W)``."""
    return _conv_transpose_nd(2, "conv_transpose2d", x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``F.conv_transpose3d``: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""
    return _conv_transpose_nd(3, "conv_transpose3d", x, weight, bias, stride, padding, output_padding, groups, dilation)


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


# Distances ---------------------------------------------------------------


def _norm_value(x: jax.Array, p: float, axis: int, keepdims: bool) -> jax.Array:
    a = jnp.abs(x)
    if p == math.inf:  # NaN where x holds one, as in torch: jnp.max may drop it (jaxnets._extrema)
        return _extrema.amax(a, axis=axis, keepdims=keepdims)
    if p == -math.inf:
        return _extrema.amin(a, axis=axis, keepdims=keepdims)
    if p == 0:
        return jnp.sum((x != 0).astype(x.dtype), axis=axis, keepdims=keepdims)
    if p == 1:
        return jnp.sum(a, axis=axis, keepdims=keepdims)
    if p == 2:
        return jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims))
    return jnp.power(jnp.sum(jnp.power(a, p), axis=axis, keepdims=keepdims), 1.0 / p)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def vector_norm(x: jax.Array, p: float = 2.0, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """``torch.linalg.vector_norm(x, p, dim=axis)`` with torch's gradient.

    torch defines the gradient where the naive expression has none: 0 where the
    norm is 0 (``sqrt`` alone gives NaN there), ``sgn(x)`` for ``p=1``, and for
    ``p=inf`` the gradient split evenly over the entries that reach the maximum.
    """
    return _norm_value(x, p, axis, keepdims)


@vector_norm.defjvp
def _vector_norm_jvp(p, axis, keepdims, primals, tangents):
    # The transpose of torch's norm_backward (FunctionsManual.cpp), written as a JVP: <d norm / dx, dx>.
    (x,), (dx,) = primals, tangents
    norm = _norm_value(x, p, axis, True)
    if p == 0:
        scaled = jnp.zeros_like(x)
    elif p == 1:
        scaled = jnp.sign(x)
    elif p == 2:
        scaled = jnp.where(norm == 0, 0, x / jnp.where(norm == 0, 1, norm))
    elif math.isinf(p):
        is_max = (jnp.abs(x) == norm).astype(x.dtype)
        scaled = jnp.sign(x) * is_max / jnp.sum(is_max, axis=axis, keepdims=True)
    elif p < 1:
        scaled = jnp.sign(x) * jnp.where(x == 0, 0, jnp.power(jnp.abs(x), p - 1)) * jnp.power(norm, 1 - p)
    else:
        pow_ = jnp.sign(x) * jnp.power(jnp.abs(x), p - 1) if p < 2 else x * jnp.power(jnp.abs(x), p - 2)
        scaled = jnp.where(norm == 0, 0, pow_ / jnp.where(norm == 0, 1, jnp.power(norm, p - 1)))
    out = norm if keepdims else jnp.squeeze(norm, axis)
    return out, jnp.sum(scaled * dx, axis=axis, keepdims=keepdims)


def pairwise_distance(
    x1: jax.Array, x2: jax.Array, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False
) -> jax.Array:
    """``F.pairwise_distance``: ``vector_norm(x1 - x2 + eps, p)`` over the last dim (torch adds ``eps`` first)."""
    return vector_norm(x1 - x2 + eps, p, -1, keepdim)


# Embedding ---------------------------------------------------------------


def _concrete(*xs) -> bool:
    # Value checks (an index out of range, a negative variance) run only where the values are known: eagerly.
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _check_indices(indices, num: int, fn: str) -> None:
    dtype = jnp.result_type(indices)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(
            f"{fn} expects integer indices (torch: Long or Int); got dtype {dtype}. Cast with x.astype(jnp.int32)."
        )
    if _concrete(indices) and np.size(indices):
        values = np.asarray(indices)  # a NumPy reduction: jnp.min would be traced inside jit even on a constant
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= num:
            bad = lo if lo < 0 else hi
            raise IndexError(f"index out of range in self: {fn} got index {bad}, expected 0 <= index < {num}.")


def _padding_index(padding_idx: int | None, num: int, what: str = "Padding_idx") -> int | None:
    if padding_idx is None:
        return None
    if not -num <= padding_idx < num:
        raise ValueError(
            f"{what} must be within num_embeddings: got padding_idx={padding_idx} for {num} embeddings "
            f"(expected -{num} <= padding_idx < {num})."
        )
    return padding_idx + num if padding_idx < 0 else padding_idx


def embedding_renorm(weight: jax.Array, input: jax.Array, max_norm: float, norm_type: float = 2.0) -> jax.Array:
    """``torch.embedding_renorm_``, functional: ``weight`` with the rows ``input`` refers to rescaled to ``max_norm``.

    Each referenced row whose ``norm_type``-norm exceeds ``max_norm`` is
    multiplied by ``max_norm / (norm + 1e-7)``, as torch does in place (under
    ``no_grad``); other rows are returned unchanged.
    """
    referenced = jnp.zeros(weight.shape[0], bool).at[input.reshape(-1)].set(True, mode="drop")
    norms = _norm_value(weight, norm_type, 1, False)
    scale = jnp.where(referenced & (norms > max_norm), max_norm / (norms + 1e-7), 1).astype(weight.dtype)
    return lax.stop_gradient(weight * scale[:, None])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _lookup(weight, indices, padding_idx, scale_grad_by_freq):
    # Out-of-range indices (possible only under a trace, where they cannot be checked) read NaN rows; jnp.take's
    # "fill" mode would wrap negative ones Python-style instead.
    valid = (indices >= 0) & (indices < weight.shape[0])
    rows = jnp.take(weight, jnp.where(valid, indices, 0), axis=0)
    return jnp.where(valid[..., None], rows, jnp.nan)


def _lookup_fwd(weight, indices, padding_idx, scale_grad_by_freq):
    return _lookup(weight, indices, padding_idx, scale_grad_by_freq), (weight.shape[0], indices)


def _lookup_bwd(padding_idx, scale_grad_by_freq, res, g):
    # torch's embedding_dense_backward: rows summed per index, none for padding_idx, divided by the index's count.
    num, indices = res
    flat = indices.reshape(-1)
    g = g.reshape(flat.shape[0], -1)
    if scale_grad_by_freq:
        counts = jnp.zeros(num, g.dtype).at[flat].add(1, mode="drop")
        g = g / jnp.take(counts, flat, mode="fill", fill_value=1)[:, None]
    if padding_idx is not None:
        g = jnp.where((flat == padding_idx)[:, None], 0, g)
    grad = jnp.zeros((num, g.shape[1]), g.dtype).at[flat].add(g, mode="drop")
    return grad, None


_lookup.defvjp(_lookup_fwd, _lookup_bwd)


def embedding(
    input: jax.Array,
    weight: jax.Array,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> jax.Array:
    """``F.embedding``: rows of ``weight`` ``(num_embeddings, embedding_dim)`` at the integer ``input``.

    The gradient is torch's: summed per row, zero for ``padding_idx`` (negative
    counts from the end), and divided by each index's count in ``input`` with
    ``scale_grad_by_freq``. With ``max_norm`` the referenced rows are first
    rescaled as :func:`embedding_renorm` does; torch also writes them back into
    ``weight`` in place, which a function cannot do: :class:`jaxnets.nn.Embedding`
    writes them into its parameter, or call :func:`embedding_renorm` yourself.
    ``sparse=True`` is accepted for torch's signature; gradients are dense.
    Indices are checked (integer dtype; range when not traced); under ``jit`` an
    out-of-range index reads a row of NaN instead of raising.
    """
    if weight.ndim != 2:
        raise ValueError(f"embedding expects a 2-D weight (num_embeddings, embedding_dim); got {weight.shape}.")
    num = weight.shape[0]
    _check_indices(input, num, "embedding")
    padding_idx = _padding_index(padding_idx, num)
    if max_norm is not None:
        renormed = embedding_renorm(weight, input, max_norm, norm_type)
        weight = weight + lax.stop_gradient(renormed - weight)  # renormalised values, torch's gradient to the rows
    return _lookup(weight, input, padding_idx, scale_grad_by_freq)


def embedding_bag(
    input: jax.Array,
    weight: jax.Array,
    offsets: jax.Array | None = None,
    max_norm: float | None = None,
    norm_type: float = 2,
    scale_grad_by_freq: bool = False,
    mode: str = "mean",
    sparse: bool = False,
    per_sample_weights: jax.Array | None = None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
) -> jax.Array:
    """``F.embedding_bag``: the sum, mean or max of the embeddings in each bag, ``(bags, embedding_dim)``.

    ``input`` is ``(B, N)`` (B bags of N) or 1-D with ``offsets``, the start of
    each bag (with ``include_last_offset`` the last offset ends the last bag
    and is not a bag). Entries equal to ``padding_idx`` are left out (not
    counted in a mean); an empty bag gives zeros. ``per_sample_weights`` (mode
    ``"sum"`` only) weights each entry. ``"max"`` takes, per dimension, the
    first entry reaching the maximum, which alone gets the gradient, as torch.
    ``max_norm`` renormalises as in :func:`embedding` (not written back here);
    ``sparse`` is accepted, gradients are dense.

    Two departures from torch 2.13 on CPU, where its kernels contradict its
    documentation: ``scale_grad_by_freq`` divides each row's gradient by the
    count of *that* index, as :func:`embedding` does (torch's CPU kernel divides
    by the count of another index when counts differ, pytorch#190063), and
    ``include_last_offset`` with indices after the last offset is refused
    eagerly (torch's sum, mean and max disagree there, pytorch#191965; under
    ``jit`` those indices join no bag).
    """
    if per_sample_weights is not None and tuple(per_sample_weights.shape) != tuple(input.shape):
        raise ValueError(
            f"embedding_bag: If per_sample_weights ({tuple(per_sample_weights.shape)}) is not None, then it must "
            f"have the same shape as the input ({tuple(input.shape)})"
        )
    if weight.ndim != 2:
        raise ValueError(f"weight has to be a 2D Tensor, but got Tensor of dimension {weight.ndim}")
    if input.ndim == 2:
        if offsets is not None:
            raise ValueError(
                "if input is 2D, then offsets has to be None, as input is treated is a mini-batch of fixed length "
                f"sequences. However, found offsets of type {type(offsets).__name__}"
            )
        bags, n = input.shape
        segment = jnp.repeat(jnp.arange(bags), n)
        input = input.reshape(-1)
        if per_sample_weights is not None:
            per_sample_weights = per_sample_weights.reshape(-1)
    elif input.ndim == 1:
        if offsets is None:
            raise ValueError("offsets has to be a 1D Tensor but got None")
        offsets = jnp.asarray(offsets)
        if offsets.ndim != 1:
            raise ValueError("offsets has to be a 1D Tensor")
        if not jnp.issubdtype(offsets.dtype, jnp.integer):
            raise TypeError(f"embedding_bag expects integer offsets; got dtype {offsets.dtype}.")
        if _concrete(offsets) and offsets.size:
            o = np.asarray(offsets)
            if o[0] != 0:
                raise ValueError(
                    "offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to start from position 0. "
                    f"However, got {o[0]}"
                )
            if o[-1] > input.shape[0]:
                raise ValueError(
                    f"offsets[-1] can not be greater than input's length {input.shape[0]} but got offsets[-1] of "
                    f"{o[-1]}"
                )
            if np.any(np.diff(o) < 0):
                raise ValueError(f"embedding_bag: offsets must not decrease; got {o.tolist()}.")
            if include_last_offset and o[-1] != input.shape[0]:
                # torch 2.13's CPU kernels give three different answers here (pytorch#191965): refused.
                raise ValueError(
                    f"embedding_bag with include_last_offset=True expects offsets[-1] == len(input) (CSR format); "
                    f"got offsets[-1] = {o[-1]} for {input.shape[0]} indices. Drop the trailing indices, or append "
                    f"{input.shape[0]} to offsets to make them a bag."
                )
        bags = offsets.shape[0] - 1 if include_last_offset else offsets.shape[0]
        # Bag of each entry: the last offset at or before it; entries past a final include_last_offset end none.
        segment = jnp.searchsorted(offsets, jnp.arange(input.shape[0]), side="right") - 1
    else:
        raise ValueError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension {input.ndim}")
    if mode not in ("sum", "mean", "max"):
        raise ValueError("mode has to be one of sum, mean or max")
    if mode == "max" and scale_grad_by_freq:
        raise ValueError("max mode does not support scaling the gradient by the frequency")
    if mode == "max" and sparse:
        raise ValueError("max mode does not support sparse weights")
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError(
            "embedding_bag: per_sample_weights was not None. per_sample_weights is only supported for mode='sum' "
            f"(got mode='{mode}')."
        )
    num = weight.shape[0]
    _check_indices(input, num, "embedding_bag")
    padding_idx = _padding_index(padding_idx, num, "padding_idx")
    if max_norm is not None:
        weight = weight + lax.stop_gradient(embedding_renorm(weight, input, max_norm, norm_type) - weight)
    rows = _lookup(weight, input, padding_idx, scale_grad_by_freq)  # (entries, dim)
    keep = jnp.ones(input.shape, bool) if padding_idx is None else input != padding_idx
    segment = jnp.where(keep, segment, bags)  # padding entries join no bag
    if mode == "max":
        if bags == 0 or input.shape[0] == 0:
            return jnp.zeros((bags, weight.shape[1]), weight.dtype)
        top = jax.ops.segment_max(lax.stop_gradient(rows), segment, bags + 1)[:bags]
        hit = lax.stop_gradient(rows) == jnp.take(top, jnp.minimum(segment, bags - 1), axis=0)
        hit = hit & (segment < bags)[:, None]
        position = jnp.arange(input.shape[0])[:, None]
        first = jax.ops.segment_min(jnp.where(hit, position, input.shape[0]), segment, bags + 1)[:bags]
        empty = first >= input.shape[0]
        picked = jnp.take_along_axis(rows, jnp.where(empty, 0, first), axis=0)
        return jnp.where(empty, jnp.zeros_like(picked), picked)
    if per_sample_weights is not None:
        rows = rows * per_sample_weights[:, None]
    total = jax.ops.segment_sum(rows, segment, bags + 1)[:bags]
    if mode == "sum":
        return total
    counts = jax.ops.segment_sum(keep.astype(rows.dtype), segment, bags + 1)[:bags]
    return jnp.where(counts[:, None] > 0, total / jnp.maximum(counts, 1)[:, None], 0)


# Losses ------------------------------------------------------------------
#
# Each loss is torch's formula, written so that JAX differentiates the branch torch differentiates: a clamp_min(z, 0)
# in torch's code passes the gradient at z == 0 (where(z >= 0, ...)), a C++ kernel's `z > 0 ? ... : 0` does not
# (where(z > 0, ...)); where torch's backward is not the derivative of its forward (binary_cross_entropy's clamped
# log, gaussian_nll_loss's clamped variance) a custom rule says what torch's does. Value checks on the data (a target
# out of range, a negative variance) raise when the values are known and give NaN under jit, where they are not.


def _reduction(size_average, reduce, reduction: str) -> str:
    """torch's ``_Reduction``: the legacy ``size_average`` / ``reduce`` pair overrides ``reduction`` (and warns)."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = "none" if not reduce else "mean" if size_average else "sum"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.", stacklevel=3
    )
    return reduction


def _reduce(loss: jax.Array, reduction: str) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(loss)
    if reduction == "sum":
        return jnp.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction} is not a valid value for reduction (expected 'none', 'mean' or 'sum').")


def _check_reduction(reduction: str, allowed=("none", "mean", "sum")) -> None:
    if reduction not in allowed:
        raise ValueError(f"{reduction} is not a valid value for reduction (expected one of {', '.join(allowed)}).")


def _broadcast(fn: str, *xs: jax.Array) -> list[jax.Array]:
    try:
        shape = np.broadcast_shapes(*(jnp.shape(x) for x in xs))
    except ValueError:
        shapes = " and ".join(str(tuple(jnp.shape(x))) for x in xs)
        raise ValueError(
            f"{fn}: the shapes {shapes} do not broadcast; input and target should have the same shape."
        ) from None
    return [jnp.broadcast_to(x, shape) for x in xs]


def _warn_size(fn: str, input, target) -> None:
    if jnp.shape(input) != jnp.shape(target):
        warnings.warn(
            f"{fn}: Using a target size ({tuple(jnp.shape(target))}) that is different to the input size "
            f"({tuple(jnp.shape(input))}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            stacklevel=3,
        )


@jax.custom_jvp
def _abs(x: jax.Array) -> jax.Array:
    # torch differentiates |x| as sgn(x): 0 at 0, where JAX's abs takes the slope +1.
    return jnp.abs(x)


_abs.defjvp(lambda primals, tangents: (jnp.abs(primals[0]), jnp.sign(primals[0]) * tangents[0]))


def _clamp_min0(z: jax.Array) -> jax.Array:
    # torch's clamp_min(z, 0): the gradient passes where z >= 0, the boundary included.
    return jnp.where(z >= 0, z, jnp.zeros_like(z))


def _relu_strict(z: jax.Array) -> jax.Array:
    # A C++ kernel's `z > 0 ? z : 0`: no gradient at z == 0.
    return jnp.where(z > 0, z, jnp.zeros_like(z))


def _weighted(loss: jax.Array, weight: jax.Array | None, reduction: str) -> jax.Array:
    # torch's weight= on l1/mse: the mean divides by the sum of the weights.
    if weight is None:
        return _reduce(loss, reduction)
    if tuple(jnp.shape(weight)) != tuple(loss.shape):
        raise ValueError(f"Weights and input must have the same size: got {tuple(jnp.shape(weight))} and {loss.shape}.")
    loss = loss * weight
    if reduction == "mean":
        return jnp.sum(loss) / jnp.sum(weight)
    return _reduce(loss, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None) -> jax.Array:
    """``F.l1_loss``: ``|input - target|``; the gradient at 0 is 0 (torch's ``sgn``)."""
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    _warn_size("l1_loss", input, target)
    input, target = _broadcast("l1_loss", input, target)
    return _weighted(_abs(input - target), weight, reduction)


def mse_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None) -> jax.Array:
    """``F.mse_loss``: ``(input - target) ** 2``."""
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    _warn_size("mse_loss", input, target)
    input, target = _broadcast("mse_loss", input, target)
    d = input - target
    return _weighted(d * d, weight, reduction)


def smooth_l1_loss(
    input, target, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0
) -> jax.Array:
    """``F.smooth_l1_loss``: ``0.5 d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``; ``beta=0`` is L1."""
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss does not support negative values for beta; got beta={beta}.")
    _warn_size("smooth_l1_loss", input, target)
    input, target = _broadcast("smooth_l1_loss", input, target)
    if beta == 0:
        return _reduce(_abs(input - target), reduction)
    d = input - target
    z = jnp.abs(d)
    return _reduce(jnp.where(z < beta, 0.5 * d * d / beta, z - 0.5 * beta), reduction)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0, weight=None) -> jax.Array:
    """``F.huber_loss``: ``0.5 d**2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``.

    With ``weight`` (same shape as ``input``), ``"mean"`` is the plain mean of
    the weighted losses, as torch's (not divided by the weights' sum).
    """
    _check_reduction(reduction)
    if delta <= 0:
        raise ValueError(f"huber_loss does not support non-positive values for delta; got delta={delta}.")
    _warn_size("huber_loss", input, target)
    input, target = _broadcast("huber_loss", input, target)
    d = input - target
    z = jnp.abs(d)
    loss = jnp.where(z < delta, 0.5 * d * d, delta * (z - 0.5 * delta))
    if weight is not None:
        if tuple(jnp.shape(weight)) != tuple(jnp.shape(input)):
            raise ValueError("Weights and input must have the same size.")
        loss = loss * weight
    return _reduce(loss, reduction)


# torch's Loss.cpp adds `constexpr float EPSILON = 1e-12`, a float32 constant, to double tensors too.
_EPSILON = float(np.float32(1e-12))


@jax.custom_vjp
def _bce(input, target, weight):
    loss = (target - 1) * jnp.maximum(jnp.log(1 - input), -100) - target * jnp.maximum(jnp.log(input), -100)
    return loss * weight


def _bce_fwd(input, target, weight):
    return _bce(input, target, weight), (input, target, weight)


def _bce_bwd(res, g):
    # torch's binary_cross_entropy_backward: (x - y) / max(x (1 - x), EPSILON), not the clamped log's derivative
    # (which is 0 where the clamp bites); the target's gradient is -logit(x) (binary_cross_entropy_target_backward).
    input, target, weight = res
    grad_input = g * (input - target) / jnp.maximum((1 - input) * input, _EPSILON) * weight
    grad_target = -jnp.log(input / (1 - input)) * g * weight
    unweighted = (target - 1) * jnp.maximum(jnp.log(1 - input), -100) - target * jnp.maximum(jnp.log(input), -100)
    return grad_input, grad_target, unweighted * g


_bce.defvjp(_bce_fwd, _bce_bwd)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
    """``F.binary_cross_entropy`` of probabilities: each log clamped at -100, as torch's.

    The gradient is torch's ``(x - y) / max(x (1 - x), 1e-12)``, finite at 0
    and 1. ``input`` must lie in [0, 1] (checked when not traced).
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    _check_floating(input, "binary_cross_entropy")
    if tuple(jnp.shape(target)) != tuple(jnp.shape(input)):
        raise ValueError(
            f"Using a target size ({tuple(jnp.shape(target))}) that is different to the input size "
            f"({tuple(jnp.shape(input))}) is deprecated. Please ensure they have the same size."
        )
    if _concrete(input) and np.size(input):
        values = np.asarray(input)
        if not ((values >= 0) & (values <= 1)).all():
            raise ValueError("all elements of input should be between 0 and 1 (probabilities)")
    target = jnp.asarray(target, input.dtype)
    weight = jnp.ones((), input.dtype) if weight is None else jnp.asarray(weight, input.dtype)
    weight = jnp.broadcast_to(weight, np.broadcast_shapes(weight.shape, target.shape))
    input, target, weight = (jnp.broadcast_to(a, weight.shape) for a in (input, target, weight))
    return _reduce(_bce(input, target, weight), reduction)


def binary_cross_entropy_with_logits(
    input, target, weight=None, size_average=None, reduce=None, reduction: str = "mean", pos_weight=None
):
    """``F.binary_cross_entropy_with_logits``: ``(1 - y) x - (1 + (pos_weight - 1) y) log_sigmoid(x)``, times weight.

    ``pos_weight`` broadcasts against the last dimension (one weight per class).
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    _check_floating(input, "binary_cross_entropy_with_logits")
    if tuple(jnp.shape(target)) != tuple(jnp.shape(input)):
        raise ValueError(
            f"Target size ({tuple(jnp.shape(target))}) must be the same as input size ({tuple(jnp.shape(input))})"
        )
    log_sigmoid = jax.nn.log_sigmoid(input)
    if pos_weight is not None:
        log_sigmoid = log_sigmoid * ((pos_weight - 1) * target + 1)
    loss = (1 - target) * input - log_sigmoid
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


@jax.custom_jvp
def xlogy(x: jax.Array, y: jax.Array) -> jax.Array:
    """``torch.xlogy``: ``x * log(y)``, 0 where ``x == 0`` (unless ``y`` is NaN), with torch's gradient.

    torch differentiates it as ``xlogy(x != 0, y)`` for ``x`` and ``x / y`` for
    ``y`` (NaN at ``x == y == 0``); ``jax.scipy.special.xlogy`` differs there.
    """
    dtype = jnp.result_type(x, y, 0.0)
    x, y = jnp.broadcast_arrays(jnp.asarray(x, dtype), jnp.asarray(y, dtype))
    return jnp.where((x == 0) & ~jnp.isnan(y), jnp.zeros_like(x), x * jnp.log(y))


@xlogy.defjvp
def _xlogy_jvp(primals, tangents):
    x, y = primals
    dx, dy = tangents
    return xlogy(x, y), xlogy((x != 0).astype(jnp.result_type(x, 0.0)), y) * dx + x / y * dy


def kl_div(
    input, target, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False
) -> jax.Array:
    """``F.kl_div``: ``xlogy(target, target) - target * input``, ``input`` being log-probabilities.

    As torch's: 0 where ``target == 0``, NaN where ``target < 0``, and the
    target's gradient ``log(target) + 1`` (NaN at 0, from torch's ``xlogy`` rule).

    ``log_target=True`` takes ``target`` as log-probabilities too:
    ``exp(target) * (target - input)``. ``reduction="batchmean"`` divides the
    sum by the batch size (dim 0), the true KL divergence; ``"mean"`` divides
    by every element, as torch does (torch warns about it; this docstring is the
    warning).
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction, ("none", "batchmean", "mean", "sum"))
    input, target = _broadcast("kl_div", input, target)
    if log_target:
        loss = jnp.exp(target) * (target - input)
    else:
        loss = xlogy(target, target) - target * input
    if reduction == "batchmean":
        total = jnp.sum(loss)
        return total / input.shape[0] if input.ndim else total
    return _reduce(loss, reduction)


def _class_targets(input, target, weight, ignore_index, fn):
    """Checks for class-index targets; returns ``(class axis, number of classes)``."""
    if input.ndim < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {input.ndim})")
    if not jnp.issubdtype(jnp.result_type(target), jnp.integer):
        raise TypeError(
            f"{fn} expects integer class indices as target (torch: Long); got dtype {jnp.result_type(target)}. "
            "For class probabilities give a floating-point target of the input's shape."
        )
    if input.ndim == 1:
        if target.ndim > 1 or target.size != 1:
            raise ValueError(f"For 1D input, 1D target must have size 1, but got target size: {target.size}")
    else:
        if target.ndim == 0 or target.shape[0] != input.shape[0]:
            got = target.shape[0] if target.ndim else "none (a 0-D target)"
            raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size ({got}).")
        if tuple(target.shape[1:]) != tuple(input.shape[2:]):
            raise ValueError(
                f"Expected target size {[input.shape[0], *input.shape[2:]]}, got {list(target.shape)} (input is "
                f"(N, C, d1, ...) = {tuple(input.shape)}; target holds one class index per position)"
            )
    axis = 0 if input.ndim == 1 else 1
    classes = input.shape[axis]
    if weight is not None and (weight.ndim != 1 or weight.shape[0] != classes):
        raise ValueError(
            f"weight tensor should be defined either for all {classes} classes or no classes but got weight tensor "
            f"of shape: {list(weight.shape)}"
        )
    if _concrete(target) and target.size:
        values = np.asarray(target)
        bad = values[(values != ignore_index) & ((values < 0) | (values >= classes))]
        if bad.size:
            raise IndexError(f"Target {bad.flat[0]} is out of bounds ({fn} has {classes} classes).")
    return axis, classes


def _nll(input, target, weight, ignore_index, axis, classes):
    """Per-position ``-w[t] * input[t]`` (0 where ignored, NaN for an unchecked target out of range) and ``w[t]``."""
    if input.ndim == 1:
        target = target.reshape(())
    keep = target != ignore_index
    inside = (target >= 0) & (target < classes)
    safe = jnp.where(keep & inside, target, 0)
    picked = jnp.squeeze(jnp.take_along_axis(input, jnp.expand_dims(safe, axis), axis=axis), axis)
    w = jnp.ones((), input.dtype) if weight is None else jnp.take(weight, safe).astype(input.dtype)
    w = jnp.where(keep, w, 0)
    loss = jnp.where(keep, -picked * w, 0)
    return jnp.where(keep & ~inside, jnp.nan, loss), jnp.broadcast_to(w, loss.shape)


def nll_loss(
    input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None, reduction: str = "mean"
) -> jax.Array:
    """``F.nll_loss`` of log-probabilities ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)`` at integer targets.

    ``"mean"`` divides by the sum of the weights of the targets counted (not by
    their number) and skips ``ignore_index``, as torch: all ignored gives NaN.
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    axis, classes = _class_targets(input, target, weight, ignore_index, "nll_loss")
    loss, w = _nll(input, target, weight, ignore_index, axis, classes)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return jnp.sum(loss)
    return jnp.sum(loss) / jnp.sum(w)


def cross_entropy(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index: int = -100,
    reduce=None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> jax.Array:
    """``F.cross_entropy`` of logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``: class indices or probabilities.

    A target of the input's shape is read as class probabilities (floating
    point; ``"mean"`` divides by the number of positions, weights or not).
    Otherwise the target holds class indices, and this is
    ``nll_loss(log_softmax(input, 1), ...)`` with torch's weighted mean (the
    sum of the counted targets' weights) and ``ignore_index``. With
    ``label_smoothing`` ``s`` the loss is ``(1 - s) * nll + s / C * smooth``,
    ``smooth`` being the (weighted) sum of ``-log_softmax`` over the classes,
    ignored positions left out and reduced by the same denominator, as torch.
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    _check_floating(input, "cross_entropy")
    if input.ndim < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {input.ndim})")
    axis = 0 if input.ndim == 1 else 1
    classes = input.shape[axis]
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    logp = jax.nn.log_softmax(input, axis=axis)
    wshape = [1] * input.ndim
    wshape[axis] = classes
    if tuple(jnp.shape(target)) == tuple(input.shape):  # class probabilities
        if not jnp.issubdtype(jnp.result_type(target), jnp.floating):
            raise TypeError(
                f"Expected floating point type for target with class probabilities, got {jnp.result_type(target)}"
            )
        if ignore_index >= 0:
            raise ValueError("ignore_index is not supported for floating point target")
        if weight is not None and (weight.ndim != 1 or weight.shape[0] != classes):
            raise ValueError(
                f"cross_entropy: weight tensor should be defined either for all {classes} classes or no classes but "
                f"got weight tensor of shape: {list(weight.shape)}"
            )
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / classes
        terms = logp * target if weight is None else logp * target * weight.reshape(wshape)
        if reduction == "none":
            return -jnp.sum(terms, axis=axis)
        total = -jnp.sum(terms)
        if reduction == "sum":
            return total
        return total / (input.size // classes) if input.size else total * jnp.nan
    _class_targets(input, target, weight, ignore_index, "cross_entropy")
    loss, w = _nll(logp, target, weight, ignore_index, axis, classes)
    nll = loss if reduction == "none" else jnp.sum(loss) if reduction == "sum" else jnp.sum(loss) / jnp.sum(w)
    if label_smoothing == 0:
        return nll
    smooth = -jnp.sum(logp if weight is None else logp * weight.reshape(wshape), axis=axis)
    keep = (target if input.ndim > 1 else target.reshape(())) != ignore_index
    smooth = jnp.where(keep, smooth, 0)
    if reduction == "mean":
        smooth = jnp.sum(smooth) / (jnp.sum(keep) if weight is None else jnp.sum(w))
    elif reduction == "sum":
        smooth = jnp.sum(smooth)
    return (1 - label_smoothing) * nll + smooth * (label_smoothing / classes)


def poisson_nll_loss(
    input,
    target,
    log_input: bool = True,
    full: bool = False,
    size_average=None,
    eps: float = 1e-8,
    reduce=None,
    reduction: str = "mean",
) -> jax.Array:
    """``F.poisson_nll_loss``: ``exp(input) - target * input`` (or ``input - target * log(input + eps)``).

    ``full`` adds Stirling's ``target log(target) - target + 0.5 log(2 pi target)`` where ``target > 1``.
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    input, target = _broadcast("poisson_nll_loss", input, target)
    loss = jnp.exp(input) - target * input if log_input else input - target * jnp.log(input + eps)
    if full:
        stirling = target * jnp.log(target) - target + 0.5 * jnp.log(2 * math.pi * target)
        loss = loss + jnp.where(target <= 1, jnp.zeros_like(stirling), stirling)
    return _reduce(loss, reduction)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _clamp_min_passing(x, low):
    # torch clamps gaussian_nll_loss's variance in place under no_grad: the value is clamped, the gradient is not.
    return jnp.maximum(x, low)


@_clamp_min_passing.defjvp
def _clamp_min_passing_jvp(low, primals, tangents):
    return _clamp_min_passing(primals[0], low), tangents[0]


def gaussian_nll_loss(input, target, var, full: bool = False, eps: float = 1e-6, reduction: str = "mean") -> jax.Array:
    """``F.gaussian_nll_loss``: ``0.5 (log(var) + (input - target)**2 / var)`` (+ ``0.5 log(2 pi)`` with ``full``).

    ``var`` is a float, the input's shape, that shape without its last dim, or
    that shape with one dim of size 1 (broadcast), as torch accepts. It is
    clamped to ``eps`` for the value only: the gradient reaches ``var``
    unclamped, as torch's in-place ``no_grad`` clamp does. Negative entries are
    refused (when not traced).
    """
    if isinstance(var, float | int) and not isinstance(var, bool):
        if var < 0:
            raise ValueError("var has negative entry/entries")
        var = var * jnp.ones_like(input)
    elif _concrete(var) and np.any(np.asarray(var) < 0):
        raise ValueError("var has negative entry/entries")
    if tuple(var.shape) != tuple(input.shape):
        if tuple(input.shape[:-1]) == tuple(var.shape):
            var = var[..., None]
        elif input.ndim == var.ndim and sum(v for i, v in zip(input.shape, var.shape, strict=True) if i != v) == 1:
            pass
        else:
            raise ValueError(
                f"var is of incorrect size: got {tuple(var.shape)} for input {tuple(input.shape)} (expected the "
                "input's shape, that shape without its last dim, or with one dim of size 1)"
            )
    _check_reduction(reduction)
    var = _clamp_min_passing(var, eps)
    loss = 0.5 * (jnp.log(var) + (input - target) ** 2 / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


def margin_ranking_loss(
    input1, input2, target, margin: float = 0, size_average=None, reduce=None, reduction: str = "mean"
) -> jax.Array:
    """``F.margin_ranking_loss``: ``max(0, -target * (input1 - input2) + margin)``."""
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if not jnp.ndim(input1) == jnp.ndim(input2) == jnp.ndim(target):
        raise ValueError(
            f"margin_ranking_loss : All input tensors should have same dimension but got sizes: input1: "
            f"{tuple(jnp.shape(input1))}, input2: {tuple(jnp.shape(input2))}, target: {tuple(jnp.shape(target))} "
        )
    input1, input2, target = _broadcast("margin_ranking_loss", input1, input2, target)
    return _reduce(_clamp_min0(-target * (input1 - input2) + margin), reduction)


def hinge_embedding_loss(
    input, target, margin: float = 1.0, size_average=None, reduce=None, reduction: str = "mean"
) -> jax.Array:
    """``F.hinge_embedding_loss``: ``x`` where ``target == 1``, ``max(0, margin - x)`` where ``target == -1``.

    As torch's code: other target values get both terms.
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    input, target = _broadcast("hinge_embedding_loss", input, target)
    zeros = jnp.zeros_like(input)
    loss = jnp.where(target != 1, _clamp_min0(margin - input), zeros) + jnp.where(target != -1, input, zeros)
    return _reduce(loss, reduction)


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction: str = "mean") -> jax.Array:
    """``F.soft_margin_loss``: ``log(1 + exp(-target * input))``."""
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    input, target = _broadcast("soft_margin_loss", input, target)
    return _reduce(jnp.log(1 + jnp.exp(-input * target)), reduction)


def multilabel_soft_margin_loss(
    input, target, weight=None, size_average=None, reduce=None, reduction: str = "mean"
) -> jax.Array:
    """``F.multilabel_soft_margin_loss``: per-class logistic losses averaged over the classes (last dim)."""
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    input, target = _broadcast("multilabel_soft_margin_loss", input, target)
    loss = -(target * jax.nn.log_sigmoid(input) + (1 - target) * jax.nn.log_sigmoid(-input))
    if weight is not None:
        loss = loss * weight
    return _reduce(jnp.sum(loss, axis=input.ndim - 1) / input.shape[-1], reduction)


def cosine_embedding_loss(
    input1, input2, target, margin: float = 0, size_average=None, reduce=None, reduction: str = "mean"
) -> jax.Array:
    """``F.cosine_embedding_loss``: ``1 - cos`` where ``target == 1``, ``max(0, cos - margin)`` where ``-1``.

    ``cos`` is torch's: ``sum(x1 x2) / sqrt((sum(x1**2) + 1e-12) (sum(x2**2) + 1e-12))``.
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if target.ndim not in (0, 1):
        raise ValueError("0D or 1D target tensor expected, multi-target not supported")
    want = target.ndim + 1
    if input1.ndim != want:
        raise ValueError(
            f"{target.ndim}D target tensor expects {want}D input tensors, but found inputs with sizes "
            f"{list(input1.shape)} and {list(input2.shape)}."
        )
    dim = target.ndim
    prod = jnp.sum(input1 * input2, axis=dim)
    mag1 = jnp.sum(input1 * input1, axis=dim) + _EPSILON
    mag2 = jnp.sum(input2 * input2, axis=dim) + _EPSILON
    cos = prod / jnp.sqrt(mag1 * mag2)
    zeros = jnp.zeros_like(cos)
    loss = jnp.where(target == 1, 1 - cos, zeros) + jnp.where(target == -1, _clamp_min0(cos - margin), zeros)
    return _reduce(loss, reduction)


def multi_margin_loss(
    input,
    target,
    p: int = 1,
    margin: float = 1.0,
    weight=None,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
) -> jax.Array:
    """``F.multi_margin_loss``: ``sum_{j != y} max(0, margin - x[y] + x[j])**p * w[y] / C`` per sample."""
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if p not in (1, 2):
        raise ValueError("only p == 1 and p == 2 supported")
    if weight is not None and weight.ndim != 1:
        raise ValueError("weight must be one-dimensional")
    if input.ndim not in (1, 2) or input.shape[-1] == 0:
        raise ValueError(f"multi_margin_loss: expected a non-empty 1D or 2D input; got shape {tuple(input.shape)}.")
    batch = () if input.ndim == 1 else (input.shape[0],)
    if tuple(target.shape) != batch and not (input.ndim == 1 and tuple(target.shape) == (1,)):
        raise ValueError(
            "multi_margin_loss: target tensor should be 1-D with size equal to the number of input samples (batch "
            f"size). Expected target size {list(batch)}, but got {list(target.shape)}. Input has shape "
            f"{list(input.shape)}."
        )
    classes = input.shape[-1]
    if _concrete(target) and target.size and not ((np.asarray(target) >= 0) & (np.asarray(target) < classes)).all():
        raise IndexError(f"target out of range: multi_margin_loss has {classes} classes; got {np.asarray(target)}.")
    x = input.reshape(-1, classes)
    y = target.reshape(-1)
    inside = (y >= 0) & (y < classes)
    y = jnp.where(inside, y, 0)
    x_y = jnp.take_along_axis(x, y[:, None], axis=1)
    z = margin - x_y + x
    h = _relu_strict(z) if p == 1 else jnp.where(z > 0, z * z, jnp.zeros_like(z))
    if weight is not None:
        h = h * jnp.take(weight, y)[:, None]
    h = jnp.where(jnp.arange(classes)[None, :] == y[:, None], 0, h)
    loss = jnp.where(inside, jnp.sum(h, axis=1) / classes, jnp.nan).reshape(batch)
    return _reduce(loss, reduction)


def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction: str = "mean") -> jax.Array:
    """``F.multilabel_margin_loss``: hinge between each target class and each non-target class, over ``C``.

    ``target`` holds class indices, ended by the first -1 (the rest is
    ignored), of the input's shape ``(C,)`` or ``(N, C)``.
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if input.ndim not in (1, 2) or tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"multilabel_margin_loss: inconsistent target size: {list(target.shape)} for input of size: "
            f"{list(input.shape)} (expected (C,) or (N, C), the same for both)"
        )
    if not jnp.issubdtype(jnp.result_type(target), jnp.integer):
        raise TypeError(f"multilabel_margin_loss expects integer class indices; got {jnp.result_type(target)}.")
    classes = input.shape[-1]
    if _concrete(target) and target.size and not ((np.asarray(target) >= -1) & (np.asarray(target) < classes)).all():
        raise IndexError(f"argument #2 'target' is out of range: expected -1 <= target < {classes}.")
    x = input.reshape(-1, classes)
    t = target.reshape(-1, classes)
    valid = jnp.cumprod(t != -1, axis=1).astype(bool)  # the targets before the first -1
    safe = jnp.where(valid & (t >= 0) & (t < classes), t, 0)
    is_target = jnp.any(valid[:, :, None] & (safe[:, :, None] == jnp.arange(classes)), axis=1)  # (N, C)
    x_t = jnp.take_along_axis(x, safe, axis=1)  # (N, K): the target classes' scores
    z = 1 - x_t[:, :, None] + x[:, None, :]  # (N, K, C)
    pairs = valid[:, :, None] & ~is_target[:, None, :]
    loss = jnp.sum(jnp.where(pairs, _relu_strict(z), 0), axis=(1, 2)) / classes
    return _reduce(loss.reshape(input.shape[:-1]), reduction)


def triplet_margin_loss(
    anchor,
    positive,
    negative,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-6,
    swap: bool = False,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
) -> jax.Array:
    """``F.triplet_margin_loss``: ``max(0, margin + d(a, p) - d(a, n))`` with ``d`` = :func:`pairwise_distance`.

    ``swap`` uses ``min(d(a, n), d(p, n))``, as torch.
    """
    reduction = _reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise ValueError(
            "The anchor, positive, and negative tensors are expected to have the same number of dimensions, but "
            f"got: anchor {anchor.ndim}D, positive {positive.ndim}D, and negative {negative.ndim}D inputs"
        )
    d_pos = pairwise_distance(anchor, positive, p, eps)
    d_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        d_neg = jnp.minimum(d_neg, pairwise_distance(positive, negative, p, eps))
    return _reduce(_clamp_min0(margin + d_pos - d_neg), reduction)


def _lse(*xs):
    # torch's CTC logsumexp: the maximum taken out, and 0 used for it when every term is -inf (no -inf - -inf).
    m = functools.reduce(jnp.maximum, xs)
    m = jnp.where(m == -jnp.inf, 0, m)
    return jnp.log(sum(jnp.exp(x - m) for x in xs)) + m


def _shift(x, k, fill):
    # x[..., s - k] at s (k > 0 looks left, k < 0 right), `fill` where that falls outside.
    pad = jnp.full(x.shape[:-1] + (abs(k),), fill, x.dtype)
    return jnp.concatenate([pad, x[..., :-k]], -1) if k > 0 else jnp.concatenate([x[..., -k:], pad], -1)


def _ctc_tables(log_probs, ext, input_lengths, target_lengths):
    """torch's CPU CTC recursions: ``(log_alpha, log_beta, nll)``, ``(T, N, 2S + 1)`` tables, ``nll`` ``(N,)``."""
    big_t = log_probs.shape[0]
    neg = jnp.array(-jnp.inf, log_probs.dtype)
    lp_ext = jnp.take_along_axis(log_probs, jnp.broadcast_to(ext, (big_t, *ext.shape)), axis=2)  # (T, N, S')
    s = jnp.arange(ext.shape[1])
    valid = s[None, :] <= 2 * target_lengths[:, None]  # the states of each sample's own label sequence
    skip = (s >= 2) & (ext != _shift(ext, 2, -1))  # torch: s > 1 and l'(s - 2) != l'(s) (never for blanks)
    skip_back = _shift(skip, -2, False)  # beta's mirror: s + 2 reachable from s
    first = jnp.where((s[None, :] == 0) | ((s[None, :] == 1) & (target_lengths[:, None] > 0)), lp_ext[0], neg)
    first = jnp.where(valid, first, neg)

    def forward(alpha, t):
        new = _lse(alpha, _shift(alpha, 1, neg), jnp.where(skip, _shift(alpha, 2, neg), neg)) + lp_ext[t]
        new = jnp.where(valid, new, neg)
        alpha = jnp.where((t < input_lengths)[:, None], new, alpha)  # a finished sample keeps its last column
        return alpha, new

    _, rest = lax.scan(forward, first, jnp.arange(1, big_t))
    log_alpha = jnp.concatenate([first[None], rest])
    last = jnp.take_along_axis(log_alpha, jnp.maximum(input_lengths - 1, 0)[None, :, None], axis=0)[0]
    end = jnp.take_along_axis(last, (2 * target_lengths)[:, None], axis=1)[:, 0]
    before = jnp.take_along_axis(last, jnp.maximum(2 * target_lengths - 1, 0)[:, None], axis=1)[:, 0]
    nll = -jnp.where(target_lengths > 0, _lse(end, jnp.where(target_lengths > 0, before, neg)), end)

    def backward(beta, t):
        final = (s[None, :] == 2 * target_lengths[:, None]) | (s[None, :] == 2 * target_lengths[:, None] - 1)
        start = jnp.where(final & valid, lp_ext[t], neg)
        inner = (s[None, :] < 2 * target_lengths[:, None]) & valid
        nxt = _lse(
            beta,
            jnp.where(inner, _shift(beta, -1, neg), neg),
            jnp.where(skip_back & (s[None, :] < 2 * target_lengths[:, None] - 1), _shift(beta, -2, neg), neg),
        )
        new = jnp.where(valid, nxt + lp_ext[t], neg)
        here = (t == input_lengths - 1)[:, None]
        beta = jnp.where(here, start, jnp.where((t < input_lengths - 1)[:, None], new, neg))
        return beta, beta

    _, log_beta = lax.scan(backward, jnp.full(ext.shape, neg, log_probs.dtype), jnp.arange(big_t), reverse=True)
    return log_alpha, log_beta, nll


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _ctc_nll(log_probs, ext, input_lengths, target_lengths, zero_infinity):
    nll = _ctc_tables(log_probs, ext, input_lengths, target_lengths)[2]
    return jnp.where(zero_infinity & (nll == jnp.inf), 0, nll)


def _ctc_fwd(log_probs, ext, input_lengths, target_lengths, zero_infinity):
    log_alpha, log_beta, nll = _ctc_tables(log_probs, ext, input_lengths, target_lengths)
    out = jnp.where(zero_infinity & (nll == jnp.inf), 0, nll)
    return out, (log_probs, ext, input_lengths, log_alpha, log_beta, nll)


def _ctc_bwd(zero_infinity, res, g):
    # torch's ctc_loss_backward_cpu: exp(lp) - exp(log(sum over the states of class c of alpha beta) + nll - lp),
    # the gradient with respect to the logits under the log_softmax that torch assumes (not the derivative in the
    # log-probabilities themselves); 0 from each sample's input length on, NaN for an impossible alignment unless
    # zero_infinity, which zeroes it.
    log_probs, ext, input_lengths, log_alpha, log_beta, nll = res
    classes = log_probs.shape[2]
    onehot = (ext[:, :, None] == jnp.arange(classes)).astype(log_probs.dtype)  # (N, S', C)
    ab = log_alpha + log_beta  # (T, N, S')
    m = jnp.max(ab, axis=2, keepdims=True)
    m = jnp.where(m == -jnp.inf, 0, m)
    summed = jnp.einsum("tns,nsc->tnc", jnp.exp(ab - m), onehot, precision=lax.Precision.HIGHEST)
    log_sum = jnp.log(summed) + m  # -inf for a class no state carries
    grad = jnp.exp(log_probs) - jnp.exp(log_sum + nll[None, :, None] - log_probs)
    impossible = nll == jnp.inf
    grad = jnp.where(impossible[None, :, None], jnp.nan, grad)
    if zero_infinity:
        grad = jnp.where(impossible[None, :, None], 0, grad)
    live = jnp.arange(log_probs.shape[0])[:, None] < input_lengths[None, :]
    grad = jnp.where(live[:, :, None], grad * g[None, :, None], 0)
    return grad, None, None, None


_ctc_nll.defvjp(_ctc_fwd, _ctc_bwd)


def ctc_loss(
    log_probs,
    targets,
    input_lengths,
    target_lengths,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> jax.Array:
    """``F.ctc_loss``: the connectionist temporal classification loss, torch's CPU algorithm.

    Args:
      log_probs: ``(T, N, C)`` (or unbatched ``(T, C)``) log-probabilities,
        time first as in torch (normally ``log_softmax(x, 2)``).
      targets: ``(N, S)`` padded class indices, or 1-D, the targets one after
        another (``sum(target_lengths)``); never ``blank``.
      input_lengths: ``(N,)`` integers (arrays, lists or tuples).
      target_lengths: ``(N,)`` integers (arrays, lists or tuples).
      blank: the blank class.
      reduction: ``"mean"`` divides each sample's loss
        by its target length (at least 1) and averages, ``"sum"``, ``"none"``.
      zero_infinity: make infinite losses (no alignment fits) and their gradients 0.

    The gradient is torch's: with respect to the logits under ``log_softmax``
    (``exp(lp) - occupancy``), which differs from the derivative in
    ``log_probs`` by ``exp(lp)`` and gives the same gradient through a
    ``log_softmax``, as torch's does.
    """
    _check_reduction(reduction)
    _check_floating(log_probs, "ctc_loss", "log_probs")
    if log_probs.ndim not in (2, 3):
        raise ValueError(f"ctc_loss expects log_probs (T, N, C) or (T, C); got shape {tuple(log_probs.shape)}.")
    unbatched = log_probs.ndim == 2
    targets = jnp.asarray(targets)
    input_lengths, target_lengths = jnp.asarray(input_lengths), jnp.asarray(target_lengths)
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"ctc_loss expects integer targets; got dtype {targets.dtype}.")
    if unbatched:
        log_probs, input_lengths, target_lengths = (
            log_probs[:, None],
            input_lengths.reshape(1),
            target_lengths.reshape(1),
        )
        if targets.ndim != 1:
            raise ValueError(f"ctc_loss: unbatched log_probs (T, C) take 1-D targets; got {tuple(targets.shape)}.")
        targets = targets[None]
    big_t, n, classes = log_probs.shape
    if not 0 <= blank < classes:
        raise ValueError(f"blank must be in label range: got blank={blank} for {classes} classes.")
    if input_lengths.shape != (n,) or target_lengths.shape != (n,):
        raise ValueError(
            f"ctc_loss: input_lengths and target_lengths must have one entry per sample ({n}); got shapes "
            f"{tuple(input_lengths.shape)} and {tuple(target_lengths.shape)}."
        )
    if _concrete(input_lengths, target_lengths):
        il, tl = np.asarray(input_lengths), np.asarray(target_lengths)
        if (il > big_t).any() or (il < 0).any():
            raise ValueError(f"Expected input_lengths to have value at most {big_t} (and >= 0), but got {il.tolist()}")
        if (tl < 0).any():
            raise ValueError(f"ctc_loss: target_lengths must be >= 0; got {tl.tolist()}.")
        if targets.ndim == 2 and (tl > targets.shape[1]).any():
            raise ValueError(
                f"Expected tensor to have size at least {tl.max()} at dimension 1, but got size {targets.shape[1]} "
                "for argument #2 'targets'"
            )
        if targets.ndim == 1 and tl.sum() > targets.shape[0]:
            raise ValueError(f"ctc_loss: 1-D targets hold {targets.shape[0]} labels; target_lengths sum to {tl.sum()}.")
    if targets.ndim == 1:  # concatenated: pad each sample's slice, to the longest length when it is known
        longest = int(np.asarray(target_lengths).max()) if _concrete(target_lengths) and n else targets.shape[0]
        starts = jnp.cumsum(target_lengths) - target_lengths
        index = jnp.minimum(starts[:, None] + jnp.arange(longest), max(targets.shape[0] - 1, 0))
        targets = jnp.take(targets, index) if targets.shape[0] else jnp.zeros((n, longest), targets.dtype)
    elif targets.ndim != 2 or targets.shape[0] != n:
        raise ValueError(f"ctc_loss: targets must be (N, S) = ({n}, S) or 1-D; got {tuple(targets.shape)}.")
    s = targets.shape[1]
    ext = jnp.full((n, 2 * s + 1), blank, jnp.int32)
    ext = ext.at[:, 1::2].set(jnp.clip(targets, 0, classes - 1).astype(jnp.int32))
    nll = _ctc_nll(log_probs, ext, input_lengths.astype(jnp.int32), target_lengths.astype(jnp.int32), zero_infinity)
    if reduction == "mean":
        return jnp.mean(nll / jnp.maximum(target_lengths, 1).astype(nll.dtype))
    if reduction == "sum":
        return jnp.sum(nll)
    return nll[0] if unbatched else nll


def linear_cross_entropy(
    input,
    linear_weight,
    target,
    *,
    linear_bias=None,
    weight=None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options=None,
) -> jax.Array:
    """``F.linear_cross_entropy``: :func:`cross_entropy` of ``linear(input, linear_weight, linear_bias)``.

    ``input`` is ``(N, in)`` or ``(in,)``; ``linear_weight`` ``(C, *out_features,
    in)`` (``out_features`` giving a K-dimensional loss, target ``(N,
    *out_features)``). ``ignore_index=None`` means -100 for class indices.
    ``options`` (torch's chunking of the batch, a memory strategy) is accepted
    and not used: the logits are computed whole, which XLA may fuse or not.
    """
    del options
    if input.ndim not in (1, 2):
        raise ValueError(f"expected input with dimensionality 1 or 2, got {input.ndim}")
    if linear_weight.ndim < 2:
        raise ValueError(f"expected linear_weight with dimensionality at least 2, got {linear_weight.ndim}")
    batch, in_features = input.shape[:-1], input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise ValueError(
            "expected equal input and linear_weight last dimensions (in_features), "
            f"got {in_features} and {linear_weight.shape[-1]}, respectively"
        )
    classes, out_features = linear_weight.shape[0], tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (classes, *out_features):
        raise ValueError(f"expected linear_bias shape {(classes, *out_features)}, got {tuple(linear_bias.shape)}")
    if out_features and not batch:
        raise ValueError(
            f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} requires batched input, "
            f"(N, {in_features}), got unbatched input with shape {tuple(input.shape)}"
        )
    logits_shape = (*batch, classes, *out_features)
    if tuple(jnp.shape(target)) == logits_shape and ignore_index is not None:
        raise ValueError("ignore_index cannot be specified when target contains probabilities")
    flat_w = linear_weight.reshape(-1, in_features)
    flat_b = None if linear_bias is None else linear_bias.reshape(-1)
    logits = linear(input, flat_w, flat_b).reshape(logits_shape)
    return cross_entropy(
        logits,
        target,
        weight=weight,
        reduction=reduction,
        ignore_index=-100 if ignore_index is None else ignore_index,
        label_smoothing=label_smoothing,
    )


# Channel-wise and alpha dropout, interpolation, one_hot, attention (#15) -----
# One block, appended, so that parallel branches editing the sections above merge cleanly.

# SELU's negative saturation value, -scale * alpha, as ATen's alpha_dropout writes it.
_SELU_SATURATION = 1.7580993408473766


def _check_dropout_p(p) -> None:
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _dropout_nd(x, p, training, key, mask, *, feature: bool, alpha: bool, fn: str) -> jax.Array:
    """ATen's ``_dropout_impl``: a Bernoulli(1 - p) keep mask, per element or per (sample, channel).

    The mask is :func:`jaxnets.nn._random.keep_mask`'s, as :func:`dropout`'s: ``p``
    rounded to the nearest multiple of ``2**-32``.
    """
    _check_dropout_p(p)
    if not training or p == 0:
        return x
    if feature and x.ndim < 2:
        raise ValueError(
            f"{fn}: feature dropout requires at least 2 dimensions in the input (batch, channels, ...); "
            f"got shape {tuple(x.shape)}. Add the missing dimension (x[None]) or use dropout."
        )
    if p == 1:
        return x * jnp.zeros((), x.dtype)  # torch multiplies by a zero tensor: zeros, gradient zero
    shape = tuple(x.shape[:2]) + (1,) * (x.ndim - 2) if feature else tuple(x.shape)
    if mask is None:
        if key is None:
            raise ValueError(
                f"{fn} in training mode with 0 < p < 1 needs random keys: pass key=jax.random.key(seed), "
                "a keep mask with mask=, or training=False."
            )
        keep = _random.keep_mask(key, p, shape)
    else:
        keep = jnp.asarray(mask)
        if tuple(keep.shape) != shape:
            raise ValueError(
                f"{fn}: mask has shape {tuple(keep.shape)}; expected {shape}, the keep mask "
                f"{'per (sample, channel)' if feature else 'per element'} for an input of shape {tuple(x.shape)}."
            )
    noise = keep.astype(x.dtype)
    if not alpha:
        return x * (noise / (1 - p))
    a = 1.0 / math.sqrt((_SELU_SATURATION**2 * p + 1) * (1 - p))
    b = (noise - 1) * (_SELU_SATURATION * a) + _SELU_SATURATION * a * p
    return x * (noise * a) + b


def dropout1d(x, p: float = 0.5, training: bool = True, inplace: bool = False, *, key=None, mask=None) -> jax.Array:
    """``F.dropout1d``: zero whole channels of ``(N, C, L)`` or ``(C, L)`` input, scale the rest by ``1 / (1 - p)``.

    torch draws the mask from its global generator; here it comes from ``key``
    (a ``jax.random.key``), or is given as ``mask``: the boolean keep mask of
    shape ``(N, C, 1)`` (``(1, C, 1)`` for unbatched input), True where a channel
    is kept, which lets a test hand torch's mask to both sides. ``inplace`` is
    accepted for torch's signature; JAX arrays are immutable.
    """
    _check_dropout_p(p)
    if x.ndim not in (2, 3):
        raise ValueError(
            f"dropout1d: Expected 2D or 3D input, but received a {x.ndim}D input of shape {tuple(x.shape)}. "
            "dropout1d drops channels of (N, C, L) or (C, L) input; use dropout for other shapes."
        )
    batched = x.ndim == 3
    y = _dropout_nd(x if batched else x[None], p, training, key, mask, feature=True, alpha=False, fn="dropout1d")
    return y if batched else y[0]


def dropout2d(x, p: float = 0.5, training: bool = True, inplace: bool = False, *, key=None, mask=None) -> jax.Array:
    """``F.dropout2d``: zero whole channels of ``(N, C, H, W)`` input, scale the rest by ``1 / (1 - p)``.

    As torch, a 3D input is read as ``(N, C, L)`` (channel-wise 1D dropout, with
    torch's warning), not as unbatched ``(C, H, W)``; other ranks warn and drop
    per ``(dim 0, dim 1)`` entry. ``key``, ``mask`` (shape ``(N, C, 1, 1)``)
    and ``inplace`` as in :func:`dropout1d`.
    """
    _check_dropout_p(p)
    if x.ndim not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {x.ndim}-D input to dropout2d, which is deprecated and will result in an "
            "error in a future release. To retain the behavior and silence this warning, please use dropout "
            "instead.",
            stacklevel=2,
        )
    if x.ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout behavior is "
            "desired - input is interpreted as shape (N, C, L), where C is the channel dim. Use dropout1d for that.",
            stacklevel=2,
        )
    return _dropout_nd(x, p, training, key, mask, feature=True, alpha=False, fn="dropout2d")


def dropout3d(x, p: float = 0.5, training: bool = True, inplace: bool = False, *, key=None, mask=None) -> jax.Array:
    """``F.dropout3d``: zero whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)`` input.

    Other ranks warn and are treated as unbatched, as in torch. ``key``,
    ``mask`` (shape ``(N, C, 1, 1, 1)``, ``(1, C, 1, 1, 1)`` unbatched) and
    ``inplace`` as in :func:`dropout1d`.
    """
    _check_dropout_p(p)
    if x.ndim not in (4, 5):
        warnings.warn(
            f"dropout3d: Received a {x.ndim}-D input to dropout3d, which is deprecated and will result in an "
            "error in a future release. To retain the behavior and silence this warning, please use dropout "
            "instead.",
            stacklevel=2,
        )
    batched = x.ndim == 5
    y = _dropout_nd(x if batched else x[None], p, training, key, mask, feature=True, alpha=False, fn="dropout3d")
    return y if batched else y[0]


def alpha_dropout(x, p: float = 0.5, training: bool = False, inplace: bool = False, *, key=None, mask=None):
    """``F.alpha_dropout``: dropped elements become SELU's saturation, then ``a * x + b`` keeps mean 0, variance 1.

    ``a = 1 / sqrt((alpha'^2 p + 1)(1 - p))`` and ``b = a alpha' p`` on kept
    elements, ``-a alpha' (1 - p)`` on dropped ones, with ``alpha' =
    1.7580993408473766``, as ATen. ``training`` defaults to False, as in
    torch. ``key``, ``mask`` (shape of ``x``) and ``inplace`` as in
    :func:`dropout1d`.
    """
    return _dropout_nd(x, p, training, key, mask, feature=False, alpha=True, fn="alpha_dropout")


def feature_alpha_dropout(x, p: float = 0.5, training: bool = False, inplace: bool = False, *, key=None, mask=None):
    """``F.feature_alpha_dropout``: :func:`alpha_dropout` with one mask entry per (sample, channel).

    The input needs at least 2 dimensions, ``(N, C, ...)``; ``mask`` has shape
    ``(N, C, 1, ...)``. ``training`` defaults to False, as in torch.
    """
    return _dropout_nd(x, p, training, key, mask, feature=True, alpha=True, fn="feature_alpha_dropout")


# Interpolation: ATen's CPU index arithmetic, computed in NumPy at trace time (the sizes are static), in the
# input's "opmath" precision (float64 for float64 input, float32 otherwise), with ATen's floorf, which rounds
# a float64 source index to float32 before flooring.

_INTERP_DIMS = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}


def _floorf(v: np.ndarray) -> np.ndarray:
    return np.floor(v.astype(np.float32)).astype(np.int64)


def _interp_scale(in_size: int, out_size: int, align_corners: bool, scale, op) -> np.floating:
    """ATen's ``area_pixel_compute_scale``: ``(in - 1) / (out - 1)`` aligned, else ``1 / scale`` or ``in / out``."""
    if align_corners:
        return op(in_size - 1) / op(out_size - 1) if out_size > 1 else op(0)
    if scale is not None and scale > 0:
        return op(1.0 / scale)
    return op(in_size) / op(out_size)


def _source_index(scale, out_size: int, align_corners: bool, cubic: bool, op) -> np.ndarray:
    """ATen's ``area_pixel_compute_source_index`` for every output index."""
    i = np.arange(out_size).astype(op)
    if align_corners:
        return scale * i
    src = scale * (i + op(0.5)) - op(0.5)
    return src if cubic else np.maximum(src, op(0))


def _axis_taps(mode, in_size, out_size, align_corners, scale, op) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Source indices and weights along one axis: ``out[i] = sum_k w[k][i] * in[idx[k][i]]``."""
    one = [np.ones(out_size, op)]
    if mode in ("nearest", "nearest-exact"):
        s = _interp_scale(in_size, out_size, False, scale, op)
        if mode == "nearest":
            idx = _floorf(s * np.arange(out_size).astype(op))
        else:
            idx = _floorf(_source_index(s, out_size, False, False, op) + op(0.5))
        return [np.minimum(idx, in_size - 1)], one
    s = _interp_scale(in_size, out_size, align_corners, scale, op)
    if mode == "bicubic":
        real = _source_index(s, out_size, align_corners, True, op)
        idx = np.minimum(_floorf(real), in_size - 1)
        t = np.clip(real - idx, op(0), op(1)).astype(op)
        a = op(-0.75)

        def conv1(x):
            return ((a + 2) * x - (a + 3)) * x * x + 1

        def conv2(x):
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

        weights = [conv2(t + op(1)), conv1(t), conv1(op(1) - t), conv2(op(1) - t + op(1))]
        return [np.clip(idx - 1 + k, 0, in_size - 1) for k in range(4)], [w.astype(op) for w in weights]
    if out_size == in_size:  # ATen copies: scale factor 1
        return [np.arange(out_size)], one
    real = _source_index(s, out_size, align_corners, False, op)
    idx0 = np.minimum(_floorf(real), in_size - 1)
    lambda1 = np.clip(real - idx0, op(0), op(1)).astype(op)
    idx1 = idx0 + (idx0 < in_size - 1)
    return [idx0, idx1], [(op(1) - lambda1).astype(op), lambda1]


def interpolate(
    input: jax.Array,
    size=None,
    scale_factor=None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> jax.Array:
    """``F.interpolate``: resize ``(N, C, *spatial)`` input (1 to 3 spatial dims) by ``size`` or ``scale_factor``.

    Modes ``nearest`` (torch's legacy ``floor(i * scale)``), ``nearest-exact``,
    ``linear`` (3D input), ``bilinear`` and ``bicubic`` (4D), ``trilinear`` (5D)
    and ``area`` (adaptive average pooling), with ``align_corners`` and
    ``recompute_scale_factor`` as torch: the source positions follow ATen's CPU
    kernels, computed in float64 for float64 input and in float32 otherwise,
    so the same output pixels read the same input pixels. Without
    ``recompute_scale_factor`` a given ``scale_factor`` is the one that maps
    positions (``1 / scale_factor``), and the output size is
    ``floor(in * scale_factor)``. ``antialias=True`` is not supported.
    """
    if input.ndim not in (3, 4, 5):
        raise ValueError(
            f"interpolate expects (N, C, *spatial) input with 1 to 3 spatial dimensions (3D to 5D); got shape "
            f"{tuple(input.shape)}. Add the batch dimension (x[None]) to unbatched input."
        )
    if mode not in ("nearest", "nearest-exact"):
        _check_floating(input, "interpolate")
    dim = input.ndim - 2
    if mode in ("nearest", "area", "nearest-exact"):
        if align_corners is not None:
            raise ValueError(
                "align_corners option can only be set with the interpolating modes: linear | bilinear | bicubic | "
                f"trilinear; got mode={mode!r}. Leave align_corners=None."
            )
    elif mode in _INTERP_DIMS:
        if _INTERP_DIMS[mode] != dim:
            raise ValueError(
                f"Got {input.ndim}D input, but {mode} mode needs {_INTERP_DIMS[mode] + 2}D input "
                f"(N, C, and {_INTERP_DIMS[mode]} spatial dimensions)."
            )
        align_corners = bool(align_corners)
    else:
        raise ValueError(
            f"interpolate got mode={mode!r}; expected one of 'nearest', 'nearest-exact', 'linear', 'bilinear', "
            "'bicubic', 'trilinear', 'area'."
        )
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported by jaxnets; use antialias=False.")
    spatial = tuple(input.shape[2:])
    if size is not None and scale_factor is not None:
        raise ValueError("only one of size or scale_factor should be defined")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size.")
        sizes = list(size) if isinstance(size, list | tuple) else [size] * dim
        if len(sizes) != dim or not all(isinstance(s, int | np.integer) for s in sizes):
            raise ValueError(
                f"interpolate: size={size!r} must be an int or {dim} ints, one per spatial dimension of the input "
                f"of shape {tuple(input.shape)}."
            )
        scales = [None] * dim
    elif scale_factor is not None:
        scales = list(scale_factor) if isinstance(scale_factor, list | tuple) else [scale_factor] * dim
        if len(scales) != dim:
            raise ValueError(
                f"Input and scale_factor must have the same number of spatial dimensions, but got input with "
                f"spatial dimensions of {list(spatial)} and scale_factor of shape {scale_factor}. Give one factor "
                "per spatial dimension."
            )
        sizes = [int(math.floor(n * float(s))) for n, s in zip(spatial, scales, strict=True)]
        if recompute_scale_factor or mode == "area":
            scales = [None] * dim
        else:
            scales = [float(s) for s in scales]
    else:
        raise ValueError("either size or scale_factor should be defined")
    if min(spatial) <= 0 or min(sizes) <= 0:
        raise ValueError(
            f"Input and output sizes should be greater than 0, but got input {list(spatial)} and output {sizes}. "
            "Pick a larger size or scale_factor."
        )
    if mode == "area":
        return adaptive_avg_pool(input, dim, tuple(sizes), name="interpolate")
    op = np.float64 if input.dtype == jnp.float64 else np.float32
    y = input
    for axis in reversed(range(dim)):  # innermost first, as ATen nests its sums
        indices, weights = _axis_taps(mode, spatial[axis], sizes[axis], align_corners, scales[axis], op)
        shape = (-1,) + (1,) * (dim - 1 - axis)
        terms = [
            jnp.take(y, jnp.asarray(i), axis=2 + axis) * jnp.asarray(w, y.dtype).reshape(shape)
            for i, w in zip(indices, weights, strict=True)
        ]
        y = terms[0]
        for t in terms[1:]:
            y = y + t
    return y


def upsample(input, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool | None = None):
    """``F.upsample`` (deprecated in torch): :func:`interpolate`."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    """``F.upsample_nearest``: :func:`interpolate` with mode ``nearest``."""
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """``F.upsample_bilinear``: :func:`interpolate` with mode ``bilinear`` and ``align_corners=True``."""
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


def one_hot(tensor, num_classes: int = -1) -> jax.Array:
    """``F.one_hot``: integer classes ``(*)`` to ``(*, num_classes)`` integer indicators (torch's int64 under x64).

    ``num_classes=-1`` takes ``max + 1`` of the values, which needs concrete
    values: under ``jax.jit`` pass ``num_classes``. Concrete values are checked
    as torch checks them (non-negative, smaller than ``num_classes``); traced
    ones cannot be, and a class out of range gives a zero row.
    """
    t = jnp.asarray(tensor)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(
            f"one_hot is only applicable to index tensor of integer dtype; got {t.dtype}. Cast it with .astype(int)."
        )
    concrete = not isinstance(t, jax.core.Tracer)
    if num_classes == -1:
        if not concrete:
            raise ValueError(
                "one_hot with num_classes=-1 reads the largest class from the values, which jit does not have; "
                "pass num_classes explicitly."
            )
        if t.size == 0:
            raise ValueError("Can not infer total number of classes from empty tensor; pass num_classes.")
        num_classes = int(t.max()) + 1
    elif num_classes < 0:
        raise ValueError(f"one_hot: num_classes should be -1 or a non-negative int, got {num_classes}.")
    if concrete and t.size:
        if int(t.min()) < 0:
            raise ValueError(f"one_hot: class values must be non-negative; got the minimum {int(t.min())}.")
        if int(t.max()) >= num_classes:
            raise ValueError(
                f"one_hot: class values must be smaller than num_classes={num_classes}; got {int(t.max())}."
            )
    return (t[..., None] == jnp.arange(num_classes, dtype=t.dtype)).astype(jax.dtypes.canonicalize_dtype(jnp.int64))


def scaled_dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    attn_mask: jax.Array | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    rng: jax.Array | None = None,
    dropout_mask: jax.Array | None = None,
) -> jax.Array:
    """``F.scaled_dot_product_attention``: ``softmax(q k^T * scale + mask) v`` with torch's conventions.

    ``query`` is ``(..., L, E)``, ``key`` ``(..., S, E)``, ``value`` ``(..., S, Ev)``.
    A boolean ``attn_mask`` is True where attention is *allowed* (torch's
    convention for this function; the opposite of ``nn.MultiheadAttention``'s),
    a float mask is added to the scores; both broadcast to ``(..., L, S)``.
    ``is_causal`` uses the top-left causal mask (query ``i`` sees keys ``<= i``)
    and excludes ``attn_mask``, as in torch. ``scale`` defaults to
    ``1 / sqrt(E)``. ``enable_gqa`` lets ``key``/``value`` have fewer heads (dim
    -3) that divide the query's, each shared by consecutive query heads. A query
    row with every key masked gives zeros, as torch's math kernel does.

    torch applies dropout whenever ``dropout_p > 0`` (its callers pass
    ``dropout_p=0`` in eval). The keep mask over the ``(..., L, S)`` weights is
    drawn from ``rng`` (a ``jax.random.key``; the name ``key`` is the attention's
    key tensor; as :func:`dropout`'s, ``dropout_p`` rounded to a multiple of
    ``2**-32``) or given as ``dropout_mask``; kept weights are scaled by
    ``1 / (1 - dropout_p)``.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_floating(t, "scaled_dot_product_attention", name)
        if t.ndim < 2:
            raise ValueError(
                f"scaled_dot_product_attention: {name} must have at least 2 dimensions (..., length, features); "
                f"got shape {tuple(t.shape)}."
            )
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"scaled_dot_product_attention: query {tuple(query.shape)}, key {tuple(key.shape)} and value "
            f"{tuple(value.shape)} must share the feature size E (query and key: (..., L, E), (..., S, E)) and the "
            "key length S (key and value)."
        )
    _check_dropout_p(dropout_p)
    if is_causal and attn_mask is not None:
        raise ValueError(
            "scaled_dot_product_attention: explicit attn_mask should not be set when is_causal=True; "
            "fold the causal mask into attn_mask or drop it."
        )
    if enable_gqa and query.ndim >= 3 and key.shape[-3] != query.shape[-3]:
        hq, hk = query.shape[-3], key.shape[-3]
        if hk == 0 or hq % hk or value.shape[-3] != hk:
            raise ValueError(
                f"scaled_dot_product_attention with enable_gqa: the query's {hq} heads must be a multiple of the "
                f"key's and value's heads; got key {tuple(key.shape)} and value {tuple(value.shape)}."
            )
        key = jnp.repeat(key, hq // hk, axis=-3)
        value = jnp.repeat(value, hq // hk, axis=-3)
    L, S = query.shape[-2], key.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    scores = jnp.matmul(query, jnp.swapaxes(key, -1, -2)) * jnp.asarray(scale, query.dtype)
    allowed = None
    if is_causal:
        allowed = jnp.tril(jnp.ones((L, S), bool))
    elif attn_mask is not None:
        attn_mask = jnp.asarray(attn_mask)
        if attn_mask.dtype == jnp.bool_:
            allowed = attn_mask
        else:
            scores = scores + attn_mask.astype(scores.dtype)
    if allowed is not None:
        scores = jnp.where(allowed, scores, -jnp.inf)
    # torch's _safe_softmax: a row with every score -inf gives zeros (and zero gradient) instead of NaN.
    top = jnp.max(scores, axis=-1, keepdims=True)
    all_masked = top == -jnp.inf
    e = jnp.exp(scores - jnp.where(all_masked, 0, jax.lax.stop_gradient(top)))
    weights = jnp.where(all_masked, 0, e / jnp.where(all_masked, 1, e.sum(axis=-1, keepdims=True)))
    if dropout_p > 0:
        shape = weights.shape
        if dropout_mask is None:
            if rng is None:
                raise ValueError(
                    "scaled_dot_product_attention with dropout_p > 0 needs random keys: pass "
                    "rng=jax.random.key(seed), a keep mask with dropout_mask=, or dropout_p=0 (eval)."
                )
            keep = _random.keep_mask(rng, dropout_p, shape)
        else:
            keep = jnp.broadcast_to(jnp.asarray(dropout_mask, bool), shape)
        factor = 0.0 if dropout_p == 1 else 1 / (1 - dropout_p)  # p = 1: every weight dropped, zeros
        weights = jnp.where(keep, weights, 0) * jnp.asarray(factor, weights.dtype)
    return jnp.matmul(weights, value)


# Pixel and channel shuffles, normalize, cosine similarity (#15) -------------


def pixel_shuffle(input: jax.Array, upscale_factor: int) -> jax.Array:
    """``F.pixel_shuffle``: ``(*, C r^2, H, W)`` to ``(*, C, H r, W r)``, torch's channel order."""
    r = upscale_factor
    if input.ndim < 3 or r <= 0 or input.shape[-3] % (r * r):
        raise ValueError(
            f"pixel_shuffle expects input (*, C * upscale_factor**2, H, W) with upscale_factor > 0; got shape "
            f"{tuple(input.shape)} and upscale_factor={r}."
        )
    *batch, c, h, w = input.shape
    x = input.reshape(*batch, c // (r * r), r, r, h, w)
    n = len(batch)
    x = x.transpose(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return x.reshape(*batch, c // (r * r), h * r, w * r)


def pixel_unshuffle(input: jax.Array, downscale_factor: int) -> jax.Array:
    """``F.pixel_unshuffle``: ``(*, C, H r, W r)`` to ``(*, C r^2, H, W)``, the inverse of :func:`pixel_shuffle`."""
    r = downscale_factor
    if input.ndim < 3 or r <= 0 or input.shape[-2] % r or input.shape[-1] % r:
        raise ValueError(
            f"pixel_unshuffle expects input (*, C, H, W) with H and W divisible by downscale_factor > 0; got shape "
            f"{tuple(input.shape)} and downscale_factor={r}."
        )
    *batch, c, h, w = input.shape
    x = input.reshape(*batch, c, h // r, r, w // r, r)
    n = len(batch)
    x = x.transpose(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return x.reshape(*batch, c * r * r, h // r, w // r)


def channel_shuffle(input: jax.Array, groups: int) -> jax.Array:
    """``F.channel_shuffle``: ``(N, C, *)`` with channels ``(groups, C / groups)`` transposed."""
    if input.ndim < 3 or groups <= 0 or input.shape[1] % groups:
        raise ValueError(
            f"channel_shuffle expects input (N, C, *) with at least 3 dimensions and C divisible by groups > 0; "
            f"got shape {tuple(input.shape)} and groups={groups}."
        )
    n, c, *rest = input.shape
    return input.reshape(n, groups, c // groups, *rest).swapaxes(1, 2).reshape(input.shape)


native_channel_shuffle = channel_shuffle


def _clamp_min_no_grad(x: jax.Array, low: float) -> jax.Array:
    # torch clamps a norm in place under no_grad: the value is clamped, the gradient is the norm's.
    return x + jax.lax.stop_gradient(jnp.maximum(x, low) - x)


def normalize(input: jax.Array, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out=None) -> jax.Array:
    """``F.normalize``: ``input / max(||input||_p, eps)`` along ``dim``."""
    if out is not None:
        raise ValueError("normalize: out= has no meaning in JAX (arrays are immutable); use the returned array.")
    _check_floating(input, "normalize")
    return input / jnp.maximum(vector_norm(input, p, dim, True), eps)


def cosine_similarity(x1: jax.Array, x2: jax.Array, dim: int = 1, eps: float = 1e-8) -> jax.Array:
    """``F.cosine_similarity``: ATen's ``sum(x1 / max(||x1||, eps) * x2 / max(||x2||, eps), dim)``.

    The inputs broadcast; as in ATen the norms are clamped without their
    gradient being clamped.
    """
    _check_floating(x1, "cosine_similarity", "x1")
    x1, x2 = jnp.broadcast_arrays(x1, x2)
    n1 = _clamp_min_no_grad(vector_norm(x1, 2.0, dim, True), eps)
    n2 = _clamp_min_no_grad(vector_norm(x2, 2.0, dim, True), eps)
    return ((x1 / n1) * (x2 / n2)).sum(axis=dim)


# Max unpooling (#15) ---------------------------------------------------------


def max_unpool(input, indices, n: int, kernel_size, stride=None, padding=0, output_size=None, name="max_unpool"):
    """``F.max_unpool1d/2d/3d``: zeros with ``input``'s values at max-pool's flat per-channel ``indices``.

    The default output size is ``(in - 1) * stride - 2 * padding + kernel``; an
    explicit ``output_size`` (``n`` sizes, or ``N, C`` and ``n`` sizes) must lie
    strictly within ``stride`` of it, as torch checks. Concrete indices are
    checked against the output plane. Where two inputs name the same index
    (overlapping pooling windows) which one lands is not specified.
    """
    _check_floating(input, name)
    if input.ndim not in (n + 1, n + 2):
        raise ValueError(
            f"{name} expects (N, C, *spatial) or (C, *spatial) input with {n} spatial dimension(s); got shape "
            f"{tuple(input.shape)}."
        )
    if tuple(jnp.shape(indices)) != tuple(input.shape):
        raise ValueError(
            f"{name}: indices of shape {tuple(jnp.shape(indices))} must have the input's shape {tuple(input.shape)} "
            "(the indices max_pool returned with return_indices=True)."
        )
    k = _ntuple(kernel_size, n, "kernel_size")
    s = k if stride is None else _ntuple(stride, n, "stride")
    p = _ntuple(padding, n, "padding")
    spatial = input.shape[-n:]
    default = [(spatial[d] - 1) * s[d] + k[d] - 2 * p[d] for d in range(n)]
    if output_size is None:
        out = default
    else:
        out = [int(v) for v in output_size]
        if len(out) == n + 2:
            out = out[2:]
        if len(out) != n:
            raise ValueError(f"{name}: output_size must have {n} or {n + 2} elements; got {list(output_size)}.")
        for d in range(n):
            if not default[d] - s[d] < out[d] < default[d] + s[d]:
                raise ValueError(
                    f"{name}: invalid output_size {out} (dim {d} must be between {default[d] - s[d]} and "
                    f"{default[d] + s[d]}, exclusive)."
                )
    plane = math.prod(out)
    if _concrete(indices) and np.size(indices):
        values = np.asarray(indices)
        if values.min() < 0 or values.max() >= plane:
            raise ValueError(
                f"{name}: found an invalid max index {int(values.max() if values.max() >= plane else values.min())} "
                f"(the output plane {out} has {plane} elements)."
            )
    batch = input.shape[:-n]
    x = input.reshape(-1, math.prod(spatial))
    idx = jnp.asarray(indices).reshape(x.shape)
    rows = jnp.arange(x.shape[0])[:, None]
    y = jnp.zeros((x.shape[0], plane), input.dtype).at[rows, idx].set(x)
    return y.reshape(*batch, *out)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """``F.max_unpool1d``: :func:`max_unpool` over 1 spatial dimension."""
    return max_unpool(input, indices, 1, kernel_size, stride, padding, output_size, "max_unpool1d")


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """``F.max_unpool2d``: :func:`max_unpool` over 2 spatial dimensions."""
    return max_unpool(input, indices, 2, kernel_size, stride, padding, output_size, "max_unpool2d")


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """``F.max_unpool3d``: :func:`max_unpool` over 3 spatial dimensions."""
    return max_unpool(input, indices, 3, kernel_size, stride, padding, output_size, "max_unpool3d")


# Unfold and fold (im2col, col2im) (#15) ---------------------------------------


def _fold_args(name, kernel_size, dilation, padding, stride):
    return tuple(
        _ntuple(v, 2, f"{name}: {what}")
        for v, what in ((kernel_size, "kernel_size"), (dilation, "dilation"), (padding, "padding"), (stride, "stride"))
    )


def unfold(input: jax.Array, kernel_size, dilation=1, padding=0, stride=1) -> jax.Array:
    """``F.unfold`` (im2col): ``(N, C, H, W)`` or ``(C, H, W)`` to ``(N, C * kh * kw, L)``, torch's order."""
    _check_floating(input, "unfold")
    if input.ndim not in (3, 4):
        raise ValueError(
            f"unfold expects 3D (C, H, W) or 4D (N, C, H, W) input; got shape {tuple(input.shape)} "
            "(torch's Unfold supports only 4D spatial input)."
        )
    k, d, p, s = _fold_args("unfold", kernel_size, dilation, padding, stride)
    x = input if input.ndim == 4 else input[None]
    patches = jax.lax.conv_general_dilated_patches(
        x,
        k,
        s,
        [(p[0], p[0]), (p[1], p[1])],
        rhs_dilation=d,
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST,
    )
    if 0 in patches.shape[2:]:
        raise ValueError(
            f"unfold: the sliding blocks do not fit: input {tuple(input.shape)} with kernel_size {k}, dilation {d}, "
            f"padding {p}, stride {s} gives no block. Pad more or use a smaller kernel."
        )
    y = patches.reshape(x.shape[0], patches.shape[1], -1)
    return y if input.ndim == 4 else y[0]


def fold(input: jax.Array, output_size, kernel_size, dilation=1, padding=0, stride=1) -> jax.Array:
    """``F.fold`` (col2im): sums ``(N, C * kh * kw, L)`` blocks into ``(N, C, *output_size)``; the adjoint of unfold."""
    _check_floating(input, "fold")
    if input.ndim not in (2, 3):
        raise ValueError(f"fold expects 2D (C * kh * kw, L) or 3D (N, C * kh * kw, L) input; got {tuple(input.shape)}.")
    k, d, p, s = _fold_args("fold", kernel_size, dilation, padding, stride)
    out = _ntuple(output_size, 2, "fold: output_size")
    x = input if input.ndim == 3 else input[None]
    blocks = [(out[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2)]
    if x.shape[1] % (k[0] * k[1]) or x.shape[2] != blocks[0] * blocks[1]:
        raise ValueError(
            f"fold: input of shape {tuple(input.shape)} does not match: dim -2 must be divisible by the kernel's "
            f"{k[0] * k[1]} elements and dim -1 must be the {blocks[0]} x {blocks[1]} = {blocks[0] * blocks[1]} "
            f"blocks of output_size {out} with kernel_size {k}, dilation {d}, padding {p}, stride {s}."
        )
    c = x.shape[1] // (k[0] * k[1])
    zeros = jnp.zeros((x.shape[0], c, *out), x.dtype)
    _, vjp = jax.vjp(lambda z: unfold(z, k, d, p, s), zeros)
    y = vjp(x)[0]
    return y if input.ndim == 3 else y[0]
