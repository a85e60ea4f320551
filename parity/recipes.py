"""The ``trajectory/recipe ...`` rows: parameter groups, gradient clipping and a scheduler in one training loop.

Each recipe is what a PyTorch training script writes::

    optimizer = torch.optim.SGD(
        [{"params": weights, "weight_decay": 1e-2}, {"params": biases, "weight_decay": 0, "lr": 2 * lr}],
        lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 3, 0.5)  # stepped every 5 batches
    for t in range(50):
        optimizer.zero_grad(); loss = criterion(model(x), y); loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        if (t + 1) % 5 == 0: scheduler.step()

against its jaxnets port, one optax chain::

    optax.chain(
        jaxnets.optim.clip_grad_norm(max_norm),
        jaxnets.optim.param_groups(jaxnets.optim.sgd,
            [{"params": "*.weight", "weight_decay": 1e-2}, {"params": "*.bias", "weight_decay": 0.0, "lr": 2 * lr}],
            lr=lr, momentum=0.9, schedule=lambda base_lr: lr_scheduler.StepLR(base_lr, 3, 0.5, steps_per_epoch=5)))

The rows compare every loss, every step's total gradient norm (torch's return
value of ``clip_grad_norm_`` against ``jaxnets.optim.total_norm(opt_state)``),
every group's lr (torch's ``param_groups[i]["lr"]`` against the group's
schedule) and the final weights. ``max_norm`` is set so that clipping binds on
some steps and not on others; a row whose clipping never binds, or always
binds, fails (it would not test the clip's arithmetic, or not the unclipped
path). float32 rows are held to the trajectory bound of :mod:`parity.precision`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

from jaxnets import optim
from jaxnets.losses import mse_loss
from jaxnets.optim import lr_scheduler as ls

from ._result import result
from ._specs import ModelSpec, lenet, np_dtype, to_tensor, two_layer, x64
from .convert import to_torch_state_dict
from .precision import errors
from .torch_models import to_numpy

RECIPE_STEPS = 50
"""Steps of the recipe rows."""


@dataclass(frozen=True)
class Recipe:
    """A torch optimizer over two param groups (weights, biases), ``clip_grad_norm_`` and a scheduler.

    Attributes:
      name: the row's check after ``trajectory/``.
      what: the recipe in words, for the row's note.
      spec: the model.
      family: the ``jaxnets.optim`` function; ``torch_class`` its ``torch.optim`` twin.
      defaults: the optimizer's arguments for every group (jaxnets may replace
        a value by a schedule: ``jax_defaults``).
      groups: the weights' and the biases' options (torch's group dicts without ``params``).
      torch_scheduler: ``optimizer -> scheduler``; ``steps_per_epoch`` optimizer steps per ``scheduler.step()``.
      schedule: ``base lr -> jaxnets schedule``, applied to each group's own lr.
      max_norm: of the clipping.
      jax_defaults, jax_groups: the jaxnets side's, when they differ (a schedule
        for a cycled ``beta1``; a test's deliberately wrong port).
    """

    name: str
    what: str
    spec: ModelSpec
    family: Callable
    torch_class: type
    defaults: dict
    groups: tuple[dict, dict]
    torch_scheduler: Callable
    steps_per_epoch: int
    schedule: Callable
    max_norm: float
    jax_defaults: dict | None = None
    jax_groups: tuple[dict, dict] | None = None

    def torch_optimizer(self, module) -> torch.optim.Optimizer:
        named = list(module.named_parameters())
        weights = [p for n, p in named if n.endswith("weight")]
        biases = [p for n, p in named if n.endswith("bias")]
        groups = [{"params": weights, **self.groups[0]}, {"params": biases, **self.groups[1]}]
        return self.torch_class(groups, **self.defaults)

    def jax(self) -> optax.GradientTransformation:
        weight_options, bias_options = self.groups if self.jax_groups is None else self.jax_groups
        groups = [{"params": "*.weight", **weight_options}, {"params": "*.bias", **bias_options}]
        defaults = self.defaults if self.jax_defaults is None else self.jax_defaults
        return optax.chain(
            optim.clip_grad_norm(self.max_norm),
            optim.param_groups(self.family, groups, schedule=self.schedule, **defaults),
        )

    def group_lrs(self) -> list[float]:
        return [g.get("lr", self.defaults.get("lr")) for g in self.groups]


def recipes() -> list[Recipe]:
    """SGD with momentum + StepLR on the two-layer net; AdamW + OneCycleLR (cycled beta1) per batch on LeNet.

    ``max_norm`` lies between the smallest and the largest total gradient norm
    of the run (see :func:`recipe_job`'s ``clipped`` count in the row's note).
    OneCycleLR sets each group's lr from its own ``max_lr`` (torch: a list, one
    per group; jaxnets: the group's ``lr`` given to the schedule).
    """
    step_lr = lambda base_lr: ls.StepLR(base_lr, 3, 0.5, steps_per_epoch=5)  # noqa: E731
    one_cycle = lambda max_lr: ls.OneCycleLR(max_lr, total_steps=RECIPE_STEPS)  # noqa: E731
    max_lrs = (1e-3, 3e-3)
    return [
        Recipe(
            "recipe sgd(momentum=0.9) + groups + clip + StepLR",
            "weights weight_decay=1e-2, biases weight_decay=0 and lr 2e-4, clip_grad_norm_(300), StepLR(3, 0.5) "
            "every 5 steps",
            two_layer(),
            optim.sgd,
            torch.optim.SGD,
            {"lr": 1e-4, "momentum": 0.9},
            ({"weight_decay": 1e-2}, {"weight_decay": 0.0, "lr": 2e-4}),
            lambda opt: torch.optim.lr_scheduler.StepLR(opt, 3, 0.5),
            5,
            step_lr,
            300.0,
        ),
        Recipe(
            "recipe adamw + groups + clip + OneCycleLR",
            "weights weight_decay=1e-2 and max_lr 1e-3, biases weight_decay=0 and max_lr 3e-3, "
            "clip_grad_norm_(40), OneCycleLR per batch cycling beta1",
            lenet(5),
            optim.adamw,
            torch.optim.AdamW,
            {},
            ({"weight_decay": 1e-2, "lr": max_lrs[0]}, {"weight_decay": 0.0, "lr": max_lrs[1]}),
            lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, list(max_lrs), total_steps=RECIPE_STEPS),
            1,
            one_cycle,
            40.0,
            jax_defaults={"betas": (one_cycle(1.0).momentum, 0.999)},
        ),
    ]


def recipe_job(dtype: str, *, steps: int = RECIPE_STEPS, seed: int = 0, select=None):
    """``<model>/trajectory/recipe .../<dtype>`` rows: each :func:`recipes` entry, torch against jaxnets."""
    from .checks import Job, _selected

    row_id = lambda r: f"{r.spec.name}/trajectory/{r.name}/{dtype}"  # noqa: E731
    chosen = [r for r in recipes() if _selected(select, row_id(r))]
    if not chosen:
        return None
    inits = [r.spec.torch_init(seed) for r in chosen]
    data = [r.spec.data(seed) for r in chosen]

    def jax_half():
        out = []
        with x64(dtype):
            for recipe, init, (x, target) in zip(chosen, inits, data, strict=True):
                spec = recipe.spec
                graphdef, params = nnx.split(spec.jax_module(init, dtype), nnx.Param)
                tx = recipe.jax()
                xj, tj = spec.jax_input(x, dtype), jnp.asarray(target, np_dtype(dtype))

                @jax.jit
                def step(params, state, xj=xj, tj=tj, graphdef=graphdef, spec=spec, tx=tx):
                    loss_of = lambda p: mse_loss(spec.jax_apply(nnx.merge(graphdef, p), xj, None), tj, spec.reduction)  # noqa: E731
                    loss, grads = jax.value_and_grad(loss_of)(params)
                    updates, state = tx.update(grads, state, params)
                    return optax.apply_updates(params, updates), state, loss, optim.total_norm(state)

                state = jax.jit(tx.init)(params)
                losses, norms = [], []
                for _ in range(steps):
                    params, state, loss, norm = step(params, state)
                    losses.append(loss)
                    norms.append(norm)
                schedules = [recipe.schedule(lr) for lr in recipe.group_lrs()]
                lrs = [[float(s(c)) for c in range(steps)] for s in schedules]
                weights = {k: v.numpy() for k, v in to_torch_state_dict(params).items()}
                out.append((np.asarray(losses, np.float64), np.asarray(norms, np.float64), np.asarray(lrs), weights))
        return out

    def torch_half():
        out = []
        for recipe, init, (x, target) in zip(chosen, inits, data, strict=True):
            spec = recipe.spec
            module = spec.torch_module(init, dtype)
            xt, tt = to_tensor(x, dtype), to_tensor(target, dtype)
            optimizer = recipe.torch_optimizer(module)
            scheduler = recipe.torch_scheduler(optimizer)
            criterion = torch.nn.MSELoss(reduction=spec.reduction)
            losses, norms, lrs = [], [], []
            for t in range(steps):
                lrs.append([g["lr"] for g in optimizer.param_groups])  # the lr this step uses
                optimizer.zero_grad()
                loss = criterion(module(xt), tt)
                loss.backward()
                norms.append(float(torch.nn.utils.clip_grad_norm_(module.parameters(), recipe.max_norm)))
                optimizer.step()
                losses.append(loss.item())
                if (t + 1) % recipe.steps_per_epoch == 0:
                    scheduler.step()
            weights = {k: to_numpy(v) for k, v in module.state_dict().items()}
            out.append((np.asarray(losses), np.asarray(norms), np.asarray(lrs).T, weights))
        return out

    def compare(jax_out, torch_out):
        rows = []
        for recipe, j, t in zip(chosen, jax_out, torch_out, strict=True):
            (jl, jn, jlr, jw), (tl, tn, tlr, tw) = j, t
            clipped = int(np.sum(tn > recipe.max_norm))
            other = {
                "losses": errors(jl, tl),
                "total norms": errors(jn, tn),
                **{f"lr of group {i}": errors(jlr[i], tlr[i]) for i in range(len(tlr))},
            }
            if not 0 < clipped < steps:  # the row would not test the clip, or not the unclipped steps
                other[f"clipping binds on {clipped} of {steps} steps"] = (np.inf, np.inf)
            per_param = {k: errors(jw[k], tw[k]) for k in tw}
            note = (
                f"{steps} steps, clipped on {clipped}; every loss, total norm, group lr and the final weights; "
                f"{recipe.what}"
            )
            curves = {"torch": tl, "jax": jl}
            rows.append(result(recipe.spec.name, f"trajectory/{recipe.name}", dtype, per_param, other, note, curves))
        return rows

    return Job([row_id(r) for r in chosen], jax_half, torch_half, compare)
