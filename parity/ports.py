"""The ported models (:mod:`jaxnets.ports`) as rows of the parity matrix, and the pieces their tests share.

Each port is compared with its torch original (:mod:`parity.reference_models`)
on the same weights (torch's ``state_dict`` loaded as it is, no transposes) and
the same inputs (torch's layout; the ports are torch-mirror models):

=====================================  ==========================================================================
row                                    what is compared
=====================================  ==========================================================================
``<model>/vjp/eval/<dtype>``           ``sum(out * cotangent).backward()`` against ``jax.value_and_grad``: the
``<model>/vjp/train/<dtype>``          output, every parameter gradient (torch's names) and every floating-point
                                       input's gradient. Train mode: BatchNorm on batch statistics, dropout at
                                       ``p=0`` on both sides (torch and JAX cannot draw the same masks)
``<model>/trajectory/<opt>/float64``   20 optimizer steps from the same weights: every loss, and the whole
                                       ``state_dict`` after them (parameters and buffers: BatchNorm's running
                                       statistics and ``num_batches_tracked``)
=====================================  ==========================================================================

Models: ``mnist`` (pytorch/examples ``mnist/main.py``), ``dcgan_generator`` and
``dcgan_discriminator`` (``dcgan/main.py``; their trajectory row, ``dcgan``,
trains both with upstream's loop), ``word_language_model`` (a 2-layer LSTM with
tied weights, upstream's ``train()`` with a carried hidden state and gradient
clipping), ``transformer`` (an ``nn.TransformerEncoder`` classifier with a padding
mask) and ``resnet18`` (torchvision's). Sizes are small (ResNet-18 on 32x32 and
64x64 images, sequences of 6 tokens) so that the rows stay cheap on two cores.

Tolerances: :data:`parity.precision.PORT_F64_RTOL` and
:data:`parity.precision.PORT_F32_RTOL`. Trajectories run in float64 only: in
float32 their error measures how much these small, noisy problems amplify
rounding, not the ports (ResNet-18's at 32x32 amplifies a 1e-15 perturbation
to O(1) in float64 already, torch against torch: see :func:`trajectory_job`).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

import jaxnets
from jaxnets import nn, ports
from jaxnets.nn import functional as F
from jaxnets.training import dcgan

from . import precision
from . import reference_models as ref
from ._result import Result, params_errors, result
from ._specs import torch_dtype, x64

STEPS = 20
"""Optimizer steps of every trajectory row."""
MODES = ("eval", "train")
NTOKEN, NINP, SEQ, BATCH = 11, 8, 6, 3


# -- the models, small, on both sides -------------------------------------------------------------------------------


class TorchLM(torch.nn.Module):
    """Feeds ``RNNModel`` ``(tokens, (h0, c0))``; returns log-probs and the new hidden state as one vector."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, tokens, h0, c0):
        out, (h, c) = self.lm(tokens, (h0, c0))
        return torch.cat([out.reshape(-1), h.reshape(-1), c.reshape(-1)])


class JaxLM(nn.Module):
    """The JAX side of :class:`TorchLM`."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def __call__(self, tokens, h0, c0):
        out, (h, c) = self.lm(tokens, (h0, c0))
        return jnp.concatenate([out.reshape(-1), h.reshape(-1), c.reshape(-1)])


def rng(seed: int, stream: int) -> np.random.Generator:
    """The NumPy generator of one kind of data (``stream``) for ``seed``."""
    return np.random.default_rng([seed, stream])


def lm_inputs(seed: int = 0) -> list[np.ndarray]:
    r = rng(seed, 1)
    return [r.integers(0, NTOKEN, size=(SEQ, BATCH)), r.normal(size=(2, BATCH, NINP)), r.normal(size=(2, BATCH, NINP))]


def padding_mask() -> np.ndarray:
    """The second sequence is 4 tokens long, the third 5: padding masks exercised."""
    mask = np.zeros((BATCH, SEQ), bool)
    mask[1, 4:] = True
    mask[2, 5:] = True
    return mask


@dataclasses.dataclass(frozen=True)
class PortCase:
    """A port, its torch original and their inputs.

    Attributes:
      name: the rows' model name.
      build_torch: builds the torch original (float32, drawing from torch's global RNG).
      port: builds the jaxnets port (float32).
      inputs: ``(seed) -> [arrays]`` in torch's layout, for eval mode.
      train_inputs: the same for train mode, when it needs others.
    """

    name: str
    build_torch: Callable[[], torch.nn.Module]
    port: Callable[[], nn.Module]
    inputs: Callable[[int], list]
    train_inputs: Callable[[int], list] | None = None

    def inputs_for(self, mode: str, seed: int = 0) -> list:
        return (self.train_inputs or self.inputs)(seed) if mode == "train" else self.inputs(seed)

    def torch(self, seed: int = 0) -> torch.nn.Module:
        """The torch original in float64, weights drawn under ``torch.manual_seed(seed)``."""
        return torch_model(self.build_torch, seed)


_TORCH_RNG = threading.Lock()


def torch_model(build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """``build()`` under ``torch.manual_seed(seed)`` in float64, the global RNG held: JAX threads build too."""
    with _TORCH_RNG, torch.random.fork_rng():
        torch.manual_seed(seed)
        return build().double()


def _dcgan_generator():
    g = ref.Generator(nz=8, ngf=4, nc=3)
    g.apply(ref.weights_init)
    return g


def _dcgan_discriminator():
    d = ref.Discriminator(ndf=4, nc=3)
    d.apply(ref.weights_init)
    return d


CASES = {
    "mnist": PortCase(
        "mnist",
        ref.MnistNet,
        lambda: ports.MnistNet(rngs=nnx.Rngs(0)),
        lambda s: [rng(s, 0).normal(size=(2, 1, 28, 28))],
    ),
    "dcgan_generator": PortCase(
        "dcgan_generator",
        _dcgan_generator,
        lambda: ports.Generator(nz=8, ngf=4, nc=3, rngs=nnx.Rngs(0)),
        lambda s: [rng(s, 0).normal(size=(2, 8, 1, 1))],
    ),
    "dcgan_discriminator": PortCase(
        "dcgan_discriminator",
        _dcgan_discriminator,
        lambda: ports.Discriminator(ndf=4, nc=3, rngs=nnx.Rngs(0)),
        lambda s: [np.tanh(rng(s, 0).normal(size=(2, 3, 64, 64)))],
    ),
    "word_language_model": PortCase(
        "word_language_model",
        lambda: TorchLM(ref.RNNModel("LSTM", NTOKEN, NINP, NINP, 2, dropout=0.5, tie_weights=True)),
        lambda: JaxLM(ports.RNNModel("LSTM", NTOKEN, NINP, NINP, 2, dropout=0.5, tie_weights=True, rngs=nnx.Rngs(0))),
        lm_inputs,
    ),
    "transformer": PortCase(
        "transformer",
        lambda: ref.TransformerClassifier(NTOKEN, 8, 2, 16, 2, 4, dropout=0.1, max_len=16),
        lambda: ports.TransformerClassifier(NTOKEN, 8, 2, 16, 2, 4, dropout=0.1, max_len=16, rngs=nnx.Rngs(0)),
        lambda s: [rng(s, 2).integers(0, NTOKEN, size=(SEQ, BATCH)), padding_mask()],
    ),
    "resnet18": PortCase(
        "resnet18",
        lambda: ref.resnet18(num_classes=10),
        lambda: ports.resnet18(num_classes=10, rngs=nnx.Rngs(0)),
        lambda s: [rng(s, 0).normal(size=(1, 3, 32, 32))],
        # At 32x32, layer4 is 1x1: its train-mode BatchNorms see 2 values per channel, which they normalise to
        # +-1 whatever they are, so the gradient through them is 0 up to rounding and a relative error measures
        # noise (2e-11 measured). At 64x64 they see 8.
        lambda s: [rng(s, 0).normal(size=(2, 3, 64, 64))],
    ),
}
"""Every port by row name."""


def no_dropout(torch_model: torch.nn.Module | None, port: nn.Module | None) -> None:
    """p=0 everywhere on both sides: torch and JAX cannot draw the same masks (train-mode comparisons)."""
    for m in torch_model.modules() if torch_model is not None else ():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        elif isinstance(m, torch.nn.RNNBase | torch.nn.MultiheadAttention):
            m.dropout = 0.0
    for _, m in port.named_modules() if port is not None else ():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(m, nn.LSTM | nn.MultiheadAttention):
            m.dropout = 0.0


def torch_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """``model.state_dict()`` as NumPy copies."""
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def port_holding(case: PortCase, state: dict[str, np.ndarray], dtype: str) -> nn.Module:
    """The port in ``dtype`` holding torch's ``state`` (call under :func:`parity._specs.x64` for float64).

    Built abstractly (``nnx.eval_shape``) and filled with NumPy zeros before the load: running the port's
    random initialisers and ``.double()`` eagerly compiles a small XLA program per parameter shape (16.5 s for
    ResNet-18, against 0.2 s), only for the weights to be overwritten.
    """
    # nnx.eval_shape merges, so the attributes come back sorted by name: rows compare by torch's names, not order
    port = nnx.eval_shape(case.port)
    floating = np.float64 if dtype == "float64" else np.float32

    def zeros(s):
        if jnp.issubdtype(s.dtype, jax.dtypes.prng_key):  # dropout's nnx.Rngs: a key, not a number
            return jax.random.key(0) if s.shape == () else jax.random.split(jax.random.key(0), s.shape)
        # jax.device_put, not jnp.asarray: in this JAX the latter stages NumPy input through a program per shape.
        return jax.device_put(np.zeros(s.shape, floating if jnp.issubdtype(s.dtype, jnp.floating) else s.dtype))

    nnx.update(port, jax.tree.map(zeros, nnx.state(port)))
    port.load_state_dict({k: v.astype(floating) if v.dtype.kind == "f" else v for k, v in state.items()})
    return port


# -- vjp rows -------------------------------------------------------------------------------------------------------


def _cotangent(shape, seed: int) -> np.ndarray:
    return rng(seed, 9).normal(size=tuple(shape))


def _floats(inputs) -> list[int]:
    return [i for i, x in enumerate(inputs) if np.issubdtype(x.dtype, np.floating)]


def torch_vjp(case: PortCase, dtype: str, mode: str, seed: int = 0):
    """Torch's output, parameter gradients (by name) and floating-point input gradients of ``sum(out * cot)``."""
    tdt = torch_dtype(dtype)
    model = case.torch(seed).to(tdt).train(mode == "train")
    if mode == "train":
        no_dropout(model, None)
    inputs = case.inputs_for(mode, seed)
    t_in = [
        torch.tensor(x, dtype=tdt, requires_grad=True) if i in _floats(inputs) else torch.from_numpy(x)
        for i, x in enumerate(inputs)
    ]
    out = model(*t_in)
    (out * torch.as_tensor(_cotangent(out.shape, seed), dtype=tdt)).sum().backward()
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    input_grads = {f"input {i} grad": t_in[i].grad.numpy().copy() for i in _floats(inputs)}
    return out.detach().numpy().copy(), grads, input_grads


def jax_vjp(case: PortCase, dtype: str, mode: str, seed: int = 0, state: dict | None = None):
    """The port's side of :func:`torch_vjp` (``state``: torch's float64 ``state_dict``, built here when None)."""
    state = torch_state(case.torch(seed)) if state is None else state
    inputs = case.inputs_for(mode, seed)
    floats = _floats(inputs)
    with x64(dtype):
        port = port_holding(case, state, dtype).train(mode == "train")
        if mode == "train":
            no_dropout(None, port)
        graphdef, params, rest = nnx.split(port, nnx.Param, ...)
        jdt = jnp.float64 if dtype == "float64" else jnp.float32
        args = [jnp.asarray(x, jdt) if i in floats else jnp.asarray(x) for i, x in enumerate(inputs)]

        def forward(params, float_inputs):
            a = list(args)
            for i, x in zip(floats, float_inputs, strict=True):
                a[i] = x
            return nnx.merge(graphdef, params, rest, copy=True)(*a)  # copy: train-mode buffers move in the trace

        float_inputs = [args[i] for i in floats]
        cot = jnp.asarray(_cotangent(jax.eval_shape(forward, params, float_inputs).shape, seed), jdt)

        @jax.jit  # one program: eagerly, every operation of the forward and backward pass compiles on its own
        def run(params, float_inputs):
            out, vjp_fn = jax.vjp(forward, params, float_inputs)
            return out, vjp_fn(cot)

        out, (g_params, g_inputs) = run(params, float_inputs)
        by_path = {path: np.asarray(v) for path, v in nnx.to_flat_state(g_params)}
        path_of = {id(var): path for path, var in nnx.to_flat_state(nnx.state(port, nnx.Param))}
        # Every name of every Param, a tied one under each (its names are listed alphabetically after the abstract
        # build, so "first name" would differ from torch's): vjp_errors picks torch's names.
        grads = {n: by_path[path_of[id(var)]] for n, var in port._members(nnx.Param, shared=True)}
        input_grads = {f"input {i} grad": np.asarray(g) for i, g in zip(floats, g_inputs, strict=True)}
        return np.asarray(out), grads, input_grads


def _torch_order(ours: dict, theirs: dict) -> dict:
    """``ours`` in the order of ``theirs`` (extra names last): after ``nnx.merge`` or an ``nnx.jit`` step a port
    lists its attributes alphabetically (``bias`` before ``weight``), not in torch's order."""
    return {k: ours[k] for k in theirs if k in ours} | ours


def vjp_errors(jax_out, torch_out) -> tuple[dict, dict]:
    """``(per parameter, other)`` errors of :func:`jax_vjp` against :func:`torch_vjp`."""
    (j_out, j_grads, j_inputs), (t_out, t_grads, t_inputs) = jax_out, torch_out
    other = {"output": precision.errors(j_out, t_out)}
    if list(j_inputs) != list(t_inputs):
        raise ValueError(f"input gradients differ: jax {list(j_inputs)}, torch {list(t_inputs)}.")
    other |= {k: precision.errors(j_inputs[k], t_inputs[k]) for k in t_inputs}
    missing = [k for k in t_grads if k not in j_grads]
    if missing:
        raise ValueError(f"the port has no parameters named {missing}; it has {list(j_grads)}.")
    return params_errors({k: j_grads[k] for k in t_grads}, t_grads), other


def _port_tolerance(dtype: str, check: str) -> float:
    """The bound of a port row, for :class:`parity.checks.Job` (every check of a ported model has the same)."""
    return precision.port_tolerance(dtype)


def vjp_job(name: str, dtype: str, *, seed: int = 0, select=None):
    """The ``<name>/vjp/eval/<dtype>`` and ``<name>/vjp/train/<dtype>`` rows (those ``select`` keeps), or None."""
    from .checks import Job, _selected

    ids = {mode: f"{name}/vjp/{mode}/{dtype}" for mode in MODES}
    modes = [m for m in MODES if _selected(select, ids[m])]
    if not modes:
        return None
    case = CASES[name]

    def jax_half():
        state = torch_state(case.torch(seed))
        return [jax_vjp(case, dtype, mode, seed, state) for mode in modes]

    def torch_half():
        return [torch_vjp(case, dtype, mode, seed) for mode in modes]

    def compare(jax_out, torch_out) -> list[Result]:
        rows = []
        for mode, j, t in zip(modes, jax_out, torch_out, strict=True):
            shapes = ", ".join(str(x.shape) for x in case.inputs_for(mode, seed))
            note = f"sum(out * cotangent).backward() vs jax.vjp, inputs {shapes}" + (
                ", dropout p=0" if mode == "train" else ""
            )
            rows.append(
                result(name, f"vjp/{mode}", dtype, *vjp_errors(j, t), note=note, tol=precision.port_tolerance(dtype))
            )
        return rows

    return Job([ids[m] for m in modes], jax_half, torch_half, compare, _port_tolerance)


# -- trajectory rows ------------------------------------------------------------------------------------------------


def torch_supervised(model, optimizer, scheduler, batches, loss_fn) -> tuple[np.ndarray, dict]:
    """A step per batch, torch's way; returns the losses and the ``state_dict`` after the last step."""
    losses = []
    for batch in batches:
        optimizer.zero_grad()
        loss = loss_fn(model, [torch.from_numpy(b) for b in batch])
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return np.array(losses), torch_state(model)


def jax_supervised(port, tx, batches, loss_fn) -> tuple[np.ndarray, dict, nn.Module]:
    """The same with ``nnx.Optimizer(port, tx, wrt=nnx.Param)`` and one ``nnx.jit`` step (buffers written back).

    Returns the losses, the ``state_dict`` after the last step, and the trained port.
    """
    optimizer = nnx.Optimizer(port, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, batch):
        loss, grads = nnx.value_and_grad(lambda m: loss_fn(m, batch))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(port, optimizer, [jnp.asarray(b) for b in batch])) for batch in batches]
    return np.array(losses), {k: np.asarray(v) for k, v in port.state_dict().items()}, port


def _cross_entropy_torch(m, b):
    return torch.nn.functional.cross_entropy(m(*b[:-1]), b[-1])


def _cross_entropy_jax(m, b):
    return F.cross_entropy(m(*b[:-1]), b[-1])


def _supervised(case: PortCase, seed, torch_opt, scheduler, tx, batches, torch_loss, jax_loss):
    def torch_half():
        model = case.torch(seed).train()
        no_dropout(model, None)
        opt = torch_opt(model.parameters())
        return torch_supervised(model, opt, scheduler(opt) if scheduler else None, batches, torch_loss)

    def jax_half():
        state = torch_state(case.torch(seed))
        with x64("float64"):
            port = port_holding(case, state, "float64").train()
            no_dropout(None, port)
            return jax_supervised(port, tx, batches, jax_loss)[:2]

    return jax_half, torch_half


def _mnist(seed):
    """Upstream's optimizer: Adadelta(lr=1.0) and StepLR(gamma=0.7), here stepped every 5 batches, nll_loss."""
    r = rng(seed, 3)
    batches = [(r.normal(size=(4, 1, 28, 28)), r.integers(0, 10, size=4)) for _ in range(STEPS)]
    halves = _supervised(
        CASES["mnist"],
        seed,
        lambda p: torch.optim.Adadelta(p, lr=1.0),
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.7),
        jaxnets.optim.adadelta(lr=lambda count: 1.0 * 0.7 ** (count // 5)),
        batches,
        lambda m, b: torch.nn.functional.nll_loss(m(b[0]), b[1]),
        lambda m, b: F.nll_loss(m(b[0]), b[1]),
    )
    return "nll_loss, batches (4, 1, 28, 28), dropout p=0", halves


def _transformer(seed):
    # SGD, not Adam: the key projection's bias has a gradient of exactly 0 (softmax ignores a shift shared by
    # all keys), so both sides hold rounding noise there, which Adam divides by its own root mean square into
    # full lr steps (1.4e-9 apart after 20 steps, measured); SGD keeps it at the noise's size.
    r, mask = rng(seed, 4), padding_mask()
    batches = [(r.integers(0, NTOKEN, size=(SEQ, BATCH)), mask, r.integers(0, 4, size=BATCH)) for _ in range(STEPS)]
    halves = _supervised(
        CASES["transformer"],
        seed,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        None,
        jaxnets.optim.sgd(0.05, momentum=0.9),
        batches,
        _cross_entropy_torch,
        _cross_entropy_jax,
    )
    return "cross_entropy, padding mask, dropout p=0", halves


def _resnet18(seed):
    # 64x64 images, not 32x32: at 32x32 layer4 is 1x1 and its BatchNorms normalise 4 values per channel (batch
    # 4), which makes 20 steps chaotic. Measured (float64, lr 0.01, batch 4, 32x32, seed 0 of the tests): torch
    # against *torch* from weights scaled by 1 + 1e-15 * N(0, 1) grows ~30-fold a step (losses 1.6e-14 apart
    # after one step, 1.2e-10 after four, 2e-2 after nine, 1.9 after 20); jaxnets against torch at the same rate
    # (4.8e-15, 2.3e-11, 7.5e-3; 1.8 after 20) with every parameter and buffer within 2e-13 after step 1 and
    # num_batches_tracked equal throughout: the problem amplifies rounding, no step differs. lr 0.001 is as
    # chaotic there. At 64x64 (16 values per channel) torch against perturbed torch ends 3e-12 apart, jaxnets
    # against torch 1.7e-12 (state_dict) and 2e-13 (losses).
    r = rng(seed, 5)
    batches = [(r.normal(size=(4, 3, 64, 64)), r.integers(0, 10, size=4)) for _ in range(STEPS)]
    halves = _supervised(
        CASES["resnet18"],
        seed,
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=5e-4),
        None,
        jaxnets.optim.sgd(0.01, momentum=0.9, weight_decay=5e-4),
        batches,
        _cross_entropy_torch,
        _cross_entropy_jax,
    )
    return "cross_entropy, BatchNorm in train mode, batches (4, 3, 64, 64)", halves


def _word_language_model(seed):
    """Upstream's train(): hidden state carried and detached, clip_grad_norm_(0.25), p -= lr * grad (lr=20)."""
    stream = rng(seed, 6).integers(0, NTOKEN, size=(STEPS * SEQ + 1, BATCH))
    lr, clip = 20.0, 0.25
    windows = [(stream[i : i + SEQ], stream[i + 1 : i + 1 + SEQ]) for i in range(0, STEPS * SEQ, SEQ)]
    build = lambda: ref.RNNModel("LSTM", NTOKEN, NINP, NINP, 2, dropout=0.0, tie_weights=True)  # noqa: E731

    def torch_half():
        lm = torch_model(build, seed).train()
        hidden, losses = lm.init_hidden(BATCH), []
        for data, targets in windows:
            hidden = tuple(h.detach() for h in hidden)
            lm.zero_grad()
            output, hidden = lm(torch.from_numpy(data), hidden)
            loss = torch.nn.functional.nll_loss(output, torch.from_numpy(targets).reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), clip)
            for p in lm.parameters():
                p.data.add_(p.grad, alpha=-lr)
            losses.append(loss.item())
        return np.array(losses), torch_state(lm)

    def jax_half():
        state = torch_state(torch_model(build, seed))
        with x64("float64"):
            lm = ports.RNNModel("LSTM", NTOKEN, NINP, NINP, 2, dropout=0.0, tie_weights=True, rngs=nnx.Rngs(0))
            lm = lm.double().train()
            lm.load_state_dict(state)
            tx = optax.chain(jaxnets.optim.clip_grad_norm(clip), jaxnets.optim.sgd(lr))
            optimizer = nnx.Optimizer(lm, tx, wrt=nnx.Param)

            @nnx.jit
            def step(model, optimizer, data, targets, hidden):
                def loss_fn(m):
                    output, hidden_out = m(data, hidden)
                    return F.nll_loss(output, targets.reshape(-1)), hidden_out

                (loss, hidden_out), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
                optimizer.update(model, grads)
                return loss, jax.lax.stop_gradient(hidden_out)  # repackage_hidden

            hidden, losses = lm.init_hidden(BATCH), []
            for data, targets in windows:
                loss, hidden = step(lm, optimizer, jnp.asarray(data), jnp.asarray(targets), hidden)
                losses.append(float(loss))
            if lm.decoder.weight is not lm.encoder.weight:
                raise AssertionError("the tied weights became two arrays during training")
            return np.array(losses), {k: np.asarray(v) for k, v in lm.state_dict().items()}

    return "upstream's train(): hidden carried, clip_grad_norm_, p -= lr * grad; tie kept", (jax_half, torch_half)


def _dcgan(seed):
    """Upstream's loop: D on real then on G(z).detach(), Adam(2e-4, betas=(0.5, 0.999)); then G through the updated D.

    Every forward of a BatchNorm in train mode moves its buffers, as upstream's
    three D calls and one G call per iteration do; they are in the compared state_dicts.
    """
    r = rng(seed, 7)
    reals = [np.tanh(r.normal(size=(2, 3, 64, 64))) for _ in range(STEPS)]
    noises = [r.normal(size=(2, 8, 1, 1)) for _ in range(STEPS)]
    g_case, d_case = CASES["dcgan_generator"], CASES["dcgan_discriminator"]

    def torch_half():
        netG, netD = g_case.torch(seed).train(), d_case.torch(seed).train()
        optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        criterion = torch.nn.BCELoss()
        losses = []
        for real, noise in zip(reals, noises, strict=True):
            netD.zero_grad()
            errD_real = criterion(netD(torch.from_numpy(real)), torch.ones(2, dtype=torch.float64))
            errD_real.backward()
            fake = netG(torch.from_numpy(noise))
            errD_fake = criterion(netD(fake.detach()), torch.zeros(2, dtype=torch.float64))
            errD_fake.backward()
            optimizerD.step()
            netG.zero_grad()
            errG = criterion(netD(fake), torch.ones(2, dtype=torch.float64))
            errG.backward()
            optimizerG.step()
            losses += [(errD_real + errD_fake).item(), errG.item()]
        state = {f"G.{k}": v for k, v in torch_state(netG).items()} | {
            f"D.{k}": v for k, v in torch_state(netD).items()
        }
        return np.array(losses), state

    def jax_half():
        g_state, d_state = torch_state(g_case.torch(seed)), torch_state(d_case.torch(seed))
        with x64("float64"):
            G = port_holding(g_case, g_state, "float64").train()
            D = port_holding(d_case, d_state, "float64").train()
            tx = jaxnets.optim.adam(2e-4, betas=(0.5, 0.999))
            g_graph, g_params, g_rest = nnx.split(G, nnx.Param, ...)
            d_graph, d_params, d_rest = nnx.split(D, nnx.Param, ...)
            state = (g_params, g_rest, d_params, d_rest, tx.init(g_params), tx.init(d_params))

            step = jax.jit(functools.partial(dcgan.gan_step, (g_graph, d_graph), tx))  # jaxnets train's step
            losses = []
            for real, noise in zip(reals, noises, strict=True):
                state, stats = step(state, jnp.asarray(real), jnp.asarray(noise))
                losses += [float(stats[0]), float(stats[1])]
            G, D = nnx.merge(g_graph, state[0], state[1]), nnx.merge(d_graph, state[2], state[3])
            out = {f"G.{k}": np.asarray(v) for k, v in G.state_dict().items()}
            return np.array(losses), out | {f"D.{k}": np.asarray(v) for k, v in D.state_dict().items()}

    return "upstream's loop, errD and errG per step, G.* and D.* state_dicts", (jax_half, torch_half)


TRAJECTORIES: dict[str, Callable[[int], tuple[str, str, Any]]] = {
    "mnist": _mnist,
    "dcgan": _dcgan,
    "word_language_model": _word_language_model,
    "transformer": _transformer,
    "resnet18": _resnet18,
}
"""Row model name -> ``(seed) -> (note, (jax_half, torch_half))``."""

TRAJECTORY_CHECKS = {
    "mnist": "trajectory/adadelta(lr=1.0), StepLR(5, gamma=0.7)",
    "dcgan": "trajectory/adam(lr=0.0002, betas=(0.5, 0.999))",
    "word_language_model": "trajectory/train(lr=20, clip=0.25)",
    "transformer": "trajectory/sgd(lr=0.05, momentum=0.9)",
    "resnet18": "trajectory/sgd(lr=0.01, momentum=0.9, weight_decay=0.0005)",
}
"""Row model name -> the trajectory's check name (its optimizer)."""


def trajectory_job(name: str, *, seed: int = 0, select=None):
    """The ``<name>/trajectory/<optimizer>/float64`` row, or None when ``select`` rejects it.

    Compared: every loss of the :data:`STEPS` steps (as one curve) and every entry of the ``state_dict`` after
    them, parameters and buffers.
    """
    from .checks import Job, _selected

    row_id = f"{name}/{TRAJECTORY_CHECKS[name]}/float64"
    if not _selected(select, row_id):
        return None
    check = TRAJECTORY_CHECKS[name]
    note, (jax_half, torch_half) = TRAJECTORIES[name](seed)

    def compare(jax_out, torch_out) -> list[Result]:
        (j_losses, j_state), (t_losses, t_state) = jax_out, torch_out
        per = params_errors(_torch_order(j_state, t_state), t_state)
        curves = {"torch": t_losses, "jax": j_losses}
        other = {"losses": precision.errors(j_losses, t_losses)}
        return [
            result(
                name,
                check,
                "float64",
                per,
                other,
                f"{STEPS} steps, {note}",
                curves,
                tol=precision.port_tolerance("float64"),
            )
        ]

    return Job([row_id], jax_half, torch_half, compare, _port_tolerance)


VJP_MODELS = tuple(CASES)
DTYPES = ("float64", "float32")


def jobs(*, seed: int = 0, select=None) -> list:
    """Every row of the ports: vjp in both modes and dtypes, then the float64 trajectories; ResNet-18's first."""
    order = ["resnet18", *(n for n in VJP_MODELS if n != "resnet18")]
    out = [vjp_job(n, d, seed=seed, select=select) for n in order for d in DTYPES]
    out += [
        trajectory_job(n, seed=seed, select=select) for n in ["resnet18", *(n for n in TRAJECTORIES if n != "resnet18")]
    ]
    return [j for j in out if j is not None]
