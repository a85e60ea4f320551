"""parity's layout table: weights, gradients and optimizer state in both directions, copies, strict errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from tolerances import F64_ATOL, F64_RTOL

import jaxnets
import parity
from parity import torch_models as tm
from parity.layout import layout

torch.set_num_threads(1)  # torch and XLA share two cores in this process


def pairs(kernel_size=5, image_size=32):
    """(torch model, jaxnets model, example input in torch layout) for each architecture, float64."""
    torch.manual_seed(0)
    return {
        "lenet": (
            tm.Net(kernel_size=kernel_size, image_size=image_size).double(),
            jaxnets.LeNet(kernel_size=kernel_size, image_size=image_size, param_dtype=jnp.float64, rngs=nnx.Rngs(0)),
            torch.randn(3, 1, image_size, image_size, dtype=torch.float64),
        ),
        "two_layer": (
            tm.TwoLayerNet(20, 8, 3).double(),
            jaxnets.TwoLayerNet(20, 8, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(0)),
            torch.randn(5, 20, dtype=torch.float64),
        ),
        "sequential": (
            tm.two_layer_sequential(20, 8, 3).double(),
            jaxnets.two_layer_sequential(20, 8, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(0)),
            torch.randn(5, 20, dtype=torch.float64),
        ),
    }


def jax_input(x: torch.Tensor):
    return jax.device_put(parity.to_nhwc(x.numpy()) if x.ndim == 4 else x.numpy().copy())


@pytest.mark.parametrize(
    "name,kernel_size,image_size",
    [("lenet", 5, 32), ("lenet", 3, 32), ("lenet", 5, 28), ("two_layer", 5, 32), ("sequential", 5, 32)],
    ids=["lenet-5x5", "lenet-3x3", "lenet-28px", "two_layer", "sequential"],
)
def test_convert_torch_to_jax_gives_the_same_outputs_and_back_the_same_weights(x64, name, kernel_size, image_size):
    torch_model, jax_model, x = pairs(kernel_size, image_size)[name]
    parity.load_torch_state_dict(jax_model, torch_model.state_dict())
    want = torch_model(x).detach().numpy()
    np.testing.assert_allclose(jax_model(jax_input(x)), want, rtol=F64_RTOL, atol=F64_ATOL)
    back = parity.to_torch_state_dict(jax_model)
    assert list(back) == [n for n, _ in torch_model.named_parameters()]  # torch's order
    for key, value in torch_model.state_dict().items():
        assert torch.equal(back[key], value)  # a permutation: exact
    torch_model.load_state_dict(back, strict=True)


def test_convert_fc1_needs_the_flatten_row_permutation(x64):
    torch_model, jax_model, x = pairs()["lenet"]
    sd = torch_model.state_dict()
    parity.load_torch_state_dict(jax_model, sd)
    right = np.asarray(jax_model(jax_input(x)))
    # The naive port: transpose fc1 like any linear layer. The shapes fit ...
    jax_model.fc1.kernel[...] = jax.device_put(sd["fc1.weight"].numpy().T.copy())
    wrong = np.asarray(jax_model(jax_input(x)))
    want = torch_model(x).detach().numpy()
    np.testing.assert_allclose(right, want, rtol=F64_RTOL, atol=F64_ATOL)
    assert np.abs(wrong - want).max() > 1e-3 * np.abs(want).max()  # ... and the outputs are silently wrong
    fc1 = next(e for e in layout(jax_model) if e.torch_name == "fc1.weight")
    assert fc1.kind == "flatten_linear" and fc1.flatten_chw == (16, 5, 5)


def test_convert_copies_so_torch_in_place_updates_do_not_reach_jax(x64):
    torch_model, jax_model, x = pairs()["two_layer"]
    parity.load_torch_state_dict(jax_model, torch_model.state_dict())
    before = np.asarray(jax_model.linear1.bias[...]).copy()
    opt = torch.optim.SGD(torch_model.parameters(), lr=1.0)
    torch_model(x).sum().backward()
    opt.step()  # in place on torch's buffers
    with torch.no_grad():
        torch_model.linear1.bias.mul_(-3.0)
    np.testing.assert_array_equal(jax_model.linear1.bias[...], before)
    out = parity.to_torch_state_dict(jax_model)
    out["linear1.bias"].mul_(10.0)  # the returned tensors own their memory too
    np.testing.assert_array_equal(jax_model.linear1.bias[...], before)


def test_convert_accepts_numpy_values_and_casts_to_the_models_dtype(x64):
    torch_model, _, x = pairs()["two_layer"]
    jax_model = jaxnets.TwoLayerNet(20, 8, 3, rngs=nnx.Rngs(1))  # float32
    parity.load_torch_state_dict(jax_model, {k: v.numpy() for k, v in torch_model.state_dict().items()})
    assert jax_model.linear1.kernel[...].dtype == jnp.float32
    np.testing.assert_allclose(
        jax_model(jnp.asarray(x.numpy(), jnp.float32)), torch_model(x).detach().numpy(), rtol=1e-5
    )


def test_convert_reports_every_bad_key_at_once_and_changes_nothing(x64):
    torch_model, jax_model, _ = pairs()["lenet"]
    sd = dict(torch_model.state_dict())
    del sd["fc3.bias"]
    sd["fc4.weight"] = torch.zeros(3)
    sd["conv1.weight"] = torch.zeros(6, 1, 3, 3)
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(jax_model, nnx.Param)))
    with pytest.raises(parity.StateDictMismatch) as exc:
        parity.load_torch_state_dict(jax_model, sd)
    message = str(exc.value)
    assert "nothing was changed" in message
    assert "missing keys: fc3.bias" in message
    assert "unexpected keys: fc4.weight" in message
    assert "conv1.weight: got (6, 1, 3, 3), expected (6, 1, 5, 5)" in message
    after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(jax_model, nnx.Param)))
    jax.tree.map(np.testing.assert_array_equal, after, before)


def test_convert_gradients_through_the_same_table(x64):
    torch_model, jax_model, x = pairs()["lenet"]
    parity.load_torch_state_dict(jax_model, torch_model.state_dict())
    target = torch.arange(1, 11, dtype=torch.float64)
    torch.nn.functional.mse_loss(torch_model(x), target.expand(3, 10)).backward()
    graphdef, params = nnx.split(jax_model, nnx.Param)
    xj = jax_input(x)
    grads = jax.grad(lambda p: jaxnets.losses.mse_loss(nnx.merge(graphdef, p)(xj), jnp.arange(1.0, 11.0)))(params)
    for name, g in parity.to_torch_state_dict(grads).items():
        want = dict(torch_model.named_parameters())[name].grad
        np.testing.assert_allclose(g.numpy(), want.numpy(), rtol=F64_RTOL, atol=F64_ATOL, err_msg=name)


def test_convert_rejects_non_square_flatten_without_flatten_shapes():
    class Wide(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(1, 4, (3, 3), padding="VALID", rngs=rngs)
            self.fc1 = nnx.Linear(4 * 2 * 3, 5, rngs=rngs)

    model = Wide(nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"not a square feature map; pass flatten_shapes=\{'fc1': \(C, H, W\)\}"):
        layout(model)
    entries = layout(model, flatten_shapes={"fc1": (4, 2, 3)})
    assert entries[2].flatten_chw == (4, 2, 3)
    kernel = np.arange(24 * 5.0).reshape(24, 5)
    np.testing.assert_array_equal(entries[2].from_torch(entries[2].to_torch(kernel)), kernel)


def test_convert_image_layout_helpers():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert parity.to_nhwc(x).shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(parity.to_nchw(parity.to_nhwc(x)), x)
    with pytest.raises(ValueError, match=r"expects a batch of images \(N, C, H, W\); got shape \(3, 4, 5\)"):
        parity.to_nhwc(x[0])


# -- optimizer state ------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd-momentum": (
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
        lambda: jaxnets.optim.sgd(1e-2, momentum=0.9),
    ),
    "sgd-nesterov-wd": (
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.1),
        lambda: jaxnets.optim.sgd(1e-2, momentum=0.9, nesterov=True, weight_decay=0.1),
    ),
    "sgd-dampening": (
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, dampening=0.5),
        lambda: jaxnets.optim.sgd(1e-2, momentum=0.9, dampening=0.5),
    ),
    "adam": (lambda p: torch.optim.Adam(p, lr=1e-2), lambda: jaxnets.optim.adam(1e-2)),
    "adam-amsgrad-wd": (
        lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True, weight_decay=0.1),
        lambda: jaxnets.optim.adam(1e-2, amsgrad=True, weight_decay=0.1),
    ),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=1e-2), lambda: jaxnets.optim.adamw(1e-2)),
    "adagrad": (
        lambda p: torch.optim.Adagrad(p, lr=1e-2, lr_decay=0.1),
        lambda: jaxnets.optim.adagrad(1e-2, lr_decay=0.1),
    ),
    "adam-maximize-decoupled": (
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
        lambda: jaxnets.optim.adam(1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
    ),
    "radam-wd": (
        lambda p: torch.optim.RAdam(p, lr=1e-2, betas=(0.8, 0.9), weight_decay=0.1),
        lambda: jaxnets.optim.radam(1e-2, betas=(0.8, 0.9), weight_decay=0.1),
    ),
    "rprop": (lambda p: torch.optim.Rprop(p, lr=1e-3), lambda: jaxnets.optim.rprop(1e-3)),
    "adadelta-wd": (
        lambda p: torch.optim.Adadelta(p, lr=0.5, rho=0.8, weight_decay=0.1),
        lambda: jaxnets.optim.adadelta(0.5, rho=0.8, weight_decay=0.1),
    ),
    "adamax-maximize": (
        lambda p: torch.optim.Adamax(p, lr=1e-2, weight_decay=0.1, maximize=True),
        lambda: jaxnets.optim.adamax(1e-2, weight_decay=0.1, maximize=True),
    ),
    "nadam-wd": (
        lambda p: torch.optim.NAdam(p, lr=1e-2, weight_decay=0.1, momentum_decay=0.01),
        lambda: jaxnets.optim.nadam(1e-2, weight_decay=0.1, momentum_decay=0.01),
    ),
    "nadam-decoupled": (
        lambda p: torch.optim.NAdam(p, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
        lambda: jaxnets.optim.nadam(1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    ),
    # optax's rmsprop keeps -lr times torch's momentum buffer: converted with the torch group's lr
    "rmsprop-momentum-centered-wd": (
        lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.9, centered=True, weight_decay=0.1),
        lambda: jaxnets.optim.rmsprop(1e-2, momentum=0.9, centered=True, weight_decay=0.1),
    ),
    "rmsprop-maximize": (
        lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, maximize=True),
        lambda: jaxnets.optim.rmsprop(1e-3, alpha=0.9, maximize=True),
    ),
    # t0=2: averaging starts within the torch part of the run, so ax, eta and mu all matter.
    "asgd": (
        lambda p: torch.optim.ASGD(p, lr=1e-2, lambd=0.01, t0=2, weight_decay=0.1),
        lambda: jaxnets.optim.asgd(1e-2, lambd=0.01, t0=2, weight_decay=0.1),
    ),
}
# Adafactor factors the last two dims: jaxnets' (in, out) linear kernels are torch's weights
# transposed (the factors swap), but a Flax HWIO conv kernel is not OIHW's, so LeNet cannot move.
MODEL = {"adafactor-wd": "two_layer", "adafactor-maximize": "sequential"}
OPTIMIZERS["adafactor-wd"] = (
    lambda p: torch.optim.Adafactor(p, lr=1e-2, weight_decay=0.1, d=1.5),
    lambda: jaxnets.optim.adafactor(1e-2, weight_decay=0.1, d=1.5),
)
OPTIMIZERS["adafactor-maximize"] = (
    lambda p: torch.optim.Adafactor(p, beta2_decay=-0.5, eps=(1e-3, 1e-3), maximize=True),
    lambda: jaxnets.optim.adafactor(beta2_decay=-0.5, eps=(1e-3, 1e-3), maximize=True),
)


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_optimizer_state_continues_a_torch_run_in_jax_and_back(x64, opt_name):
    make_torch_opt, make_tx = OPTIMIZERS[opt_name]
    torch_model, jax_model, x = pairs()[MODEL.get(opt_name, "lenet")]
    y = torch.randn(x.shape[0], 10 if x.ndim == 4 else 3, dtype=torch.float64)
    xj, yj = jax_input(x), jax.device_put(y.numpy())
    opt = make_torch_opt(torch_model.parameters())

    def torch_step():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(torch_model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(3):
        torch_step()
    # torch -> JAX mid-run
    parity.load_torch_state_dict(jax_model, torch_model.state_dict())
    trainer = jaxnets.Trainer(jax_model, make_tx(), lambda m, x, y: jaxnets.losses.mse_loss(m(x), y))
    trainer.opt_state = parity.optimizer_state_from_torch(opt, torch_model, trainer.opt_state)
    torch_losses = [torch_step() for _ in range(4)]
    jax_losses = [float(trainer.step(xj, yj)) for _ in range(4)]
    np.testing.assert_allclose(jax_losses, torch_losses, rtol=F64_RTOL)
    for name, value in parity.to_torch_state_dict(trainer.params).items():
        np.testing.assert_allclose(value, torch_model.state_dict()[name], rtol=F64_RTOL, atol=F64_ATOL, err_msg=name)
    # JAX -> torch: a fresh torch optimizer picks up where JAX is
    opt = make_torch_opt(torch_model.parameters())
    parity.load_optimizer_state_into_torch(trainer.opt_state, opt, torch_model)
    torch_losses = [torch_step() for _ in range(3)]
    jax_losses = [float(trainer.step(xj, yj)) for _ in range(3)]
    np.testing.assert_allclose(jax_losses, torch_losses, rtol=F64_RTOL)
    for name, value in parity.to_torch_state_dict(trainer.params).items():
        np.testing.assert_allclose(value, torch_model.state_dict()[name], rtol=F64_RTOL, atol=F64_ATOL, err_msg=name)


def test_optimizer_state_conversion_errors(x64):
    torch_model, jax_model, _ = pairs()["two_layer"]
    params = nnx.state(jax_model, nnx.Param)
    opt = torch.optim.SGD(torch_model.parameters(), momentum=0.9)
    groups = jaxnets.optim.param_groups(jaxnets.optim.sgd, [{"params": "*.bias"}], lr=0.1, momentum=0.9)
    # one jaxnets group of the biases (kernels frozen) against torch's one group of every parameter
    with pytest.raises(ValueError, match=r"shape of linear1/kernel, which no parameter group's state holds.*params="):
        parity.optimizer_state_from_torch(opt, torch_model, groups.init(params))
    with pytest.raises(ValueError, match=r"group0: torch's group holds linear1.weight, linear2.weight that jaxnets'"):
        parity.optimizer_state_from_torch(opt, torch_model, groups.init(params), params=params)
    scheduled = jaxnets.optim.sgd(jaxnets.optim.lr_scheduler.StepLR(0.1, 2), momentum=0.9).init(params)
    with pytest.raises(ValueError, match=r"SGD keeps no step count.*pass steps="):
        parity.optimizer_state_from_torch(opt, torch_model, scheduled)
    with pytest.raises(ValueError, match=r"got a scheduler, but the optimizer state keeps no step count"):
        sched = torch.optim.lr_scheduler.StepLR(opt, 2)
        parity.load_optimizer_state_into_torch(
            jaxnets.optim.sgd(0.1, 0.9).init(params), opt, torch_model, scheduler=sched
        )
    opt = torch.optim.Adam(torch_model.parameters())
    torch_model(torch.randn(2, 20, dtype=torch.float64)).sum().backward()
    torch_model.linear2.weight.grad = None  # linear2.weight is skipped, as torch does for a None grad
    opt.step()
    with pytest.raises(
        ValueError, match=r"different step counts \(linear1.weight: 1, linear1.bias: 1, linear2.weight: 0"
    ):
        parity.optimizer_state_from_torch(opt, torch_model, jaxnets.optim.adam().init(params))


def test_adafactor_state_of_a_conv_kernel_is_refused_both_ways(x64):
    # torch factors an OIHW conv weight over (H, W); jaxnets' HWIO kernel over (I, O): different factors.
    torch_model, jax_model, x = pairs()["lenet"]
    opt = torch.optim.Adafactor(torch_model.parameters())
    torch_model(x).sum().backward()
    opt.step()
    state = jaxnets.optim.adafactor().init(nnx.state(jax_model, nnx.Param))
    with pytest.raises(ValueError, match=r"cannot convert the Adafactor state of 'conv1.weight'.*HWIO"):
        parity.optimizer_state_from_torch(opt, torch_model, state)
    with pytest.raises(ValueError, match=r"cannot convert the Adafactor state of 'conv1.weight'"):
        parity.load_optimizer_state_into_torch(state, opt, torch_model)


def test_adafactor_factors_swap_between_torch_and_flax_linear_layouts(x64):
    torch_model, jax_model, x = pairs()["two_layer"]
    opt = torch.optim.Adafactor(torch_model.parameters())
    torch_model(x).sum().backward()
    opt.step()
    state = parity.optimizer_state_from_torch(
        opt, torch_model, jaxnets.optim.adafactor().init(nnx.state(jax_model, nnx.Param))
    )
    torch_state = opt.state[torch_model.linear1.weight]  # weight (8, 20): row_var (8, 1), col_var (1, 20)
    np.testing.assert_array_equal(state.row_var["linear1"]["kernel"][...], torch_state["col_var"].numpy().T)
    np.testing.assert_array_equal(state.col_var["linear1"]["kernel"][...], torch_state["row_var"].numpy().T)
    np.testing.assert_array_equal(
        state.variance["linear1"]["bias"][...], opt.state[torch_model.linear1.bias]["variance"]
    )


def test_jaxnets_nn_models_convert_by_path_with_buffers_both_ways(x64):
    from jaxnets import nn

    torch.manual_seed(0)
    t = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    )
    t.double().train()
    t(torch.randn(4, 1, 4, 4, dtype=torch.float64))  # move the running statistics and the batch counter
    j = nn.Sequential(
        nn.Conv2d(1, 2, 3, rngs=nnx.Rngs(0)), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3, rngs=nnx.Rngs(0))
    )
    j.double()
    assert [e.torch_name for e in layout(j)] == list(t.state_dict())
    parity.load_torch_state_dict(j, t.state_dict())
    for key, value in t.state_dict().items():
        np.testing.assert_array_equal(np.asarray(j.state_dict()[key]), value.numpy(), err_msg=key)
    back = parity.to_torch_state_dict(j)
    assert list(back) == list(t.state_dict())
    t2 = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    )
    t2.double().load_state_dict(back, strict=True)
    x = np.random.default_rng(0).normal(size=(2, 1, 4, 4))
    t.eval(), t2.eval(), j.eval()
    np.testing.assert_array_equal(t2(torch.from_numpy(x)).detach().numpy(), t(torch.from_numpy(x)).detach().numpy())
    np.testing.assert_allclose(np.asarray(j(jax.device_put(x))), t(torch.from_numpy(x)).detach().numpy(), rtol=F64_RTOL)


def test_jaxnets_nn_int64_counter_loads_into_int32_when_it_fits():
    from jaxnets import nn
    from jaxnets.interop.exchange import load_torch_arrays

    bn = nn.BatchNorm1d(3)
    arrays = {k: np.asarray(v) for k, v in torch.nn.BatchNorm1d(3).state_dict().items()}
    arrays["num_batches_tracked"] = np.asarray(7, np.int64)
    load_torch_arrays(bn, arrays)
    assert int(bn.num_batches_tracked[...]) == 7 and bn.num_batches_tracked[...].dtype == jnp.int32
    arrays["num_batches_tracked"] = np.asarray(2**40, np.int64)
    with pytest.raises(parity.StateDictMismatch, match="num_batches_tracked int64 -> int32"):
        load_torch_arrays(bn, arrays)
    assert int(bn.num_batches_tracked[...]) == 7


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_trains_the_two_layer_net_as_torch(x64, line_search_fn):
    # LBFGS has no optax state to convert; this checks its step on a real model's nnx.State
    # (flattened in JAX's leaf order, torch in parameter order) against torch's step(closure).
    torch_model, jax_model, x = pairs()["two_layer"]
    y = torch.randn(5, 3, dtype=torch.float64)
    parity.load_torch_state_dict(jax_model, torch_model.state_dict())
    opt = torch.optim.LBFGS(torch_model.parameters(), lr=0.5, max_iter=5, history_size=3, line_search_fn=line_search_fn)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(torch_model(x), y)
        loss.backward()
        return loss

    graphdef, params = nnx.split(jax_model, nnx.Param)
    xj, yj = jax_input(x), jax.device_put(y.numpy())
    value_and_grad = jax.jit(jax.value_and_grad(lambda p: jaxnets.losses.mse_loss(nnx.merge(graphdef, p)(xj), yj)))
    tx = jaxnets.optim.lbfgs(lr=0.5, max_iter=5, history_size=3, line_search_fn=line_search_fn)
    state = tx.init(params)
    for _ in range(4):
        want = float(opt.step(closure).detach())
        params, state, loss = tx.step(params, state, value_and_grad)
        # 1e-10, as tests/test_optim_torch: roundings compound over the iterations of each step
        np.testing.assert_allclose(float(loss), want, rtol=1e-10)
    for name, value in parity.to_torch_state_dict(params).items():
        np.testing.assert_allclose(value, torch_model.state_dict()[name], rtol=1e-10, atol=1e-12, err_msg=name)
    assert state.n_iter == opt.state[next(iter(torch_model.parameters()))]["n_iter"] > 4  # several iterations per step


class _TorchBiasFree(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear1 = torch.nn.Linear(6, 5, bias=False)
        self.linear2 = torch.nn.Linear(5, 3, bias=False)

    def forward(self, x):
        return self.linear2(torch.tanh(self.linear1(x)))


class _BiasFree(nnx.Module):
    """Muon takes 2-D weights only: a Flax (in, out) two-layer net without biases."""

    def __init__(self, rngs):
        self.linear1 = nnx.Linear(6, 5, use_bias=False, param_dtype=jnp.float64, rngs=rngs)
        self.linear2 = nnx.Linear(5, 3, use_bias=False, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.linear2(jnp.tanh(self.linear1(x)))


@pytest.mark.parametrize("layout_name", ["in_out", "out_in-is-wrong-here"])
def test_muon_state_continues_a_torch_run_in_jax_and_back(x64, layout_name):
    torch.manual_seed(0)
    torch_model, jax_model = _TorchBiasFree().double(), _BiasFree(nnx.Rngs(0))
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    xj, yj = jax.device_put(x.numpy().copy()), jax.device_put(y.numpy())
    opt = torch.optim.Muon(torch_model.parameters(), lr=0.02, weight_decay=0.05)

    def torch_step():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(torch_model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(3):
        torch_step()
    parity.load_torch_state_dict(jax_model, torch_model.state_dict())
    layout_arg = layout_name.split("-")[0]
    tx = jaxnets.optim.muon(lr=0.02, weight_decay=0.05, layout=layout_arg)
    trainer = jaxnets.Trainer(jax_model, tx, lambda m, x, y: jaxnets.losses.mse_loss(m(x), y))
    trainer.opt_state = parity.optimizer_state_from_torch(opt, torch_model, trainer.opt_state)
    torch_losses = [torch_step() for _ in range(3)]
    jax_losses = [float(trainer.step(xj, yj)) for _ in range(3)]
    if layout_arg != "in_out":  # Flax kernels read as (out, in): linear1's (6, 5) looks tall, gets sqrt(6/5) the lr
        assert np.max(np.abs(np.subtract(jax_losses, torch_losses))) > 1e-6
        return
    np.testing.assert_allclose(jax_losses, torch_losses, rtol=F64_RTOL)
    opt = torch.optim.Muon(torch_model.parameters(), lr=0.02, weight_decay=0.05)
    parity.load_optimizer_state_into_torch(trainer.opt_state, opt, torch_model)
    torch_losses = [torch_step() for _ in range(3)]
    jax_losses = [float(trainer.step(xj, yj)) for _ in range(3)]
    np.testing.assert_allclose(jax_losses, torch_losses, rtol=F64_RTOL)
    for name, value in parity.to_torch_state_dict(trainer.params).items():
        np.testing.assert_allclose(value, torch_model.state_dict()[name], rtol=F64_RTOL, atol=F64_ATOL, err_msg=name)
