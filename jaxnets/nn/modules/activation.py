"""torch's activation modules. ``inplace=True`` is accepted and changes nothing: JAX arrays are immutable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from .. import init as nn_init
from ..module import Module


class ReLU(Module):
    """``nn.ReLU``."""

    def __init__(self, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        self.inplace = inplace

    def __call__(self, input):
        x = input
        return F.relu(x)


class ReLU6(Module):
    """``nn.ReLU6``."""

    def __init__(self, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        self.inplace = inplace

    def __call__(self, input):
        x = input
        return F.relu6(x)


class LeakyReLU(Module):
    """``nn.LeakyReLU(negative_slope=0.01)``."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        self.negative_slope, self.inplace = negative_slope, inplace

    def __call__(self, input):
        x = input
        return F.leaky_relu(x, self.negative_slope)


class ELU(Module):
    """``nn.ELU(alpha=1.0)``."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        self.alpha, self.inplace = alpha, inplace

    def __call__(self, input):
        x = input
        return F.elu(x, self.alpha)


class CELU(Module):
    """``nn.CELU(alpha=1.0)``."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        if alpha == 0:
            raise ValueError("CELU got alpha=0; expected a nonzero alpha (it divides the input).")
        self.alpha, self.inplace = alpha, inplace

    def __call__(self, input):
        x = input
        return F.celu(x, self.alpha)


class SELU(Module):
    """``nn.SELU``."""

    def __init__(self, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        self.inplace = inplace

    def __call__(self, input):
        x = input
        return F.selu(x)


class GELU(Module):
    """``nn.GELU(approximate="none")``: the exact erf form by default, as torch (``jax.nn.gelu`` defaults to tanh)."""

    def __init__(self, approximate: str = "none", *, rngs: nnx.Rngs | None = None):
        F.gelu(jnp.zeros(()), approximate)  # validates
        self.approximate = approximate

    def __call__(self, input):
        x = input
        return F.gelu(x, self.approximate)


class SiLU(Module):
    """``nn.SiLU``."""

    def __init__(self, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        self.inplace = inplace

    def __call__(self, input):
        x = input
        return F.silu(x)


class Mish(Module):
    """``nn.Mish``."""

    def __init__(self, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        self.inplace = inplace

    def __call__(self, input):
        x = input
        return F.mish(x)


class Hardtanh(Module):
    """``nn.Hardtanh(min_val=-1.0, max_val=1.0)``."""

    def __init__(
        self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False, *, rngs: nnx.Rngs | None = None
    ):
        if max_val <= min_val:
            raise ValueError(f"Hardtanh got min_val={min_val}, max_val={max_val}; expected max_val > min_val.")
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def __call__(self, input):
        x = input
        return F.hardtanh(x, self.min_val, self.max_val)


class Hardswish(Module):
    """``nn.Hardswish``."""

    def __init__(self, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        self.inplace = inplace

    def __call__(self, input):
        x = input
        return F.hardswish(x)


class Hardsigmoid(Module):
    """``nn.Hardsigmoid``."""

    def __init__(self, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        self.inplace = inplace

    def __call__(self, input):
        x = input
        return F.hardsigmoid(x)


class Threshold(Module):
    """``nn.Threshold(threshold, value)``: ``x`` where ``x > threshold``, else ``value``."""

    def __init__(self, threshold: float, value: float, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        self.threshold, self.value, self.inplace = threshold, value, inplace

    def __call__(self, input):
        x = input
        return F.threshold(x, self.threshold, self.value)


class Sigmoid(Module):
    """``nn.Sigmoid``."""

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        pass

    def __call__(self, input):
        x = input
        return F.sigmoid(x)


class Tanh(Module):
    """``nn.Tanh``."""

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        pass

    def __call__(self, input):
        x = input
        return F.tanh(x)


class LogSigmoid(Module):
    """``nn.LogSigmoid``."""

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        pass

    def __call__(self, input):
        x = input
        return F.logsigmoid(x)


class Softsign(Module):
    """``nn.Softsign``."""

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        pass

    def __call__(self, input):
        x = input
        return F.softsign(x)


class Tanhshrink(Module):
    """``nn.Tanhshrink``."""

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        pass

    def __call__(self, input):
        x = input
        return F.tanhshrink(x)


class Hardshrink(Module):
    """``nn.Hardshrink(lambd=0.5)``."""

    def __init__(self, lambd: float = 0.5, *, rngs: nnx.Rngs | None = None):
        self.lambd = lambd

    def __call__(self, input):
        x = input
        return F.hardshrink(x, self.lambd)


class Softshrink(Module):
    """``nn.Softshrink(lambd=0.5)``."""

    def __init__(self, lambd: float = 0.5, *, rngs: nnx.Rngs | None = None):
        if lambd < 0:
            raise ValueError(f"Softshrink got lambd={lambd}; lambda must be greater or equal to 0.")
        self.lambd = lambd

    def __call__(self, input):
        x = input
        return F.softshrink(x, self.lambd)


class Softplus(Module):
    """``nn.Softplus(beta=1.0, threshold=20.0)``."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, *, rngs: nnx.Rngs | None = None):
        self.beta, self.threshold = beta, threshold

    def __call__(self, input):
        x = input
        return F.softplus(x, self.beta, self.threshold)


class Softmax(Module):
    """``nn.Softmax(dim=None)``."""

    def __init__(self, dim: int | None = None, *, rngs: nnx.Rngs | None = None):
        self.dim = dim

    def __call__(self, input):
        x = input
        return F.softmax(x, self.dim)


class LogSoftmax(Module):
    """``nn.LogSoftmax(dim=None)``."""

    def __init__(self, dim: int | None = None, *, rngs: nnx.Rngs | None = None):
        self.dim = dim

    def __call__(self, input):
        x = input
        return F.log_softmax(x, self.dim)


class Softmin(Module):
    """``nn.Softmin(dim=None)``."""

    def __init__(self, dim: int | None = None, *, rngs: nnx.Rngs | None = None):
        self.dim = dim

    def __call__(self, input):
        x = input
        return F.softmin(x, self.dim)


class Softmax2d(Module):
    """``nn.Softmax2d``: softmax over the channels of a ``(N, C, H, W)`` or ``(C, H, W)`` input."""

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        pass

    def __call__(self, input):
        x = input
        if x.ndim not in (3, 4):
            raise ValueError(f"Softmax2d: expected input of 3 or 4 dimensions; got shape {tuple(x.shape)}.")
        return F.softmax(x, -3)


class GLU(Module):
    """``nn.GLU(dim=-1)``."""

    def __init__(self, dim: int = -1, *, rngs: nnx.Rngs | None = None):
        self.dim = dim

    def __call__(self, input):
        x = input
        return F.glu(x, self.dim)


class PReLU(Module):
    """``nn.PReLU(num_parameters=1, init=0.25)``: one learned slope, or one per channel (dim 1)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *, dtype=None, rngs: nnx.Rngs | None = None):
        self.num_parameters = num_parameters
        self.weight = nnx.Param(nn_init.constant((num_parameters,), init, dtype or jnp.float32))

    def __call__(self, input: jax.Array) -> jax.Array:
        x = input
        return F.prelu(x, self.weight[...])
