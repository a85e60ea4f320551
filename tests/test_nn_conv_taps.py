"""``jaxnets.nn.functional.conv``'s two CPU paths: the taps (slices and one dot) and ``lax.conv_general_dilated``.

On CPU, :func:`~jaxnets.nn.functional.conv` picks the taps for small patches
and lax for large ones, so the layer tests against torch mostly see the taps.
Here both paths are compared with torch in float64 over strides, dilations,
groups, uneven padding and 1 to 3 spatial dims, and the rule is checked in the
compiled program: no convolution left where the taps are chosen.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from tolerances import F64_ATOL, F64_RTOL

from jaxnets.nn import functional as F

# x shape, weight shape, stride, padding, dilation, groups
CASES = {
    "1d-stride2-dil3": ((2, 3, 17), (4, 3, 3), 2, 2, 3, 1),
    "1d-same-even-kernel": ((2, 4, 11), (6, 2, 4), 1, "same", 2, 2),
    "2d-resnet-like": ((3, 8, 6, 6), (16, 8, 3, 3), 2, 1, 1, 1),
    "2d-depthwise": ((2, 6, 7, 5), (12, 1, 3, 2), (1, 2), (1, 0), (2, 1), 6),
    "2d-1x1-stride2": ((2, 8, 5, 5), (4, 8, 1, 1), 2, 0, 1, 1),
    "3d-grouped": ((2, 4, 5, 6, 4), (6, 2, 2, 3, 2), (1, 2, 1), (1, 1, 0), (1, 1, 2), 2),
}

# Cases where some taps read only the zero padding (left out by the taps path)
DEAD_TAP_CASES = {
    "2d-1x1-pixels": ((2, 8, 1, 1), (6, 8, 3, 3), 1, 1, 1, 1),
    "2d-2x2-stride2": ((2, 8, 2, 2), (6, 8, 3, 3), 2, 1, 1, 1),
    "2d-grouped-dilated": ((2, 4, 3, 2), (6, 2, 5, 3), (3, 1), (4, 2), (2, 1), 2),
    "1d-all-padding": ((2, 3, 1), (4, 3, 2), 4, 3, 1, 1),
}


def _torch_conv(x, w, stride, padding, dilation, groups):
    conv = (TF.conv1d, TF.conv2d, TF.conv3d)[w.ndim - 3]
    return conv(torch.from_numpy(x), torch.from_numpy(w), None, stride, padding, dilation, groups).numpy()


def _inputs(case, seed):
    """Random float64 input and weight of ``case``, with its stride, padding pairs and dilation as the taps take them."""
    xs, ws, stride, padding, dilation, _ = case
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=xs), rng.normal(size=ws)
    n = w.ndim - 2
    st, di = F._ntuple(stride, n, "stride"), F._ntuple(dilation, n, "dilation")
    return x, w, st, F.conv_padding(padding, ws[2:], di), di


@pytest.mark.parametrize("path", ["taps", "lax", "conv"])
@pytest.mark.parametrize("case", {**CASES, **DEAD_TAP_CASES}.values(), ids={**CASES, **DEAD_TAP_CASES}.keys())
def test_conv_paths_match_torch_in_float64(x64, case, path):
    _, _, stride, padding, dilation, groups = case
    x, w, st, pads, di = _inputs(case, seed=0)
    assert F._taps_pay(x, w, st, pads, di, groups), "every case is small enough for the taps"
    if path == "conv":
        have = jax.jit(lambda x, w: F.conv(x, w, None, stride, padding, dilation, groups))(x, w)
    else:
        impl = F._conv_taps if path == "taps" else F._conv_lax
        have = jax.jit(lambda x, w: impl(x, w, st, pads, di, groups))(x, w)
    want = _torch_conv(x, w, stride, padding, dilation, groups)
    np.testing.assert_allclose(np.asarray(have), want, rtol=F64_RTOL, atol=F64_ATOL)


@pytest.mark.parametrize("case", DEAD_TAP_CASES.values(), ids=DEAD_TAP_CASES.keys())
def test_conv_taps_gradients_match_torch_in_float64_where_taps_read_only_padding(x64, case):
    _, _, stride, padding, dilation, groups = case
    x, w, st, pads, di = _inputs(case, seed=1)
    n = w.ndim - 2
    have = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(F._conv_taps(x, w, st, pads, di, groups))), (0, 1)))(x, w)
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    conv = (TF.conv1d, TF.conv2d, TF.conv3d)[n - 1]
    torch.sin(conv(tx, tw, None, stride, padding, dilation, groups)).sum().backward()
    for h, want in zip(have, (tx.grad, tw.grad), strict=True):
        np.testing.assert_allclose(np.asarray(h), want.numpy(), rtol=F64_RTOL, atol=F64_ATOL)


def _compiled(x_shape, w_shape, padding):
    x, w = jnp.zeros(x_shape, jnp.float32), jnp.zeros(w_shape, jnp.float32)
    step = jax.grad(lambda x, w: jnp.sum(F.conv(x, w, None, 1, padding)), argnums=(0, 1))
    return jax.jit(step).lower(x, w).compile().as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the taps are the CPU path")
def test_conv_rule_picks_taps_for_small_maps_and_lax_for_long_kernels():
    resnet_layer3 = _compiled((32, 256, 2, 2), (256, 256, 3, 3), 1)  # 2.4 million patch elements, 9 taps
    long_kernel = _compiled((8, 16, 1000), (16, 16, 64), 0)  # 64 taps
    assert "convolution(" not in resnet_layer3 and "conditional" not in resnet_layer3
    assert "convolution(" in long_kernel


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the taps are the CPU path")
def test_conv_taps_leave_out_the_taps_that_read_only_padding():
    # ResNet-18's layer4 at 1x1 pixels: only the 3x3 kernel's centre reads the input,
    # so the products contract over 512 channels, never 512 * 9 = 4608 rows.
    layer4 = _compiled((32, 512, 1, 1), (512, 512, 3, 3), 1)
    assert "4608" not in layer4 and " dot(" in layer4
