"""The models and optimizers of the parity matrix: torch reference, jaxnets twin, data, loss and dtype helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

import jaxnets
from jaxnets.tutorials import progression

from . import torch_models as tm
from .convert import load_torch_state_dict
from .layout import to_nhwc

# -- dtypes ---------------------------------------------------------------------------------------


def np_dtype(dtype: str):
    return {"float64": np.float64, "float32": np.float32}[dtype]


def torch_dtype(dtype: str) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[dtype]


def jax_dtype(dtype: str):
    return {"float64": jnp.float64, "float32": jnp.float32}[dtype]


def x64(dtype: str):
    """64-bit JAX for a float64 check, scoped to the calling thread and this block only."""
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def to_tensor(a, dtype: str) -> torch.Tensor:
    return torch.tensor(np.array(a, dtype=np_dtype(dtype), copy=True))


# -- models ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A torch reference model, its jaxnets twin, and the tutorial's data and loss for them.

    Attributes:
      name: the row's model name.
      torch_model: builds the torch module (float32, torch's default init).
      jax_model: ``(param_dtype) -> nnx.Module`` of the same architecture.
      x_shape: input shape in torch's layout (NCHW for images).
      out_features: outputs per example.
      reduction: of ``MSELoss``: ``"mean"`` (LeNet tutorial) or ``"sum"`` (seed 004).
      arange_target: the target is ``arange(1, out_features + 1)`` for every example
        (the LeNet tutorial's dummy target) instead of standard normal.
      depths: the depths a check runs at (``(None,)`` for a model without one).
    """

    name: str
    torch_model: Callable[[], torch.nn.Module]
    jax_model: Callable[[Any], nnx.Module]
    x_shape: tuple[int, ...]
    out_features: int
    reduction: str
    arange_target: bool = False
    depths: tuple = (None,)

    @property
    def images(self) -> bool:
        return len(self.x_shape) == 4

    def data(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, target)`` as float64 NumPy, ``x`` in torch's layout."""
        rng = np.random.default_rng([seed, 1])
        x = rng.standard_normal(self.x_shape)
        n = self.x_shape[0]
        if self.arange_target:
            target = np.broadcast_to(np.arange(1.0, self.out_features + 1), (n, self.out_features)).copy()
        else:
            target = rng.standard_normal((n, self.out_features))
        return x, target

    def torch_init(self, seed: int) -> dict[str, np.ndarray]:
        """torch's default initial weights under ``torch.manual_seed(seed)``, as NumPy copies."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module = self.torch_model()
        return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}

    def torch_module(self, init: dict, dtype: str) -> torch.nn.Module:
        module = self.torch_model()
        module.load_state_dict({k: torch.tensor(v) for k, v in init.items()}, strict=True)
        return module.to(torch_dtype(dtype))

    def jax_module(self, init: dict, dtype: str, load=load_torch_state_dict) -> nnx.Module:
        """The jaxnets twin holding ``init`` (call under :func:`x64` for float64).

        The model is built abstractly (``nnx.eval_shape``) and filled with zeros
        before ``load`` copies torch's weights in: running jaxnets' random
        initialisers eagerly compiles a small XLA program per parameter shape,
        seconds for a LeNet, only for the weights to be overwritten.
        """
        graphdef, state = nnx.split(nnx.eval_shape(lambda: self.jax_model(jax_dtype(dtype))))
        leaves = jax.tree.leaves(state)
        if not all(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in leaves):
            raise TypeError(f"{self.name}: parity fills only floating-point state; got {[s.dtype for s in leaves]}.")
        # jax.device_put, not jnp.asarray: in this JAX the latter stages NumPy input through a program per shape.
        module = nnx.merge(graphdef, jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), state))
        load(module, init)
        return module

    def jax_input(self, x: np.ndarray, dtype: str) -> jax.Array:
        x = np.asarray(x, np_dtype(dtype))
        return jax.device_put(to_nhwc(x) if self.images else x)  # (N, C, H, W) -> (N, H, W, C)

    def torch_apply(self, module, x, depth):
        return module(x) if depth is None else module(x, depth)

    def jax_apply(self, module, x, depth):
        return module(x) if depth is None else module(x, depth)


def lenet(
    kernel_size: int = 5, image_size: int = 32, batch: int = 4, name: str | None = None, impl: str = "fast"
) -> ModelSpec:
    """LeNet ``Net`` (seeds 000 to 002: ``kernel_size=5``; seed 003: 3), MSE against ``arange(1, 11)``.

    ``impl`` picks ``jaxnets.LeNet``'s computation: ``"fast"`` (the default) or the
    ``"lax"`` reference; the row name gets a ``_lax`` suffix for the latter.
    """
    return ModelSpec(
        name or f"lenet{kernel_size}" + ("" if impl == "fast" else f"_{impl}"),
        lambda: tm.Net(kernel_size=kernel_size, image_size=image_size),
        lambda dt: jaxnets.LeNet(
            kernel_size=kernel_size, image_size=image_size, param_dtype=dt, impl=impl, rngs=nnx.Rngs(0)
        ),
        (batch, 1, image_size, image_size),
        10,
        "mean",
        arange_target=True,
    )


def two_layer(n=progression.N, d_in=progression.D_IN, hidden=progression.H, d_out=progression.D_OUT) -> ModelSpec:
    """``TwoLayerNet`` (seed 004, block 6), ``MSELoss(reduction='sum')``."""
    return ModelSpec(
        "two_layer",
        lambda: tm.TwoLayerNet(d_in, hidden, d_out),
        lambda dt: jaxnets.TwoLayerNet(d_in, hidden, d_out, param_dtype=dt, rngs=nnx.Rngs(0)),
        (n, d_in),
        d_out,
        "sum",
    )


def sequential(n=progression.N, d_in=progression.D_IN, hidden=progression.H, d_out=progression.D_OUT) -> ModelSpec:
    """``Sequential(Linear, ReLU, Linear)`` (seed 004, blocks 4 and 5), ``MSELoss(reduction='sum')``."""
    return ModelSpec(
        "sequential",
        lambda: tm.two_layer_sequential(d_in, hidden, d_out),
        lambda dt: jaxnets.two_layer_sequential(d_in, hidden, d_out, param_dtype=dt, rngs=nnx.Rngs(0)),
        (n, d_in),
        d_out,
        "sum",
    )


def dynamic(n=progression.N, d_in=progression.D_IN, hidden=progression.H, d_out=progression.D_OUT) -> ModelSpec:
    """``DynamicNet`` (seed 004, block 7) at every depth 0..3, ``MSELoss(reduction='sum')``."""
    return ModelSpec(
        "dynamic",
        lambda: tm.DynamicNet(d_in, hidden, d_out),
        lambda dt: jaxnets.DynamicNet(d_in, hidden, d_out, param_dtype=dt, rngs=nnx.Rngs(0)),
        (n, d_in),
        d_out,
        "sum",
        depths=(0, 1, 2, 3),
    )


def model_specs() -> list[ModelSpec]:
    """The five models of the matrix at the tutorials' sizes, plus LeNet on the ``lax`` reference path.

    ``jaxnets.LeNet`` computes its convolutions and poolings with the fast
    rewrites by default; ``lenet5_lax`` runs the same checks on
    ``impl="lax"`` (``lax.conv_general_dilated`` and ``reduce_window``), so the
    matrix proves both paths equal to torch, hence to each other.
    """
    return [lenet(5), lenet(3), lenet(5, impl="lax"), two_layer(), sequential(), dynamic()]


# -- optimizers ------------------------------------------------------------------------------------

_TORCH_OPTIMIZERS = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
    "adamax": "Adamax",
    "nadam": "NAdam",
    "radam": "RAdam",
    "asgd": "ASGD",
    "rprop": "Rprop",
    "adafactor": "Adafactor",
}
"""The optimizers of the matrix: ``jaxnets.optim`` name -> ``torch.optim`` name.

Not here: ``muon`` (torch's Muon takes 2-D parameters only, and every model of
the matrix has biases; its parity is tested on a bias-free net in
``tests/test_optim_torch.py`` and ``tests/test_parity_convert.py``) and
``lbfgs`` (not an optax transformation: its ``step(params, state,
value_and_grad_fn)`` evaluates the loss many times per step, as torch's
``step(closure)`` does; ``tests/test_optim_torch.py`` runs torch's own LBFGS
configurations against it).
"""


@dataclass(frozen=True)
class OptimConfig:
    """A ``jaxnets.optim`` optimizer and the ``torch.optim`` one it must match (the same argument names).

    Attributes:
      family: a key of ``_TORCH_OPTIMIZERS`` (``sgd``, ``adam``, ..., ``adafactor``).
      lr: the learning rate.
      options: keyword arguments passed to both, as ``(name, value)`` pairs.
      jax_options: keyword arguments for the jaxnets side only, when given (a
        test's deliberately wrong configuration).
    """

    family: str
    lr: float
    options: tuple = ()
    jax_options: tuple | None = None

    @property
    def name(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        return f"{self.family}({opts})" if opts else self.family

    @property
    def torch_name(self) -> str:
        return _TORCH_OPTIMIZERS[self.family]

    def torch(self, params) -> torch.optim.Optimizer:
        return getattr(torch.optim, self.torch_name)(params, lr=self.lr, **dict(self.options))

    def jax(self) -> optax.GradientTransformation:
        options = self.options if self.jax_options is None else self.jax_options
        return getattr(jaxnets.optim, self.family)(lr=self.lr, **dict(options))


def optimizer_configs() -> list[OptimConfig]:
    """Every ``jaxnets.optim`` optimizer of the matrix and its main options, at rates where 40 steps of the
    tutorial's net make progress and stay stable (loss 627 at the start, after 40 steps on seed 0: Adadelta 21,
    Adamax 1.9, NAdam 0.08, NAdam with decoupled decay at 3e-4 29, RAdam 9, ASGD 65, Rprop 3e-5, Adafactor 24).

    ASGD's ``t0=5`` starts the averaging within the 40 steps; its rows compare the
    averaged parameters ``ax`` too. NAdam with decoupled weight decay runs at 3e-4:
    at 1e-3 (loss 0.07 after 40 steps) its float32 trajectory reached 0.10 on
    seed 8 (one gradient entry near zero, see :mod:`parity.precision`), at 3e-4
    at most 1.7e-2 over seeds 0 to 9. Rprop's trajectory runs in float64 only
    (:data:`parity.checks.FLOAT64_ONLY_TRAJECTORIES`).
    """
    c = OptimConfig
    return [
        c("sgd", 1e-4),
        c("sgd", 1e-4, (("momentum", 0.9),)),
        c("sgd", 1e-4, (("momentum", 0.9), ("nesterov", True))),
        c("sgd", 1e-4, (("momentum", 0.9), ("dampening", 0.5))),
        c("sgd", 1e-4, (("weight_decay", 0.1),)),
        c("adam", 1e-3),
        c("adam", 1e-3, (("weight_decay", 0.1),)),
        c("adam", 1e-3, (("amsgrad", True),)),
        c("adamw", 1e-3),
        c("adamw", 1e-3, (("amsgrad", True),)),
        c("rmsprop", 1e-4),
        c("rmsprop", 1e-4, (("momentum", 0.9),)),
        c("rmsprop", 1e-4, (("centered", True),)),
        c("rmsprop", 1e-4, (("weight_decay", 0.1),)),
        c("rmsprop", 1e-4, (("centered", True), ("momentum", 0.9))),
        c("adagrad", 1e-2),
        c("adagrad", 1e-2, (("lr_decay", 0.1),)),
        c("adagrad", 1e-2, (("weight_decay", 0.1),)),
        c("adagrad", 1e-2, (("initial_accumulator_value", 0.1),)),
        c("adadelta", 1.0),
        c("adamax", 1e-3),
        c("nadam", 1e-3),
        c("nadam", 3e-4, (("weight_decay", 0.1), ("decoupled_weight_decay", True))),
        c("radam", 1e-3),
        c("radam", 1e-3, (("weight_decay", 0.1), ("decoupled_weight_decay", True))),
        c("asgd", 1e-4, (("t0", 5),)),
        c("rprop", 3e-4),
        c("adafactor", 1e-2),
    ]


def optimizer_model() -> ModelSpec:
    """The tutorial's ``TwoLayerNet(1000, 100, 10)`` on 64 examples, which the optimizer rows train.

    A smaller net is cheaper but worse conditioned: ``TwoLayerNet(200, 50, 10)``
    at three times these rates put a gradient entry at 1e-6 (the largest: 14)
    for seed 0, where RMSprop's ``g / (sqrt(v) + eps)`` is steep, and one
    centered RMSprop step differed by 1.1e-12 in float64, torch against JAX,
    from rounding alone (see :mod:`parity.precision`).
    """
    return two_layer()


def lenet_optimizer_configs() -> list[OptimConfig]:
    """SGD and Adam for LeNet, at rates where rounding differences do not blow up.

    Not the tutorial's SGD ``lr=0.01``: on this batch (4 images, MSE against
    ``arange(1, 11)``) it oscillates (loss 38 -> 0.9 -> 36 in 20 steps) and
    amplifies a 1e-15 relative perturbation of the initial weights 13,000-fold
    in 40 steps, torch against torch, so a check at that rate measures the
    instability, not the frameworks (3e-3: 2.6-fold). Adam amplifies the same
    perturbation 880-fold at 1e-3 and 290-fold at 3e-4 (its ``sqrt(v) + eps``
    is steep for near-zero gradients, see :mod:`parity.precision`); at 1e-3 the
    float64 LeNet trajectory came within a factor 2 of 1e-12.
    """
    return [OptimConfig("sgd", 3e-3), OptimConfig("adam", 3e-4)]


UPDATE_DECAY = 0.7
"""The given gradients shrink by this factor per step, as in training: Adam's second moment then falls, so
AMSGrad's running maximum differs from it."""


def update_configs() -> list[OptimConfig]:
    """The ``update/...`` rows: every option the matrix covers, at values where it changes the update visibly.

    These rows feed torch and jaxnets the *same* gradients (:func:`update_grads`),
    so no rounding of a forward or backward pass reaches the optimizer and float32
    can be held to a bound two orders of magnitude below the effect of any option
    (see :mod:`parity.precision`). Rates are larger than the trajectories' (no
    model has to stay stable here) so that weight decay moves the weights by
    ``lr * weight_decay = 1e-3`` per SGD step; AMSGrad and centered RMSprop use
    ``betas=(0.9, 0.9)`` and ``alpha=0.9`` so that the second moment can fall
    within ten steps (with ``beta2=0.999`` it falls by at most 0.1% a step and
    AMSGrad changes the weights by only 1e-4 after ten steps).

    The other families: ``maximize`` on Adam, Adadelta and Rprop (an optax alias,
    a configured chain and an own transform); Adadelta's ``rho``; Adamax's
    ``betas`` and ``weight_decay``; NAdam's ``momentum_decay`` (0.5: the default
    4e-3 barely moves ``mu_t`` in ten steps); ``decoupled_weight_decay`` of NAdam
    and RAdam; ASGD's ``lambd``, ``alpha`` and ``t0`` (``lambd=10`` at lr 1e-2
    makes ``eta`` depend on ``alpha``; ``t0`` changes only the averaged
    parameters ``ax``, which the rows compare); Rprop's ``etas`` and
    ``step_sizes``; Adafactor's ``beta2_decay`` and ``weight_decay``. RAdam's row
    uses ``betas=(0.9, 0.9)``: with ``beta2=0.999`` its float32 row is 1.87e-5 off
    on every seed (``0.999`` rounds to ``0.99900001`` in float32, and
    ``rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)`` subtracts two numbers
    near 2000 to get 5; torch computes it in Python float64), within 7% of the
    bound. Adafactor's ``d`` is not here: its clipping binds only when a step's
    gradient outgrows the running second moment, which these decaying gradients
    never do (``d=2`` moves the weights by 3.3e-5 relative, under ten times the
    float32 bound); torch's own Adafactor configurations in
    ``tests/test_optim_torch.py`` cover it in float64.
    """
    c = OptimConfig
    return [
        c("sgd", 1e-2, (("momentum", 0.9),)),
        c("sgd", 1e-2, (("momentum", 0.9), ("nesterov", True))),
        c("sgd", 1e-2, (("momentum", 0.9), ("dampening", 0.5))),
        c("sgd", 1e-2, (("weight_decay", 0.1),)),
        c("adam", 1e-3, (("weight_decay", 0.1),)),
        c("adam", 1e-3, (("betas", (0.9, 0.9)), ("amsgrad", True))),
        c("adam", 1e-3, (("eps", 1e-3),)),
        c("adamw", 1e-3, (("weight_decay", 0.1),)),
        c("adamw", 1e-3, (("betas", (0.9, 0.9)), ("amsgrad", True))),
        c("rmsprop", 1e-3, (("momentum", 0.9),)),
        c("rmsprop", 1e-3, (("alpha", 0.9), ("centered", True))),
        c("rmsprop", 1e-3, (("weight_decay", 0.1),)),
        c("rmsprop", 1e-3, (("centered", True), ("momentum", 0.9))),
        c("adagrad", 1e-2, (("lr_decay", 0.1),)),
        c("adagrad", 1e-2, (("weight_decay", 0.1),)),
        c("adagrad", 1e-2, (("initial_accumulator_value", 0.1),)),
        c("adam", 1e-3, (("maximize", True),)),
        c("adadelta", 1.0, (("rho", 0.5),)),
        c("adadelta", 1.0, (("maximize", True),)),
        c("adamax", 1e-3, (("betas", (0.9, 0.9)), ("weight_decay", 0.1))),
        c("nadam", 1e-3, (("momentum_decay", 0.5),)),
        c("nadam", 1e-3, (("weight_decay", 0.1), ("decoupled_weight_decay", True))),
        c("radam", 1e-3, (("betas", (0.9, 0.9)), ("weight_decay", 0.1), ("decoupled_weight_decay", True))),
        c("asgd", 1e-2, (("lambd", 10.0), ("alpha", 0.5), ("t0", 3))),
        c("rprop", 1e-3, (("etas", (0.3, 1.5)), ("step_sizes", (2e-4, 2e-3)))),
        c("rprop", 1e-3, (("maximize", True),)),
        c("adafactor", 1e-2, (("beta2_decay", -0.5), ("weight_decay", 0.1))),
    ]


def update_grads(init: dict[str, np.ndarray], seed: int, steps: int) -> list[dict[str, np.ndarray]]:
    """``steps`` gradients for the parameters ``init`` (torch names): standard normal times ``UPDATE_DECAY**t``."""
    rng = np.random.default_rng([seed, 4])
    return [{k: rng.standard_normal(v.shape) * UPDATE_DECAY**t for k, v in init.items()} for t in range(steps)]
