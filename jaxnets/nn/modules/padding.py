"""Padding: ``nn.ZeroPadNd``, ``nn.ConstantPadNd``, ``nn.ReflectionPadNd``, ``nn.ReplicationPadNd``,
``nn.CircularPadNd``.

``padding`` is an int (every side) or ``2 n`` ints ``(left, right, top,
bottom, front, back)``, the last dim first, as torch; negative values crop.
"""

from __future__ import annotations

import jax
from flax import nnx

from .. import functional as F
from ..module import Module


class _PadNd(Module):
    n: int = 1
    mode: str = "constant"

    def __init__(self, padding, *, rngs: nnx.Rngs | None = None):
        name = type(self).__name__
        if isinstance(padding, int):
            padding = (padding,) * (2 * self.n)
        padding = tuple(padding)
        if len(padding) != 2 * self.n or any(not isinstance(p, int) for p in padding):
            raise ValueError(f"{name}: padding must be an int or {2 * self.n} ints; got {padding!r}.")
        self.padding = padding

    def _check(self, x: jax.Array) -> None:
        if x.ndim not in (self.n + 1, self.n + 2):
            raise ValueError(
                f"{type(self).__name__}: expected a {self.n + 1}D (unbatched) or {self.n + 2}D (batched) input; "
                f"got shape {tuple(x.shape)}."
            )

    def __call__(self, input: jax.Array) -> jax.Array:
        self._check(input)
        return F.pad(input, self.padding, self.mode)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def __init__(self, padding, value: float, *, rngs: nnx.Rngs | None = None):
        super().__init__(padding)
        self.value = value

    def __call__(self, input: jax.Array) -> jax.Array:
        self._check(input)
        return F.pad(input, self.padding, "constant", self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    """``nn.ConstantPad1d(padding, value)``: input ``(N, C, L)`` or ``(C, L)``."""

    n = 1


class ConstantPad2d(_ConstantPadNd):
    """``nn.ConstantPad2d(padding, value)``: input ``(N, C, H, W)`` or ``(C, H, W)``."""

    n = 2


class ConstantPad3d(_ConstantPadNd):
    """``nn.ConstantPad3d(padding, value)``: input ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""

    n = 3


class _ZeroPadNd(_ConstantPadNd):
    def __init__(self, padding, *, rngs: nnx.Rngs | None = None):
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ZeroPad1d(_ZeroPadNd):
    """``nn.ZeroPad1d(padding)``."""

    n = 1


class ZeroPad2d(_ZeroPadNd):
    """``nn.ZeroPad2d(padding)``."""

    n = 2


class ZeroPad3d(_ZeroPadNd):
    """``nn.ZeroPad3d(padding)``."""

    n = 3


class ReflectionPad1d(_PadNd):
    """``nn.ReflectionPad1d(padding)``: mirrored without repeating the edge; each pad below the size."""

    n, mode = 1, "reflect"


class ReflectionPad2d(_PadNd):
    """``nn.ReflectionPad2d(padding)``."""

    n, mode = 2, "reflect"


class ReflectionPad3d(_PadNd):
    """``nn.ReflectionPad3d(padding)``."""

    n, mode = 3, "reflect"


class ReplicationPad1d(_PadNd):
    """``nn.ReplicationPad1d(padding)``: the edge value repeated."""

    n, mode = 1, "replicate"


class ReplicationPad2d(_PadNd):
    """``nn.ReplicationPad2d(padding)``."""

    n, mode = 2, "replicate"


class ReplicationPad3d(_PadNd):
    """``nn.ReplicationPad3d(padding)``."""

    n, mode = 3, "replicate"


class CircularPad1d(_PadNd):
    """``nn.CircularPad1d(padding)``: wrapped around; each pad at most the size."""

    n, mode = 1, "circular"


class CircularPad2d(_PadNd):
    """``nn.CircularPad2d(padding)``."""

    n, mode = 2, "circular"


class CircularPad3d(_PadNd):
    """``nn.CircularPad3d(padding)``."""

    n, mode = 3, "circular"
