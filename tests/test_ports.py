"""jaxnets.ports against their torch originals (parity.reference_models): weights, layers, gradients, training.

Per model: torch's state_dict loads strictly with no transposes; ``parity.compare``
passes layer by layer in float64, eval and train mode (dropout set to p=0 in
train mode, BatchNorm on batch statistics with its buffers compared); outputs,
parameter gradients and input gradients agree to 1e-10 in float64 and within
PORT_F32_RTOL in float32; 20 optimizer steps follow torch's trajectory in
float64; and a deliberately changed layer is named by ``parity.compare``.
Inputs are small (ResNet-18 on 2x3x32x32, sequences of 6 tokens) so that
``make test`` stays short; the float32 cases, the torchvision comparison and
ResNet-18's eval layer-by-layer run in ``make test-all`` only (marked slow).
ResNet-18's trajectory runs on 64x64 images: at 32x32 with batch 4 the 20 steps
are chaotic, torch against torch (see its test).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxnets
from jaxnets import nn, ports
from jaxnets.nn import functional as F
from parity import reference_models as ref
from parity.compare import compare

torch.set_num_threads(1)  # torch and XLA share two cores in this process

# float64: the two frameworks differ only in the order of their reductions (~1e-16 per operation); 1e-10
# leaves room for the deepest model here (ResNet-18: 20 conv + BatchNorm layers and their backward passes).
PORT_F64_RTOL = 1e-10
# float32: XLA and torch's CPU kernels sum convolutions and matmuls in different orders and blockings, ~1e-7
# relative per reduction. Measured worst over the six cases, eval and train, outputs, parameter and input
# gradients (2026-12-05, these inputs): 2.25e-5, ResNet-18's layer4.1.conv1.weight gradient in train mode, where
# the backward pass chains about forty reductions through BatchNorm's divisions by batch standard deviations;
# the other models 4e-7 to 1.8e-6. The bound is ten times the worst, rounded up.
PORT_F32_RTOL = 3e-4


def _rel(a, b) -> float:
    """Norm-wise relative error ``max|a - b| / max|b|`` (as parity.precision.errors)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if b.size else 0.0
    return diff / scale if scale > 0 else diff


# ----------------------------------------------------------------------------- the models, small, on both sides


class _TorchLM(torch.nn.Module):
    """Feeds RNNModel ``(tokens, (h0, c0))`` and returns log-probs and the new hidden state as one vector."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, tokens, h0, c0):
        out, (h, c) = self.lm(tokens, (h0, c0))
        return torch.cat([out.reshape(-1), h.reshape(-1), c.reshape(-1)])


class _JaxLM(nn.Module):
    """The JAX side of :class:`_TorchLM`."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def __call__(self, tokens, h0, c0):
        out, (h, c) = self.lm(tokens, (h0, c0))
        return jnp.concatenate([out.reshape(-1), h.reshape(-1), c.reshape(-1)])


NTOKEN, NINP, SEQ, BATCH = 11, 8, 6, 3


@dataclasses.dataclass
class Case:
    name: str
    torch: Callable[[], torch.nn.Module]  # float64, seeded
    port: Callable[[], nn.Module]
    inputs: Callable[[], list]  # NumPy arrays, torch's layout
    train_inputs: Callable[[], list] | None = None  # when train mode needs others

    def inputs_for(self, mode: str) -> list:
        return (self.train_inputs or self.inputs)() if mode == "train" else self.inputs()


def _mnist_torch():
    torch.manual_seed(0)
    return ref.MnistNet().double()


def _dcgan_g_torch():
    torch.manual_seed(0)
    g = ref.Generator(nz=8, ngf=4, nc=3)
    g.apply(ref.weights_init)
    return g.double()


def _dcgan_d_torch():
    torch.manual_seed(0)
    d = ref.Discriminator(ndf=4, nc=3)
    d.apply(ref.weights_init)
    return d.double()


def _lm_torch():
    torch.manual_seed(0)
    return _TorchLM(ref.RNNModel("LSTM", NTOKEN, NINP, NINP, 2, dropout=0.5, tie_weights=True)).double()


def _lm_port():
    return _JaxLM(ports.RNNModel("LSTM", NTOKEN, NINP, NINP, 2, dropout=0.5, tie_weights=True, rngs=nnx.Rngs(0)))


def _transformer_torch():
    torch.manual_seed(0)
    return ref.TransformerClassifier(NTOKEN, 8, 2, 16, 2, 4, dropout=0.1, max_len=16).double()


def _transformer_port():
    return ports.TransformerClassifier(NTOKEN, 8, 2, 16, 2, 4, dropout=0.1, max_len=16, rngs=nnx.Rngs(0))


def _resnet_torch():
    torch.manual_seed(0)
    return ref.resnet18(num_classes=10).double()


def _rng(seed=0):
    return np.random.default_rng(seed)


def _lm_inputs():
    r = _rng(1)
    return [r.integers(0, NTOKEN, size=(SEQ, BATCH)), r.normal(size=(2, BATCH, NINP)), r.normal(size=(2, BATCH, NINP))]


def _transformer_inputs():
    mask = np.zeros((BATCH, SEQ), bool)
    mask[1, 4:] = True  # the second sequence is 4 tokens long, the third 5: padding masks exercised
    mask[2, 5:] = True
    return [_rng(2).integers(0, NTOKEN, size=(SEQ, BATCH)), mask]


CASES = {
    "mnist": Case(
        "mnist", _mnist_torch, lambda: ports.MnistNet(rngs=nnx.Rngs(0)), lambda: [_rng().normal(size=(2, 1, 28, 28))]
    ),
    "dcgan_generator": Case(
        "dcgan_generator",
        _dcgan_g_torch,
        lambda: ports.Generator(nz=8, ngf=4, nc=3, rngs=nnx.Rngs(0)),
        lambda: [_rng().normal(size=(2, 8, 1, 1))],
    ),
    "dcgan_discriminator": Case(
        "dcgan_discriminator",
        _dcgan_d_torch,
        lambda: ports.Discriminator(ndf=4, nc=3, rngs=nnx.Rngs(0)),
        lambda: [np.tanh(_rng().normal(size=(2, 3, 64, 64)))],
    ),
    "word_language_model": Case("word_language_model", _lm_torch, _lm_port, _lm_inputs),
    "transformer": Case("transformer", _transformer_torch, _transformer_port, _transformer_inputs),
    "resnet18": Case(
        "resnet18",
        _resnet_torch,
        lambda: ports.resnet18(num_classes=10, rngs=nnx.Rngs(0)),
        lambda: [_rng().normal(size=(1, 3, 32, 32))],
        # At 32x32, layer4 is 1x1: its train-mode BatchNorms see 2 values per channel, which they normalise to
        # +-1 whatever they are, so the gradient through them is 0 up to rounding and a relative error measures
        # noise (2e-11 measured). At 64x64 they see 8.
        lambda: [_rng().normal(size=(2, 3, 64, 64))],
    ),
}


def _no_dropout(torch_model: torch.nn.Module, port: nn.Module) -> None:
    """p=0 everywhere on both sides: torch and JAX cannot draw the same masks (train-mode comparisons)."""
    for m in torch_model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        elif isinstance(m, torch.nn.RNNBase | torch.nn.MultiheadAttention):
            m.dropout = 0.0
    for _, m in port.named_modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(m, nn.LSTM | nn.MultiheadAttention):
            m.dropout = 0.0


def _torch_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- weights load as they are


@pytest.mark.parametrize("name", list(CASES))
def test_port_loads_torch_state_dict_strictly_with_torch_keys_and_shapes(name):
    case = CASES[name]
    torch_model, port = case.torch(), case.port()
    theirs = _torch_state(torch_model)
    assert [(k, v.shape) for k, v in port.state_dict().items()] == [(k, v.shape) for k, v in theirs.items()]
    assert [n for n, _ in port.named_parameters()] == [n for n, _ in torch_model.named_parameters()]
    result = port.load_state_dict(theirs)  # strict: raises on any missing, unexpected or mis-shaped key
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in port.state_dict().items():
        np.testing.assert_array_equal(
            np.asarray(v), theirs[k].astype(np.float32) if v.dtype == jnp.float32 else theirs[k]
        )


@pytest.mark.slow
def test_torchvision_resnet18_is_the_reference_resnet18():
    """parity.reference_models.resnet18 is torchvision's own: same keys and shapes, same outputs on one state_dict."""
    tv = ref.torchvision_resnet()
    if tv is None:
        pytest.skip(f"torchvision's sources not found; fetch them with: {ref.TORCHVISION_FETCH}")
    torch.manual_seed(0)
    theirs, ours = tv.resnet18(num_classes=10).double().eval(), ref.resnet18(num_classes=10).double().eval()
    assert [(k, v.shape) for k, v in theirs.state_dict().items()] == [
        (k, v.shape) for k, v in ours.state_dict().items()
    ]
    ours.load_state_dict(theirs.state_dict())
    x = torch.from_numpy(_rng().normal(size=(2, 3, 32, 32)))
    with torch.no_grad():
        assert torch.equal(theirs(x), ours(x))
    # and the port against torchvision's model itself, layer by layer
    x = CASES["resnet18"].inputs_for("train")[0]
    report = compare(theirs, ports.resnet18(num_classes=10, rngs=nnx.Rngs(0)), x, mode="train")
    assert report.passed, str(report)


def test_tied_weights_are_one_param_listed_under_both_keys():
    lm = ports.RNNModel("LSTM", NTOKEN, NINP, NINP, 2, tie_weights=True, rngs=nnx.Rngs(0))
    assert lm.decoder.weight is lm.encoder.weight
    assert list(lm.state_dict())[:1] == ["encoder.weight"] and "decoder.weight" in lm.state_dict()
    assert [n for n, _ in lm.named_parameters()].count("decoder.weight") == 0  # listed once, as torch does
    with pytest.raises(ValueError, match="nhid must be equal to emsize"):
        ports.RNNModel("LSTM", NTOKEN, NINP, NINP + 1, 2, tie_weights=True, rngs=nnx.Rngs(0))


# ----------------------------------------------------------------------------- layer by layer, float64


def _params(*axes, slow=lambda *case: False):
    """The product of ``axes`` as pytest params; ``slow(*case)`` marks the heavy ones for make test-all only.

    ResNet-18 is by far the largest port (11 s a case in float32 or layer by layer in eval mode, against
    about 3 s in float64) and float32 cases take 3 to 4 s each: make test keeps the float64 cases (the sharp
    test) and ResNet-18's train mode layer by layer; test-all (CI) runs every case.
    """
    return [pytest.param(*case, marks=pytest.mark.slow) if slow(*case) else case for case in itertools.product(*axes)]


@pytest.mark.parametrize(
    "name, mode", _params(list(CASES), ["eval", "train"], slow=lambda name, mode: name == "resnet18" and mode == "eval")
)
def test_port_agrees_layer_by_layer_in_float64(name, mode):
    case = CASES[name]
    torch_model, port = case.torch(), case.port()
    if mode == "train":
        _no_dropout(torch_model, port)
    report = compare(torch_model, port, *case.inputs_for(mode), mode=mode)
    assert report.passed, str(report)
    assert not report.unmatched_torch, report.unmatched_torch  # every torch layer was compared
    if mode == "train" and name not in ("mnist", "word_language_model", "transformer"):
        assert any(k.endswith("running_var") for k in report.buffers)


# ----------------------------------------------------------------------------- whole-model gradients, both dtypes


def _grads_both(case: Case, dtype: str, mode: str):
    """Outputs, parameter gradients (torch's names) and input gradients of ``sum(out * cotangent)`` on both sides."""
    tdt = {"float64": torch.float64, "float32": torch.float32}[dtype]
    torch_model, port = case.torch().to(tdt), case.port()
    torch_model.train(mode == "train")
    port.train(mode == "train")
    if mode == "train":
        _no_dropout(torch_model, port)
    inputs = case.inputs_for(mode)
    t_in = [
        torch.tensor(x, dtype=tdt, requires_grad=True) if np.issubdtype(x.dtype, np.floating) else torch.from_numpy(x)
        for x in inputs
    ]
    t_out = torch_model(*t_in)
    cot = _rng(9).normal(size=tuple(t_out.shape))
    (t_out * torch.as_tensor(cot, dtype=tdt)).sum().backward()
    t_params = {n: p.grad.numpy().copy() for n, p in torch_model.named_parameters()}
    t_inputs = [x.grad.numpy().copy() for x in t_in if x.grad is not None]

    with jax.enable_x64(dtype == "float64"):
        port = port.double() if dtype == "float64" else port
        port.load_state_dict(_torch_state(torch_model))
        graphdef, params, rest = nnx.split(port, nnx.Param, ...)
        floats = [i for i, x in enumerate(inputs) if np.issubdtype(x.dtype, np.floating)]
        jdt = jnp.float64 if dtype == "float64" else jnp.float32
        j_in = [jnp.asarray(x, jdt) if i in floats else jnp.asarray(x) for i, x in enumerate(inputs)]

        def loss(params, float_inputs):
            args = list(j_in)
            for i, x in zip(floats, float_inputs, strict=True):
                args[i] = x
            out = nnx.merge(graphdef, params, rest, copy=True)(*args)
            return jnp.sum(out * jnp.asarray(cot, jdt)), out

        (_, j_out), (g_params, g_inputs) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            params, [j_in[i] for i in floats]
        )
        by_path = {path: np.asarray(v) for path, v in nnx.to_flat_state(g_params)}
        path_of = {id(var): path for path, var in nnx.to_flat_state(nnx.state(port, nnx.Param))}
        j_params = {
            n: by_path[path_of[id(var)]] for n, var in port.named_parameters()
        }  # a tied Param by its first name
    errs = {"output": _rel(j_out, t_out.detach().numpy())}
    assert list(j_params) == list(t_params)
    errs |= {f"grad {n}": _rel(j_params[n], t_params[n]) for n in t_params}
    errs |= {f"input grad {i}": _rel(g, t) for i, (g, t) in enumerate(zip(g_inputs, t_inputs, strict=True))}
    return errs


@pytest.mark.parametrize(
    "name, mode, dtype",
    _params(list(CASES), ["eval", "train"], ["float64", "float32"], slow=lambda n, m, d: d == "float32"),
)
def test_port_outputs_and_gradients_match_torch(name, mode, dtype):
    errs = _grads_both(CASES[name], dtype, mode)
    tol = PORT_F64_RTOL if dtype == "float64" else PORT_F32_RTOL
    worst = max(errs, key=errs.get)
    assert errs[worst] <= tol, f"{worst}: {errs[worst]:.3g} > {tol:g} ({len(errs)} arrays)"


# ----------------------------------------------------------------------------- 20 optimizer steps, float64

STEPS = 20


def _supervised_trajectory(
    torch_model, port, torch_opt, torch_sched, tx, batches, torch_loss, jax_loss, port_out: list | None = None
):
    """A step per batch on both sides from the same weights; returns the worst loss and state_dict errors.

    ``port_out``, when given, receives the trained (float64) port.
    """
    with jax.enable_x64(True):
        port = port.double()
        port.load_state_dict(_torch_state(torch_model))
        optimizer = nnx.Optimizer(port, tx, wrt=nnx.Param)

        @nnx.jit
        def step(model, optimizer, batch):
            loss, grads = nnx.value_and_grad(lambda m: jax_loss(m, batch))(model)
            optimizer.update(model, grads)
            return loss

        loss_errs = []
        for batch in batches:
            j_loss = step(port, optimizer, [jnp.asarray(b) for b in batch])
            torch_opt.zero_grad()
            t_loss = torch_loss(torch_model, [torch.from_numpy(b) for b in batch])
            t_loss.backward()
            torch_opt.step()
            if torch_sched is not None:
                torch_sched.step()
            loss_errs.append(_rel(j_loss, t_loss.item()))
        ours, theirs = port.state_dict(), _torch_state(torch_model)
        state_errs = {k: _rel(ours[k], theirs[k]) for k in theirs}
    if port_out is not None:
        port_out.append(port)
    return max(loss_errs), state_errs


def _assert_trajectory(loss_err, state_errs):
    worst = max(state_errs, key=state_errs.get)
    print(f"worst loss error {loss_err:.2e}, worst state_dict error {state_errs[worst]:.2e} ({worst})")
    assert loss_err <= PORT_F64_RTOL, f"loss {loss_err:.3g}"
    assert state_errs[worst] <= PORT_F64_RTOL, f"{worst}: {state_errs[worst]:.3g} after the last step"


def test_mnist_adadelta_steplr_trajectory_matches_torch():
    """The example's optimizer: Adadelta(lr=1.0) and StepLR(gamma=0.7), here stepped every 5 batches, nll_loss."""
    case = CASES["mnist"]
    torch_model, port = case.torch(), case.port()
    _no_dropout(torch_model, port)
    r = _rng(3)
    batches = [(r.normal(size=(4, 1, 28, 28)), r.integers(0, 10, size=4)) for _ in range(STEPS)]
    torch_opt = torch.optim.Adadelta(torch_model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(torch_opt, step_size=5, gamma=0.7)
    tx = jaxnets.optim.adadelta(lr=lambda count: 1.0 * 0.7 ** (count // 5))
    _assert_trajectory(
        *_supervised_trajectory(
            torch_model.train(),
            port.train(),
            torch_opt,
            sched,
            tx,
            batches,
            lambda m, b: torch.nn.functional.nll_loss(m(b[0]), b[1]),
            lambda m, b: F.nll_loss(m(b[0]), b[1]),
        )
    )


def test_transformer_sgd_trajectory_matches_torch():
    case = CASES["transformer"]
    torch_model, port = case.torch(), case.port()
    _no_dropout(torch_model, port)
    r = _rng(4)
    tokens, mask = _transformer_inputs()
    batches = [(r.integers(0, NTOKEN, size=(SEQ, BATCH)), mask, r.integers(0, 4, size=BATCH)) for _ in range(STEPS)]
    # SGD, not Adam: the key projection's bias has a gradient of exactly 0 (softmax ignores a shift shared by
    # all keys), so both sides hold rounding noise there, which Adam divides by its own root mean square into
    # full lr steps (1.4e-9 apart after 20 steps, measured); SGD keeps it at the noise's size.
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.05, momentum=0.9)
    _assert_trajectory(
        *_supervised_trajectory(
            torch_model.train(),
            port.train(),
            torch_opt,
            None,
            jaxnets.optim.sgd(0.05, momentum=0.9),
            batches,
            lambda m, b: torch.nn.functional.cross_entropy(m(b[0], b[1]), b[2]),
            lambda m, b: F.cross_entropy(m(b[0], b[1]), b[2]),
        )
    )


@pytest.mark.slow
def test_resnet18_sgd_trajectory_matches_torch():
    """SGD with momentum and weight decay, BatchNorm in train mode (its buffers are in the compared state_dict).

    On 64x64 images: at 32x32, ``layer4`` is 1x1 and its BatchNorms normalise 4 values per channel (batch 4),
    which makes these 20 steps chaotic. Measured (float64, lr 0.01, batch 4, 32x32): torch against *torch* from
    weights scaled by ``1 + 1e-15 * N(0, 1)`` grows ~30-fold a step (loss 1.6e-14 apart after one step, 1.2e-10
    after four, 2e-2 after nine) and ends with losses 1.9 apart (10.2 against 8.3) after 20; jaxnets against torch
    grows at the same rate (4.8e-15, 2.3e-11, 7.5e-3) to 1.8 apart, with every parameter and buffer within 2e-13
    after step 1, num_batches_tracked equal throughout: no step differs, the problem amplifies rounding. lr 0.001
    at 32x32 is as chaotic (torch against torch 0.43 apart after 20 steps). At 64x64 (16 values per channel)
    torch against perturbed torch ends 3e-12 apart, jaxnets against torch 1.7e-12 (state_dict) and 2e-13 (losses).
    """
    case = CASES["resnet18"]
    torch_model, port = case.torch(), case.port()
    r = _rng(5)
    batches = [(r.normal(size=(4, 3, 64, 64)), r.integers(0, 10, size=4)) for _ in range(STEPS)]
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    _assert_trajectory(
        *_supervised_trajectory(
            torch_model.train(),
            port.train(),
            torch_opt,
            None,
            jaxnets.optim.sgd(0.01, momentum=0.9, weight_decay=5e-4),
            batches,
            lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]),
            lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        )
    )


@pytest.mark.parametrize("momentum", [0.1, None], ids=["m0.1", "cumulative"])
def test_batchnorm_buffers_follow_torch_through_jitted_sgd_steps(momentum):
    """What ResNet-18's departure was suspected of, on a small net: BatchNorm's running statistics and
    num_batches_tracked carried from one jitted nnx.Optimizer step to the next, weight decay and momentum applied
    to parameters only (not buffers), then eval mode on the running statistics; float64, to PORT_F64_RTOL."""
    torch.manual_seed(0)

    def net(lib, **kw):
        return lib.Sequential(
            lib.Conv2d(3, 4, 3, **kw),
            lib.BatchNorm2d(4, momentum=momentum),
            lib.ReLU(),
            lib.Flatten(),
            lib.Linear(4 * 6 * 6, 5, **kw),
            lib.BatchNorm1d(5, momentum=momentum),
        )

    torch_model, port = net(torch.nn).double(), net(nn, rngs=nnx.Rngs(0))
    r = _rng(8)
    batches = [(2 + 3 * r.normal(size=(6, 3, 8, 8)), r.integers(0, 5, size=6)) for _ in range(5)]
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    loss_err, state_errs = _supervised_trajectory(
        torch_model.train(),
        port.train(),
        torch_opt,
        None,
        jaxnets.optim.sgd(0.1, momentum=0.9, weight_decay=0.1),
        batches,
        lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]),
        lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        port_out=(ported := []),
    )
    _assert_trajectory(loss_err, state_errs)
    assert int(ported[0].state_dict()["1.num_batches_tracked"]) == len(batches)
    x = r.normal(size=(2, 3, 8, 8))
    with jax.enable_x64(True):
        out = ported[0].eval()(jnp.asarray(x))
    with torch.no_grad():
        want = torch_model.eval()(torch.from_numpy(x)).numpy()
    assert _rel(out, want) <= PORT_F64_RTOL


def test_word_language_model_trajectory_matches_torch():
    """Upstream's train(): hidden state carried and detached, clip_grad_norm_(0.25), p -= lr * grad (lr=20)."""
    torch.manual_seed(0)
    torch_lm = ref.RNNModel("LSTM", NTOKEN, NINP, NINP, 2, dropout=0.0, tie_weights=True).double().train()
    port = ports.RNNModel("LSTM", NTOKEN, NINP, NINP, 2, dropout=0.0, tie_weights=True, rngs=nnx.Rngs(0))
    r = _rng(6)
    stream = r.integers(0, NTOKEN, size=(STEPS * SEQ + 1, BATCH))
    lr, clip = 20.0, 0.25
    with jax.enable_x64(True):
        port = port.double().train()
        port.load_state_dict(_torch_state(torch_lm))
        optimizer = nnx.Optimizer(
            port, optax.chain(jaxnets.optim.clip_grad_norm(clip), jaxnets.optim.sgd(lr)), wrt=nnx.Param
        )

        @nnx.jit
        def step(model, optimizer, data, targets, hidden):
            def loss_fn(m):
                output, hidden_out = m(data, hidden)
                return F.nll_loss(output, targets.reshape(-1)), hidden_out

            (loss, hidden_out), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
            optimizer.update(model, grads)
            return loss, jax.lax.stop_gradient(hidden_out)  # repackage_hidden

        hidden, t_hidden = port.init_hidden(BATCH), torch_lm.init_hidden(BATCH)
        loss_errs = []
        for i in range(0, STEPS * SEQ, SEQ):
            data, targets = stream[i : i + SEQ], stream[i + 1 : i + 1 + SEQ]
            loss, hidden = step(port, optimizer, jnp.asarray(data), jnp.asarray(targets), hidden)
            t_hidden = tuple(h.detach() for h in t_hidden)
            torch_lm.zero_grad()
            output, t_hidden = torch_lm(torch.from_numpy(data), t_hidden)
            t_loss = torch.nn.functional.nll_loss(output, torch.from_numpy(targets).reshape(-1))
            t_loss.backward()
            torch.nn.utils.clip_grad_norm_(torch_lm.parameters(), clip)
            for p in torch_lm.parameters():
                p.data.add_(p.grad, alpha=-lr)
            loss_errs.append(_rel(loss, t_loss.item()))
        ours, theirs = port.state_dict(), _torch_state(torch_lm)
        state_errs = {k: _rel(ours[k], theirs[k]) for k in theirs}
        assert port.decoder.weight is port.encoder.weight  # still one array after training
    _assert_trajectory(max(loss_errs), state_errs)


def test_dcgan_adam_trajectory_matches_torch():
    """Upstream's loop: D on real then on G(z).detach(), Adam(2e-4, betas=(0.5, 0.999)); then G through the updated D.

    Every forward of a BatchNorm in train mode moves its buffers, as upstream's
    three D calls and one G call per iteration do; they are in the compared state_dicts.
    """
    netG, netD = _dcgan_g_torch().train(), _dcgan_d_torch().train()
    r = _rng(7)
    reals = [np.tanh(r.normal(size=(2, 3, 64, 64))) for _ in range(STEPS)]
    noises = [r.normal(size=(2, 8, 1, 1)) for _ in range(STEPS)]
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    criterion = torch.nn.BCELoss()
    bce = nn.BCELoss()
    with jax.enable_x64(True):
        G = ports.Generator(nz=8, ngf=4, nc=3, rngs=nnx.Rngs(0)).double().train()
        D = ports.Discriminator(ndf=4, nc=3, rngs=nnx.Rngs(0)).double().train()
        G.load_state_dict(_torch_state(netG))
        D.load_state_dict(_torch_state(netD))
        tx = jaxnets.optim.adam(2e-4, betas=(0.5, 0.999))
        g_graph, g_params, g_rest = nnx.split(G, nnx.Param, ...)
        d_graph, d_params, d_rest = nnx.split(D, nnx.Param, ...)
        state = (g_params, g_rest, d_params, d_rest, tx.init(g_params), tx.init(d_params))

        def apply(graph, params, rest, x):
            """One forward in train mode: the output and the buffers it moved."""
            m = nnx.merge(graph, params, rest, copy=True)  # new Variables at this trace level
            return m(x), nnx.split(m, nnx.Param, ...)[2]

        @jax.jit
        def step(state, real, noise):
            gp, gr, dp, dr, sg, sd = state
            ones, zeros = jnp.ones(real.shape[0]), jnp.zeros(real.shape[0])
            # G's forward once (its BatchNorm buffers move once); its VJP serves G's update below
            fake, g_vjp, gr = jax.vjp(lambda p: apply(g_graph, p, gr, noise), gp, has_aux=True)

            def d_loss(p, dr):
                out_real, dr = apply(d_graph, p, dr, real)
                out_fake, dr = apply(d_graph, p, dr, jax.lax.stop_gradient(fake))
                return bce(out_real, ones) + bce(out_fake, zeros), dr

            (errD, dr), d_grads = jax.value_and_grad(d_loss, has_aux=True)(dp, dr)
            updates, sd = tx.update(d_grads, sd, dp)
            dp = optax.apply_updates(dp, updates)

            def g_loss(f, dr):  # D's third forward, after its step
                out, dr = apply(d_graph, dp, dr, f)
                return bce(out, ones), dr

            (errG, dr), d_fake = jax.value_and_grad(g_loss, has_aux=True)(fake, dr)
            (g_grads,) = g_vjp(d_fake)
            updates, sg = tx.update(g_grads, sg, gp)
            gp = optax.apply_updates(gp, updates)
            return (gp, gr, dp, dr, sg, sd), errD, errG

        errs = []
        for real, noise in zip(reals, noises, strict=True):
            state, errD, errG = step(state, jnp.asarray(real), jnp.asarray(noise))
            netD.zero_grad()
            output = netD(torch.from_numpy(real))
            label = torch.ones(2, dtype=torch.float64)
            errD_real = criterion(output, label)
            errD_real.backward()
            fake = netG(torch.from_numpy(noise))
            label = torch.zeros(2, dtype=torch.float64)
            errD_fake = criterion(netD(fake.detach()), label)
            errD_fake.backward()
            optimizerD.step()
            netG.zero_grad()
            label = torch.ones(2, dtype=torch.float64)
            errG_t = criterion(netD(fake), label)
            errG_t.backward()
            optimizerG.step()
            errs += [_rel(errD, (errD_real + errD_fake).item()), _rel(errG, errG_t.item())]
        G, D = nnx.merge(g_graph, state[0], state[1]), nnx.merge(d_graph, state[2], state[3])
        state_errs = {f"G.{k}": _rel(G.state_dict()[k], v) for k, v in _torch_state(netG).items()}
        state_errs |= {f"D.{k}": _rel(D.state_dict()[k], v) for k, v in _torch_state(netD).items()}
    _assert_trajectory(max(errs), state_errs)


# ----------------------------------------------------------------------------- a changed layer is named


class _TrueConv2d(nn.Conv2d):
    """A classic porting bug: a true convolution (flipped kernel) where torch cross-correlates."""

    def __call__(self, x):
        w = self.weight[...][..., ::-1, ::-1]
        return F.conv(x, w, self.bias[...], self.stride, self.padding, self.dilation, self.groups)


class _SwappedGatesLSTM(nn.LSTM):
    """Another porting bug: torch's gate blocks (input, forget, cell, output) read as (forget, input, cell, output)."""

    def _weights(self, layer, direction):
        def swap(w):
            if w is None:
                return None
            i, f, g, o = jnp.split(w, 4, axis=0)
            return jnp.concatenate([f, i, g, o], axis=0)

        w_ih, w_hh, b_ih, b_hh, w_hr = super()._weights(layer, direction)
        return swap(w_ih), swap(w_hh), swap(b_ih), swap(b_hh), w_hr


def _mutated(name: str):
    """``(port with one layer changed, mode, the name parity.compare must give)``."""
    port = CASES[name].port()
    if name == "mnist":
        port.conv2 = _TrueConv2d(32, 64, 3, 1, rngs=nnx.Rngs(1))
        return port, "eval", "conv2"
    if name == "dcgan_generator":
        port.main[4].momentum = 0.9  # Keras' convention (weight of the old value) for torch's 0.1
        return port, "train", "main.4"
    if name == "dcgan_discriminator":
        port.main[4].negative_slope = 0.01  # LeakyReLU's default where DCGAN uses 0.2
        return port, "eval", "main.4"
    if name == "word_language_model":
        port.lm.rnn = _SwappedGatesLSTM(NINP, NINP, 2, dropout=0.5, rngs=nnx.Rngs(1))
        return port, "eval", "lm.rnn"
    if name == "transformer":
        port.transformer_encoder.layers[1].norm1.eps = 1e-3  # Keras' LayerNorm eps for torch's 1e-5
        return port, "eval", "transformer_encoder.layers.1.norm1"
    if name == "resnet18":
        port.layer3[0].downsample[1].eps = 1e-3  # Keras' BatchNorm eps for torch's 1e-5
        return port, "eval", "layer3.0.downsample.1"
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(CASES))
def test_compare_names_the_one_changed_layer(name):
    port, mode, layer = _mutated(name)
    torch_model = CASES[name].torch()
    if mode == "train":
        _no_dropout(torch_model, port)
    report = compare(torch_model, port, *CASES[name].inputs_for(mode), mode=mode)
    assert report.first_divergence is not None and report.first_divergence[0] == layer, str(report)


def test_compare_names_the_encoder_when_the_tie_is_a_copy():
    """Tied weights copied into two Params give the same forward but the embedding's gradient misses the decoder's."""
    port = _lm_port()
    port.lm.decoder.weight = nnx.Param(port.lm.encoder.weight[...] + 0)  # untied: two arrays, equal values
    report = compare(_lm_torch(), port, *_lm_inputs())
    assert all(r.output <= report.tol for r in report.rows), str(report)
    assert report.first_divergence[0] == "lm.encoder", str(report)
    assert "parameter gradients" in report.first_divergence[1]
