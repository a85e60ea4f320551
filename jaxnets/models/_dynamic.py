"""DynamicNet: control flow and weight sharing, with one compiled program for every depth."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..functional import clamp_min
from . import _init
from ._checks import check_features


class DynamicNet(nnx.Module):
    """``input_linear``, then ``middle_linear`` applied ``depth`` times with one set of weights, then ``output_linear``.

    PyTorch counterpart: the tutorial's ``DynamicNet``, whose ``forward`` draws
    ``random.randint(0, 3)`` itself. Here the depth is an argument, so the
    caller controls the randomness (``net.random_depth(key)``) and a parity
    test can feed both frameworks the same depths.

    ``depth`` may be a Python int, which unrolls exactly ``depth`` layers like
    torch's Python loop, or an integer scalar array (traced inside ``jit``):
    then the step runs ``max_depth`` guarded applications, each switched on by
    ``i < depth`` through ``lax.cond``, so one compiled program serves every
    depth, reverse-mode differentiation works (a ``fori_loop`` with a traced
    trip count cannot be transposed) and skipped layers cost no FLOPs.
    A traced depth is clipped to ``0..max_depth``; a concrete one is checked.

    Args:
      in_features: input features.
      hidden_features: hidden units, shared by all middle applications.
      out_features: outputs.
      max_depth: largest depth (3 in the tutorial).
      kernel_init: initialiser for the kernels; PyTorch's default when None.
      bias_init: initialiser for the biases; PyTorch's default when None.
      param_dtype: dtype of the parameters.
      rngs: random streams for initialisation.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        *,
        max_depth: int = 3,
        kernel_init: nnx.Initializer | None = None,
        bias_init: nnx.Initializer | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < 0:
            raise ValueError(f"DynamicNet: `max_depth` must be an int >= 0; got {max_depth!r}.")
        inits = dict(kernel_init=kernel_init, bias_init=bias_init, param_dtype=param_dtype, rngs=rngs)
        self.in_features = in_features
        self.max_depth = max_depth
        self.input_linear = _init.linear(in_features, hidden_features, **inits)
        self.middle_linear = _init.linear(hidden_features, hidden_features, **inits)
        self.output_linear = _init.linear(hidden_features, out_features, **inits)

    def random_depth(self, key: jax.Array) -> jax.Array:
        """A depth drawn uniformly from ``0..max_depth`` (torch: ``random.randint(0, 3)``).

        Args:
          key: a JAX PRNG key.

        Returns:
          An int32 scalar array, usable as ``depth`` inside a compiled step.
        """
        return jax.random.randint(key, (), 0, self.max_depth + 1, dtype=jnp.int32)  # int64 under x64 otherwise

    def used_params(self, depth: int | jax.Array) -> nnx.State:
        """Which parameters take part in ``net(x, depth)``: all, but ``middle_linear`` only when ``depth > 0``.

        For ``Trainer(..., skip_unused=lambda m, x, y, d: m.used_params(d))``,
        which reproduces torch's default ``zero_grad(set_to_none=True)``: on a
        depth-0 step torch leaves ``middle_linear``'s gradient at None and its
        optimizer skips it, so its momentum does not decay.

        Returns:
          An ``nnx.State`` of boolean scalars with the structure of the parameters.
        """
        used = jnp.asarray(depth) > 0
        always = jnp.asarray(True)
        return nnx.State(
            {
                name: jax.tree.map(lambda _, flag=(used if name == "middle_linear" else always): flag, layer)
                for name, layer in nnx.state(self, nnx.Param).items()
            }
        )

    def __call__(self, x: jax.Array, depth: int | jax.Array) -> jax.Array:
        """Args: x: ``(..., in_features)``; depth: int or integer scalar. Returns: ``(..., out_features)``."""
        check_features("DynamicNet", x, self.in_features)
        h = clamp_min(self.input_linear(x), 0.0)
        if self._static_depth(depth) is not None:
            for _ in range(int(depth)):
                h = clamp_min(self.middle_linear(h), 0.0)
        else:
            middle = lambda h: clamp_min(self.middle_linear(h), 0.0)  # noqa: E731
            for i in range(self.max_depth):
                h = jax.lax.cond(i < depth, middle, lambda h: h, h)
        return self.output_linear(h)

    def _static_depth(self, depth) -> int | None:
        """Validate ``depth``; return it as an int when it is known at trace time."""
        if isinstance(depth, bool):
            raise TypeError(f"DynamicNet: `depth` must be an int; got the bool {depth!r}.")
        if isinstance(depth, jax.core.Tracer):
            if depth.shape != () or not jnp.issubdtype(depth.dtype, jnp.integer):
                raise TypeError(
                    f"DynamicNet: a traced `depth` must be an integer scalar; got shape "
                    f"{depth.shape} and dtype {depth.dtype}. Use net.random_depth(key) or "
                    "jnp.asarray(d, jnp.int32)."
                )
            return None
        shape = getattr(depth, "shape", ())
        dtype = getattr(depth, "dtype", None)
        if (
            shape != ()
            or (dtype is not None and not jnp.issubdtype(dtype, jnp.integer))
            or (dtype is None and not isinstance(depth, int))
        ):
            raise TypeError(
                f"DynamicNet: `depth` must be an int in 0..{self.max_depth} or an integer scalar array; got {depth!r}."
            )
        if not 0 <= int(depth) <= self.max_depth:
            raise ValueError(
                f"DynamicNet: `depth` must be in 0..{self.max_depth} (max_depth={self.max_depth}); "
                f"got {int(depth)}. Pass a depth in range or build DynamicNet(max_depth={int(depth)})."
            )
        return int(depth)
