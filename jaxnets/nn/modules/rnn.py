"""``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` and their cells: torch's gate order, both bias vectors, projections.

torch keeps, per layer ``k`` and direction, ``weight_ih_l{k}`` ``(gates * hidden,
input)``, ``weight_hh_l{k}`` ``(gates * hidden, hidden)``, ``bias_ih_l{k}`` and
``bias_hh_l{k}`` (``_reverse`` for the backward direction; ``weight_hr_l{k}``
for an LSTM projection), with the gates stacked in the order i, f, g, o (LSTM)
and r, z, n (GRU). GRU's new gate uses ``r * (W_hn h + b_hn)``: the hidden bias
sits inside the reset product, which is why ``nnx.GRUCell``, with one bias,
cannot hold torch's weights. Sequences run through ``jax.lax.scan``, so a long
sequence compiles once per layer and direction.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from .. import init
from ..module import Module

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _cell(mode: str, x, state, w_ih, w_hh, b_ih, b_hh, w_hr):
    """One time step for a batch: ``x`` ``(N, in)``; ``state`` ``h`` or ``(h, c)``. Returns the new state."""
    gi = x @ w_ih.T
    if b_ih is not None:
        gi = gi + b_ih
    h = state[0] if mode == "LSTM" else state
    gh = h @ w_hh.T
    if b_hh is not None:
        gh = gh + b_hh
    if mode == "RNN_TANH":
        return jnp.tanh(gi + gh)
    if mode == "RNN_RELU":
        return F.relu(gi + gh)
    if mode == "GRU":
        ir, iz, in_ = jnp.split(gi, 3, axis=-1)
        hr, hz, hn = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(ir + hr)
        z = jax.nn.sigmoid(iz + hz)
        n = jnp.tanh(in_ + r * hn)
        return (1 - z) * n + z * h
    i, f, g, o = jnp.split(gi + gh, 4, axis=-1)
    c = jax.nn.sigmoid(f) * state[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    if w_hr is not None:
        h = h @ w_hr.T
    return h, c


@functools.partial(jax.jit, static_argnames=("mode", "reverse"))
def _scan(mode: str, reverse: bool, seq, state, weights):
    """One layer in one direction over a ``(L, N, H_in)`` sequence: ``(final state, outputs (L, N, H_out))``.

    Compiled once per mode, direction and shapes (the weights are arguments), so
    calling a layer again, or another layer of the same sizes, reuses the program.
    """

    def step(state, xt):
        new = _cell(mode, xt, state, *weights)
        return new, new[0] if mode == "LSTM" else new

    return jax.lax.scan(step, state, seq, reverse=reverse)


def _check_sizes(name: str, input_size, hidden_size, num_layers=1, proj_size=0, dropout=0.0):
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name}: {arg} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name}: {arg} must be greater than zero; got {value}.")
    if num_layers <= 0:
        raise ValueError(f"{name}: num_layers must be greater than zero; got {num_layers}.")
    if proj_size < 0:
        raise ValueError(f"{name}: proj_size should be a positive integer or zero to disable projections.")
    if proj_size >= hidden_size:
        raise ValueError(f"{name}: proj_size has to be smaller than hidden_size; got {proj_size} >= {hidden_size}.")
    if not (isinstance(dropout, int | float) and 0 <= dropout <= 1) or isinstance(dropout, bool):
        raise ValueError(
            f"{name}: dropout should be a number in range [0, 1] representing the probability of an element being "
            f"zeroed; got {dropout!r}."
        )


class _RNNBase(Module):
    mode: str = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        name = type(self).__name__
        _check_sizes(name, input_size, hidden_size, num_layers, proj_size, dropout)
        if proj_size and self.mode != "LSTM":
            raise ValueError(f"{name}: proj_size argument is only supported for LSTM, not RNN or GRU.")
        dtype = dtype or jnp.float32
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self.rngs = rngs
        gate_size = _GATES[self.mode] * hidden_size
        real_hidden = proj_size or hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = [
                    (f"weight_ih{suffix}", (gate_size, layer_input)),
                    (f"weight_hh{suffix}", (gate_size, real_hidden)),
                ]
                if bias:
                    shapes += [(f"bias_ih{suffix}", (gate_size,)), (f"bias_hh{suffix}", (gate_size,))]
                if proj_size:
                    shapes.append((f"weight_hr{suffix}", (proj_size, hidden_size)))
                for attr, shape in shapes:  # torch's registration order
                    setattr(self, attr, nnx.Param(init.uniform(rngs.params(), shape, bound, dtype)))

    def _weights(self, layer: int, direction: int):
        suffix = f"_l{layer}" + ("_reverse" if direction else "")

        def get(name):
            param = getattr(self, name + suffix, None)
            return None if param is None else param[...]

        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr")

    def __call__(self, input: jax.Array, hx=None):
        name, lstm = type(self).__name__, self.mode == "LSTM"
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D instead")
        batched = input.ndim == 3
        x = input if batched else input[:, None] if not self.batch_first else input[None]
        if self.batch_first:
            x = jnp.swapaxes(x, 0, 1)  # (L, N, H_in)
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.shape[-1]}"
            )
        directions = 2 if self.bidirectional else 1
        real_hidden = self.proj_size or self.hidden_size
        n = x.shape[1]
        h_shape = (self.num_layers * directions, n, real_hidden)
        c_shape = (self.num_layers * directions, n, self.hidden_size)
        if hx is None:
            h0 = jnp.zeros(h_shape, x.dtype)
            c0 = jnp.zeros(c_shape, x.dtype) if lstm else None
        else:
            h0, c0 = hx if lstm else (hx, None)
            if not batched:
                h0 = h0[:, None]
                c0 = None if c0 is None else c0[:, None]
            if h0.shape != h_shape or (lstm and c0.shape != c_shape):
                got = (h0.shape, c0.shape) if lstm else h0.shape
                want = (h_shape, c_shape) if lstm else h_shape
                raise ValueError(f"{name}: Expected hidden size {want}, got {got}")
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                state = (h0[index], c0[index]) if lstm else h0[index]
                state, out = _scan(self.mode, bool(direction), x, state, self._weights(layer, direction))
                outputs.append(out)
                h_n.append(state[0] if lstm else state)
                if lstm:
                    c_n.append(state[1])
            x = outputs[0] if directions == 1 else jnp.concatenate(outputs, axis=-1)
            if self.training and self.dropout and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True, key=self.rngs.dropout())
        out = jnp.swapaxes(x, 0, 1) if self.batch_first else x
        h_n = jnp.stack(h_n)
        c_n = jnp.stack(c_n) if lstm else None
        if not batched:
            out = out[0] if self.batch_first else out[:, 0]
            h_n = h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        return (out, (h_n, c_n)) if lstm else (out, h_n)


class RNN(_RNNBase):
    """``nn.RNN(input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False, ...)``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        *,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, dtype=dtype, rngs=rngs
        )


class LSTM(_RNNBase):
    """``nn.LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0, ...)``.

    Also ``bidirectional=False`` and ``proj_size=0``. Returns ``(output, (h_n, c_n))`` as torch does.
    """

    mode = "LSTM"


class GRU(_RNNBase):
    """``nn.GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0, ...)``."""

    mode = "GRU"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        *,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, dtype=dtype, rngs=rngs
        )


class _CellBase(Module):
    mode: str = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, dtype=None, rngs: nnx.Rngs):
        _check_sizes(type(self).__name__, input_size, hidden_size)
        dtype = dtype or jnp.float32
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        gate_size = _GATES[self.mode] * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight_ih = nnx.Param(init.uniform(rngs.params(), (gate_size, input_size), bound, dtype))
        self.weight_hh = nnx.Param(init.uniform(rngs.params(), (gate_size, hidden_size), bound, dtype))
        self.bias_ih = nnx.Param(init.uniform(rngs.params(), (gate_size,), bound, dtype)) if bias else None
        self.bias_hh = nnx.Param(init.uniform(rngs.params(), (gate_size,), bound, dtype)) if bias else None

    def __call__(self, input: jax.Array, hx=None):
        name, lstm = type(self).__name__, self.mode == "LSTM"
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        batched = input.ndim == 2
        x = input if batched else input[None]
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input has inconsistent input_size: got {x.shape[-1]} expected {self.input_size}")
        zeros = jnp.zeros((x.shape[0], self.hidden_size), x.dtype)
        if hx is None:
            state = (zeros, zeros) if lstm else zeros
        elif lstm:
            state = tuple(h if batched else h[None] for h in hx)
        else:
            state = hx if batched else hx[None]
        weights = [None if p is None else p[...] for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)]
        new = _cell(self.mode, x, state, *weights, None)
        if batched:
            return new
        return (new[0][0], new[1][0]) if lstm else new[0]


class RNNCell(_CellBase):
    """``nn.RNNCell(input_size, hidden_size, bias=True, nonlinearity="tanh")``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, bias, dtype=dtype, rngs=rngs)


class LSTMCell(_CellBase):
    """``nn.LSTMCell(input_size, hidden_size, bias=True)``: returns ``(h', c')``."""

    mode = "LSTM"


class GRUCell(_CellBase):
    """``nn.GRUCell(input_size, hidden_size, bias=True)``, with torch's ``b_hn`` inside the reset product."""

    mode = "GRU"
