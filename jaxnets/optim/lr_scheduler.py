"""torch.optim.lr_scheduler as optax schedules ``count -> lr``, value for value.

Every scheduler of torch 2.13 has a callable here with torch's name and
arguments, less ``optimizer``, ``last_epoch`` and ``verbose``, and with the
base ``lr`` first (``OneCycleLR`` and ``CyclicLR`` take ``max_lr`` /
``base_lr`` as torch does, since they overwrite the optimizer's lr)::

    scheduler = lr_scheduler.StepLR(0.1, step_size=30, gamma=0.1)  # StepLR(SGD(lr=0.1), 30, 0.1)
    optimizer = jaxnets.optim.sgd(lr=scheduler, momentum=0.9)

The value at optimizer step ``count`` (from 0) is torch's
``scheduler.get_last_lr()[0]`` after ``count // steps_per_epoch`` calls of
``scheduler.step()``: ``steps_per_epoch=len(loader)`` for a scheduler stepped
once per epoch, 1 (the default) for one stepped after every batch
(``OneCycleLR``, ``CyclicLR``).

How the values are computed: torch's schedulers are recursive (the lr of
epoch ``t`` is computed from the lr of epoch ``t - 1`` held in the optimizer),
so closed forms differ from them by rounding (``CosineAnnealingLR`` by ~1e-16
relative, ``optax`` schedules by ~1e-9 since they compute in float32). Each
schedule therefore replays torch's own arithmetic in Python floats (float64,
torch's scalar type for ``group["lr"]``), in torch's order, on a stand-in
optimizer, for ``horizon`` scheduler steps, and looks the value up in that
table: bit for bit torch's numbers, and cheap inside ``jit`` (``count`` may be
a traced integer). ``LambdaLR`` and ``MultiplicativeLR`` call your lambda on
Python ints, as torch does. Past the table, schedules that torch keeps
constant (``ConstantLR``, ``LinearLR``, ``PolynomialLR``, ``MultiStepLR``
after its last milestone) stay at their last value; every other one refuses
with a ``ValueError`` when ``count`` is concrete, and gives NaN when it is
traced (a ``ValueError`` cannot be raised from inside ``jit``): pass a larger
``horizon``. ``OneCycleLR``'s table ends where torch raises, at
``total_steps``.

``CyclicLR`` and ``OneCycleLR`` with ``cycle_momentum=True`` also give
``schedule.momentum``, the momentum torch writes into the optimizer (SGD's
``momentum``, Adam's ``betas[0]``): ``sgd(lr=schedule, momentum=schedule.momentum)``
or ``adam(lr=schedule, betas=(schedule.momentum, 0.999))``.

``ReduceLROnPlateau`` depends on a metric, not on the step count: it is an
object whose ``wrap(optimizer, **kwargs)`` returns an optax transformation
carrying the current lr in its state, and whose ``step(state, metric)``
returns that state after torch's ``scheduler.step(metric)``.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

DEFAULT_HORIZON = 10_000


# --- torch's schedulers, replayed on a stand-in optimizer with one param group -----------------


class _Optimizer:
    """torch's optimizer as its schedulers see it: ``param_groups`` of dicts and ``defaults``."""

    def __init__(self, lr: float):
        self.param_groups = [{"lr": lr, "momentum": None}]
        self.defaults = {"lr": lr, "momentum": 0}


class _Sim:
    """``torch.optim.lr_scheduler.LRScheduler`` with its ``step``, ``_update_lr`` and ``_initial_step``."""

    def __init__(self, optimizer: _Optimizer, last_epoch: int = -1):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._is_initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def lrs(self) -> list:
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self) -> None:
        self._step_count += 1
        self._update_lr(None)

    def _update_lr(self, epoch: int | None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            closed_form = getattr(self, "_get_closed_form_lr", None)
            values = closed_form() if closed_form is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr

    def get_lr(self) -> list:
        raise NotImplementedError


class _LambdaLR(_Sim):
    def __init__(self, optimizer, lr_lambda):
        self.lr_lambdas = [lr_lambda]
        super().__init__(optimizer)

    def get_lr(self):
        return [base_lr * f(self.last_epoch) for f, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class _MultiplicativeLR(_Sim):
    def __init__(self, optimizer, lr_lambda):
        self.lr_lambdas = [lr_lambda]
        super().__init__(optimizer)

    def get_lr(self):
        if not self._is_initial:
            return [
                g["lr"] * f(self.last_epoch) for f, g in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)
            ]
        return self.lrs()


class _StepLR(_Sim):
    def __init__(self, optimizer, step_size, gamma):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self.lrs()
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class _MultiStepLR(_Sim):
    def __init__(self, optimizer, milestones, gamma):
        self.milestones, self.gamma = Counter(milestones), gamma
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self.lrs()
        return [g["lr"] * self.gamma ** self.milestones[self.last_epoch] for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch) for base_lr in self.base_lrs]


class _ConstantLR(_Sim):
    def __init__(self, optimizer, factor, total_iters):
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch == 0:
            return [g["lr"] * self.factor for g in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return self.lrs()
        return [g["lr"] * (1.0 / self.factor) for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [
            base_lr * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
            for base_lr in self.base_lrs
        ]


class _LinearLR(_Sim):
    def __init__(self, optimizer, start_factor, end_factor, total_iters):
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch == 0:
            return [g["lr"] * self.start_factor for g in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self.lrs()
        return [
            g["lr"]
            * (
                1.0
                + (self.end_factor - self.start_factor)
                / (self.total_iters * self.start_factor + (self.last_epoch - 1) * (self.end_factor - self.start_factor))
            )
            for g in self.optimizer.param_groups
        ]

    def _get_closed_form_lr(self):
        return [
            base_lr
            * (
                self.start_factor
                + (self.end_factor - self.start_factor) * min(self.total_iters, self.last_epoch) / self.total_iters
            )
            for base_lr in self.base_lrs
        ]


class _ExponentialLR(_Sim):
    def __init__(self, optimizer, gamma):
        self.gamma = gamma
        super().__init__(optimizer)

    def get_lr(self):
        if self._is_initial:
            return self.lrs()
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class _PolynomialLR(_Sim):
    def __init__(self, optimizer, total_iters, power):
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer)

    def get_lr(self):
        if self._is_initial or self.last_epoch > self.total_iters:
            return self.lrs()
        decay_factor = (
            (1.0 - self.last_epoch / self.total_iters) / (1.0 - (self.last_epoch - 1) / self.total_iters)
        ) ** self.power
        return [g["lr"] * decay_factor for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [
            base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
            for base_lr in self.base_lrs
        ]


class _CosineAnnealingLR(_Sim):
    def __init__(self, optimizer, T_max, eta_min):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def get_lr(self):
        if self._is_initial:
            return self.lrs()
        if self._step_count == 1 and self.last_epoch > 0:
            return [
                self.eta_min + (base_lr - self.eta_min) * (1 + math.cos((self.last_epoch) * math.pi / self.T_max)) / 2
                for base_lr in self.base_lrs
            ]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [
                g["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                for base_lr, g in zip(self.base_lrs, self.optimizer.param_groups, strict=True)
            ]
        return [
            (1 + math.cos(math.pi * self.last_epoch / self.T_max))
            / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
            * (g["lr"] - self.eta_min)
            + self.eta_min
            for g in self.optimizer.param_groups
        ]

    def _get_closed_form_lr(self):
        return [
            self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
            for base_lr in self.base_lrs
        ]


class _SequentialLR(_Sim):
    def __init__(self, optimizer, schedulers, milestones):
        self._schedulers, self._milestones = schedulers, milestones
        self.last_epoch = 0
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self._recursive_undo(self)
        self._schedulers[bisect_right(milestones, 0)]._initial_step()

    def _recursive_undo(self, scheduler) -> None:
        if hasattr(scheduler, "_schedulers"):
            for s in scheduler._schedulers:
                self._recursive_undo(s)
        elif hasattr(scheduler, "last_epoch"):
            scheduler.last_epoch -= 1

    def _initial_step(self) -> None:  # torch's SequentialLR inherits it: a step, counted
        self._step_count = 0
        self.step()

    def step(self):
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()


class _ChainedScheduler(_Sim):
    def __init__(self, optimizer, schedulers):
        self._schedulers, self.optimizer = schedulers, optimizer

    def _initial_step(self) -> None:
        self._step_count = 0
        self.step()

    def step(self):
        for scheduler in self._schedulers:
            scheduler.step()


class _CyclicLR(_Sim):
    def __init__(self, optimizer, base_lr, max_lr, step_size_up, step_size_down, mode, gamma, scale_fn,
                 scale_mode, cycle_momentum, base_momentum, max_momentum):  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = base_lr
        self.max_lrs = [max_lr]
        step_size_up = float(step_size_up)
        step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
        self.total_size = step_size_up + step_size_down
        self.step_ratio = step_size_up / self.total_size
        self.mode, self.gamma, self.scale_mode = mode, gamma, scale_mode
        self._scale_fn_custom = scale_fn
        if scale_fn is None:
            if mode == "triangular":
                self._scale_fn_ref, self.scale_mode = (lambda x: 1.0), "cycle"
            elif mode == "triangular2":
                self._scale_fn_ref, self.scale_mode = (lambda x: 1 / (2.0 ** (x - 1))), "cycle"
            else:
                self._scale_fn_ref, self.scale_mode = (lambda x: gamma**x), "iterations"
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.base_momentums, self.max_momentums = [base_momentum], [max_momentum]
            for group in optimizer.param_groups:
                group["momentum"] = max_momentum
        super().__init__(optimizer)
        self.base_lrs = [base_lr]

    def scale_fn(self, x):
        return self._scale_fn_custom(x) if self._scale_fn_custom is not None else self._scale_fn_ref(x)

    def get_lr(self):
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        scale_x = cycle if self.scale_mode == "cycle" else self.last_epoch
        lrs = []
        for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True):
            base_height = (max_lr - base_lr) * scale_factor
            lrs.append(base_lr + base_height * self.scale_fn(scale_x))
        if self.cycle_momentum:
            for base_m, max_m, group in zip(
                self.base_momentums, self.max_momentums, self.optimizer.param_groups, strict=True
            ):
                base_height = (max_m - base_m) * scale_factor
                group["momentum"] = max_m - base_height * self.scale_fn(scale_x)
        return lrs


class _CosineAnnealingWarmRestarts(_Sim):
    def __init__(self, optimizer, T_0, T_mult, eta_min):
        self.T_0, self.T_i, self.T_mult, self.eta_min, self.T_cur = T_0, T_0, T_mult, eta_min, -1
        super().__init__(optimizer)

    def get_lr(self):
        return [
            self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
            for base_lr in self.base_lrs
        ]

    def step(self):
        epoch = 0 if self.last_epoch < 0 else None
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:  # epoch == 0 < T_0
            self.T_i = self.T_0
            self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr


class _OneCycleLR(_Sim):
    def __init__(self, optimizer, max_lr, total_steps, pct_start, anneal_strategy, cycle_momentum,
                 base_momentum, max_momentum, div_factor, final_div_factor, three_phase):  # fmt: skip
        self.total_steps = total_steps
        first = {"end_step": float(pct_start * total_steps) - 1, "start_lr": "initial_lr", "end_lr": "max_lr",
                 "start_momentum": "max_momentum", "end_momentum": "base_momentum"}  # fmt: skip
        if three_phase:
            self._schedule_phases = [
                first,
                {"end_step": float(2 * pct_start * total_steps) - 2, "start_lr": "max_lr", "end_lr": "initial_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
                {"end_step": total_steps - 1, "start_lr": "initial_lr", "end_lr": "min_lr",
                 "start_momentum": "max_momentum", "end_momentum": "max_momentum"},
            ]  # fmt: skip
        else:
            self._schedule_phases = [
                first,
                {"end_step": total_steps - 1, "start_lr": "max_lr", "end_lr": "min_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
            ]  # fmt: skip
        self._anneal = self._annealing_cos if anneal_strategy == "cos" else self._annealing_linear
        for group in optimizer.param_groups:
            group["initial_lr"] = max_lr / div_factor
            group["max_lr"] = max_lr
            group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            for group in optimizer.param_groups:
                group["momentum"] = max_momentum
                group["max_momentum"] = max_momentum
                group["base_momentum"] = base_momentum
        super().__init__(optimizer)

    @staticmethod
    def _annealing_cos(start, end, pct):
        cos_out = math.cos(math.pi * pct) + 1
        return end + (start - end) / 2.0 * cos_out

    @staticmethod
    def _annealing_linear(start, end, pct):
        return (end - start) * pct + start

    def get_lr(self):
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise _PastTheEnd
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step_num - start_step) / (end_step - start_step)
                    lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                group["momentum"] = momentum
        return lrs


class _PastTheEnd(Exception):
    """torch's OneCycleLR raises when stepped past ``total_steps``: the table ends there."""


# --- the public schedules -----------------------------------------------------------------------


def _check_int(name: str, value, minimum: int, what: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"{name} got {value!r}; expected an integer >= {minimum}{what}. "
            f"Pass e.g. {max(minimum, 1) if minimum <= 1 else minimum}."
        )


def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} got {value!r} of type {type(value).__name__}; expected a number such as 0.1.")
    return value


class Schedule:
    """An optax schedule ``count -> lr`` replaying a torch scheduler; the base of every scheduler here.

    Attributes:
      lr: the base lr (torch's ``initial_lr``).
      steps_per_epoch: optimizer steps per ``scheduler.step()``.
      lrs: NumPy float64 array, ``lrs[e]`` = torch's ``get_last_lr()[0]``
        after ``e`` calls of ``scheduler.step()``.
      momentum: for ``CyclicLR``/``OneCycleLR`` with ``cycle_momentum``, the
        schedule ``count -> momentum`` (SGD's momentum or Adam's beta1);
        otherwise None.
    """

    _constant_tail = False  # True: torch keeps the lr constant after the table's end
    _past_end: str | None = None  # why the table ends at the horizon, when the horizon is torch's end

    def __init__(self, lr: float, *, steps_per_epoch: int = 1, horizon: int = DEFAULT_HORIZON):
        name = type(self).__name__
        self.lr = _check_real(f"{name}: `lr`", lr)
        if not lr >= 0:
            raise ValueError(f"{name} got lr={lr!r}; expected a base lr >= 0, as torch.optim's optimizers do.")
        _check_int(f"{name}: `steps_per_epoch`", steps_per_epoch, 1, " (optimizer steps per scheduler.step())")
        _check_int(f"{name}: `horizon`", horizon, 1, " (the number of scheduler.step() calls tabulated)")
        self.steps_per_epoch, self.horizon = int(steps_per_epoch), int(horizon)
        self._table: tuple | None = None

    def _build(self, optimizer: _Optimizer) -> _Sim:
        raise NotImplementedError

    def _tables(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._table is None:
            optimizer = _Optimizer(self.lr)
            sim = self._build(optimizer)
            group = optimizer.param_groups[0]
            lrs, momenta = [float(group["lr"])], [group["momentum"]]
            end = self._past_end or f"Pass a larger `horizon=` (scheduler steps, now {self.horizon}) when building it."
            for step in range(1, self.horizon + 1):
                try:
                    sim.step()
                    lr, momentum = group["lr"], group["momentum"]
                    if not isinstance(lr, numbers.Real) or not isinstance(momentum, numbers.Real | None):
                        raise TypeError(f"the lr became {lr!r} and the momentum {momentum!r}, not real numbers")
                except _PastTheEnd:
                    break
                except (ArithmeticError, TypeError, ValueError) as error:  # e.g. 2.0 ** 1025 in triangular2
                    end = f"torch's scheduler fails at step {step} too: {type(error).__name__}: {error}."
                    break
                lrs.append(float(lr))
                momenta.append(momentum)
            has_momentum = all(m is not None for m in momenta)
            self._end = end
            self._table = (np.array(lrs, np.float64), np.array(momenta, np.float64) if has_momentum else None)
        return self._table

    @property
    def lrs(self) -> np.ndarray:
        return self._tables()[0]

    @property
    def momentum(self) -> Callable | None:
        table = self._tables()[1]
        if table is None:
            return None
        name = f"{type(self).__name__}.momentum"
        return _TableSchedule(table, self.steps_per_epoch, self._constant_tail, name, self._end)

    def __call__(self, count):
        table = self.lrs
        return _TableSchedule(table, self.steps_per_epoch, self._constant_tail, type(self).__name__, self._end)(count)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class _TableSchedule:
    def __init__(self, table: np.ndarray, steps_per_epoch: int, constant_tail: bool, name: str, end: str):
        self.table, self.steps_per_epoch, self.constant_tail, self.name = table, steps_per_epoch, constant_tail, name
        self.end = end

    def __call__(self, count):
        n = len(self.table)
        if not isinstance(count, jax.core.Tracer):
            epoch = int(count) // self.steps_per_epoch
            if epoch < 0:
                raise ValueError(f"{self.name} got count={count!r}; expected a step count >= 0.")
            if epoch >= n and not self.constant_tail:
                raise ValueError(
                    f"{self.name} got count={int(count)}, which is scheduler step {epoch} "
                    f"(steps_per_epoch={self.steps_per_epoch}); the table ends at step {n - 1}. {self.end}"
                )
            return jnp.asarray(self.table[min(epoch, n - 1)])
        epoch = count // self.steps_per_epoch
        value = jnp.asarray(self.table)[jnp.clip(epoch, 0, n - 1)]
        if self.constant_tail:
            return value
        return jnp.where(epoch < n, value, jnp.nan)


def _lambda(name: str, lr_lambda) -> Callable:
    if isinstance(lr_lambda, list | tuple):
        raise ValueError(
            f"{name} got a list of {len(lr_lambda)} lambdas; a schedule here serves one param group. Give one "
            "lambda per group through jaxnets.optim.param_groups: a group's own "
            '"schedule": lambda base_lr: lr_scheduler.' + name + "(base_lr, its_lambda)."
        )
    if not callable(lr_lambda):
        raise ValueError(
            f"{name} got lr_lambda={lr_lambda!r}; expected a function of the epoch (an int), e.g. lambda epoch: "
            "0.95 ** epoch."
        )
    return lr_lambda


class LambdaLR(Schedule):
    """``torch.optim.lr_scheduler.LambdaLR``: ``lr * lr_lambda(epoch)``, the lambda called on Python ints."""

    def __init__(self, lr, lr_lambda, *, steps_per_epoch=1, horizon=DEFAULT_HORIZON):
        super().__init__(lr, steps_per_epoch=steps_per_epoch, horizon=horizon)
        self.lr_lambda = _lambda("LambdaLR", lr_lambda)

    def _build(self, optimizer):
        return _LambdaLR(optimizer, self.lr_lambda)


class MultiplicativeLR(Schedule):
    """``torch.optim.lr_scheduler.MultiplicativeLR``: the lr times ``lr_lambda(epoch)`` at every epoch from 1."""

    def __init__(self, lr, lr_lambda, *, steps_per_epoch=1, horizon=DEFAULT_HORIZON):
        super().__init__(lr, steps_per_epoch=steps_per_epoch, horizon=horizon)
        self.lr_lambda = _lambda("MultiplicativeLR", lr_lambda)

    def _build(self, optimizer):
        return _MultiplicativeLR(optimizer, self.lr_lambda)


class StepLR(Schedule):
    """``torch.optim.lr_scheduler.StepLR``: the lr times ``gamma`` every ``step_size`` epochs."""

    def __init__(self, lr, step_size, gamma=0.1, *, steps_per_epoch=1, horizon=DEFAULT_HORIZON):
        super().__init__(lr, steps_per_epoch=steps_per_epoch, horizon=horizon)
        _check_int("StepLR: `step_size`", step_size, 1, " (epochs between decays)")
        self.step_size, self.gamma = step_size, _check_real("StepLR: `gamma`", gamma)

    def _build(self, optimizer):
        return _StepLR(optimizer, self.step_size, self.gamma)


class MultiStepLR(Schedule):
    """``torch.optim.lr_scheduler.MultiStepLR``: the lr times ``gamma`` at each milestone (repeated: twice)."""

    _constant_tail = True

    def __init__(self, lr, milestones, gamma=0.1, *, steps_per_epoch=1, horizon=None):
        if isinstance(milestones, numbers.Number) or not isinstance(milestones, Sequence | set | frozenset):
            raise ValueError(f"MultiStepLR got milestones={milestones!r}; expected a list of epochs, e.g. [30, 80].")
        for m in milestones:
            _check_int("MultiStepLR: a milestone", m, 0)
        last = max(milestones, default=0)
        super().__init__(lr, steps_per_epoch=steps_per_epoch, horizon=max(horizon or 1, max(last, 1)))
        self.milestones, self.gamma = list(milestones), _check_real("MultiStepLR: `gamma`", gamma)

    def _build(self, optimizer):
        return _MultiStepLR(optimizer, self.milestones, self.gamma)


def _check_factor(name: str, arg: str, value, low_open: bool) -> None:
    _check_real(f"{name}: `{arg}`", value)
    if value > 1.0 or (value <= 0 if low_open else value < 0):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} got {arg}={value!r}; expected a multiplicative factor in {interval}, as torch does.")


class ConstantLR(Schedule):
    """``torch.optim.lr_scheduler.ConstantLR``: ``lr * factor`` for ``total_iters`` epochs, then ``lr``."""

    _constant_tail = True

    def __init__(self, lr, factor=1.0 / 3, total_iters=5, *, steps_per_epoch=1, horizon=None):
        _check_int("ConstantLR: `total_iters`", total_iters, 0)
        super().__init__(lr, steps_per_epoch=steps_per_epoch, horizon=max(horizon or 1, max(total_iters, 1)))
        _check_factor("ConstantLR", "factor", factor, low_open=False)
        if factor == 0 and total_iters > 0:
            raise ValueError(
                "ConstantLR got factor=0; torch then divides by zero when the warm-up ends (ZeroDivisionError). "
                "Pass a factor in (0, 1]."
            )
        self.factor, self.total_iters = factor, total_iters

    def _build(self, optimizer):
        return _ConstantLR(optimizer, self.factor, self.total_iters)


class LinearLR(Schedule):
    """``torch.optim.lr_scheduler.LinearLR``: the factor goes linearly from ``start_factor`` to ``end_factor``."""

    _constant_tail = True

    def __init__(self, lr, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, *, steps_per_epoch=1, horizon=None):
        _check_int("LinearLR: `total_iters`", total_iters, 1)
        super().__init__(lr, steps_per_epoch=steps_per_epoch, horizon=max(horizon or 1, total_iters))
        _check_factor("LinearLR", "start_factor", start_factor, low_open=True)
        _check_factor("LinearLR", "end_factor", end_factor, low_open=False)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters

    def _build(self, optimizer):
        return _LinearLR(optimizer, self.start_factor, self.end_factor, self.total_iters)


class ExponentialLR(Schedule):
    """``torch.optim.lr_scheduler.ExponentialLR``: the lr times ``gamma`` every epoch."""

    def __init__(self, lr, gamma, *, steps_per_epoch=1, horizon=DEFAULT_HORIZON):
        super().__init__(lr, steps_per_epoch=steps_per_epoch, horizon=horizon)
        self.gamma = _check_real("ExponentialLR: `gamma`", gamma)

    def _build(self, optimizer):
        return _ExponentialLR(optimizer, self.gamma)


class PolynomialLR(Schedule):
    """``torch.optim.lr_scheduler.PolynomialLR``: ``lr * (1 - epoch / total_iters) ** power``, recursively."""

    _constant_tail = True

    def __init__(self, lr, total_iters=5, power=1.0, *, steps_per_epoch=1, horizon=None):
        _check_int("PolynomialLR: `total_iters`", total_iters, 1)
        super().__init__(lr, steps_per_epoch=steps_per_epoch, horizon=max(horizon or 1, total_iters))
        self.total_iters, self.power = total_iters, _check_real("PolynomialLR: `power`", power)

    def _build(self, optimizer):
        return _PolynomialLR(optimizer, self.total_iters, self.power)


class CosineAnnealingLR(Schedule):
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` in torch's recursive form (past ``T_max`` it rises again)."""

    def __init__(self, lr, T_max, eta_min=0.0, *, steps_per_epoch=1, horizon=DEFAULT_HORIZON):  # noqa: N803
        super().__init__(lr, steps_per_epoch=steps_per_epoch, horizon=horizon)
        _check_int("CosineAnnealingLR: `T_max`", T_max, 1, " (epochs of a half cosine)")
        self.T_max, self.eta_min = T_max, _check_real("CosineAnnealingLR: `eta_min`", eta_min)

    def _build(self, optimizer):
        return _CosineAnnealingLR(optimizer, self.T_max, self.eta_min)


def _check_children(name: str, schedulers) -> list[Schedule]:
    if isinstance(schedulers, Schedule) or not isinstance(schedulers, Sequence) or not schedulers:
        raise ValueError(
            f"{name} got schedulers={schedulers!r}; expected a non-empty list of lr_scheduler schedules, "
            "e.g. [LinearLR(0.1, 0.1, total_iters=5), CosineAnnealingLR(0.1, T_max=95)]."
        )
    for i, s in enumerate(schedulers):
        if isinstance(s, ReduceLROnPlateau):
            raise ValueError(
                f"{name} does not support ReduceLROnPlateau (at index {i}), as torch does not: it needs a metric."
            )
        if not isinstance(s, Schedule):
            raise ValueError(
                f"{name} got {s!r} at index {i}; expected a jaxnets.optim.lr_scheduler schedule (torch replays "
                "them on one optimizer, so an arbitrary function cannot take part)."
            )
        if s.lr != schedulers[0].lr:
            raise ValueError(
                f"{name}: the schedulers have different base lrs ({schedulers[0].lr!r} at index 0, {s.lr!r} at "
                f"index {i}); in torch they share one optimizer and its lr. Give them the same `lr`."
            )
        if s.steps_per_epoch != 1:
            raise ValueError(
                f"{name}: the scheduler at index {i} has steps_per_epoch={s.steps_per_epoch}; give "
                f"steps_per_epoch to {name} instead, which steps all of them."
            )
    return list(schedulers)


class SequentialLR(Schedule):
    """``torch.optim.lr_scheduler.SequentialLR``: ``schedulers[i]`` from ``milestones[i - 1]`` on.

    The base lr is the schedulers' (they share one optimizer in torch). As in
    torch, a scheduler starting at a milestone restarts from its closed form at
    epoch 0.
    """

    def __init__(self, schedulers, milestones, *, steps_per_epoch=1, horizon=DEFAULT_HORIZON):
        schedulers = _check_children("SequentialLR", schedulers)
        if isinstance(milestones, numbers.Number) or not isinstance(milestones, Sequence):
            raise ValueError(f"SequentialLR got milestones={milestones!r}; expected a list of epochs.")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR got {len(schedulers)} schedulers and {len(milestones)} milestones; expected one "
                "milestone fewer than schedulers (the epoch where each next scheduler takes over)."
            )
        super().__init__(schedulers[0].lr, steps_per_epoch=steps_per_epoch, horizon=horizon)
        self.schedulers, self.milestones = schedulers, list(milestones)

    def _build(self, optimizer):
        return _SequentialLR(optimizer, [s._build(optimizer) for s in self.schedulers], self.milestones)


class ChainedScheduler(Schedule):
    """``torch.optim.lr_scheduler.ChainedScheduler``: every scheduler steps, each on the lr the previous one left."""

    def __init__(self, schedulers, *, steps_per_epoch=1, horizon=DEFAULT_HORIZON):
        schedulers = _check_children("ChainedScheduler", schedulers)
        super().__init__(schedulers[0].lr, steps_per_epoch=steps_per_epoch, horizon=horizon)
        self.schedulers = schedulers

    def _build(self, optimizer):
        return _ChainedScheduler(optimizer, [s._build(optimizer) for s in self.schedulers])


def _check_momentum(name, cycle_momentum, base_momentum, max_momentum):
    if cycle_momentum:
        _check_real(f"{name}: `base_momentum`", base_momentum)
        _check_real(f"{name}: `max_momentum`", max_momentum)


class CyclicLR(Schedule):
    """``torch.optim.lr_scheduler.CyclicLR``, stepped after every batch; ``.momentum`` cycles the other way."""

    def __init__(
        self,
        base_lr,
        max_lr,
        step_size_up=2000,
        step_size_down=None,
        mode="triangular",
        gamma=1.0,
        scale_fn=None,
        scale_mode="cycle",
        cycle_momentum=True,
        base_momentum=0.8,
        max_momentum=0.9,
        *,
        steps_per_epoch=1,
        horizon=DEFAULT_HORIZON,
    ):
        super().__init__(base_lr, steps_per_epoch=steps_per_epoch, horizon=horizon)
        self.max_lr = _check_real("CyclicLR: `max_lr`", max_lr)
        _check_int("CyclicLR: `step_size_up`", step_size_up, 1 if not step_size_down else 0)
        if step_size_down is not None:
            _check_int("CyclicLR: `step_size_down`", step_size_down, 0)
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError(
                f"CyclicLR got mode={mode!r} and no scale_fn; expected mode 'triangular', 'triangular2' or "
                "'exp_range', or a scale_fn (torch: 'mode is invalid and scale_fn is None')."
            )
        if scale_fn is not None and not callable(scale_fn):
            raise ValueError(f"CyclicLR got scale_fn={scale_fn!r}; expected a function x -> scale, or None.")
        if scale_fn is not None and scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"CyclicLR got scale_mode={scale_mode!r}; expected 'cycle' or 'iterations'.")
        _check_momentum("CyclicLR", cycle_momentum, base_momentum, max_momentum)
        self.step_size_up, self.step_size_down, self.mode, self.gamma = step_size_up, step_size_down, mode, gamma
        self.scale_fn, self.scale_mode, self.cycle_momentum = scale_fn, scale_mode, bool(cycle_momentum)
        self.base_momentum, self.max_momentum = base_momentum, max_momentum

    def _build(self, optimizer):
        return _CyclicLR(optimizer, self.lr, self.max_lr, self.step_size_up, self.step_size_down, self.mode,
                         self.gamma, self.scale_fn, self.scale_mode, self.cycle_momentum, self.base_momentum,
                         self.max_momentum)  # fmt: skip


class CosineAnnealingWarmRestarts(Schedule):
    """``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` (SGDR), stepped without an epoch argument."""

    def __init__(self, lr, T_0, T_mult=1, eta_min=0.0, *, steps_per_epoch=1, horizon=DEFAULT_HORIZON):  # noqa: N803
        super().__init__(lr, steps_per_epoch=steps_per_epoch, horizon=horizon)
        _check_int("CosineAnnealingWarmRestarts: `T_0`", T_0, 1, " (epochs until the first restart)")
        _check_int("CosineAnnealingWarmRestarts: `T_mult`", T_mult, 1, " (the period's growth factor)")
        self.T_0, self.T_mult = T_0, T_mult
        self.eta_min = _check_real("CosineAnnealingWarmRestarts: `eta_min`", eta_min)

    def _build(self, optimizer):
        return _CosineAnnealingWarmRestarts(optimizer, self.T_0, self.T_mult, self.eta_min)


class OneCycleLR(Schedule):
    """``torch.optim.lr_scheduler.OneCycleLR``, stepped after every batch, for ``total_steps`` steps.

    ``.momentum`` is the momentum (or Adam's beta1) torch cycles with it. The
    table ends at ``total_steps``, where torch raises.
    """

    _past_end = "torch's OneCycleLR raises past total_steps too."

    def __init__(
        self,
        max_lr,
        total_steps=None,
        epochs=None,
        steps_per_epoch=None,
        pct_start=0.3,
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
        div_factor=25.0,
        final_div_factor=1e4,
        three_phase=False,
    ):
        if total_steps is not None:
            _check_int("OneCycleLR: `total_steps`", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            _check_int("OneCycleLR: `epochs`", epochs, 1)
            _check_int("OneCycleLR: `steps_per_epoch`", steps_per_epoch, 1)
            total_steps = epochs * steps_per_epoch
        else:
            raise ValueError(
                "OneCycleLR needs total_steps, or epochs and steps_per_epoch (torch's rule); got neither. Pass "
                "e.g. total_steps=len(loader) * epochs."
            )
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR got pct_start={pct_start!r}; expected a float in [0, 1], as torch does.")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR got anneal_strategy={anneal_strategy!r}; expected 'cos' or 'linear'.")
        _check_real("OneCycleLR: `max_lr`", max_lr)
        _check_real("OneCycleLR: `div_factor`", div_factor)
        _check_real("OneCycleLR: `final_div_factor`", final_div_factor)
        _check_momentum("OneCycleLR", cycle_momentum, base_momentum, max_momentum)
        # torch's steps_per_epoch only sizes total_steps: OneCycleLR steps after every batch.
        super().__init__(max_lr / div_factor, steps_per_epoch=1, horizon=total_steps)
        self.max_lr, self.total_steps, self.pct_start, self.anneal_strategy = (
            max_lr,
            total_steps,
            pct_start,
            anneal_strategy,
        )
        self.cycle_momentum, self.base_momentum, self.max_momentum = bool(cycle_momentum), base_momentum, max_momentum
        self.div_factor, self.final_div_factor, self.three_phase = div_factor, final_div_factor, bool(three_phase)

    def _build(self, optimizer):
        return _OneCycleLR(optimizer, self.max_lr, self.total_steps, self.pct_start, self.anneal_strategy,
                           self.cycle_momentum, self.base_momentum, self.max_momentum, self.div_factor,
                           self.final_div_factor, self.three_phase)  # fmt: skip


# --- ReduceLROnPlateau: a metric-driven lr, carried in the optimizer state ----------------------


class PlateauState(NamedTuple):
    """State of :meth:`ReduceLROnPlateau.wrap`: torch's ``ReduceLROnPlateau`` fields, and the optimizer's.

    Attributes:
      lr: the current lr (torch's ``optimizer.param_groups[0]["lr"]``).
      best, num_bad_epochs, cooldown_counter, last_epoch: torch's fields.
      inner_state: the wrapped optimizer's state.
    """

    lr: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array
    last_epoch: jax.Array
    inner_state: Any


class ReduceLROnPlateau:
    """``torch.optim.lr_scheduler.ReduceLROnPlateau``: the lr times ``factor`` when a metric stops improving.

    Usage, in place of ``scheduler = ReduceLROnPlateau(optimizer, ...)``::

        plateau = lr_scheduler.ReduceLROnPlateau(0.1, patience=2)
        tx = plateau.wrap(jaxnets.optim.sgd, momentum=0.9)  # SGD(params, lr=0.1, momentum=0.9)
        opt_state = tx.init(params)
        ...  # an epoch of tx.update(grads, opt_state, params)
        opt_state = plateau.step(opt_state, val_loss)  # scheduler.step(val_loss)
        plateau.get_last_lr(opt_state)  # scheduler.get_last_lr()[0]

    ``step`` is torch's arithmetic in jnp (float64 under x64) and may run
    inside ``jit``. One param group: for several, wrap each group's
    optimizer (torch reduces every group's lr by the same rule).
    """

    def __init__(
        self,
        lr,
        mode="min",
        factor=0.1,
        patience=10,
        threshold=1e-4,
        threshold_mode="rel",
        cooldown=0,
        min_lr=0,
        eps=1e-8,
    ):
        for arg, value in (("lr", lr), ("factor", factor), ("threshold", threshold), ("eps", eps)):
            _check_real(f"ReduceLROnPlateau: `{arg}`", value)
        if isinstance(min_lr, list | tuple):
            raise ValueError(
                "ReduceLROnPlateau got a list of min_lr; it serves one param group here. Use one "
                "ReduceLROnPlateau per group, or a single min_lr."
            )
        _check_real("ReduceLROnPlateau: `min_lr`", min_lr)
        if factor >= 1.0:
            raise ValueError(
                f"ReduceLROnPlateau got factor={factor!r}; expected < 1.0 (torch: 'Factor should be < 1.0'), "
                "e.g. factor=0.1."
            )
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau got mode={mode!r}; expected 'min' (a loss) or 'max' (an accuracy).")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau got threshold_mode={threshold_mode!r}; expected 'rel' or 'abs'.")
        _check_int("ReduceLROnPlateau: `patience`", patience, 0)
        _check_int("ReduceLROnPlateau: `cooldown`", cooldown, 0)
        self.lr, self.mode, self.factor, self.patience, self.threshold = lr, mode, factor, patience, threshold
        self.threshold_mode, self.cooldown, self.min_lr, self.eps = threshold_mode, cooldown, min_lr, eps

    def wrap(self, optimizer: Callable[..., optax.GradientTransformation], **kwargs) -> optax.GradientTransformation:
        """``optimizer(lr=<the current lr>, **kwargs)``, the lr read from the state at every update."""
        if isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
            raise ValueError(
                f"ReduceLROnPlateau.wrap got {optimizer!r}; expected an optimizer function such as "
                "jaxnets.optim.sgd (not a call of it), and its other arguments: wrap(jaxnets.optim.sgd, momentum=0.9)."
            )
        if "lr" in kwargs:
            raise ValueError("ReduceLROnPlateau.wrap got `lr`; the lr is ReduceLROnPlateau's first argument.")

        def inner(lr):
            return optimizer(lr=lambda count: lr, **kwargs)

        def init_fn(params):
            dtype = jnp.result_type(float)  # float64 under x64, as torch's Python-float lr
            lr = jnp.asarray(self.lr, dtype)
            worse = jnp.asarray(math.inf if self.mode == "min" else -math.inf, dtype)
            zero = jnp.zeros([], jnp.int32)
            return PlateauState(lr, worse, zero, zero, zero, inner(lr).init(params))

        def update_fn(updates, state, params=None, **extra):
            updates, inner_state = inner(state.lr).update(updates, state.inner_state, params, **extra)
            return updates, state._replace(inner_state=inner_state)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, state: PlateauState, metric) -> PlateauState:
        """torch's ``scheduler.step(metric)``: the state after one epoch with this metric."""
        if not isinstance(state, PlateauState):
            raise ValueError(
                f"ReduceLROnPlateau.step got a {type(state).__name__}; expected the state of the transformation "
                "returned by its wrap(...) (a PlateauState)."
            )
        current = jnp.asarray(metric, state.best.dtype)
        if current.shape != ():
            raise ValueError(f"ReduceLROnPlateau.step got a metric of shape {current.shape}; expected a scalar.")
        better = self._is_better(current, state.best)
        best = jnp.where(better, current, state.best)
        bad = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown_counter = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
        bad = jnp.where(in_cooldown, 0, bad)
        reduce = bad > self.patience
        new_lr = jnp.maximum(state.lr * self.factor, jnp.asarray(self.min_lr, state.lr.dtype))
        lr = jnp.where(reduce & (state.lr - new_lr > self.eps), new_lr, state.lr)
        cooldown_counter = jnp.where(reduce, self.cooldown, cooldown_counter)
        bad = jnp.where(reduce, 0, bad)
        return state._replace(
            lr=lr,
            best=best,
            num_bad_epochs=bad.astype(jnp.int32),
            cooldown_counter=cooldown_counter.astype(jnp.int32),
            last_epoch=state.last_epoch + 1,
        )

    def get_last_lr(self, state: PlateauState) -> jax.Array:
        """torch's ``scheduler.get_last_lr()[0]``."""
        return state.lr
