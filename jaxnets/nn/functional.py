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


# Pooling -------------------------------------------------------------------
#
# Every pooling function gathers its windows explicitly (an index array per
# spatial dim) rather than calling lax.reduce_window: the maximum is then picked
# by argmax, the FIRST maximal element in torch's scan order (the kernel's
# leading dim outermost), and its gradient is a scatter to that one element, as
# torch's CPU kernels do on ties; reduce_window's gradient (select_and_scatter)
# would pick its own tie-break. Windows of different sizes (adaptive pools) are
# padded to the largest and masked.


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
    starts = [
        (jnp.arange(o) * si - pi)[:, None] + jnp.arange(ki)[None, :] * di
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
    scan order, which also receives the gradient on ties, as torch CPU does;
    ``return_indices`` gives torch's flat per-channel input indices.
    """
    x, batched = _pool_input(x, n, name)
    _, _, _, _, _, starts = _pool_args(name, n, x, kernel_size, stride, padding, dilation, ceil_mode)
    wins, _ = _windows(x, starts, [jnp.ones(s.shape, bool) for s in starts], -jnp.inf)
    arg = _first_max(wins)
    y = jnp.take_along_axis(wins, arg[..., None], axis=-1)[..., 0]
    if not batched:
        y = y[0]
    if not return_indices:
        return y
    flat = _flat_indices(starts, x.shape[2:])
    flat = jnp.broadcast_to(flat, arg.shape[:2] + flat.shape)
    idx = jnp.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return y, (idx if batched else idx[0])


def _first_max(wins: jax.Array) -> jax.Array:
    """Index of the first maximal element along the last axis; a NaN counts as maximal, as torch's ``isnan`` rule."""
    nan = jnp.isnan(wins)
    keyed = jnp.where(nan, jnp.inf, wins)
    arg = jnp.argmax(keyed, axis=-1)
    # torch replaces the running maximum by every NaN it meets: the last NaN wins.
    last_nan = wins.shape[-1] - 1 - jnp.argmax(nan[..., ::-1], axis=-1)
    return jnp.where(nan.any(axis=-1), last_nan, arg)


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
    wins, _ = _windows(x, starts, masks, -jnp.inf)
    arg = _first_max(wins)
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
    """
    n = weight.ndim - 2
    stride = _ntuple(stride, n, "stride")
    dilation = _ntuple(dilation, n, "dilation")
    padding = _ntuple(padding, n, "padding")
    output_padding = _ntuple(output_padding, n, "output_padding")
    cin, cout_g, *k = weight.shape
    w = weight.reshape(groups, cin // groups, cout_g, *k)
    w = jnp.swapaxes(w, 1, 2).reshape(groups * cout_g, cin // groups, *k)
    w = jnp.flip(w, axis=tuple(range(2, 2 + n)))
    pads = [
        (di * (ki - 1) - pi, di * (ki - 1) - pi + oi)
        for ki, pi, di, oi in zip(k, padding, dilation, output_padding, strict=True)
    ]
    spatial = "DHW"[-n:]
    y = lax.conv_general_dilated(
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
    if bias is not None:
        y = y + bias.reshape((-1,) + (1,) * n)
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
