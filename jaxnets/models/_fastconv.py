"""Convolution and 2x2 max-pooling for LeNet-sized layers, built from ops XLA:CPU runs fast.

XLA:CPU's ``lax.conv_general_dilated`` and the gradient of a ``reduce_window``
max-pool are slow at LeNet's shapes (1 to 16 channels, 32x32 to 10x10 maps), and
no XLA flag fixes that. The same functions, from primitives XLA:CPU is good at:

- a convolution with few taps (``kh * kw * C`` up to 27, e.g. LeNet's ``conv1``
  on one channel) of at least 8 images as ``kh * kw * C`` shifted multiply-adds,
  one elementwise loop vectorised over the images;
- any other (and any of fewer images, where that loop has nothing to vectorise
  over) as im2col (slices in two concatenations) and one matrix product, the
  patches kept for the backward pass;
- the backward passes as matrix products too (custom VJPs): the kernel gradient
  as patches times the output gradient, the input gradient as the kernel times
  it, folded back by col2im; and the 2x2 max-pool
  as a reshape and a max whose VJP sends each window's cotangent to its first
  maximal element in row-major order: the element ``torch.nn.functional.max_pool2d``
  picks, so gradients stay exact when a window holds ties (after a ReLU, every
  window of negative pre-activations is a tie of zeros);
- a shifted-sum convolution followed by ReLU and that max-pool as one op,
  :func:`conv2d_relu_max_pool2d`, whose backward pass sums the kernel gradient
  over the pooled grid (every window passes its gradient to one position at
  most) from patches of the input's four stride-2 phases, a quarter of the
  full-size patches.

The functions work in a batch-last layout ``(C, H, W, N)``: the batch is the
contiguous axis, so the shifted slices are contiguous copies and the arithmetic
vectorises over images. :class:`FastConv` wraps them behind ``nnx.Conv``'s
channels-last interface, with exactly ``nnx.Conv``'s parameters.

What this module shares with the torch-mirror layers (:mod:`jaxnets.nn`), and
what it does not:

- The max-pool's choice of element (torch's rule: the first maximum in
  row-major order, the last NaN in a window holding NaNs) is one function,
  :func:`jaxnets.nn.functional.max_pool_pick`, called by both.
- The convolutions and the pool's backward pass are not shared, and cannot be
  without a loss on one side. Here they are custom VJPs: JAX's transpose of
  the slices of an im2col is a sum of zero-padded taps (measured 4x slower
  than :func:`_col2im` at LeNet's ``conv2``) and the patches are kept from the
  forward pass, which a plain function cannot ask for. A custom VJP has no
  forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian`` fail on it), and
  the mirror layers promise every mode, so ``jaxnets.nn.functional.conv`` stays
  ``lax.conv_general_dilated`` (any stride, padding, dilation and groups) and
  its max-pools differentiate through a gather of the chosen element. The
  mirror's ``unfold`` is an im2col too, but torch's: rows in ``(C, kh, kw)``
  order, NCHW, any stride and padding; this one is batch-last with rows in
  ``(kh, kw, C)`` order, the order of an HWIO kernel, VALID and stride 1 only.
  Either layout served to the other would cost a transposing copy per call.

Two choices below only make sense for XLA:CPU's fusion heuristics, and cost a
copy elsewhere: :func:`_materialize` and the 64-image chunks of :func:`chunks`.
Nothing else assumes a CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from .._pool import max_pool_pick

SHIFT_MAX_TAPS = 27
"""Convolutions with at most this many taps (``kh * kw * in_channels``) use shifted multiply-adds..."""

SHIFT_MIN_BATCH = 8
"""...on at least this many images. The shifted sums vectorise over the batch axis,
the contiguous one: with fewer images XLA:CPU runs them nearly scalar (measured
for LeNet's forward pass at batch 1: 51 us per image with shifts, 21 us with
im2col and a matrix product; batch 4: 90 against 72 us; batch 8: 91 against 108 us)."""

CHUNK = 64
"""Largest number of images :func:`chunks` puts in one chunk."""


def _materialize(x: jax.Array) -> jax.Array:
    # An identity gather along the first axis longer than 1 (XLA drops a gather
    # along a unit axis). XLA:CPU fuses cheap elementwise producers into every
    # consumer, so a 25-tap sum read by the four corners of every pooling window,
    # or a column-to-image sum read by every tap, is recomputed once per read.
    # XLA:CPU counts a gather as expensive and does not fuse it into a loop that
    # reads its elements more than once: it is computed once and stored.
    axis = next((i for i, size in enumerate(x.shape) if size > 1), None)
    if axis is None:
        return x
    return x[(slice(None),) * axis + (np.arange(x.shape[axis]),)]


def to_batch_last(x: jax.Array) -> jax.Array:
    """Images ``(N, H, W, C)`` -> ``(C, H, W, N)``, the layout of :func:`conv2d` and :func:`max_pool2d`."""
    xt = x.transpose(3, 1, 2, 0)
    return _materialize(xt) if x.shape[0] > 1 else xt  # one transposing copy; a single image needs none


def from_batch_last(x: jax.Array) -> jax.Array:
    """Feature maps ``(C, H, W, N)`` -> ``(N, H, W, C)``."""
    return x.transpose(3, 1, 2, 0)


def chunks(x: jax.Array, size: int | None = None) -> jax.Array:
    """Images ``(N, ...)`` -> ``(K, B, ...)``: K chunks of B <= ``size`` (default :data:`CHUNK`) images, zero-padded.

    Per-chunk intermediates stay in cache, and XLA:CPU's buffers for a whole step
    stay small enough to be reused instead of being freshly page-faulted at every
    call (which costs more than the arithmetic from about 200 images on).
    """
    n = x.shape[0]
    k = -(-n // (size or CHUNK))
    b = -(-n // k)
    if k * b != n:
        x = jnp.pad(x, ((0, k * b - n),) + ((0, 0),) * (x.ndim - 1))
    return x.reshape(k, b, *x.shape[1:])


# -- convolution ------------------------------------------------------------------------------


def _im2col(x: jax.Array, kh: int, kw: int) -> jax.Array:
    # (C, H, W, N) -> (kh*kw*C, Ho, Wo, N), rows in (a, b, c) order, the order of
    # kernel.reshape(kh*kw*C, O) for an HWIO kernel. Built from slices in two
    # concatenations, the kw column shifts first (kw*C rows), then the kh row shifts
    # of those: each copies contiguous runs of the batch axis. Measured at LeNet's
    # conv2 (batch 64) against one gather of all taps: about 1.5x faster with the
    # matrix product that reads it, and far faster than 25 slices in one concatenation.
    _, h, w, _ = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    cols = jnp.concatenate([x[:, :, b : b + wo] for b in range(kw)])  # (kw*C, H, Wo, N), rows (b, c)
    return jnp.concatenate([cols[:, a : a + ho] for a in range(kh)])  # (kh*kw*C, Ho, Wo, N), rows (a, b, c)


def _col2im(d: jax.Array, c: int, h: int, w: int) -> jax.Array:
    # The adjoint of _im2col: (kh*kw*C, Ho, Wo, N) -> (C, H, W, N), each tap added
    # back at its offset, in place into one buffer (25 small in-place updates, each
    # contiguous along the batch axis: measured 4x faster at LeNet's conv2, batch 64,
    # than a sum of 25 zero-padded taps, whose bounds checks defeat vectorisation).
    # The taps are added in the same order either way, so the sums are identical.
    _, ho, wo, n = d.shape
    kh, kw = h - ho + 1, w - wo + 1
    d = d.reshape(kh, kw, c, ho, wo, n)
    out = jnp.zeros((c, h, w, n), d.dtype)
    for a in range(kh):
        for b in range(kw):
            out = out.at[:, a : a + ho, b : b + wo].add(d[a, b])
    return out


def _shifted_sum(x: jax.Array, kernel: jax.Array) -> jax.Array:
    # sum over (a, b, c) of x[c, a:a+Ho, b:b+Wo, :] * kernel[a, b, c, :]: (C, H, W, N) -> (O, Ho, Wo, N)
    kh, kw, c_in, _ = kernel.shape
    _, h, w, _ = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    out = None
    for a in range(kh):
        for b in range(kw):
            for c in range(c_in):
                term = x[c : c + 1, a : a + ho, b : b + wo] * kernel[a, b, c][:, None, None, None]
                out = term if out is None else out + term
    return out


def _contract(lhs: jax.Array, g: jax.Array, precision) -> jax.Array:
    # (K, Ho, Wo, N) x (O, Ho, Wo, N) -> (K, O), summing over pixels and images. Flattened to 2-D first:
    # with three contracting axes XLA:CPU copies one operand to a transposed (pixels, K) layout before
    # the product; with one it hands both, as they are, to its matrix-product library. Measured
    # 2026-12-06 (LeNet's conv1 kernel gradient alone, 36 x 12544 by 24 x 12544: 247 against 477 us;
    # a Trainer step at batch 256, one process, alternating: 8.48 against 9.20 ms, fastest repeats).
    lhs, g = lhs.reshape(lhs.shape[0], -1), g.reshape(g.shape[0], -1)
    return lax.dot_general(lhs, g, (((1,), (1,)), ((), ())), precision=precision)


def _input_grad(kernel: jax.Array, g: jax.Array, precision) -> jax.Array:
    # The input's cotangent from the output's g (O, Ho, Wo, N): the kernel times g, folded back by col2im.
    kh, kw, c_in, c_out = kernel.shape
    _, ho, wo, _ = g.shape
    d = lax.dot_general(kernel.reshape(kh * kw * c_in, c_out), g, (((1,), (0,)), ((), ())), precision=precision)
    return _col2im(d, c_in, ho + kh - 1, wo + kw - 1)


def _uses_shifts(kernel_shape, batch: int) -> bool:
    kh, kw, c_in, _ = kernel_shape
    return kh * kw * c_in <= SHIFT_MAX_TAPS and batch >= SHIFT_MIN_BATCH


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv(x, kernel, bias, precision):
    return _conv_fwd(x, kernel, bias, precision)[0]


def _conv_fwd(x, kernel, bias, precision):
    kh, kw, c_in, c_out = kernel.shape
    if _uses_shifts(kernel.shape, x.shape[-1]):
        # x is read kh*kw times; for a batch it is usually a fused transpose.
        y = _shifted_sum(_materialize(x), kernel)
        saved = x
    else:
        # The patches are the forward's costliest part (a gather, about a third of a
        # LeNet step at batch 64): kept for the kernel gradient, not rebuilt there.
        saved = _im2col(x, kh, kw)
        w = kernel.reshape(kh * kw * c_in, c_out)
        # (O, K) x (K, Ho, Wo, N), the layout of a plain matrix product: with w contracted over its
        # first axis XLA:CPU ran a generic dot; measured 2026-12-06 (a Trainer step at 64, one
        # process, alternating, two runs): 2.18 and 2.20 against 2.30 ms (fastest repeats).
        y = lax.dot_general(w.T, saved, (((1,), (0,)), ((), ())), precision=precision)
    if bias is not None:
        y = y + bias[:, None, None, None]
    return _materialize(y), (saved, kernel, bias is not None)


def _conv_bwd(precision, res, g):
    saved, kernel, has_bias = res  # saved: the input x (shifted sums) or its im2col patches
    kh, kw, c_in, c_out = kernel.shape
    # g may reach here as a fused expression (a ReLU's mask, a slice of a scan's
    # stacked residuals) and is read several times below; so may x.
    g = _materialize(g)
    # The kernel gradient is one matrix product of the patches with g, whichever way
    # the forward went: for conv1 (25 taps) the patches cost less than the 5 skinny
    # products of the column shifts this replaced (measured: a LeNet step at batch
    # 64 about 25% faster).
    patches = _im2col(saved, kh, kw) if _uses_shifts(kernel.shape, g.shape[-1]) else saved
    dkernel = _contract(patches, g, precision).reshape(kh, kw, c_in, c_out)
    dbias = g.sum(axis=(1, 2, 3)) if has_bias else None
    return _input_grad(kernel, g, precision), dkernel.astype(kernel.dtype), dbias


_conv.defvjp(_conv_fwd, _conv_bwd)


def _vary_alike(*arrays):
    """``arrays`` (None passes through), each cast to vary over every mesh axis any of them varies over.

    Inside ``jax.shard_map`` a custom VJP must return each cotangent with its
    input's type, and the kernel gradient of a batch that varies over the devices
    varies too, while a replicated kernel does not. Cast first, the kernel
    enters the custom VJP varying, as JAX's own ops make it implicitly, and
    autodiff turns the cast into the sum over devices it inserts for them.
    Outside ``shard_map`` nothing varies and nothing is cast.
    """
    axes = frozenset().union(*(_varying(a) for a in arrays if a is not None))
    # Sorted: the same axes in the same order, so the same trace, in every process.
    missing = [() if a is None else tuple(sorted(axes - _varying(a), key=str)) for a in arrays]
    return tuple(a if a is None else lax.pcast(a, m, to="varying") for a, m in zip(arrays, missing, strict=True))


def _varying(a) -> frozenset:
    # The mesh axes `a` varies over inside shard_map: `vma` in the jax releases that name it so, `mat.varying` in 0.10.
    aval = jax.typeof(a)
    return frozenset(aval.vma if hasattr(aval, "vma") else aval.mat.varying)


def _check_conv_args(name: str, x: jax.Array, kernel: jax.Array) -> None:
    if x.ndim != 4 or kernel.ndim != 4 or x.shape[0] != kernel.shape[2]:
        raise ValueError(
            f"{name} expects batch-last maps (C, H, W, N) and an HWIO kernel (kh, kw, C, O) with the same C; "
            f"got {x.shape} and {kernel.shape}."
        )


@functools.partial(jax.jit, static_argnames="precision")  # named, so jaxnets.graph.op_chain shows "conv2d"
def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, precision=None) -> jax.Array:
    """VALID, stride-1 2-D convolution (cross-correlation) of batch-last feature maps.

    PyTorch counterpart: ``torch.nn.functional.conv2d(x, weight, bias)`` with its
    default stride 1 and padding 0. The same function as ``lax.conv_general_dilated``
    with ``padding="VALID"``; only the order of the floating-point sums differs.

    Args:
      x: feature maps ``(C, H, W, N)``, batch last.
      kernel: ``(kh, kw, C, O)`` (HWIO, ``nnx.Conv``'s layout).
      bias: ``(O,)``, or None.
      precision: passed to the matrix products (``lax.Precision``), as ``nnx.Conv`` does.

    Returns:
      ``(O, H - kh + 1, W - kw + 1, N)``.
    """
    _check_conv_args("conv2d", x, kernel)
    return _conv(*_vary_alike(x, kernel, bias), precision)


# -- max-pooling ------------------------------------------------------------------------------


def _windows(x: jax.Array) -> jax.Array:
    # (C, H, W, N) -> (C, H//2, 2, W//2, 2, N); an odd last row or column is dropped, as torch floors.
    c, h, w, n = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(c, h // 2, 2, w // 2, 2, n)


def _window_max(x: jax.Array) -> jax.Array:
    # (C, H, W, N) -> (C, H//2, W//2, N): the maximum of each 2x2 window, NaN where it holds one. Three
    # elementwise maxima, not a reduction: XLA:CPU's YNNPACK reductions drop NaN (jaxnets._extrema).
    w = _windows(x)
    return jnp.maximum(jnp.maximum(w[:, :, 0, :, 0], w[:, :, 0, :, 1]), jnp.maximum(w[:, :, 1, :, 0], w[:, :, 1, :, 1]))


def _first_max(x6: jax.Array, y: jax.Array, nans: bool) -> jax.Array:
    # For windows x6 (C, Hp, 2, Wp, 2, N) and their maxima y (C, Hp, Wp, N): True at the element torch picks,
    # the first maximal one in row-major window order (0,0), (0,1), (1,0), (1,1), or the last NaN (nans=False:
    # none, where a ReLU before the pool zeroes a NaN's gradient anyway). The rule is the torch-mirror pools'
    # own (jaxnets.nn.functional.max_pool_pick), on the windows in place.
    return max_pool_pick(x6, y, (2, 4), nans=nans)


def _unwindow(d6: jax.Array, h: int, w: int) -> jax.Array:
    # The adjoint of _windows: (C, Hp, 2, Wp, 2, N) -> (C, H, W, N), zeros in a dropped odd row or column.
    c, hp, _, wp, _, n = d6.shape
    d = d6.reshape(c, 2 * hp, 2 * wp, n)
    return jnp.pad(d, ((0, 0), (0, h - 2 * hp), (0, w - 2 * wp), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _pool(x, nans):
    return _window_max(x)


def _pool_fwd(x, nans):
    y = _pool(x, nans)
    return y, (x, y)


def _pool_bwd(nans, res, g):
    x, y = res
    _, h, w, _ = x.shape
    pick = _first_max(_windows(_materialize(x)), y, nans)
    dx6 = jnp.where(pick, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
    return (_materialize(_unwindow(dx6, h, w)),)


_pool.defvjp(_pool_fwd, _pool_bwd)


@jax.jit  # named, so jaxnets.graph.op_chain shows "max_pool2d"
def max_pool2d(x: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2 of batch-last feature maps, with torch's gradient at ties.

    PyTorch counterpart: ``torch.nn.functional.max_pool2d(x, 2)``; odd sizes are
    floored. The gradient of each window goes to its first maximal element in
    row-major order, as in torch (and in ``lax.reduce_window``'s gradient), so
    windows of equal values (zeros after a ReLU, constant image regions) get
    exactly torch's gradient. A window holding a NaN pools to NaN and passes its
    gradient to its last NaN, as torch does. The rule is
    :func:`jaxnets.nn.functional.max_pool_pick`, shared with the torch-mirror
    pools; the custom VJP is what differs (see the module docstring).

    Args:
      x: feature maps ``(C, H, W, N)``, batch last.

    Returns:
      ``(C, H // 2, W // 2, N)``.
    """
    if x.ndim != 4:
        raise ValueError(f"max_pool2d expects batch-last maps (C, H, W, N); got shape {x.shape}.")
    return _pool(x, True)


# -- convolution, ReLU and max-pooling in one op -------------------------------------------------


def _pooled_kernel_grad(x: jax.Array, g4: jax.Array, kh: int, kw: int, precision) -> jax.Array:
    # The kernel gradient from the window-position cotangents g4 (2, 2, O, Hp, Wp, N), rows (di, dj): the
    # full-size cotangent of the convolution is g4 interleaved, nonzero at one position per window at most.
    # Summing over the pooled grid instead: tap (a, b) of window position (di, dj) reads
    # x[2i + di + a, 2j + dj + b], i.e. row s = a + di in [0, kh] and column t = b + dj in [0, kw] of
    # the stride-2 grid. Those are the shifts of the four phase images x[q::2, r::2] by
    # (s // 2, t // 2): im2col of a kp x lp kernel on 4*C phase channels, 4x fewer rows of patches
    # than im2col of x at full size. One product gives every (s, t, c) x (di, dj, o) pair.
    c, _, _, n = x.shape
    _, _, o, hp, wp, _ = g4.shape
    kp, lp = kh // 2 + 1, kw // 2 + 1
    rows, cols = 2 * (hp + kp - 1), 2 * (wp + lp - 1)
    x = x[:, :rows, :cols]
    x = jnp.pad(x, ((0, 0), (0, rows - x.shape[1]), (0, cols - x.shape[2]), (0, 0)))  # unread rows/columns
    phases = x.reshape(c, rows // 2, 2, cols // 2, 2, n).transpose(2, 4, 0, 1, 3, 5)
    patches = _im2col(phases.reshape(4 * c, rows // 2, cols // 2, n), kp, lp)  # rows (p, p', q, r, c)
    # Contracted as g4 with the patches and then transposed (a 4*O x kp*lp*4*C result): measured a LeNet step
    # 9% faster than patches with g4 (1.29 -> 1.18 ms at batch 64). conv2's kernel gradient is the other way round.
    q = _contract(g4.reshape(4 * o, hp, wp, n), patches, precision).T  # (kp*lp*4*C, 4*O), columns (di, dj, o)
    q = q.reshape(kp, lp, 2, 2, c, 2, 2, o).transpose(0, 2, 1, 3, 4, 5, 6, 7).reshape(2 * kp, 2 * lp, c, 2, 2, o)
    return sum(q[di : di + kh, dj : dj + kw, :, di, dj] for di in (0, 1) for dj in (0, 1))  # (kh, kw, C, O)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_relu_pool(x, kernel, bias, precision):
    return _conv_relu_pool_fwd(x, kernel, bias, precision)[0]


def _conv_relu_pool_fwd(x, kernel, bias, precision):
    # Called only where conv2d takes shifted sums: then its forward keeps x as the residual.
    z, (x, _, has_bias) = _conv_fwd(x, kernel, bias, precision)  # z materialised: read by the pool and the masks
    y = _window_max(jax.nn.relu(z))
    return y, (x, z, y, kernel, has_bias)


def _conv_relu_pool_bwd(precision, res, g):
    x, z, y, kernel, has_bias = res
    kh, kw, _, _ = kernel.shape
    z6 = _windows(z)
    # The cotangent of z, per window: g at the first maximum of relu(z) (torch's rule at ties), times relu's
    # gradient. Laid out by window position (di, dj) for the kernel gradient over the pooled grid.
    # A window holding a NaN passes zero (relu's gradient at NaN, as in torch), so the pick skips the NaN rule.
    pick = _first_max(jax.nn.relu(z6), y, False) & (z6 > 0)
    dz6 = jnp.where(pick, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
    g4 = _materialize(dz6.transpose(2, 4, 0, 1, 3, 5))  # (2, 2, O, Hp, Wp, N)
    dkernel = _pooled_kernel_grad(x, g4, kh, kw, precision)
    # The input gradient from the full-size cotangent (XLA drops it when x is data, as for LeNet's conv1).
    dx = _input_grad(kernel, _unwindow(dz6, *z.shape[1:3]), precision)
    dbias = g4.sum(axis=(0, 1, 3, 4, 5)) if has_bias else None
    return dx, dkernel.astype(kernel.dtype), dbias


_conv_relu_pool.defvjp(_conv_relu_pool_fwd, _conv_relu_pool_bwd)


@functools.partial(jax.jit, static_argnames="precision")  # named: jaxnets.graph.op_chain shows its three ops
def conv2d_relu_max_pool2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, precision=None):
    """``max_pool2d(relu(conv2d(x, kernel, bias)))``, with one backward pass for the three when that is faster.

    PyTorch counterpart: ``F.max_pool2d(F.relu(F.conv2d(x, weight, bias)), 2)``.
    The same function and gradients as the three ops composed (gradients at
    ties and at zero exactly as there, and as torch). For a convolution that
    :func:`conv2d` computes as shifted sums (few taps, at least
    :data:`SHIFT_MIN_BATCH` images; LeNet's ``conv1``), the backward pass never
    builds the full-size cotangent: each pooling window passes its gradient to
    at most one position, so the kernel gradient is summed over the pooled grid
    from patches of the input's four stride-2 phases, a quarter of the size of
    full-size patches (measured at LeNet's ``conv1``, 64 images: forward and
    kernel gradient together 2x faster). Otherwise it composes the three ops.

    Args:
      x: feature maps ``(C, H, W, N)``, batch last.
      kernel: ``(kh, kw, C, O)`` (HWIO).
      bias: ``(O,)``, or None.
      precision: passed to the matrix products.

    Returns:
      ``(O, (H - kh + 1) // 2, (W - kw + 1) // 2, N)``.
    """
    _check_conv_args("conv2d_relu_max_pool2d", x, kernel)
    if not _uses_shifts(kernel.shape, x.shape[-1]):
        # max_pool2d without the NaN rule: relu's gradient zeroes whatever a NaN window picks.
        return _pool(jax.nn.relu(conv2d(x, kernel, bias, precision=precision)), False)
    return _conv_relu_pool(*_vary_alike(x, kernel, bias), precision)


# -- the layer --------------------------------------------------------------------------------


class FastConv(nnx.Conv):
    """``nnx.Conv`` with VALID padding and stride 1, computed by :func:`conv2d`.

    The parameters are ``nnx.Conv``'s, created by ``nnx.Conv.__init__`` itself:
    ``kernel`` ``(kh, kw, in, out)`` and ``bias`` ``(out,)``, the same
    initialisers drawn in the same order, so a checkpoint, a weight port or a
    ``parity`` layout entry cannot tell the two apart. Only the forward differs:
    shifted multiply-adds or im2col and a matrix product instead of
    ``lax.conv_general_dilated`` (see the module docstring).

    Args:
      in_features: input channels.
      out_features: output channels.
      kernel_size: side of the square kernel, or ``(kh, kw)``.
      use_bias: add a bias.
      dtype: computation dtype, as in ``nnx.Conv`` (promoted from the inputs when None).
      param_dtype: parameter dtype.
      precision: precision of the matrix products.
      kernel_init: kernel initialiser (``nnx.Conv``'s default when None).
      bias_init: bias initialiser (``nnx.Conv``'s default when None).
      rngs: random streams for initialisation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | tuple[int, int],
        *,
        use_bias: bool = True,
        dtype=None,
        param_dtype=jnp.float32,
        precision=None,
        kernel_init: nnx.Initializer | None = None,
        bias_init: nnx.Initializer | None = None,
        rngs: nnx.Rngs,
    ):
        kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(kernel_size) != 2:
            raise ValueError(f"FastConv is 2-D: `kernel_size` must be an int or (kh, kw); got {kernel_size!r}.")
        inits = {"kernel_init": kernel_init, "bias_init": bias_init}
        super().__init__(
            in_features,
            out_features,
            kernel_size,
            strides=(1, 1),
            padding="VALID",
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            rngs=rngs,
            **{k: v for k, v in inits.items() if v is not None},
        )

    def promoted_params(self, *inputs: jax.Array) -> tuple:
        """``(kernel, bias, *inputs)`` promoted to one dtype the way ``nnx.Conv`` promotes them."""
        bias = self.bias[...] if self.bias is not None else None
        return self.promote_dtype((self.kernel[...], bias, *inputs), dtype=self.dtype)

    def batch_last(self, x: jax.Array) -> jax.Array:
        """The convolution of batch-last maps ``(C, H, W, N)`` -> ``(O, Ho, Wo, N)``."""
        kernel, bias, x = self.promoted_params(x)
        return conv2d(x, kernel, bias, precision=self.precision)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """The convolution of channels-last images, like ``nnx.Conv``.

        Args:
          inputs: ``(*batch, H, W, C)``; any number of leading batch axes, including none.

        Returns:
          ``(*batch, H - kh + 1, W - kw + 1, out_features)``.
        """
        if inputs.ndim < 3:
            raise ValueError(f"FastConv expects channels-last images (..., H, W, C); got shape {inputs.shape}.")
        batch, (h, w, c) = inputs.shape[:-3], inputs.shape[-3:]
        y = from_batch_last(self.batch_last(to_batch_last(inputs.reshape(-1, h, w, c))))
        return y.reshape(*batch, *y.shape[1:])
