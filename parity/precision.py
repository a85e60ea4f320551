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
- float32 trajectories: rounding differences grow with every step, at a rate
  set by the optimizer and the learning rate. The bounds below were measured
  on this project's machine with ``python -m parity --json`` (worst case over
  seeds 0 to 4) and set to about ten times the worst observed value.

On a GPU both sides must run IEEE fp32 before comparing: :func:`ieee_fp32`
sets JAX's default matmul precision to "highest" and turns torch's TF32 off.
"""

from __future__ import annotations

import numpy as np

F64_RTOL = 1e-12
F32_RTOL = 1e-5
F32_TRAJECTORY_RTOL = 1e-3  # measured: see the module docstring and README


def tolerance(dtype: str, check: str) -> float:
    """The tolerance for a check (``"forward"``, ``"grad"``, ``"trajectory"``...) at ``"float64"`` or ``"float32"``."""
    if dtype == "float64":
        return F64_RTOL
    if dtype == "float32":
        return F32_TRAJECTORY_RTOL if check.startswith("trajectory") else F32_RTOL
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
