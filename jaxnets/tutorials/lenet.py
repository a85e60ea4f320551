"""PyTorch's "Neural Networks" tutorial (LeNet), step by step, with its JAX counterparts.

Run ``python -m jaxnets.tutorial`` (or ``jaxnets tutorial``). Part 1 follows
files 000 to 002 of the seeds (5x5 kernels, target ``1..10``), part 2 file 003
(3x3 kernels, a random target). Every step prints the PyTorch line it replaces,
the JAX line, and the result.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import optim
from .._cache import enable_compilation_cache
from ..losses import mse_loss
from ..models._graph import format_chain, op_chain
from ..models._lenet import LeNet
from ..models._summary import summary
from ..training.trainer import Trainer


def _show(title: str, torch_code: str, jax_code: str, result) -> None:
    print(f"\n## {title}")
    for line in torch_code.strip().splitlines():
        print(f"  torch> {line}")
    for line in jax_code.strip().splitlines():
        print(f"  jax>   {line}")
    print("  " + str(result).replace("\n", "\n  "))


def _fmt(a) -> str:
    return np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=100)


def walkthrough(kernel_size: int = 5, *, random_target: bool = False, seed: int = 0, steps: int = 5) -> dict:
    """Run the tutorial once and print every step; return the numbers it printed.

    Args:
      kernel_size: 5 for files 000 to 002, 3 for file 003.
      random_target: file 003's ``torch.randn(10)`` target instead of ``arange(1, 11)``.
      seed: seeds the weights, the input, the cotangent and the target.
      steps: optimizer steps shown for SGD and for Adam.

    Returns:
      A dict with the results, for tests: ``num_params``, ``conv1_kernel_shape``,
      ``input``, ``out``, ``target``, ``loss``, ``chain``, ``bias_grad``,
      ``sgd_losses``, ``adam_losses``...
    """
    k_in, k_cot, k_target = jax.random.split(jax.random.key(seed), 3)
    res: dict = {}

    net = LeNet(kernel_size=kernel_size, rngs=nnx.Rngs(seed))
    _show(
        "Define the network",
        "net = Net()\nprint(net)",
        f"net = jaxnets.LeNet(kernel_size={kernel_size}, rngs=nnx.Rngs({seed}))\nprint(jaxnets.summary(net))",
        summary(net),
    )

    graphdef, params = nnx.split(net, nnx.Param)
    leaves = jax.tree.leaves(params)
    res["num_params"] = len(leaves)
    res["conv1_kernel_shape"] = tuple(net.conv1.kernel.shape)
    _show(
        "Learnable parameters",
        "params = list(net.parameters())\nprint(len(params)); print(params[0].size())",
        "params = nnx.state(net, nnx.Param)\nprint(len(jax.tree.leaves(params))); print(net.conv1.kernel.shape)",
        f"{len(leaves)}\n{res['conv1_kernel_shape']}  (HWIO; torch's OIHW is (6, 1, {kernel_size}, {kernel_size}))",
    )

    x = jax.random.normal(k_in, (1, 32, 32, 1))  # NHWC; torch's (1, 1, 32, 32) is NCHW.
    out = net(x)
    res["input"], res["out"] = x, np.asarray(out)
    _show(
        "Forward pass on a random 32x32 image",
        "input = torch.randn(1, 1, 32, 32)\nout = net(input)",
        "input = jax.random.normal(key, (1, 32, 32, 1))\nout = net(input)",
        _fmt(out),
    )

    def forward(p):
        return nnx.merge(graphdef, p)(x)

    cotangent = jax.random.normal(k_cot, (1, 10))
    _, vjp_fn = jax.vjp(forward, params)
    (vjp_grads,) = vjp_fn(cotangent)
    res["vjp_bias_grad"] = np.asarray(vjp_grads["conv1"]["bias"][...])
    _show(
        "Backward pass with a random gradient (a vector-Jacobian product)",
        "net.zero_grad()\nout.backward(torch.randn(1, 10))",
        "out, vjp_fn = jax.vjp(forward, params)\ngrads, = vjp_fn(jax.random.normal(key, (1, 10)))",
        "conv1.bias gradient: " + _fmt(res["vjp_bias_grad"]),
    )

    if random_target:
        target = jax.random.normal(k_target, (10,)).reshape(1, -1)
        t_torch, t_jax = (
            "target = torch.randn(10).view(1, -1)",
            "target = jax.random.normal(key, (10,)).reshape(1, -1)",
        )
    else:
        target = jnp.arange(1, 11, dtype=jnp.float32)
        t_torch, t_jax = "target = torch.arange(1, 11)", "target = jnp.arange(1, 11, dtype=jnp.float32)"

    def loss_of(p):
        # jax.jit gives the loss a name in the jaxpr, so op_chain shows "mse_loss".
        return jax.jit(mse_loss)(nnx.merge(graphdef, p)(x), target)

    loss = loss_of(params)
    res["target"], res["loss"] = target, float(loss)
    _show(
        "Loss function",
        f"{t_torch}\ncriterion = nn.MSELoss()\nloss = criterion(output, target)",
        f"{t_jax}\nloss = jaxnets.losses.mse_loss(net(input), target)",
        f"{float(loss):.4f}",
    )

    res["chain"] = op_chain(loss_of, params)
    _show(
        "The computation graph",
        "print(loss.grad_fn); print(loss.grad_fn.next_functions[0][0]) ...",
        "jaxnets.graph.op_chain(loss_of, params)  # read from the jaxpr",
        format_chain(res["chain"]),
    )

    grads = jax.grad(loss_of)(params)
    before = jnp.zeros_like(params["conv1"]["bias"][...])
    res["bias_grad"] = np.asarray(grads["conv1"]["bias"][...])
    _show(
        "Backprop",
        "net.zero_grad()\nprint(net.conv1.bias.grad)\nloss.backward()\nprint(net.conv1.bias.grad)",
        "# JAX keeps no .grad buffers: gradients are values, so there is nothing to zero.\n"
        "grads = jax.grad(loss_of)(params)\nprint(grads['conv1']['bias'])",
        f"conv1.bias gradient before backward: {_fmt(before)}\n"
        f"conv1.bias gradient after backward:  {_fmt(res['bias_grad'])}",
    )

    learning_rate = 0.01
    updated = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
    res["manual_sgd_losses"] = (res["loss"], float(loss_of(updated)))
    _show(
        "Update the weights by hand",
        "for f in net.parameters():\n    f.data.sub_(f.grad.data * learning_rate)",
        "params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)",
        "loss before and after one step: {:.4f} -> {:.4f}".format(*res["manual_sgd_losses"]),
    )

    criterion = lambda m, x, t: mse_loss(m(x), t)
    for name, tx, torch_line in [
        ("sgd", optim.sgd(lr=0.01), "optimizer = optim.SGD(net.parameters(), lr=0.01)"),
        ("adam", optim.adam(lr=0.01), "optimizer = optim.Adam(net.parameters(), lr=0.01)"),
    ]:
        trainer = Trainer(nnx.merge(graphdef, params), tx, criterion)
        losses = [float(trainer.step(x, target)) for _ in range(steps)]
        res[f"{name}_losses"] = losses
        _show(
            f"The optimizer loop: {name}",
            f"{torch_line}\noptimizer.zero_grad(); loss = criterion(net(input), target)\n"
            "loss.backward(); optimizer.step()",
            f"trainer = jaxnets.Trainer(net, jaxnets.optim.{name}(lr=0.01), criterion)\n"
            "loss = trainer.step(input, target)  # one compiled step",
            "losses: " + ", ".join(f"{v:.4f}" for v in losses),
        )
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxnets.tutorial",
        description='Walk through PyTorch\'s "Neural Networks" tutorial (LeNet) in JAX, step by step.',
    )
    parser.add_argument(
        "--kernel-size",
        type=int,
        choices=(3, 5),
        action="append",
        help="run only the 5x5 net (files 000-002) or the 3x3 net (file 003); default: both",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and random inputs (default: 0)")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps to show (default: 5)")
    args = parser.parse_args(argv)
    enable_compilation_cache()
    if args.steps < 1:
        parser.error(f"--steps must be positive; got {args.steps}")
    for k in args.kernel_size or (5, 3):
        files = "000 to 002" if k == 5 else "003"
        print(f"\n# LeNet with {k}x{k} kernels (seed files {files})")
        walkthrough(k, random_target=(k == 3), seed=args.seed, steps=args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
