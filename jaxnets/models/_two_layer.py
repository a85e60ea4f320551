"""The two-layer ReLU network of "Learning PyTorch with examples", as a module and as a Sequential."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..functional import clamp_min
from . import _init
from ._checks import check_features


class TwoLayerNet(nnx.Module):
    """``linear2(clamp(linear1(x), min=0))``.

    PyTorch counterpart: the tutorial's ``TwoLayerNet(torch.nn.Module)``. The
    attribute names ``linear1`` and ``linear2`` match; kernels are ``(in, out)``
    where torch's weights are ``(out, in)``. The activation is
    :func:`jaxnets.functional.clamp_min`, which keeps torch's gradient of 1 at 0.

    Args:
      in_features: input features (``D_in``, 1000 in the tutorial).
      hidden_features: hidden units (``H``, 100).
      out_features: outputs (``D_out``, 10).
      kernel_init: initialiser for both kernels; PyTorch's default when None.
      bias_init: initialiser for both biases; PyTorch's default when None.
      param_dtype: dtype of the parameters.
      rngs: random streams for initialisation.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        *,
        kernel_init: nnx.Initializer | None = None,
        bias_init: nnx.Initializer | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        inits = dict(kernel_init=kernel_init, bias_init=bias_init, param_dtype=param_dtype, rngs=rngs)
        self.in_features = in_features
        self.linear1 = _init.linear(in_features, hidden_features, **inits)
        self.linear2 = _init.linear(hidden_features, out_features, **inits)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Args: x: ``(..., in_features)``. Returns: ``(..., out_features)``."""
        check_features("TwoLayerNet", x, self.in_features)
        return self.linear2(clamp_min(self.linear1(x), 0.0))


class Sequential(nnx.Sequential):
    """``nnx.Sequential`` that indexes like ``torch.nn.Sequential``: ``seq[0]``, ``len(seq)``.

    Children live in ``self.layers``, so the state path of torch's ``0.weight``
    is ``layers/0/kernel``.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the children in order; a first ``nnx.Linear`` checks the feature count."""
        if len(self.layers) and isinstance(self.layers[0], nnx.Linear):
            check_features("Sequential", x, self.layers[0].in_features)
        return super().__call__(x)

    def __getitem__(self, index: int):
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)


def two_layer_sequential(
    in_features: int,
    hidden_features: int,
    out_features: int,
    *,
    kernel_init: nnx.Initializer | None = None,
    bias_init: nnx.Initializer | None = None,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
) -> Sequential:
    """The tutorial's ``nn.Sequential(Linear(D_in, H), ReLU(), Linear(H, D_out))``.

    Children 0, 1 and 2 are the first linear layer, ``jax.nn.relu`` (torch's
    ``nn.ReLU``: gradient 0 at 0) and the second linear layer.

    Args:
      in_features: input features.
      hidden_features: hidden units.
      out_features: outputs.
      kernel_init: initialiser for both kernels; PyTorch's default when None.
      bias_init: initialiser for both biases; PyTorch's default when None.
      param_dtype: dtype of the parameters.
      rngs: random streams for initialisation.

    Returns:
      A :class:`Sequential` of three children.
    """
    inits = dict(kernel_init=kernel_init, bias_init=bias_init, param_dtype=param_dtype, rngs=rngs)
    return Sequential(
        _init.linear(in_features, hidden_features, **inits),
        jax.nn.relu,
        _init.linear(hidden_features, out_features, **inits),
    )
