"""torch's learning-rate schedulers replayed, and the ``schedule/...`` rows of the matrix.

:func:`torch_lrs` drives a ``torch.optim.lr_scheduler`` scheduler as a training
loop does (``optimizer.step()`` then ``scheduler.step()`` once per epoch) and
reads ``param_groups[0]["lr"]`` and the momentum torch writes (SGD's
``momentum``, Adam's ``betas[0]``) after every step. :func:`scheduler_cases`
pairs every torch scheduler, in several configurations, with its
:mod:`jaxnets.optim.lr_scheduler` twin. ``tests/test_optim_lr_scheduler.py``
uses both for its bit-for-bit tests; :func:`schedule_job` makes them rows of
``python -m parity``: each schedule evaluated as an optimizer evaluates it
(``jax.jit`` on the step count), over :data:`SCHEDULE_EPOCHS` epochs, so past
every configuration's natural end (``T_max``, ``total_iters``, the last
milestone), against torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxnets import optim
from jaxnets.optim import lr_scheduler as ls

from ._result import result
from ._specs import x64
from .precision import errors

T = torch.optim.lr_scheduler
SCHEDULE_EPOCHS = 200
"""Epochs of the ``schedule/...`` rows: past every configuration's natural end (the longest, 90 epochs)."""


def torch_lrs(make, epochs: int, optimizer: str = "sgd", lr: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """lr and momentum (SGD's ``momentum`` or Adam's ``betas[0]``) after 0..epochs calls of ``scheduler.step()``.

    Args:
      make: ``optimizer -> torch scheduler``.
      epochs: calls of ``scheduler.step()``, each after one ``optimizer.step()``.
      optimizer: ``"sgd"`` (``momentum=0.9``) or ``"adam"``, over one float64 parameter.
      lr: the optimizer's lr.
    """
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9) if optimizer == "sgd" else torch.optim.Adam([p], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "lr_scheduler.step() before optimizer.step()"
        scheduler = make(opt)

        def read():
            group = opt.param_groups[0]
            return group["lr"], group["momentum"] if optimizer == "sgd" else group["betas"][0]

        values = [read()]
        for _ in range(epochs):
            opt.step()
            scheduler.step()
            values.append(read())
    lrs, momenta = zip(*values, strict=True)
    return np.array(lrs), np.array(momenta)


def halve_every_10(epoch):
    return 0.5 ** (epoch // 10)


def shrink(epoch):
    return 0.97 if epoch % 3 else 1.01


def scale(x):
    return 1 / (1 + 0.1 * x)


def poly_90(epoch):
    return (1 - min(epoch, 90) / 90) ** 0.9  # 0 from epoch 90 on (without the min, complex: torch's lr too)


def scheduler_cases(epochs: int) -> list[tuple[str, Callable, Callable]]:
    """``(name, optimizer -> torch scheduler, jaxnets schedule)`` for every scheduler but ReduceLROnPlateau.

    Both sides start from an optimizer lr of 0.1. ``epochs`` sets the length of
    the OneCycleLR cases that take ``total_steps`` (torch raises past it); the
    other configurations end well before 60 epochs, so a run of ``epochs >= 60``
    goes past their natural end.
    """
    return [
        ("LambdaLR", lambda o: T.LambdaLR(o, halve_every_10), ls.LambdaLR(0.1, halve_every_10)),
        ("LambdaLR-poly", lambda o: T.LambdaLR(o, poly_90), ls.LambdaLR(0.1, poly_90)),
        ("MultiplicativeLR", lambda o: T.MultiplicativeLR(o, shrink), ls.MultiplicativeLR(0.1, shrink)),
        ("StepLR", lambda o: T.StepLR(o, 30), ls.StepLR(0.1, 30)),
        ("StepLR-7-0.7", lambda o: T.StepLR(o, 7, 0.7), ls.StepLR(0.1, 7, 0.7)),
        ("StepLR-1", lambda o: T.StepLR(o, 1, 0.93), ls.StepLR(0.1, 1, 0.93)),
        ("MultiStepLR", lambda o: T.MultiStepLR(o, [10, 25, 60], 0.3), ls.MultiStepLR(0.1, [10, 25, 60], 0.3)),
        ("MultiStepLR-repeated", lambda o: T.MultiStepLR(o, [5, 20, 20, 0]), ls.MultiStepLR(0.1, [5, 20, 20, 0])),
        ("ConstantLR", lambda o: T.ConstantLR(o), ls.ConstantLR(0.1)),
        ("ConstantLR-0.3-17", lambda o: T.ConstantLR(o, 0.3, 17), ls.ConstantLR(0.1, 0.3, 17)),
        ("LinearLR", lambda o: T.LinearLR(o), ls.LinearLR(0.1)),
        ("LinearLR-decay", lambda o: T.LinearLR(o, 1.0, 0.05, 45), ls.LinearLR(0.1, 1.0, 0.05, 45)),
        ("LinearLR-warmup", lambda o: T.LinearLR(o, 0.01, 1.0, 13), ls.LinearLR(0.1, 0.01, 1.0, 13)),
        ("ExponentialLR", lambda o: T.ExponentialLR(o, 0.95), ls.ExponentialLR(0.1, 0.95)),
        # horizon: the default table of 10,000 steps of 0.1 * 1.03**t overflows float32 from t = 2950 on
        ("ExponentialLR-grow", lambda o: T.ExponentialLR(o, 1.03), ls.ExponentialLR(0.1, 1.03, horizon=epochs)),
        ("PolynomialLR", lambda o: T.PolynomialLR(o), ls.PolynomialLR(0.1)),
        ("PolynomialLR-2", lambda o: T.PolynomialLR(o, 50, 2.0), ls.PolynomialLR(0.1, 50, 2.0)),
        ("PolynomialLR-0.5", lambda o: T.PolynomialLR(o, 33, 0.5), ls.PolynomialLR(0.1, 33, 0.5)),
        ("CosineAnnealingLR", lambda o: T.CosineAnnealingLR(o, 25), ls.CosineAnnealingLR(0.1, 25)),
        ("CosineAnnealingLR-eta", lambda o: T.CosineAnnealingLR(o, 10, 0.002), ls.CosineAnnealingLR(0.1, 10, 0.002)),
        ("CosineAnnealingLR-60", lambda o: T.CosineAnnealingLR(o, 60, 1e-4), ls.CosineAnnealingLR(0.1, 60, 1e-4)),
        (
            "SequentialLR-warmup-cosine",
            lambda o: T.SequentialLR(o, [T.LinearLR(o, 0.1, total_iters=5), T.CosineAnnealingLR(o, 30)], [5]),
            ls.SequentialLR([ls.LinearLR(0.1, 0.1, total_iters=5), ls.CosineAnnealingLR(0.1, 30)], [5]),
        ),
        (
            "SequentialLR-three",
            lambda o: T.SequentialLR(
                o, [T.ConstantLR(o, 0.5, 3), T.ExponentialLR(o, 0.9), T.StepLR(o, 4, 0.5)], [10, 40]
            ),
            ls.SequentialLR([ls.ConstantLR(0.1, 0.5, 3), ls.ExponentialLR(0.1, 0.9), ls.StepLR(0.1, 4, 0.5)], [10, 40]),
        ),
        (
            "SequentialLR-restarts-lambda",
            lambda o: T.SequentialLR(o, [T.CosineAnnealingWarmRestarts(o, 4), T.LambdaLR(o, halve_every_10)], [11]),
            ls.SequentialLR([ls.CosineAnnealingWarmRestarts(0.1, 4), ls.LambdaLR(0.1, halve_every_10)], [11]),
        ),
        (
            "ChainedScheduler",
            lambda o: T.ChainedScheduler([T.ConstantLR(o, 0.1, 2), T.ExponentialLR(o, 0.9)]),
            ls.ChainedScheduler([ls.ConstantLR(0.1, 0.1, 2), ls.ExponentialLR(0.1, 0.9)]),
        ),
        (
            "ChainedScheduler-cosine-step",
            lambda o: T.ChainedScheduler([T.CosineAnnealingLR(o, 20), T.MultiStepLR(o, [15, 45], 0.5)]),
            ls.ChainedScheduler([ls.CosineAnnealingLR(0.1, 20), ls.MultiStepLR(0.1, [15, 45], 0.5)]),
        ),
        ("CyclicLR", lambda o: T.CyclicLR(o, 0.01, 0.1, 7), ls.CyclicLR(0.01, 0.1, 7)),
        (
            "CyclicLR-triangular2-asym",
            lambda o: T.CyclicLR(o, 0.001, 0.1, 5, 11, mode="triangular2"),
            ls.CyclicLR(0.001, 0.1, 5, 11, mode="triangular2"),
        ),
        (
            "CyclicLR-exp_range",
            lambda o: T.CyclicLR(o, 0.01, 0.2, 6, mode="exp_range", gamma=0.97, base_momentum=0.7, max_momentum=0.95),
            ls.CyclicLR(0.01, 0.2, 6, mode="exp_range", gamma=0.97, base_momentum=0.7, max_momentum=0.95),
        ),
        (
            "CyclicLR-scale_fn-iterations",
            lambda o: T.CyclicLR(o, 0.01, 0.1, 4, scale_fn=scale, scale_mode="iterations"),
            ls.CyclicLR(0.01, 0.1, 4, scale_fn=scale, scale_mode="iterations"),
        ),
        (
            "CyclicLR-scale_fn-cycle-nomomentum",
            lambda o: T.CyclicLR(o, 0.01, 0.1, 3, 9, scale_fn=scale, cycle_momentum=False),
            ls.CyclicLR(0.01, 0.1, 3, 9, scale_fn=scale, cycle_momentum=False),
        ),
        ("OneCycleLR", lambda o: T.OneCycleLR(o, 0.5, total_steps=epochs), ls.OneCycleLR(0.5, total_steps=epochs)),
        (
            "OneCycleLR-linear-three-phase",
            lambda o: T.OneCycleLR(
                o, 1.0, epochs=epochs // 10, steps_per_epoch=10, anneal_strategy="linear", three_phase=True
            ),
            ls.OneCycleLR(1.0, epochs=epochs // 10, steps_per_epoch=10, anneal_strategy="linear", three_phase=True),
        ),
        (
            "OneCycleLR-cos-three-phase-options",
            lambda o: T.OneCycleLR(o, 0.3, **_ONE_CYCLE_OPTIONS, total_steps=epochs),
            ls.OneCycleLR(0.3, **_ONE_CYCLE_OPTIONS, total_steps=epochs),
        ),
        (
            "OneCycleLR-nomomentum",
            lambda o: T.OneCycleLR(o, 0.5, total_steps=epochs, pct_start=0.5, cycle_momentum=False),
            ls.OneCycleLR(0.5, total_steps=epochs, pct_start=0.5, cycle_momentum=False),
        ),
        (
            "CosineAnnealingWarmRestarts",
            lambda o: T.CosineAnnealingWarmRestarts(o, 10),
            ls.CosineAnnealingWarmRestarts(0.1, 10),
        ),
        (
            "CosineAnnealingWarmRestarts-mult",
            lambda o: T.CosineAnnealingWarmRestarts(o, 3, 2, 0.001),
            ls.CosineAnnealingWarmRestarts(0.1, 3, 2, 0.001),
        ),
    ]


_LINEAR_THREE_PHASE = dict(steps_per_epoch=10, anneal_strategy="linear", three_phase=True)
_ONE_CYCLE_OPTIONS = dict(
    pct_start=0.25, three_phase=True, base_momentum=0.8, max_momentum=0.99, div_factor=10.0, final_div_factor=100.0
)


def per_step_cases(epochs: int) -> list[tuple[str, int, Callable, Callable]]:
    """``(name, steps_per_epoch, torch scheduler, jaxnets schedule)``: schedules over several optimizer steps an epoch.

    A per-epoch scheduler (torch steps it once per epoch of 7 batches; jaxnets'
    ``steps_per_epoch=7``) and OneCycleLR stepped per batch over ``epochs``
    epochs of 10 batches (torch's ``epochs=, steps_per_epoch=``: ``total_steps``
    is their product, and torch steps it after every batch).
    """
    return [
        (
            "CosineAnnealingLR-12, steps_per_epoch=7",
            7,
            lambda o: T.CosineAnnealingLR(o, 12, 0.01),
            ls.CosineAnnealingLR(0.1, 12, 0.01, steps_per_epoch=7),
        ),
        (
            f"OneCycleLR(epochs={epochs}, steps_per_epoch=10), per batch",
            1,
            lambda o: T.OneCycleLR(o, 0.5, epochs=epochs, steps_per_epoch=10, three_phase=True),
            ls.OneCycleLR(0.5, epochs=epochs, steps_per_epoch=10, three_phase=True),
        ),
    ]


def plateau_metrics(n: int, seed: int = 0) -> list[float]:
    """A noisy loss that improves, stalls, improves again: every branch of ReduceLROnPlateau's rule is taken."""
    rng = np.random.default_rng(seed)
    quarter = n // 4
    trend = np.concatenate(
        [np.linspace(1.0, 0.5, quarter), np.linspace(0.5, 0.6, quarter), np.linspace(0.5, 0.2, n - 2 * quarter)]
    )
    return (trend + rng.normal(0, 0.02, n)).tolist()


PLATEAU_CASES = [
    dict(),
    dict(mode="max", patience=2, factor=0.5),
    dict(patience=1, threshold=0.05, threshold_mode="abs", cooldown=2),
    dict(mode="max", patience=0, threshold=0.01, threshold_mode="abs", min_lr=0.004, factor=0.3),
    dict(patience=2, cooldown=1, min_lr=0.0101, eps=1e-4),
    dict(patience=3, threshold=0.02, factor=0.7, eps=0.0),
]
"""ReduceLROnPlateau's options: modes, thresholds, cooldown, ``min_lr`` and ``eps``."""


def plateau_name(kwargs: dict) -> str:
    return "ReduceLROnPlateau(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


def _refuses(fn) -> bool:
    try:
        fn()
    except ValueError:
        return True
    return False


def _row_id(name: str, dtype: str) -> str:
    return f"lr_scheduler/schedule/{name}/{dtype}"


def schedule_cases(epochs: int) -> list[tuple[str, int, int, Callable, Callable]]:
    """``(name, steps_per_epoch, optimizer steps compared, torch scheduler, jaxnets schedule)`` of every row.

    The per-epoch cases compare the lrs of counts ``0 .. epochs`` (torch: after
    0 to ``epochs`` calls of ``scheduler.step()``), the ``steps_per_epoch=7``
    case ``7 * epochs`` counts, the per-batch OneCycleLR ``10 * epochs + 1``.
    """
    out = [(name, 1, epochs + 1, make, schedule) for name, make, schedule in scheduler_cases(epochs)]
    for name, spe, make, schedule in per_step_cases(epochs):
        out.append((name, spe, spe * epochs if spe > 1 else 10 * epochs + 1, make, schedule))
    return out


def schedule_job(dtype: str, *, epochs: int = SCHEDULE_EPOCHS, select=None):
    """``lr_scheduler/schedule/<case>/<dtype>`` rows: every lr (and cycled momentum) of ``epochs`` epochs.

    JAX evaluates every schedule in one jitted program on the step counts
    (int32, as an optax optimizer passes them; :func:`schedule_cases`); torch
    replays its scheduler (:func:`torch_lrs`). ReduceLROnPlateau is stepped on
    :func:`plateau_metrics` (``plateau.step`` jitted) and its lr read after each
    step. The OneCycleLR rows also check that both refuse to go past
    ``total_steps`` (jaxnets: a ``ValueError`` for a concrete count; torch: on
    its next ``step()``). In float64 the values agree bit for bit (the
    tolerance is 1e-12); in float32 the lr is rounded once (6e-8 relative).
    """
    from .checks import Job, _selected

    cases = [c for c in schedule_cases(epochs) if _selected(select, _row_id(c[0], dtype))]
    plateaus = [k for k in PLATEAU_CASES if _selected(select, _row_id(plateau_name(k), dtype))]
    if not cases and not plateaus:
        return None
    metrics = plateau_metrics(epochs)
    one_cycle = lambda name: name.startswith("OneCycleLR")  # noqa: E731

    def jax_half():
        with x64(dtype):

            def evaluate(counts_list):  # one program: every schedule (and momentum schedule) at every count
                out = []
                for (*_, schedule), counts in zip(cases, counts_list, strict=True):
                    momentum = getattr(schedule, "momentum", None)
                    out.append((jax.vmap(schedule)(counts), None if momentum is None else jax.vmap(momentum)(counts)))
                return out

            counts = [jnp.arange(n, dtype=jnp.int32) for _, _, n, _, _ in cases]
            values = jax.tree.map(np.asarray, jax.jit(evaluate)(counts))
            refuses = [one_cycle(name) and _refuses(lambda s=s, n=n: s(n)) for name, _, n, _, s in cases]
            plateau_values = []
            for kwargs in plateaus:
                plateau = ls.ReduceLROnPlateau(0.1, **kwargs)
                state = plateau.wrap(optim.sgd).init({"w": jnp.zeros(1)})
                step = jax.jit(plateau.step)
                lrs = []
                for metric in metrics:
                    state = step(state, jnp.asarray(metric))
                    lrs.append(np.asarray(plateau.get_last_lr(state)))
                plateau_values.append(np.asarray(lrs))
            return values, refuses, plateau_values

    def torch_half():
        out = []
        for name, spe, n, make, _ in cases:
            lrs, momenta = torch_lrs(make, -(-n // spe) - 1)
            refuses = one_cycle(name) and _refuses(lambda make=make, n=n: torch_lrs(make, n))
            out.append((np.repeat(lrs, spe)[:n], np.repeat(momenta, spe)[:n], refuses))
        plateau_out = []
        for kwargs in plateaus:
            p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
            opt = torch.optim.SGD([p], lr=0.1)
            scheduler = T.ReduceLROnPlateau(opt, **kwargs)
            lrs = []
            for metric in metrics:
                scheduler.step(metric)
                lrs.append(scheduler.get_last_lr()[0])
            plateau_out.append(np.asarray(lrs))
        return out, plateau_out

    def compare(jax_out, torch_out):
        (values, refuses, plateau_values), (torch_values, torch_plateau) = jax_out, torch_out
        rows = []
        for (name, spe, n, _, _), (lr, momentum), refused, (t_lr, t_momentum, t_refused) in zip(
            cases, values, refuses, torch_values, strict=True
        ):
            other = {"lr": errors(lr, t_lr)}
            if momentum is not None:
                other["momentum"] = errors(momentum, t_momentum)
            if one_cycle(name):  # both must refuse the step after total_steps
                other["refuses past total_steps"] = (0.0, 0.0) if refused and t_refused else (np.inf, np.inf)
            note = (
                f"lr at optimizer steps 0..{n - 1}, scheduler.step() every {spe}, torch vs jaxnets.optim.lr_scheduler"
            )
            rows.append(result("lr_scheduler", f"schedule/{name}", dtype, {}, other, note))
        for kwargs, got, want in zip(plateaus, plateau_values, torch_plateau, strict=True):
            note = f"{epochs} epochs on a noisy metric, lr after each step(metric), reduced {len(set(want)) - 1} times"
            check = f"schedule/{plateau_name(kwargs)}"
            rows.append(result("lr_scheduler", check, dtype, {}, {"lr": errors(got, want)}, note))
        return rows

    ids = [_row_id(c[0], dtype) for c in cases] + [_row_id(plateau_name(k), dtype) for k in plateaus]
    return Job(ids, jax_half, torch_half, compare)
