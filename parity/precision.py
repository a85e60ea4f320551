"""The precision policy of every parity check, defined once.

How errors are measured: for each array (a parameter, a gradient, a loss
curve) the max absolute error ``max|jax - torch|`` and the norm-wise relative
error ``max|jax - torch| / max|torch|``. Elementwise relative error is not used:
near convergence a loss is a difference of nearly equal numbers and a bias can
be near zero, so an elementwise ratio measures cancellation, not disagreement.

Tolerances (on the norm-wise relative error):

- float64 on both sides (``jax_enable_x64``, ``torch.double``): 1e-12, for
  every check including 500-step trajectories. Both sides compute the same
  formulas and differ only in the order of reductions (about 1e-16 per
  operation); 1e-12 leaves room for the rounding of a few hundred steps and
  still catches any real difference (a missing transpose is O(1)).
- float32, outputs and gradients: 1e-5. XLA and torch's oneDNN reduce in
  different orders (about 1e-7 relative per reduction over a few hundred terms).
  Measured over seeds 0 to 9 (2026-12-07, ``python -m parity --only float32
  --seed S``): outputs 5.9e-7, gradients 1.2e-6, VJPs 1.9e-6 at worst
  (``lenet5_lax/vjp``, seed 9), so the bound is five times the worst.
- float32 optimizer rows: four bounds, each set from the worst value measured
  on this project's machine (torch 2.13, jax 0.10.2, two CPU cores) with a
  margin of ten, rounded up:

  ==============================  ==================================  ==========================  =====
  rows (float32)                  measured worst (row, seed)          seeds                       bound
  ==============================  ==================================  ==========================  =====
  ``update/...`` (10 steps on     1.96e-6 (``adamw(weight_decay=``    0 to 19 (the rows added     2e-5
  the same given gradients)       ``0.1)``, 6)                        for #14: 0 to 9, 1.94e-6)
  ``step/sgd...``,                6.3e-7 (``two_layer/step/sgd``, 2)  0 to 19 (ASGD: 0 to 9,      1e-5
  ``step/asgd...`` (one step)                                         6.27e-7)
  ``step/...`` of the other       4.7e-3 (``two_layer/step/rmsprop``  0 to 19 (0 to 4: 1.4e-5,    5e-2
  optimizers (one step)           ``(weight_decay=0.1)``, 10)         0 to 9: 5.8e-5; the rows
                                                                      added for #14: 0 to 9,
                                                                      3.1e-5, ``adadelta``, 0)
  ``trajectory/...`` (40 steps)   4.5e-2 (``dynamic/trajectory/``     0 to 9 (0 to 4: 9.9e-3,     1e-1
                                  ``stage7 ...``, 5)                  the margin of ten is gone;
                                                                      the rows added for #14:
                                                                      1.7e-2, ``nadam(weight_``
                                                                      ``decay=0.1, decoupled_``
                                                                      ``weight_decay=True)``, 4)
  ==============================  ==================================  ==========================  =====

  The rows added for issue #14 (Adadelta, Adamax, NAdam, RAdam, ASGD, Rprop,
  Adafactor, ``maximize``; measured with torch 2.13, jax 0.10.2 on seeds 0 to 9)
  stay within the existing worst cases, so no bound changed. ASGD's update is
  linear in the gradient like SGD's, so its one-step rows get the SGD bound.
  Rprop's 40-step trajectory runs in float64 only: it steps by the gradient's
  sign, and once it converges the signs are rounding; torch against torch
  (initial weights scaled by ``1 + 1.2e-7``) ends 0.06 to 0.46 apart on seeds
  0 to 9, jaxnets against torch 0.07 to 0.48, so no float32 bound would test the
  port (its ``update/`` rows agree exactly, its one-step rows within 6.3e-7).
  Adadelta's trajectory reached 1.7e-2 on seed 6, and so did torch against torch
  from the scaled weights (1.7e-2): the amplification is the problem's.

  The ``schedule/...`` rows (:mod:`parity.schedulers`) compare learning rates
  alone: float64 gets 1e-12 and measures exactly 0 (the schedules replay
  torch's Python-float arithmetic); float32 gets :data:`F32_RTOL`, the lr being
  rounded once to float32 (worst 5.1e-8). The ``trajectory/recipe ...`` rows
  (:mod:`parity.recipes`: 50 steps of param groups, ``clip_grad_norm_`` and a
  scheduler) get the trajectory bounds: on seeds 0 to 9 the worst float64 row
  is 3.1e-13 (LeNet with AdamW, seed 0, ``fc1.weight``: Adam's ``eps``
  amplification again; the others at most 2.2e-14) and the worst float32 row
  7.3e-4 (LeNet, seed 3; the two-layer net at most 8.4e-7), with clipping
  binding on 10 to 14 of the 50 steps on every seed.

  ``update/...`` rows (:func:`parity.checks.update_job`) give ``torch.optim``
  and ``jaxnets.optim`` the same gradients, so nothing but the optimizers'
  own arithmetic differs and the error is the same on every seed (1.8e-6 to
  1.96e-6). The worst three rows are Adam and AdamW with ``beta2 = 0.999``:
  optax computes the bias correction ``1 - beta2**t`` in float32, where
  ``0.999`` rounds to ``0.99900001``, so ``1 - beta2**t`` is 1.3e-5 (t = 1)
  to 2.7e-5 (t = 3) too small and every early step about 1e-5 too short
  (torch computes it in Python float64); Adam with ``maximize`` (1.94e-6) and
  NAdam (1.8e-6) are alike; the other rows stay below 8.4e-7. RAdam at
  ``beta2 = 0.999`` would be 1.87e-5 off on every seed (the same rounding,
  amplified by the cancellation in its ``rho_t``), so its row uses
  ``betas=(0.9, 0.9)``. The rows' options are set where they change the
  weights visibly (:func:`parity.checks.update_configs`): dropping any one of
  them moves the weights by at least 9.3e-4 on seed 0 (``adamw`` back to its default
  ``weight_decay``), 46 times the bound, in float32 as in float64 (the rows
  added for #14: at least 1.0e-3, NAdam without ``weight_decay``).

  A one-step SGD row adds ``lr`` times the gradients' error, so it stays at
  the level of the forward pass (its worst entry is the loss before the step).
  The other bounds are large because rounding does not simply grow here; it
  is amplified by discrete events. Adam and RMSprop divide by ``sqrt(v) +
  eps``: for a gradient entry near ``eps / sqrt(1 - beta)`` the update is steep
  in the gradient (up to ``lr / (4 eps_eff)`` times its absolute rounding), and
  in float32 an entry within ~1e-6 of zero can even change sign, after which
  Adam, close to ``lr * sign(g)`` for small gradients, moves that weight by
  ``lr`` the other way. A ReLU pre-activation within rounding of zero flips a
  unit the same way. So the errors have a heavy tail: one step of RMSprop with
  weight decay is within 1.4e-5 on seeds 0 to 4 and 4.7e-3 on seed 10, and one
  sign flip can reach the whole step (``2 lr / sqrt(1 - alpha)`` against
  ``max|linear1.weight|`` = 0.032: 6e-2 for RMSprop at lr 1e-4, 0.6 for
  Adagrad at lr 1e-2), which no bound below the step size excludes. The bound is
  a property of the problem and the optimizer, not of either framework:
  float64 is the sharp test of a whole step or trajectory, and the
  ``update/...`` rows are the sharp float32 test of every option.

  The same amplification reaches float64, scaled down with its rounding: the worst
  float64 row over seeds 0 to 9 is 6.7e-13 (``lenet5/trajectory/adam``, seed 9;
  1.8e-13 on seeds 0 to 4, from an ``fc1`` gradient entry near Adam's ``eps``; the rows added for #14:
  1.9e-13, ``two_layer/trajectory/adadelta``). Configurations
  that put a gradient entry right at the steep point exceed 1e-12 without any
  semantic difference: with ``TwoLayerNet(200, 50, 10)`` and RMSprop at 3e-4,
  seed 0 has a ``linear1.weight`` gradient entry of 9.6e-7 (the largest is 14)
  and one centered RMSprop step differed by 1.1e-12, all of it in
  ``linear1.weight``; LeNet with RMSprop at lr 0.06 differed by 1.2e-12 after
  one step. The matrix uses the tutorial's sizes and rates where 40 steps stay
  well inside 1e-12 (the LeNet rates are explained in
  :func:`parity.checks.lenet_optimizer_configs`).

The ported models (:mod:`parity.ports`, real networks from pytorch/examples and
torchvision) get their own two bounds. float64: :data:`PORT_F64_RTOL` = 1e-10,
the issue's bound for them; ResNet-18 chains 20 convolutions and BatchNorms and
their backward passes. float32: :data:`PORT_F32_RTOL` = 3e-4, ten times the
worst measured (2.9e-5, ResNet-18's train-mode gradients), rounded up. Their trajectories run in float64 only.
Over seeds 0 to 9 (2026-12-07) the worst is 3.95e-5 (ResNet-18, train mode, seed 1), but for seed 3, where
``resnet18/vjp/train/float32`` fails at 3.2e-2 for a reason no float32 bound can cover: one input of layer1.1's
last ReLU is 5.9e-7 in float64 (the largest is 8.4, where float32's spacing is 9.5e-7), its float32 sum comes
out -1.8e-7 in jaxnets and positive in torch, so that element's gradient is the cotangent on one side and 0 on
the other, and BatchNorm's backward spreads it over the channel and the layers before. On that seed jaxnets in
float64 agrees with torch to 4e-14, and torch in float32 with torch in float64 to 1e-5: the flip is float32's
rounding at a ReLU's kink, not the port. The matrix runs seed 0 unless told otherwise.

On a GPU both sides must run IEEE fp32 before comparing: :func:`ieee_fp32`
sets JAX's default matmul precision to "highest" and turns torch's TF32 off.
"""

from __future__ import annotations

import numpy as np

F64_RTOL = 1e-12
F32_RTOL = 1e-5
F32_TRAJECTORY_RTOL = 1e-1  # ten times the worst of seeds 0-4 (9.9e-3); seeds 0-9 reach 4.5e-2: see the docstring
F32_STEP_RTOL = 1e-5  # one SGD or ASGD step: ten times the worst of seeds 0-19 (6.3e-7), rounded up
F32_NORMALISED_STEP_RTOL = 5e-2  # one step of any other optimizer: ten times the worst of seeds 0-19 (4.7e-3)
F32_UPDATE_RTOL = 2e-5  # same gradients on both sides: ten times the worst of seeds 0-19 (1.96e-6), rounded up
PORT_F64_RTOL = 1e-10
"""The ports in float64: the frameworks differ only in the order of reductions (~1e-16 each); 1e-10 leaves room
for the deepest (ResNet-18's 20 convolutions and BatchNorms, forward and backward) and catches any real change."""
PORT_F32_RTOL = 3e-4
"""The ports in float32: XLA and torch's CPU kernels sum convolutions and matmuls in different orders and
blockings, ~1e-7 relative per reduction. Measured worst over the ``vjp`` rows (outputs, parameter and input
gradients, eval and train; 2026-12-05, seeds 0 to 2): 2.9e-5, ``resnet18/vjp/train`` on seed 0 (2.7e-5 and
1.6e-5 on seeds 1 and 2), where the backward pass chains about forty reductions through BatchNorm's divisions
by batch standard deviations; the other models 3e-7 to 2e-6. The bound is ten times the worst, rounded up."""
DISTINCT_RTOL = 1e-6
"""Two runs that must differ (DynamicNet under the two zero_grad semantics) must be at least this far apart:
a million times the float64 tolerance, so that the difference cannot be rounding."""


def tolerance(dtype: str, check: str) -> float:
    """The tolerance for a check (``"forward"``, ``"grad"``, ``"step/..."``, ``"update/..."``, ``"trajectory/..."``).

    ``dtype`` is ``"float64"`` or ``"float32"``. A float32 ``step/<optimizer>``
    row gets :data:`F32_STEP_RTOL` when the optimizer is SGD or ASGD (their
    update is linear in the gradient) and :data:`F32_NORMALISED_STEP_RTOL` otherwise.
    """
    if dtype == "float64":
        return F64_RTOL
    if dtype == "float32":
        kind, _, rest = check.partition("/")
        if kind == "step":
            return F32_STEP_RTOL if rest.startswith(("sgd", "asgd")) else F32_NORMALISED_STEP_RTOL
        return {"trajectory": F32_TRAJECTORY_RTOL, "update": F32_UPDATE_RTOL}.get(kind, F32_RTOL)
    raise ValueError(f"parity checks run in 'float32' or 'float64'; got {dtype!r}.")


def port_tolerance(dtype: str) -> float:
    """The tolerance of the rows of a ported model (:mod:`parity.ports`): ``PORT_F64_RTOL`` or ``PORT_F32_RTOL``."""
    bounds = {"float64": PORT_F64_RTOL, "float32": PORT_F32_RTOL}
    if dtype not in bounds:
        raise ValueError(f"parity checks run in 'float32' or 'float64'; got {dtype!r}.")
    return bounds[dtype]


def errors(got, want) -> tuple[float, float]:
    """``(max_abs, max_rel)`` of ``got`` against the reference ``want``, norm-wise (see the module docstring)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise ValueError(f"cannot compare arrays of shapes {got.shape} and {want.shape}.")
    if got.size == 0:
        return 0.0, 0.0
    max_abs = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want)))
    if not np.isfinite(max_abs):
        return float("inf"), float("inf")
    return max_abs, (max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")))


def ieee_fp32() -> None:
    """Make both frameworks compute float32 matmuls and convolutions in full IEEE precision (matters on GPUs)."""
    import jax
    import torch

    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
