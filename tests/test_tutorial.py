"""The LeNet walk-through (seed files 000 to 003), the op chain read from the jaxpr, and the CLI."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxnets
from jaxnets import cli
from jaxnets._programs import host_cpu_id
from jaxnets.losses import mse_loss
from jaxnets.models import format_chain, op_chain
from jaxnets.tutorials import lenet as tutorial

# The tutorial's grad_fn diagram, in JAX's names.
LENET_MSE_CHAIN = [
    "conv2d", "relu", "max_pool2d", "conv2d", "relu", "max_pool2d", "view",
    "linear", "relu", "linear", "relu", "linear", "mse_loss",
]  # fmt: skip


@pytest.mark.parametrize("kernel_size", [5, 3], ids=["files000to002", "file003"])
def test_tutorial_walkthrough_reproduces_every_step(kernel_size, capsys):
    res = tutorial.walkthrough(kernel_size, random_target=kernel_size == 3, steps=4)
    out = capsys.readouterr().out
    assert res["num_params"] == 10
    assert res["conv1_kernel_shape"] == (kernel_size, kernel_size, 1, 6)
    assert res["out"].shape == (1, 10) and np.abs(res["out"]).max() < 1  # small logits from torch's init
    assert res["chain"] == LENET_MSE_CHAIN
    assert res["bias_grad"].shape == (6,) and np.abs(res["bias_grad"]).max() > 0
    assert res["vjp_bias_grad"].shape == (6,) and not np.allclose(res["vjp_bias_grad"], res["bias_grad"])
    before, after = res["manual_sgd_losses"]
    assert after < before
    assert res["sgd_losses"][0] == pytest.approx(before, rel=1e-5)
    assert res["sgd_losses"][1] == pytest.approx(after, rel=1e-4)  # optim.sgd == the hand-written step
    assert res["sgd_losses"][-1] < res["sgd_losses"][0]
    assert min(res["adam_losses"]) < res["adam_losses"][0]
    if kernel_size == 5:  # target 1..10 against near-zero outputs: about mean(k^2) = 38.5
        assert 30 < res["loss"] < 47
    for heading in ["Define the network", "Learnable parameters", "Forward pass", "random gradient",
                    "Loss function", "computation graph", "Backprop", "Update the weights by hand",
                    "optimizer loop: sgd", "optimizer loop: adam"]:  # fmt: skip
        assert heading in out
    assert "conv1.bias gradient before backward: [0. 0. 0. 0. 0. 0.]" in out
    assert "input -> conv2d -> relu -> max_pool2d" in out


def test_tutorial_bias_gradient_equals_a_finite_difference(x64):
    res = tutorial.walkthrough(5, seed=1, steps=1)  # float32, as in the tutorial
    # Central differences in float64, on the walk-through's own net, input and target.
    graphdef, params = nnx.split(jaxnets.LeNet(rngs=nnx.Rngs(1)), nnx.Param)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    x, target = (jnp.asarray(a, jnp.float64) for a in (res["input"], res["target"]))

    @jax.jit  # one compilation for the 12 evaluations
    def loss_with_bias(params, bias):
        net = nnx.merge(graphdef, params)
        net.conv1.bias[...] = bias
        return mse_loss(net(x), target)

    bias, eps = params["conv1"]["bias"][...], 1e-6
    loss_with_bias = functools.partial(loss_with_bias, params)
    fd = [(loss_with_bias(bias.at[i].add(eps)) - loss_with_bias(bias.at[i].add(-eps))) / (2 * eps) for i in range(6)]
    # float32 gradients against float64 differences: about 1e-6 relative apart.
    np.testing.assert_allclose(res["bias_grad"], np.asarray(fd), rtol=1e-4, atol=1e-6)


def test_op_chain_names_layers_and_sees_a_different_model():
    net = jaxnets.TwoLayerNet(4, 3, 2, rngs=nnx.Rngs(0))
    chain = op_chain(lambda x: jax.jit(mse_loss)(net(x), jnp.zeros(2)), jnp.ones((5, 4)))
    assert chain == ["linear", "clamp_min", "linear", "mse_loss"]
    assert format_chain(["a", "b", "c"], per_line=2) == "input -> a -> b\n      -> c"


def test_tutorial_main_runs_both_parts(capsys):
    assert tutorial.main(["--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "# LeNet with 5x5 kernels (seed files 000 to 002)" in out
    assert "# LeNet with 3x3 kernels (seed files 003)" in out
    assert "(fc1): Linear(576 -> 120)" in out and "(fc1): Linear(400 -> 120)" in out


def test_cli_dispatches_and_rejects_unknown_commands(capsys):
    assert cli.main([]) == 0 and "tutorial" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'; expected one of tutorial, progression" in err


def test_cli_runs_as_a_module_in_a_fresh_process_and_fills_the_compilation_cache(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXNETS_CACHE_DIR": str(tmp_path / "xla")}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnets", "progression", "--stage", "2", "--steps", "100"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "stage 2: jax.numpy, hand-written backward, jit" in proc.stdout and "  99 " in proc.stdout
    # compiled programs were kept for the next run, in this CPU's directory (jaxnets._cache)
    assert any((tmp_path / "xla" / f"cpu-{host_cpu_id()}").iterdir())
