"""LeNet from PyTorch's "Neural Networks" tutorial, channels-last."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .. import _split
from . import _fastconv, _init

IMPLS = ("fast", "lax")


def _pooled_size(size: int, kernel_size: int) -> int:
    # VALID convolution, then a 2x2 max-pool with stride 2 that floors like torch.
    return (size - kernel_size + 1) // 2


def flat_features(kernel_size: int, image_size: int) -> int:
    """Number of features that reach ``fc1``: ``16 * s * s`` after two conv/pool stages.

    400 for the 5x5 net on 32x32 images, 576 for the 3x3 net, 256 for 5x5 on 28x28.
    """
    s = _pooled_size(_pooled_size(image_size, kernel_size), kernel_size)
    return 16 * s * s if s > 0 else 0


class LeNet(nnx.Module):
    """The tutorial's ``Net``: two VALID convolutions with 2x2 max-pooling, three linear layers.

    PyTorch counterpart: ``Net`` in the "Neural Networks" tutorial (files 000 to
    002 use ``kernel_size=5``, file 003 uses 3). Attribute names match, so
    weights map one to one; only layouts differ (``parity`` converts them):
    kernels are HWIO instead of OIHW, linear kernels ``(in, out)`` instead of
    ``(out, in)``, and the input is NHWC instead of NCHW, so ``fc1`` sees the
    features in (H, W, C) flatten order instead of torch's (C, H, W).

    Args:
      kernel_size: side of both square convolution kernels (5 or 3 in the tutorial).
      image_size: side of the square input images; ``fc1``'s input size follows.
      in_channels: channels of the input images.
      num_classes: outputs of ``fc3``.
      kernel_init: initialiser for every kernel; PyTorch's default when None.
      bias_init: initialiser for every bias; PyTorch's default (which depends
        on each layer's fan-in) when None.
      param_dtype: dtype of the parameters (float64 needs ``jax_enable_x64``).
      impl: how the convolutions and poolings are computed; both give the same
        function and gradients (float64 results agree to about 1e-15) from the
        same parameters, so weights and checkpoints move freely between them.

        - ``"fast"`` (the default): :class:`~jaxnets._fastconv.FastConv` layers
          and :func:`~jaxnets._fastconv.max_pool2d` on batch-last chunks of at
          most 64 images: ``conv1`` as shifted multiply-adds (for batches of
          at least 8; as ``conv2`` below that) fused with its ReLU and pooling
          (:func:`~jaxnets._fastconv.conv2d_relu_max_pool2d`, whose kernel
          gradient is summed over the pooled grid), ``conv2`` as im2col and one
          matrix product, backward passes as matrix products,
          max-pool gradients sent to the first maximum of each window as torch
          does. On a 2-core CPU (benchmark, jit step) it trains 1.6 to 7 times
          faster than ``"lax"`` at batches of 1, 64 and 256 (least at batch 1,
          most at 256), and evaluates 1.8 to 3 times faster;
          XLA:CPU's own convolutions and pooling gradients are slow at these
          shapes, and no XLA flag fixes that. A batch of more than 64 images
          runs as a loop over 64-image chunks whose forward pass is recomputed
          in the backward one; ``jaxnets.Trainer`` avoids that for a mean loss
          by splitting such a batch into parts of 64 itself (see its
          ``microbatches``). A batch of 16 to 32 images runs as two
          independent halves, which XLA:CPU computes on two threads at once.
        - ``"lax"``: ``nnx.Conv`` (``lax.conv_general_dilated``) and
          ``nnx.max_pool`` (``lax.reduce_window``), one library op per layer;
          the reference, and the better choice on a GPU, where cuDNN runs
          these convolutions well and the fast path's chunks run one after another.
      rngs: random streams for initialisation.
    """

    def __init__(
        self,
        *,
        kernel_size: int = 5,
        image_size: int = 32,
        in_channels: int = 1,
        num_classes: int = 10,
        kernel_init: nnx.Initializer | None = None,
        bias_init: nnx.Initializer | None = None,
        param_dtype=jnp.float32,
        impl: str = "fast",
        rngs: nnx.Rngs,
    ):
        if impl not in IMPLS:
            raise ValueError(f"LeNet: `impl` must be one of {', '.join(map(repr, IMPLS))}; got {impl!r}.")
        for name, value in [
            ("kernel_size", kernel_size),
            ("image_size", image_size),
            ("in_channels", in_channels),
            ("num_classes", num_classes),
        ]:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LeNet: `{name}` must be a positive int; got {value!r}.")
        n_flat = flat_features(kernel_size, image_size)
        if n_flat == 0:
            raise ValueError(
                f"LeNet: `image_size={image_size}` is too small for `kernel_size={kernel_size}`: "
                "two convolutions and 2x2 poolings leave no pixels. "
                f"Use image_size >= {3 * kernel_size + 1} or a smaller kernel_size."
            )
        self.kernel_size = kernel_size
        self.image_size = image_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.impl = impl
        inits = dict(kernel_init=kernel_init, bias_init=bias_init, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = _init.conv(in_channels, 6, kernel_size, fast=impl == "fast", **inits)
        self.conv2 = _init.conv(6, 16, kernel_size, fast=impl == "fast", **inits)
        self.fc1 = _init.linear(n_flat, 120, **inits)
        self.fc2 = _init.linear(120, 84, **inits)
        self.fc3 = _init.linear(84, num_classes, **inits)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Class scores for a batch of images.

        Args:
          x: images ``(N, H, W, C)``, channels-last, or a single image ``(H, W, C)``.

        Returns:
          Logits ``(N, num_classes)``, or ``(num_classes,)`` for a single image.
        """
        single = self._check_input(x)
        images = x
        if single:
            x = x[None]
        x = self._fast_features(x) if self.impl == "fast" else self._lax_features(x)
        x = x.reshape(x.shape[0], -1)  # (N, H, W, C) -> (N, H*W*C): JAX order, not torch's (C, H, W).
        x = jax.nn.relu(self.fc1(x))
        x = jax.nn.relu(self.fc2(x))
        x = self.fc3(x)
        if single:
            return x[0]
        if self.impl == "fast":
            # Every image's scores depend on that image alone, and the fast path runs best on chunks of
            # CHUNK images: jaxnets.Trainer splits larger batches of a mean loss into such parts.
            _split.per_example(images, x, _fastconv.CHUNK)
        return x

    def _lax_features(self, x: jax.Array) -> jax.Array:
        x = nnx.max_pool(jax.nn.relu(self.conv1(x)), (2, 2), strides=(2, 2), padding="VALID")
        return nnx.max_pool(jax.nn.relu(self.conv2(x)), (2, 2), strides=(2, 2), padding="VALID")

    def _fast_features(self, x: jax.Array) -> jax.Array:
        k1, b1, x = self.conv1.promoted_params(x)
        # conv2 sees conv1's output, as nnx.Conv would: float32 weights meet float64 images in float64,
        # and autodiff casts their gradients back (promoted alone, conv2's bias got a float64 gradient).
        k2, b2, _ = self.conv2.promoted_params(x)
        p1, p2 = self.conv1.precision, self.conv2.precision

        def features(x):  # (B, H, W, C) -> (B, s, s, 16), one chunk of B images
            x = _fastconv.to_batch_last(x)  # (B, H, W, C) -> (C, H, W, B)
            x = _fastconv.conv2d_relu_max_pool2d(x, k1, b1, precision=p1)
            x = _fastconv.conv2d_relu_max_pool2d(x, k2, b2, precision=p2)
            return _fastconv.from_batch_last(x)

        chunks = _fastconv.chunks(x)  # (N, H, W, C) -> (K, B, H, W, C)
        if chunks.shape[0] == 1:
            n = x.shape[0]
            if 2 * _fastconv.SHIFT_MIN_BATCH <= n <= _fastconv.CHUNK // 2:
                # Two independent halves, forward and backward, which XLA:CPU runs side by side on two
                # threads. Measured 2026-12-06 (a Trainer step, one process, alternating, fastest repeats):
                # 1.16 against 1.53 ms at batch 32; at 64, 2.30 against 2.28 ms, so larger chunks stay whole.
                return jnp.concatenate([features(x[: n // 2]), features(x[n // 2 :])])
            return features(x)
        # Recomputing each chunk's forward in the backward loop keeps its intermediates
        # local to the loop body; stacked residuals would be read through dynamic slices.
        # Measured 2026-12-05 at batch 256 (a whole Trainer step, SGD, 4 chunks of 64): the
        # loop without the checkpoint, its residuals stacked, forward and backward each a
        # scan over chunks, took 28.8 to 32.6 ms per step against 9.6 to 11.0 ms for the
        # Trainer's 4 parts of 64 (medians, alternating processes): the Trainer's split stays.
        y = jax.lax.map(jax.checkpoint(features), chunks)
        return y.reshape(-1, *y.shape[2:])[: x.shape[0]]

    def _check_input(self, x) -> bool:
        """Raise a clear error for input LeNet cannot take; return True for a single image."""
        size, c = self.image_size, self.in_channels
        expected = f"(batch, {size}, {size}, {c}) or a single image ({size}, {size}, {c})"
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) not in (3, 4):
            raise ValueError(
                f"LeNet expects channels-last input of shape {expected}; got rank {len(shape)} "
                f"with shape {shape}."
                + (f" Reshape it, e.g. x.reshape(-1, {size}, {size}, {c})." if len(shape) else "")
            )
        dtype = jnp.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"LeNet expects floating-point images; got dtype {dtype}. "
                "Convert first, e.g. x.astype(jnp.float32) / 255 for 8-bit pixels."
            )
        spatial, channels = shape[-3:-1], shape[-1]
        if channels != c:
            if shape[-3] == c and shape[-2:] == (size, size):
                fix = "x.transpose(0, 2, 3, 1)" if len(shape) == 4 else "x.transpose(1, 2, 0)"
                raise ValueError(
                    f"LeNet expects channels-last input of shape {expected}; got {shape}, "
                    f"which looks channels-first: use {fix}."
                )
            raise ValueError(
                f"LeNet was built with in_channels={c}; got {channels} channels in the last axis "
                f"of shape {shape}. Build LeNet(in_channels={channels}) or pass {c}-channel images."
            )
        if spatial != (size, size):
            h, w = spatial
            fix = f" or build LeNet(image_size={h}, ...)" if h == w else ""
            pad = ""
            if h <= size and w <= size:
                ph, pw = size - h, size - w
                batch_pad = "(0, 0), " if len(shape) == 4 else ""
                pad = (
                    f"pad it, e.g. jnp.pad(x, ({batch_pad}({ph // 2}, {ph - ph // 2}), "
                    f"({pw // 2}, {pw - pw // 2}), (0, 0)))"
                )
            else:
                pad = f"resize it to {size}x{size}"
            raise ValueError(
                f"LeNet was built for {size}x{size} images (image_size={size}); got {h}x{w} "
                f"in shape {shape}: {pad}{fix}."
            )
        return len(shape) == 3
