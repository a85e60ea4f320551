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
- float32 trajectories and optimizer steps (checks ``trajectory/...`` and
  ``step/...``): 1e-1, set to ten times the worst value measured on this
  project's machine with ``python -m parity --seed S --json`` for S = 0 to 4
  (torch 2.13, jax 0.10.2, two CPU cores), 138 rows each:

  ==========================================================  =========  ====
  row (float32)                                               max_rel    seed
  ==========================================================  =========  ====
  ``two_layer/trajectory/adam(weight_decay=0.1)`` (40 steps)  9.9e-3     3
  ``two_layer/trajectory/adamw(amsgrad=True)``                6.3e-3     4
  ``two_layer/trajectory/rmsprop(weight_decay=0.1)``          4.0e-3     3
  ``sequential/trajectory/stage5 sequential_adam`` (40)       3.8e-3     2
  ``two_layer/trajectory/rmsprop``                            1.9e-3     2
  ``lenet5/trajectory/adam``                                  7.6e-4     3
  ``stage4`` / ``stage6`` (SGD, 40 steps)                     6.6e-4     4
  every other SGD and Adagrad trajectory                      < 1e-4
  worst one-step row (``lenet5/step/adam``)                   5.2e-5     0
  ==========================================================  =========  ====

  Rounding does not simply grow here; it is amplified by discrete events.
  Adam and RMSprop divide by ``sqrt(v) + eps``: for a gradient entry near
  ``eps / sqrt(1 - beta)`` the update is steep in the gradient (up to
  ``lr / (4 eps_eff)`` times its absolute rounding), and in float32 an entry
  within ~1e-6 of zero can even change sign, after which Adam, close to
  ``lr * sign(g)`` for small gradients, moves that weight by ``lr`` the other
  way. A ReLU pre-activation within rounding of zero flips a unit the same
  way. So the bound is a property of the problem and the optimizer, not of
  either framework; float64 is the sharp test, and a wrong option fails it.

  The same amplification reaches float64, scaled down with its rounding: the worst
  float64 row over the five seeds is 1.8e-13 (``lenet5/trajectory/adam``,
  seed 0, from an ``fc1`` gradient entry near Adam's ``eps``). Configurations
  that put a gradient entry right at the steep point exceed 1e-12 without any
  semantic difference: with ``TwoLayerNet(200, 50, 10)`` and RMSprop at 3e-4,
  seed 0 has a ``linear1.weight`` gradient entry of 9.6e-7 (the largest is 14)
  and one centered RMSprop step differed by 1.1e-12, all of it in
  ``linear1.weight``; LeNet with RMSprop at lr 0.06 differed by 1.2e-12 after
  one step. The matrix uses the tutorial's sizes and rates where 40 steps stay
  well inside 1e-12 (the LeNet rates are explained in
  :func:`parity.checks.lenet_optimizer_configs`).

On a GPU both sides must run IEEE fp32 before comparing: :func:`ieee_fp32`
sets JAX's default matmul precision to "highest" and turns torch's TF32 off.
"""

from __future__ import annotations

import numpy as np

F64_RTOL = 1e-12
F32_RTOL = 1e-5
F32_TRAJECTORY_RTOL = 1e-1  # ten times the worst of five seeds (9.9e-3): see the module docstring
DISTINCT_RTOL = 1e-6
"""Two runs that must differ (DynamicNet under the two zero_grad semantics) must be at least this far apart:
a million times the float64 tolerance, so that the difference cannot be rounding."""


def tolerance(dtype: str, check: str) -> float:
    """The tolerance for a check (``"forward"``, ``"grad"``, ``"step/..."``, ``"trajectory/..."``) at a dtype.

    ``dtype`` is ``"float64"`` or ``"float32"``.
    """
    if dtype == "float64":
        return F64_RTOL
    if dtype == "float32":
        return F32_TRAJECTORY_RTOL if check.startswith(("trajectory", "step")) else F32_RTOL
    raise ValueError(f"parity checks run in 'float32' or 'float64'; got {dtype!r}.")


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
