"""The seven stages of "Learning PyTorch with examples", each a function returning its loss curve.

The tutorial fits random data ``x (64, 1000) -> y (64, 10)`` with a two-layer
ReLU network seven ways. Each stage here is the JAX counterpart of one of its
code blocks and returns the loss of every step as a NumPy array:

1. :func:`numpy_manual`: NumPy, hand-written forward and backward (no biases, lr 1e-6).
2. :func:`jax_manual`: the same in ``jax.numpy``, jitted (torch: Tensors by hand).
3. :func:`jax_autograd`: ``jax.grad`` instead of the hand-written backward (torch: autograd).
4. :func:`sequential_manual`: :func:`jaxnets.two_layer_sequential`, MSE (sum), hand-written update, lr 1e-4.
5. :func:`sequential_adam`: the same model with :func:`jaxnets.optim.adam`, lr 1e-4.
6. :func:`two_layer_sgd`: :class:`jaxnets.TwoLayerNet` with :func:`jaxnets.optim.sgd`, lr 1e-4.
7. :func:`dynamic_sgd`: :class:`jaxnets.DynamicNet`, SGD with momentum 0.9, a random depth 0..3 per step.

Stages 2 to 7 run all their steps as one compiled ``lax.scan``. Run them from
the command line with ``python -m jaxnets.progression`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import optim
from .._cache import enable_compilation_cache
from ..losses import mse_loss
from ..models._dynamic import DynamicNet
from ..models._two_layer import TwoLayerNet, two_layer_sequential
from ..training.trainer import Trainer

N, D_IN, H, D_OUT = 64, 1000, 100, 10
"""The tutorial's batch size, input, hidden and output sizes."""


@dataclass(frozen=True)
class Data:
    """Inputs, targets and the bias-free weights of stages 1 to 3, as float64 NumPy arrays.

    Shapes: ``x (n, d_in)``, ``y (n, d_out)``, ``w1 (d_in, hidden)``, ``w2 (hidden, d_out)``.
    """

    x: np.ndarray
    y: np.ndarray
    w1: np.ndarray
    w2: np.ndarray


def make_data(seed: int = 0, n: int = N, d_in: int = D_IN, hidden: int = H, d_out: int = D_OUT) -> Data:
    """Standard-normal ``x, y, w1, w2`` like the tutorial's ``randn`` calls, from one NumPy seed."""
    rng = np.random.default_rng(seed)
    return Data(
        x=rng.standard_normal((n, d_in)),
        y=rng.standard_normal((n, d_out)),
        w1=rng.standard_normal((d_in, hidden)),
        w2=rng.standard_normal((hidden, d_out)),
    )


def numpy_manual(steps: int = 500, lr: float = 1e-6, *, data: Data | None = None, seed: int = 0) -> np.ndarray:
    """Stage 1: NumPy only, forward and backward by hand, float64.

    Returns:
      The loss ``sum((y_pred - y)**2)`` before each of the ``steps`` updates.
    """
    d = data or make_data(seed)
    x, y, w1, w2 = d.x, d.y, d.w1.copy(), d.w2.copy()
    losses = np.empty(steps)
    for t in range(steps):
        h = x.dot(w1)
        h_relu = np.maximum(h, 0)
        y_pred = h_relu.dot(w2)
        losses[t] = np.square(y_pred - y).sum()

        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.T.dot(grad_y_pred)
        grad_h = grad_y_pred.dot(w2.T)
        grad_h[h < 0] = 0
        grad_w1 = x.T.dot(grad_h)

        w1 -= lr * grad_w1
        w2 -= lr * grad_w2
    return losses


def _bias_free_loss(w, x, y):
    w1, w2 = w
    return jnp.sum((jnp.maximum(x @ w1, 0) @ w2 - y) ** 2)


def _manual_grads(w, x, y):
    """The tutorial's hand-written backward pass for the bias-free two-layer net."""
    w1, w2 = w
    h = x @ w1
    h_relu = jnp.maximum(h, 0)
    y_pred = h_relu @ w2
    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h_relu.T @ grad_y_pred
    grad_h = jnp.where(h < 0, 0, grad_y_pred @ w2.T)  # torch: grad_h[h < 0] = 0
    grad_w1 = x.T @ grad_h
    return jnp.sum((y_pred - y) ** 2), (grad_w1, grad_w2)


def _sgd_update(grad_fn, lr):
    """One plain SGD step of the bias-free net, on weights carried as ``(w1.T, w2)``.

    ``grad_fn(w, x, y) -> (loss, grads)`` sees the tutorial's ``w1 (d_in, hidden)``;
    the loops carry ``w1`` transposed, as ``(hidden, d_in)``: PyTorch's
    ``nn.Linear`` weight layout. The numbers do not change (bit for bit in float32
    on this project's machine; the tests compare in float64). XLA:CPU runs the
    loop faster this way: at the tutorial's shapes, measured 99 against 118 us a
    step for both the hand-written and the autograd stage. PyTorch's eager loop
    gains nothing from the same change (217 us with it, 214 us without).
    """

    def update(carry, x, y):
        w1t, w2 = carry
        loss, (g1, g2) = grad_fn((w1t.T, w2), x, y)
        return (w1t - lr * g1.T, w2 - lr * g2), loss

    return update


def _sgd_loop(grad_fn, steps, lr):
    """A jitted ``loop(w, x, y) -> (w, losses)``: ``steps`` steps of :func:`_sgd_update` in one ``lax.scan``.

    ``w = (w1, w2)`` goes in and comes out in the tutorial's layout; ``losses``
    holds the loss before each update.
    """
    update = _sgd_update(grad_fn, lr)

    @jax.jit
    def loop(w, x, y):
        (w1t, w2), losses = jax.lax.scan(lambda c, _: update(c, x, y), (w[0].T, w[1]), length=steps)
        return (w1t.T, w2), losses

    return loop


def _bias_free_loop(grad_fn, steps, lr, data, seed, dtype):
    d = data or make_data(seed)
    x, y, w1, w2 = (jnp.asarray(a, dtype) for a in (d.x, d.y, d.w1, d.w2))
    return np.asarray(_sgd_loop(grad_fn, steps, lr)((w1, w2), x, y)[1])


def jax_manual(
    steps: int = 500, lr: float = 1e-6, *, data: Data | None = None, seed: int = 0, dtype=jnp.float32
) -> np.ndarray:
    """Stage 2: ``jax.numpy`` with the hand-written backward, jitted (torch: "Tensors")."""
    return _bias_free_loop(_manual_grads, steps, lr, data, seed, dtype)


def jax_autograd(
    steps: int = 500, lr: float = 1e-6, *, data: Data | None = None, seed: int = 0, dtype=jnp.float32
) -> np.ndarray:
    """Stage 3: ``jax.value_and_grad`` replaces the hand-written backward (torch: "Autograd")."""
    return _bias_free_loop(jax.value_and_grad(_bias_free_loss), steps, lr, data, seed, dtype)


def _xy(data: Data | None, seed: int, dtype):
    d = data or make_data(seed)
    return jnp.asarray(d.x, dtype), jnp.asarray(d.y, dtype)


def _sum_mse(model, x, y, *args):
    return mse_loss(model(x, *args), y, reduction="sum")


def sequential_manual(
    steps: int = 500,
    lr: float = 1e-4,
    *,
    data: Data | None = None,
    seed: int = 0,
    model=None,
    dtype=jnp.float32,
) -> np.ndarray:
    """Stage 4: :func:`jaxnets.two_layer_sequential`, ``MSELoss(reduction='sum')``, ``param -= lr * grad`` by hand.

    Args:
      model: a model to train in place instead of a fresh one seeded with ``seed``.
    """
    x, y = _xy(data, seed, dtype)
    model = model or two_layer_sequential(D_IN, H, D_OUT, param_dtype=dtype, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)

    @jax.jit
    def loop(params):
        def step(params, _):
            loss, grads = jax.value_and_grad(lambda p: _sum_mse(nnx.merge(graphdef, p), x, y))(params)
            return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

        return jax.lax.scan(step, params, length=steps)

    params, losses = loop(params)
    nnx.update(model, params)
    return np.asarray(losses)


def _trained(model, tx, steps, x, y, per_step=(), loss_fn=_sum_mse) -> np.ndarray:
    trainer = Trainer(model, tx, loss_fn)
    losses = trainer.run(steps, x, y, per_step=per_step)
    trainer.model  # noqa: B018 - writes the trained weights back into `model`
    return np.asarray(losses)


def sequential_adam(
    steps: int = 500,
    lr: float = 1e-4,
    *,
    data: Data | None = None,
    seed: int = 0,
    model=None,
    dtype=jnp.float32,
) -> np.ndarray:
    """Stage 5: the Sequential model trained with :func:`jaxnets.optim.adam` (torch: ``optim.Adam``)."""
    x, y = _xy(data, seed, dtype)
    model = model or two_layer_sequential(D_IN, H, D_OUT, param_dtype=dtype, rngs=nnx.Rngs(seed))
    return _trained(model, optim.adam(lr=lr), steps, x, y)


def two_layer_sgd(
    steps: int = 500,
    lr: float = 1e-4,
    *,
    data: Data | None = None,
    seed: int = 0,
    model=None,
    dtype=jnp.float32,
) -> np.ndarray:
    """Stage 6: :class:`jaxnets.TwoLayerNet` trained with :func:`jaxnets.optim.sgd` (torch: custom ``nn.Module``)."""
    x, y = _xy(data, seed, dtype)
    model = model or TwoLayerNet(D_IN, H, D_OUT, param_dtype=dtype, rngs=nnx.Rngs(seed))
    return _trained(model, optim.sgd(lr=lr), steps, x, y)


def dynamic_sgd(
    steps: int = 500,
    lr: float = 1e-4,
    momentum: float = 0.9,
    *,
    data: Data | None = None,
    seed: int = 0,
    model=None,
    depths=None,
    dtype=jnp.float32,
) -> np.ndarray:
    """Stage 7: :class:`jaxnets.DynamicNet`, SGD with momentum, a new random depth 0..3 every step.

    Args:
      depths: the depth of every step, shape ``(steps,)``; drawn from
        ``jax.random.key(seed)`` inside the compiled loop when None.
    """
    x, y = _xy(data, seed, dtype)
    model = model or DynamicNet(D_IN, H, D_OUT, param_dtype=dtype, rngs=nnx.Rngs(seed))
    tx = optim.sgd(lr=lr, momentum=momentum)
    if depths is None:
        keys = jax.random.split(jax.random.key(seed), steps)
        loss_fn = lambda m, x, y, key: _sum_mse(m, x, y, m.random_depth(key))
        return _trained(model, tx, steps, x, y, per_step=(keys,), loss_fn=loss_fn)
    return _trained(model, tx, steps, x, y, per_step=(jnp.asarray(depths, jnp.int32),))


STAGES = {
    1: ("NumPy, hand-written backward", numpy_manual),
    2: ("jax.numpy, hand-written backward, jit", jax_manual),
    3: ("jax.grad", jax_autograd),
    4: ("two_layer_sequential, hand-written update", sequential_manual),
    5: ("jaxnets.optim.adam", sequential_adam),
    6: ("TwoLayerNet + jaxnets.optim.sgd", two_layer_sgd),
    7: ("DynamicNet + SGD momentum, random depth", dynamic_sgd),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxnets.progression",
        description='Run the stages of "Learning PyTorch with examples" in JAX and print their losses.',
    )
    parser.add_argument(
        "--stage",
        type=int,
        action="append",
        choices=sorted(STAGES),
        help="stage to run; repeat for several (default: all seven)",
    )
    parser.add_argument("--steps", type=int, default=500, help="steps per stage (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and weights (default: 0)")
    parser.add_argument("--every", type=int, default=100, help="print the loss every N steps (default: 100)")
    args = parser.parse_args(argv)
    enable_compilation_cache()
    if args.steps < 1 or args.every < 1:
        parser.error(f"--steps and --every must be positive; got {args.steps} and {args.every}")
    data = make_data(args.seed)
    for n in args.stage or sorted(STAGES):
        title, fn = STAGES[n]
        start = time.perf_counter()
        losses = fn(args.steps, data=data, seed=args.seed)
        print(f"stage {n}: {title} ({time.perf_counter() - start:.2f} s)")
        for t in range(args.every - 1, args.steps, args.every):
            print(f"  {t} {losses[t]:.6g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
