"""``parity.check_init``: do a torch layer and its JAX port draw their initial weights from the same law?

torch and JAX use different random generators, so the same seed gives
different numbers and only the distributions can be compared. For each
parameter and buffer, :func:`check_init` pools the values of ``draws`` fresh
instances per framework and compares them with the two-sample
Kolmogorov-Smirnov statistic ``D = max |F_torch(x) - F_jax(x)|`` (the largest
gap between the two empirical distribution functions). Under the same law,
``D`` exceeds ``c * sqrt((n + m) / (n m))`` with probability ``alpha``, where
``c = sqrt(-ln(alpha / 2) / 2)``; :data:`ALPHA` is 1e-6, so a correct port
fails about once in a million checks, while a wrong bound (a factor of
``sqrt(3)``, a normal law for a uniform one) fails at a few hundred values.
Constant initialisations (BatchNorm's ones and zeros) must be equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from flax import nnx

from jaxnets.interop.torch_layout import _mirror

__all__ = ["ALPHA", "InitReport", "InitRow", "check_init"]

ALPHA = 1e-6


@dataclass
class InitRow:
    """One parameter or buffer: pooled moments on both sides and the KS statistic against its critical value."""

    name: str
    n: int
    torch_mean: float
    torch_std: float
    jax_mean: float
    jax_std: float
    ks: float
    critical: float

    @property
    def passed(self) -> bool:
        return self.ks <= self.critical


@dataclass
class InitReport:
    """What :func:`check_init` found; ``str(report)`` is a table."""

    rows: list[InitRow]

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def __str__(self) -> str:
        head = f"{'name':<24} {'values':>7} {'torch mean':>11} {'torch std':>10} {'jax mean':>11} {'jax std':>10} "
        head += f"{'KS D':>7} {'critical':>8}"
        lines = [head]
        for r in self.rows:
            lines.append(
                f"{r.name:<24} {r.n:>7} {r.torch_mean:>11.4g} {r.torch_std:>10.4g} {r.jax_mean:>11.4g} "
                f"{r.jax_std:>10.4g} {r.ks:>7.4f} {r.critical:>8.4f}" + ("" if r.passed else "  DIFFERENT LAW")
            )
        return "\n".join(lines)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    fa = np.searchsorted(a, points, side="right") / a.size
    fb = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def _jax_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    if _mirror(model) is not None:
        return {k: np.asarray(v) for k, v in model.state_dict().items()}
    from jaxnets.interop.exchange import to_torch_arrays

    return to_torch_arrays(model)


def check_init(torch_cls, jax_cls, *args, draws: int = 8, **kwargs) -> InitReport:
    """Compare the default initialisations of ``torch_cls(*args, **kwargs)`` and ``jax_cls(*args, **kwargs, rngs=...)``.

    Args:
      torch_cls: a torch module class (or any callable building one).
      jax_cls: its port (or a callable taking ``rngs=``): a :mod:`jaxnets.nn`
        class, or a Flax model that the layout table maps (its arrays are
        compared in torch's layout, under torch's names).
      *args, **kwargs: the constructor arguments, the same on both sides.
      draws: instances built per framework (seeds 0 to draws - 1); their values
        are pooled per parameter.

    Returns:
      An :class:`InitReport`, one row per parameter and buffer present on both sides.

    Raises:
      ValueError: the two sides hold different names or shapes, or ``draws < 1``.
    """
    if draws < 1:
        raise ValueError(f"check_init: draws must be >= 1; got {draws}.")
    pooled_t: dict[str, list] = {}
    pooled_j: dict[str, list] = {}
    for seed in range(draws):
        torch.manual_seed(seed)
        for name, value in torch_cls(*args, **kwargs).state_dict().items():
            pooled_t.setdefault(name, []).append(value.detach().cpu().numpy().astype(np.float64).ravel())
        for name, value in _jax_arrays(jax_cls(*args, **kwargs, rngs=nnx.Rngs(seed))).items():
            pooled_j.setdefault(name, []).append(np.asarray(value, np.float64).ravel())
    if set(pooled_t) != set(pooled_j):
        raise ValueError(
            f"check_init: torch has {sorted(pooled_t)}, the port {sorted(pooled_j)}; the names must be the same."
        )
    rows = []
    for name in pooled_t:
        t, j = np.concatenate(pooled_t[name]), np.concatenate(pooled_j[name])
        if t.size != j.size:
            raise ValueError(f"check_init: {name} holds {t.size // draws} values in torch, {j.size // draws} in JAX.")
        if t.size == 0:
            continue
        if np.all(t == t[0]):  # a constant initialisation: equal or wrong
            ks, critical = float(np.max(np.abs(j - t[0])) > 0), 0.0
        else:
            ks = _ks(t, j)
            critical = math.sqrt(-math.log(ALPHA / 2) / 2) * math.sqrt(2 / t.size)
        rows.append(InitRow(name, t.size, t.mean(), t.std(), j.mean(), j.std(), ks, critical))
    return InitReport(rows)
