"""parity.torch_models: the seeds' PyTorch code reproduces the seeds, and its loops agree with each other and jaxnets."""

import copy
import random

import numpy as np
import pytest
import torch
from tolerances import F64_ATOL, F64_RTOL

from jaxnets.models._lenet import flat_features
from jaxnets.tutorials import progression
from parity import torch_models as tm


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The tutorial's matmuls (64x1000 by 1000x100) are too small for threads to pay
    # off, and spinning OpenMP workers slow down tenfold when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randn(*shape, dtype=torch.float32, seed=0):
    """``torch.randn`` from its own generator: reproducible, and the global torch RNG stays untouched."""
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def seeded(make, seed=0):
    """``make()`` under ``torch.manual_seed(seed)``, leaving the global torch RNG as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


# -- Net (seeds 000 to 003) ----------------------------------------------------------------------

SEED_001_PRINT = """\
Net(
  (conv1): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))
  (conv2): Conv2d(6, 16, kernel_size=(5, 5), stride=(1, 1))
  (fc1): Linear(in_features=400, out_features=120, bias=True)
  (fc2): Linear(in_features=120, out_features=84, bias=True)
  (fc3): Linear(in_features=84, out_features=10, bias=True)
)"""

SEED_003_PRINT = """\
Net(
  (conv1): Conv2d(1, 6, kernel_size=(3, 3), stride=(1, 1))
  (conv2): Conv2d(6, 16, kernel_size=(3, 3), stride=(1, 1))
  (fc1): Linear(in_features=576, out_features=120, bias=True)
  (fc2): Linear(in_features=120, out_features=84, bias=True)
  (fc3): Linear(in_features=84, out_features=10, bias=True)
)"""


@pytest.mark.parametrize(
    "kernel_size,expected", [(5, SEED_001_PRINT), (3, SEED_003_PRINT)], ids=["5x5-seed001", "3x3-seed003"]
)
def test_net_prints_like_the_seeds_print_net(kernel_size, expected):
    assert str(tm.Net(kernel_size=kernel_size)) == expected


@pytest.mark.parametrize("kernel_size", [5, 3], ids=["5x5", "3x3"])
def test_net_has_the_seeds_ten_parameters_conv1_weight_first(kernel_size):
    params = list(tm.Net(kernel_size=kernel_size).parameters())
    assert len(params) == 10
    assert params[0].size() == torch.Size([6, 1, kernel_size, kernel_size])


@pytest.mark.parametrize(
    "kernel_size,image_size,flat",
    [(5, 32, 400), (3, 32, 576), (5, 28, 256), (5, 16, 16), (3, 10, 16)],
    ids=["5x5-32px-seeds000to002", "3x3-32px-seed003", "5x5-28px", "5x5-smallest", "3x3-smallest"],
)
def test_net_fc1_input_follows_kernel_and_image_size_like_jaxnets(kernel_size, image_size, flat):
    net = tm.Net(kernel_size=kernel_size, image_size=image_size)
    assert net.fc1.in_features == flat == flat_features(kernel_size, image_size)
    assert net(randn(3, 1, image_size, image_size)).shape == (3, 10)


def test_net_takes_other_channel_and_class_counts():
    net = tm.Net(in_channels=3, num_classes=7)
    assert net.conv1.in_channels == 3
    assert net(randn(2, 3, 32, 32)).shape == (2, 7)


def test_net_flattens_in_torchs_channel_height_width_order():
    # fc1 sees x.view(-1, 16*5*5) of the (N, 16, 5, 5) pooled map: feature c*25 + h*5 + w.
    net = seeded(tm.Net).double()
    x = randn(2, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        pooled = torch.nn.functional.max_pool2d(
            torch.relu(net.conv2(torch.nn.functional.max_pool2d(torch.relu(net.conv1(x)), 2))), 2
        )
        head = lambda v: net.fc3(torch.relu(net.fc2(torch.relu(net.fc1(v)))))
        assert torch.equal(net(x), head(pooled.reshape(2, 400)))
        assert not torch.allclose(net(x), head(pooled.permute(0, 2, 3, 1).reshape(2, 400)))


@pytest.mark.parametrize("kernel_size,image_size", [(5, 15), (3, 9)], ids=["5x5-15px", "3x3-9px"])
def test_net_rejects_images_too_small_for_two_conv_pool_stages(kernel_size, image_size):
    with pytest.raises(ValueError, match=rf"`image_size={image_size}` is too small.*image_size >= {image_size + 1}"):
        tm.Net(kernel_size=kernel_size, image_size=image_size)


# -- TwoLayerNet, the Sequential, DynamicNet (seed 004) ------------------------------------------


def test_two_layer_net_is_linear2_of_linear1_clamped_at_zero():
    net = seeded(lambda: tm.TwoLayerNet(20, 8, 3)).double()
    x = randn(5, 20, dtype=torch.float64)
    w1, b1, w2, b2 = (p.detach() for p in (net.linear1.weight, net.linear1.bias, net.linear2.weight, net.linear2.bias))
    h = x @ w1.T + b1
    expected = torch.where(h > 0, h, 0.0) @ w2.T + b2
    torch.testing.assert_close(net(x).detach(), expected, rtol=F64_RTOL, atol=F64_ATOL)


def test_two_layer_sequential_is_the_seeds_linear_relu_linear():
    model = tm.two_layer_sequential(1000, 100, 10)
    assert [type(m) for m in model] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert (model[0].in_features, model[0].out_features, model[2].out_features) == (1000, 100, 10)
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]


def _dynamic_by_hand(net, x, depth):
    h = net.input_linear(x).clamp(min=0)
    for _ in range(depth):
        h = net.middle_linear(h).clamp(min=0)
    return net.output_linear(h)


def test_dynamic_net_depth_zero_is_output_linear_of_clamped_input_linear():
    net = seeded(lambda: tm.DynamicNet(20, 8, 3))
    x = randn(5, 20)
    with torch.no_grad():
        assert torch.equal(net(x, 0), net.output_linear(net.input_linear(x).clamp(min=0)))


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_dynamic_net_applies_the_shared_middle_linear_depth_times(depth):
    net = seeded(lambda: tm.DynamicNet(20, 8, 3))
    x = randn(5, 20)
    with torch.no_grad():
        outputs = {d: net(x, d) for d in range(4)}
        assert torch.equal(outputs[depth], _dynamic_by_hand(net, x, depth))
        assert all(not torch.equal(outputs[depth], outputs[d]) for d in range(4) if d != depth)


def test_dynamic_net_without_depth_draws_random_randint_like_the_seed():
    net = seeded(lambda: tm.DynamicNet(20, 8, 3))
    x = randn(5, 20)
    state = random.getstate()
    try:
        random.seed(1234)
        with torch.no_grad():
            drawn = [net(x) for _ in range(20)]
        random.seed(1234)
        depths = [random.randint(0, 3) for _ in range(20)]
    finally:
        random.setstate(state)
    assert set(depths) == {0, 1, 2, 3}
    with torch.no_grad():
        assert all(torch.equal(out, net(x, d)) for out, d in zip(drawn, depths, strict=True))


@pytest.mark.parametrize("depth", [-1, 4])
def test_dynamic_net_rejects_depth_outside_zero_to_max_depth(depth):
    with pytest.raises(ValueError, match=rf"`depth` must be in 0..3; got {depth}"):
        tm.DynamicNet(20, 8, 3)(randn(2, 20), depth)


# -- the loops of seed 004 -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return progression.make_data(0)


@pytest.fixture(scope="module")
def curves(data):
    """Every block's 500-step loss curve on the same data; blocks 2 and 3 in float64 and in the seed's float32."""
    d = data
    seq = seeded(lambda: tm.two_layer_sequential(1000, 100, 10))
    seq_adam = copy.deepcopy(seq)
    net, dyn = seeded(lambda: tm.TwoLayerNet(1000, 100, 10)), seeded(lambda: tm.DynamicNet(1000, 100, 10))
    depths = np.random.default_rng(0).integers(0, 4, 500)  # the seed's random.randint(0, 3), fixed
    return {
        "numpy": tm.numpy_loop(d.x, d.y, d.w1, d.w2),
        "tensor64": tm.tensor_manual_loop(d.x, d.y, d.w1, d.w2),
        "autograd64": tm.autograd_loop(d.x, d.y, d.w1, d.w2),
        "tensor32": tm.tensor_manual_loop(d.x, d.y, d.w1, d.w2, dtype=torch.float32),
        "autograd32": tm.autograd_loop(d.x, d.y, d.w1, d.w2, dtype=torch.float32),
        "sequential_manual": tm.sequential_manual_loop(seq, d.x, d.y),
        "adam": tm.optim_loop(seq_adam, torch.optim.Adam(seq_adam.parameters(), lr=1e-4), d.x, d.y),
        "two_layer_sgd": tm.optim_loop(net, torch.optim.SGD(net.parameters(), lr=1e-4), d.x, d.y),
        "dynamic": tm.optim_loop(
            dyn, torch.optim.SGD(dyn.parameters(), lr=1e-4, momentum=0.9), d.x, d.y, depths=depths
        ),
    }


# The seed prints, at step 499: block 1 (NumPy) about 4e-7 (4.0e-7 at step 480), blocks 2
# to 6 (torch float32) 5.2e-5, 2.2e-5, 9.6e-7, 7.9e-8 and 9.4e-7; block 7 (DynamicNet)
# 0.69 with swings to 19. Initial losses: 3e7 for the bias-free net (randn weights),
# several hundred with PyTorch's init. On this data block 1 ends at 5e-7, blocks 2 and 3
# at 4e-5, 4 and 6 at 9e-6, Adam at 2e-9.
@pytest.mark.parametrize(
    "name,first_above",
    [
        ("numpy", 1e6),
        ("tensor32", 1e6),
        ("autograd32", 1e6),
        ("sequential_manual", 100),
        ("adam", 100),
        ("two_layer_sgd", 100),
    ],
    ids=[
        "block1-numpy",
        "block2-tensors",
        "block3-autograd",
        "block4-sequential",
        "block5-adam",
        "block6-two-layer-net",
    ],
)
def test_loop_brings_the_loss_down_to_the_seeds_magnitude(curves, name, first_above):
    losses = curves[name]
    assert losses.shape == (500,) and losses.dtype == np.float64 and np.isfinite(losses).all()
    assert losses[0] > first_above
    assert losses[-1] < 1e-3
    assert losses[-1] < 1e-6 * losses[0]


def test_optim_loop_dynamic_net_learns_despite_changing_depth(curves):
    losses = curves["dynamic"]
    assert np.isfinite(losses).all() and losses[0] > 100
    assert np.median(losses[-50:]) < 5  # the seed prints 0.69 at step 499, 19 at step 99
    assert np.median(losses[-50:]) < np.median(losses[:50]) / 50


@pytest.mark.parametrize("name", ["tensor64", "autograd64"], ids=["block2-tensors", "block3-autograd"])
def test_bias_free_torch_loops_equal_the_numpy_loop_in_float64(curves, name):
    # Near convergence the loss is a sum of squared tiny residuals (1e-7 after 500
    # steps, from 3e7): a relative bound alone would be too sharp there, hence the floor.
    np.testing.assert_allclose(curves[name], curves["numpy"], rtol=F64_RTOL, atol=F64_ATOL)


def test_numpy_loop_equals_jaxnets_progression_numpy_manual(curves, data):
    np.testing.assert_allclose(curves["numpy"], progression.numpy_manual(500, data=data), rtol=F64_RTOL, atol=F64_ATOL)


def test_manual_grads_equal_autograd_grads_and_the_first_loss_in_float64(data, curves):
    d = data
    manual, auto = tm.manual_grads(d.x, d.y, d.w1, d.w2), tm.autograd_grads(d.x, d.y, d.w1, d.w2)
    assert [g.shape for g in manual] == [(), (1000, 100), (100, 10)]
    assert all(g.dtype == torch.float64 for g in manual + auto)
    for m, a in zip(manual, auto, strict=True):
        torch.testing.assert_close(m, a, rtol=F64_RTOL, atol=F64_ATOL)
    np.testing.assert_allclose(manual[0].item(), curves["numpy"][0], rtol=F64_RTOL)
    # One hand-written NumPy gradient step from the same weights lands where numpy_loop's second loss says.
    w1, w2 = d.w1 - 1e-6 * manual[1].numpy(), d.w2 - 1e-6 * manual[2].numpy()
    np.testing.assert_allclose(np.square(np.maximum(d.x @ w1, 0) @ w2 - d.y).sum(), curves["numpy"][1], rtol=F64_RTOL)


def test_sequential_manual_loop_equals_optim_loop_with_sgd_in_float64(data):
    # The same init in both models, the same update rule: block 4's hand-written update
    # is what optim.SGD does in block 6 (ReLU and clamp differ only at exactly 0).
    seq = seeded(lambda: tm.two_layer_sequential(1000, 100, 10)).double()
    net = tm.TwoLayerNet(1000, 100, 10).double()
    net.load_state_dict(
        {
            "linear1.weight": seq[0].weight,
            "linear1.bias": seq[0].bias,
            "linear2.weight": seq[2].weight,
            "linear2.bias": seq[2].bias,
        }
    )
    a = tm.sequential_manual_loop(seq, data.x, data.y, steps=100)
    b = tm.optim_loop(net, torch.optim.SGD(net.parameters(), lr=1e-4), data.x, data.y, steps=100)
    np.testing.assert_allclose(a, b, rtol=F64_RTOL, atol=F64_ATOL)
    assert a[-1] < 1e-2 * a[0]


def test_optim_loop_follows_the_given_depths():
    # With depth 0 at every step, DynamicNet trains exactly like a TwoLayerNet holding
    # input_linear and output_linear, and middle_linear never moves.
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((16, 20)), rng.standard_normal((16, 3))
    dyn = seeded(lambda: tm.DynamicNet(20, 8, 3)).double()
    net = tm.TwoLayerNet(20, 8, 3).double()
    net.linear1.load_state_dict(dyn.input_linear.state_dict())
    net.linear2.load_state_dict(dyn.output_linear.state_dict())
    middle = dyn.middle_linear.weight.detach().clone()
    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    a = tm.optim_loop(dyn, sgd(dyn), x, y, steps=20, depths=[0] * 20)
    b = tm.optim_loop(net, sgd(net), x, y, steps=20)
    np.testing.assert_allclose(a, b, rtol=F64_RTOL, atol=F64_ATOL)
    assert torch.equal(dyn.middle_linear.weight, middle)
    deeper = seeded(lambda: tm.DynamicNet(20, 8, 3)).double()
    assert not np.allclose(tm.optim_loop(deeper, sgd(deeper), x, y, steps=20, depths=[3] * 20), a)


def test_optim_loop_set_to_none_decides_whether_momentum_moves_a_skipped_middle_linear():
    # Step 0 runs depth 1, step 1 depth 0. With set_to_none=True (torch >= 2's default)
    # middle_linear has no gradient at step 1 and SGD skips it; with False (the seed's
    # torch, and what an optax optimizer fed zero gradients does) momentum moves it.
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((16, 20)), rng.standard_normal((16, 3))
    base = seeded(lambda: tm.DynamicNet(20, 8, 3))
    runs = {}
    for steps, set_to_none in [(1, True), (2, True), (2, False)]:
        net = copy.deepcopy(base)
        losses = tm.optim_loop(
            net,
            torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9),
            x,
            y,
            steps=steps,
            depths=[1, 0],
            set_to_none=set_to_none,
        )
        runs[steps, set_to_none] = losses, net.middle_linear.weight.detach()
    assert torch.equal(runs[2, True][1], runs[1, True][1])
    assert not torch.allclose(runs[2, False][1], runs[1, True][1])
    np.testing.assert_array_equal(runs[2, True][0], runs[2, False][0])  # step 1 does not read middle_linear


@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "torch"])
def test_loops_copy_their_inputs_and_never_modify_them(data, as_tensor):
    convert = torch.from_numpy if as_tensor else lambda a: a  # from_numpy shares memory with `data`
    x, y, w1, w2 = inputs = [convert(np.array(a, copy=True)) for a in (data.x, data.y, data.w1, data.w2)]
    before = [np.array(a.numpy() if as_tensor else a, copy=True) for a in inputs]
    tm.numpy_loop(x, y, w1, w2, steps=3)
    tm.tensor_manual_loop(x, y, w1, w2, steps=3)
    tm.autograd_loop(x, y, w1, w2, steps=3)
    tm.manual_grads(x, y, w1, w2)[1].zero_()
    tm.autograd_grads(x, y, w1, w2)[1].zero_()
    seq = tm.two_layer_sequential(1000, 100, 10).double()
    tm.sequential_manual_loop(seq, x, y, steps=3)
    tm.optim_loop(seq, torch.optim.SGD(seq.parameters(), lr=1e-4), x, y, steps=3)
    for a, b in zip(inputs, before, strict=True):
        np.testing.assert_array_equal(a.numpy() if as_tensor else a, b)


def test_loops_accept_float32_torch_inputs_without_touching_them():
    w1 = randn(1000, 100)
    kept = w1.clone()
    tm.tensor_manual_loop(
        randn(64, 1000, seed=1), randn(64, 10, seed=2), w1, randn(100, 10, seed=3), steps=2, dtype=torch.float32
    )
    assert torch.equal(w1, kept)


@pytest.mark.parametrize("steps", [-1, 2.0, True], ids=["negative", "float", "bool"])
def test_loops_reject_bad_steps(data, steps):
    with pytest.raises(ValueError, match=r"`steps` must be an int >= 0"):
        tm.numpy_loop(data.x, data.y, data.w1, data.w2, steps=steps)


def test_optim_loop_rejects_fewer_depths_than_steps():
    net = tm.DynamicNet(20, 8, 3)
    with pytest.raises(ValueError, match=r"a depth for each of the 5 steps; got 2"):
        tm.optim_loop(
            net, torch.optim.SGD(net.parameters(), lr=1e-3), randn(4, 20), randn(4, 3, seed=1), steps=5, depths=[0, 1]
        )
