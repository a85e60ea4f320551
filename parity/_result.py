"""A row of the parity matrix, and how rows are built from per-array errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from . import precision


@dataclass
class Result:
    """One row of the matrix.

    Attributes:
      model: ``lenet5``, ``lenet3``, ``lenet5_lax``, ``two_layer``, ``sequential``, ``dynamic``
        or ``bias_free`` (seed 004's stages 1 to 3, weights ``w1, w2`` without biases), or a ported
        model (:mod:`parity.ports`: ``mnist``, ``dcgan_generator``, ``resnet18``...).
      check: e.g. ``forward``, ``grad``, ``step/adam(amsgrad=True)``.
      dtype: ``float32`` or ``float64``.
      max_abs, max_rel: the worst errors over every array compared (see
        :func:`parity.precision.errors`).
      tol: the bound on ``max_rel``.
      passed: ``max_rel <= tol`` (``max_rel > tol`` for a ``must_differ`` row).
      per_param: ``{torch parameter name: (max_abs, max_rel)}`` for gradients and weights.
      other: the same for the other arrays: ``output``, ``loss``, ``losses`` (a loss
        curve), ``input`` (the input's cotangent)...
      must_differ: the row measures how far apart two runs that must differ are.
      note: what was compared against what, and with which settings.
      curves: ``{"torch": losses, "jax": losses}`` for trajectories (for plots; not in JSON).
    """

    model: str
    check: str
    dtype: str
    max_abs: float
    max_rel: float
    tol: float
    passed: bool
    per_param: dict[str, tuple[float, float]] = field(default_factory=dict)
    other: dict[str, tuple[float, float]] = field(default_factory=dict)
    must_differ: bool = False
    note: str = ""
    curves: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return f"{self.model}/{self.check}/{self.dtype}"

    def to_json(self) -> dict:
        """The row as JSON-ready Python values (errors as ``{"max_abs": ..., "max_rel": ...}``)."""
        pair = lambda e: {"max_abs": e[0], "max_rel": e[1]}  # noqa: E731
        return {
            "id": self.id,
            "model": self.model,
            "check": self.check,
            "dtype": self.dtype,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "tol": self.tol,
            "passed": self.passed,
            "must_differ": self.must_differ,
            "per_param": {k: pair(v) for k, v in self.per_param.items()},
            "other": {k: pair(v) for k, v in self.other.items()},
            "note": self.note,
        }

    def describe(self) -> str:
        """A multi-line account of the errors, for a failing test or ``--verbose``."""
        sign = ">" if self.must_differ else "<="
        lines = [
            f"{self.id}: {'PASS' if self.passed else 'FAIL'} (max_rel {self.max_rel:.3g} {sign} tol {self.tol:.3g}, "
            f"max_abs {self.max_abs:.3g}){' - ' + self.note if self.note else ''}"
        ]
        for kind, errs in (("param", self.per_param), ("array", self.other)):
            lines += [f"  {kind} {name}: max_abs {a:.3g}, max_rel {r:.3g}" for name, (a, r) in errs.items()]
        return "\n".join(lines)


def worst(errs: Iterable[tuple[float, float]]) -> tuple[float, float]:
    errs = list(errs)
    return (max(e[0] for e in errs), max(e[1] for e in errs)) if errs else (0.0, 0.0)


def merge(into: dict, key: str, err: tuple[float, float]) -> None:
    """Keep the worst error seen for ``key`` (over depths, say)."""
    into[key] = worst([into[key], err]) if key in into else err


def result(model, check, dtype, per_param=None, other=None, note="", curves=None, tol=None) -> Result:
    """A row; ``tol`` defaults to :func:`parity.precision.tolerance` of ``dtype`` and ``check``."""
    per_param, other = dict(per_param or {}), dict(other or {})
    max_abs, max_rel = worst([*per_param.values(), *other.values()])
    tol = precision.tolerance(dtype, check) if tol is None else tol
    passed = bool(np.isfinite(max_rel) and max_rel <= tol)
    return Result(model, check, dtype, max_abs, max_rel, tol, passed, per_param, other, note=note, curves=curves or {})


def params_errors(got: dict, want: dict) -> dict[str, tuple[float, float]]:
    """Per torch name; ``got`` and ``want`` must hold the same names."""
    if list(got) != list(want):
        raise ValueError(f"parameter names differ: jax {list(got)}, torch {list(want)}.")
    return {name: precision.errors(got[name], want[name]) for name in want}


def failed_rows(ids: list[str], error: BaseException, tolerance=precision.tolerance) -> list[Result]:
    """FAIL rows for ``ids`` (``model/check/dtype``) of a job that raised ``error``.

    ``tolerance(dtype, check)`` is the bound the rows would have had
    (default :func:`parity.precision.tolerance`; a ported model's rows pass theirs).
    """
    rows = []
    for row_id in ids:
        model, rest = row_id.split("/", 1)
        check, dtype = rest.rsplit("/", 1)
        rows.append(
            Result(
                model,
                check,
                dtype,
                np.inf,
                np.inf,
                tolerance(dtype, check),
                False,
                note=f"raised {type(error).__name__}: {error}",
            )  # fmt: skip
        )
    return rows
