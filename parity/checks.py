"""The parity check matrix: every model, check and dtype, PyTorch against jaxnets, as result rows.

Each check builds a PyTorch reference (:mod:`parity.torch_models`) and its
jaxnets twin from the *same* numbers (torch's initial weights copied with
:func:`parity.load_torch_state_dict`, images moved NCHW -> NHWC with
:func:`parity.to_nhwc`), runs both, and compares them with
:func:`parity.precision.errors` per array: per parameter under its torch name
(gradients and trained weights go back through :func:`parity.to_torch_state_dict`),
plus the outputs, losses or loss curves. A row passes when its worst norm-wise
relative error is within :func:`parity.precision.tolerance`.

========================  =================================================================
check                     what is compared
========================  =================================================================
``forward``               outputs (DynamicNet: at every depth 0..3)
``grad``                  gradients of the tutorials' losses: LeNet ``MSELoss()`` against
                          the dummy target ``arange(1, 11)``, the two-layer nets and
                          DynamicNet ``MSELoss(reduction='sum')`` against ``y``
``vjp``                   ``out.backward(cotangent)`` against ``jax.vjp``, parameters and input
``step/<optimizer>``      one optimizer step: the weights after it
``update/<optimizer>``    ten steps of torch.optim and jaxnets.optim on the same given gradients
                          (no model runs): the weights after every step; options at values
                          that change the update visibly, so float32 catches a dropped one
``trajectory/<...>``      N steps (500 for the seed-004 stages in float64, 40 in float32):
                          every loss and the final weights
``trajectory/recipe ...`` 50 steps of param groups + ``clip_grad_norm_`` + a scheduler
                          (:mod:`parity.recipes`): losses, total norms, group lrs, weights
``grad/stage...``         seed 004's first-step gradients, hand-written and autograd
``schedule/<scheduler>``  ``lr_scheduler`` rows: every torch scheduler's lr (and cycled
                          momentum) at every step of 200 epochs, past each one's natural
                          end, against the jaxnets schedule (:mod:`parity.schedulers`)
``semantics differ``      DynamicNet under ``zero_grad(set_to_none=True)`` and ``False`` must
                          *differ* on the shared depth schedule (else the two checks above
                          could not tell the semantics apart)
========================  =================================================================

Everything runs in float64 (``jax.enable_x64`` scoped to the check, ``torch.double``)
and in float32, except stage 1's NumPy rows and Rprop's trajectory (float64 only:
:data:`FLOAT64_ONLY_TRAJECTORIES`).

The optimizer rows cover every ``torch.optim`` optimizer that jaxnets ports as an
optax transformation and that trains the two-layer net: SGD, Adam, AdamW, RMSprop,
Adagrad, Adadelta, Adamax, NAdam, RAdam, ASGD (its averaged parameters compared
too), Rprop and Adafactor (:data:`parity._specs._TORCH_OPTIMIZERS`). Muon is not
in them: it takes 2-D parameters only and every model here has biases; its
parity is tested on torch's own configurations and on a bias-free two-layer net
(``tests/test_optim_torch.py``, ``tests/test_parity_convert.py``). Neither is
LBFGS: it is not an optax transformation (its ``step(params, state,
value_and_grad_fn)`` evaluates the loss several times per step, as torch's
``step(closure)`` does), and ``tests/test_optim_torch.py`` runs torch's own LBFGS
configurations against it. :func:`run` overlaps the
two frameworks: JAX compiles and runs in one worker thread while torch runs in the
caller's thread (see :func:`run_jobs`).
The ported real models (:mod:`jaxnets.ports`: MNIST example, DCGAN, word-language-model
LSTM, Transformer encoder, ResNet-18) have their own rows, ``<model>/vjp/<mode>/<dtype>`` and
``<model>/trajectory/<optimizer>/float64``, built in :mod:`parity.ports` with their own tolerances
(:func:`parity.precision.port_tolerance`).
``python -m parity`` prints the table; :func:`row_ids` lists the rows without
running them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

import jaxnets
from jaxnets.losses import mse_loss
from jaxnets.tutorials import progression

from . import precision
from . import torch_models as tm
from ._result import Result as Result
from ._result import failed_rows, merge, params_errors, result, worst
from ._specs import UPDATE_DECAY, jax_dtype, np_dtype, to_tensor, torch_dtype, update_grads, x64
from ._specs import ModelSpec as ModelSpec
from ._specs import OptimConfig as OptimConfig
from ._specs import dynamic as dynamic
from ._specs import lenet as lenet
from ._specs import lenet_optimizer_configs as lenet_optimizer_configs
from ._specs import model_specs as model_specs
from ._specs import optimizer_configs as optimizer_configs
from ._specs import optimizer_model as optimizer_model
from ._specs import sequential as sequential
from ._specs import two_layer as two_layer
from ._specs import update_configs as update_configs
from ._threads import limited_threads as limited_threads
from .convert import load_torch_state_dict, to_torch_state_dict
from .layout import to_nchw
from .recipes import recipe_job
from .schedulers import schedule_job
from .torch_models import to_numpy

DTYPES = ("float64", "float32")
OPTIMIZER_STEPS = 40
"""Steps of the optimizer trajectories: enough for momentum and moments to matter, cheap on two cores."""
UPDATE_STEPS = 10
"""Steps of the ``update/...`` rows: enough for momentum, dampening, lr_decay and AMSGrad to change the weights."""
FLOAT64_ONLY_TRAJECTORIES = ("rprop",)
"""Families whose 40-step trajectory runs in float64 only. Rprop steps by ``step_size * sign(g)`` with step
sizes that grow 1.2-fold a step: once training converges (loss 627 -> 3e-5 in 40 steps at lr 3e-4) the signs
of the small gradient entries are rounding, and torch against *torch* from initial weights scaled by
``1 + 1.2e-7`` ends 0.06 to 0.46 apart (seeds 0 to 9, float32), jaxnets against torch 0.07 to 0.48: a float32
bound there would measure the chaos, not the port. Its float32 ``step/`` and ``update/`` rows stay (the update
rows agree exactly: the same given gradients have the same signs)."""
STAGE_STEPS = 500
"""The seed's ``for t in range(500)``: the seed-004 stages run their full length."""


# -- jobs: a JAX half, a torch half, and the comparison ----------------------------------------


@dataclass
class Job:
    """Some rows that share their work: ``jax()`` runs in the JAX thread, ``torch()`` in the caller's.

    Both halves return NumPy values; ``compare(jax_out, torch_out)`` turns them
    into :class:`Result` rows, one per id in ``ids``. ``tolerance(dtype, check)``
    is the rows' bound, shown on the FAIL rows of a job that raises.
    """

    ids: list[str]
    jax: Callable[[], Any]
    torch: Callable[[], Any]
    compare: Callable[[Any, Any], list[Result]]
    tolerance: Callable[[str, str], float] = precision.tolerance


def _selected(select, *ids: str) -> bool:
    return select is None or any(select(i) for i in ids)


def forward_job(
    specs: list[ModelSpec], dtype: str, *, seed: int = 0, load=load_torch_state_dict, select=None
) -> Job | None:
    """``forward``, ``grad`` and ``vjp`` rows for ``specs``: one compiled JAX program for all of them.

    Args:
      specs: the models.
      dtype: ``"float32"`` or ``"float64"``.
      seed: seeds torch's initial weights, the inputs and the cotangent.
      load: copies torch weights into the jaxnets model; a test passes a broken
        one to see the check fail.
      select: ``select(row_id) -> bool``; rows it rejects are not computed.

    Returns:
      The job, or None when no row is selected.
    """
    checks = ("forward", "grad", "vjp")
    wanted = [
        (spec, [c for c in checks if _selected(select, f"{spec.name}/{c}/{dtype}")])
        for spec in specs
        if _selected(select, *(f"{spec.name}/{c}/{dtype}" for c in checks))
    ]
    if not wanted:
        return None
    cases = []
    for spec, _ in wanted:
        x, target = spec.data(seed)
        out_shape = (spec.x_shape[0], spec.out_features)
        cot = np.random.default_rng([seed, 2]).standard_normal(out_shape)
        cases.append((spec, spec.torch_init(seed), x, target, cot))

    def jax_half():
        with x64(dtype):
            static, args = [], []
            for spec, init, x, target, cot in cases:
                graphdef, params = nnx.split(spec.jax_module(init, dtype, load), nnx.Param)
                arrays = (spec.jax_input(x, dtype), *(jnp.asarray(a, np_dtype(dtype)) for a in (target, cot)))
                for depth in spec.depths:
                    static.append((spec, graphdef, depth))
                    args.append((params, *arrays))

            def one(spec, graphdef, depth, params, x, target, cot):
                apply = lambda p, x: spec.jax_apply(nnx.merge(graphdef, p), x, depth)  # noqa: E731
                out, vjp_fn = jax.vjp(apply, params, x)
                vjp_params, vjp_x = vjp_fn(cot)
                loss, grads = jax.value_and_grad(lambda p: mse_loss(apply(p, x), target, spec.reduction))(params)
                return out, loss, grads, vjp_params, vjp_x

            outs = jax.jit(lambda args: [one(*s, *a) for s, a in zip(static, args, strict=True)])(args)
            results = []
            for (spec, _, _), (out, loss, grads, vjp_params, vjp_x) in zip(static, outs, strict=True):
                results.append(
                    (
                        to_numpy(out),
                        to_numpy(loss),
                        {k: v.numpy() for k, v in to_torch_state_dict(grads).items()},
                        {k: v.numpy() for k, v in to_torch_state_dict(vjp_params).items()},
                        to_nchw(to_numpy(vjp_x)) if spec.images else to_numpy(vjp_x),  # (N, H, W, C) -> (N, C, H, W)
                    )
                )
            return results

    def torch_half():
        results = []
        for spec, init, x, target, cot in cases:
            module = spec.torch_module(init, dtype)
            params = dict(module.named_parameters())
            grad_of = lambda p: np.zeros(p.shape) if p.grad is None else to_numpy(p.grad)  # noqa: E731
            criterion = torch.nn.MSELoss(reduction=spec.reduction)
            xt, target_t, cot_t = to_tensor(x, dtype), to_tensor(target, dtype), to_tensor(cot, dtype)
            for depth in spec.depths:
                module.zero_grad(set_to_none=True)
                out = spec.torch_apply(module, xt, depth)
                loss = criterion(out, target_t)
                loss.backward()
                grads = {k: grad_of(p) for k, p in params.items()}
                module.zero_grad(set_to_none=True)
                x_req = xt.clone().requires_grad_(True)
                spec.torch_apply(module, x_req, depth).backward(cot_t)
                vjp_params = {k: grad_of(p) for k, p in params.items()}
                results.append((to_numpy(out), to_numpy(loss), grads, vjp_params, to_numpy(x_req.grad)))
        return results

    def compare(jax_out, torch_out):
        rows, i = [], 0
        for spec, wanted_checks in wanted:
            per = {c: ({}, {}) for c in checks}
            for depth in spec.depths:
                (j_out, j_loss, j_grads, j_vjp, j_vx), (t_out, t_loss, t_grads, t_vjp, t_vx) = jax_out[i], torch_out[i]
                i += 1
                at = "" if depth is None else f" (depth {depth})"
                merge(per["forward"][1], "output" + at, precision.errors(j_out, t_out))
                merge(per["grad"][1], "loss" + at, precision.errors(j_loss, t_loss))
                merge(per["vjp"][1], "input" + at, precision.errors(j_vx, t_vx))
                for name, err in params_errors(j_grads, t_grads).items():
                    merge(per["grad"][0], name, err)
                for name, err in params_errors(j_vjp, t_vjp).items():
                    merge(per["vjp"][0], name, err)
            loss = f"MSELoss(reduction={spec.reduction!r})" + (" vs arange(1, 11)" if spec.arange_target else " vs y")
            notes = {
                "forward": f"x {spec.x_shape} (torch layout)",
                "grad": loss,
                "vjp": "out.backward(cotangent) vs jax.vjp, standard-normal cotangent",
            }
            rows += [result(spec.name, c, dtype, *per[c], note=notes[c]) for c in wanted_checks]
        return rows

    return Job([f"{s.name}/{c}/{dtype}" for s, cs in wanted for c in cs], jax_half, torch_half, compare)


# -- optimizers ---------------------------------------------------------------------------------


def _torch_train(spec: ModelSpec, module, optimizer, x, target, steps: int):
    """The tutorial's loop; returns the losses and the weights after the first and the last step."""
    criterion = torch.nn.MSELoss(reduction=spec.reduction)
    losses, first = np.empty(steps), None
    for t in range(steps):
        optimizer.zero_grad()  # zero the gradient buffers
        output = spec.torch_apply(module, x, spec.depths[-1])
        loss = criterion(output, target)
        losses[t] = loss.item()
        loss.backward()
        optimizer.step()  # Does the update
        if t == 0:
            first = {k: to_numpy(v) for k, v in module.state_dict().items()}
    return losses, first, {k: to_numpy(v) for k, v in module.state_dict().items()}


def _jax_step(spec: ModelSpec, graphdef, tx, state, batch):
    """One optimizer step of one member; DynamicNet runs its deepest path, which uses every parameter."""
    (params, opt_state), (x, target) = state, batch
    loss_of = lambda p: mse_loss(spec.jax_apply(nnx.merge(graphdef, p), x, spec.depths[-1]), target, spec.reduction)  # noqa: E731
    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss


def _averaged(cfg: OptimConfig, opt_state):
    """ASGD's averaged parameters ``ax`` (which its ``t0``, ``lambd`` and ``alpha`` shape), else None."""
    return jaxnets.optim.asgd_averaged_params(opt_state) if cfg.family == "asgd" else None


def _torch_averaged(cfg: OptimConfig, optimizer, params: dict) -> dict | None:
    """torch's ``state[p]["ax"]`` by parameter name, for ASGD (else None)."""
    if cfg.family != "asgd":
        return None
    return {k: to_numpy(optimizer.state[p]["ax"]) for k, p in params.items()}


def _ax_errors(jax_ax: dict | None, torch_ax: dict | None) -> dict:
    """``{"ax <name>": (abs, rel)}``: ASGD's averaged parameters are its output, so its rows compare them too."""
    if jax_ax is None:
        return {}
    return {f"ax {k}": err for k, err in params_errors(jax_ax, torch_ax).items()}


def optimizer_job(
    members: list[tuple[ModelSpec, OptimConfig]],
    dtype: str,
    *,
    steps: int = OPTIMIZER_STEPS,
    seed: int = 0,
    select=None,
) -> Job | None:
    """``step/<optimizer>`` and ``trajectory/<optimizer>`` rows: every member in one compiled JAX step.

    Each member trains its own copy of its model from torch's initial weights
    on ``spec.data(seed)``. The JAX step of all members is one program, called
    ``steps`` times, so the matrix compiles once per dtype instead of once per
    optimizer.
    """
    if steps < 1:
        raise ValueError(f"optimizer_job needs steps >= 1; got {steps}.")

    def ids(spec, cfg):
        out = (f"{spec.name}/step/{cfg.name}/{dtype}",)
        if not (dtype == "float32" and cfg.family in FLOAT64_ONLY_TRAJECTORIES):
            out += (f"{spec.name}/trajectory/{cfg.name}/{dtype}",)
        return out

    members = [(s, c) for s, c in members if _selected(select, *ids(s, c))]
    if not members:
        return None
    inits = {spec: spec.torch_init(seed) for spec, _ in members}
    data = {spec: spec.data(seed) for spec, _ in members}

    def jax_half():
        with x64(dtype):
            static, params, batches = [], [], []
            for spec, cfg in members:
                graphdef, p = nnx.split(spec.jax_module(inits[spec], dtype), nnx.Param)
                static.append((spec, graphdef, cfg.jax()))
                params.append(p)
                x, target = data[spec]
                batches.append((spec.jax_input(x, dtype), jnp.asarray(target, np_dtype(dtype))))
            # One program for every optimizer's init: eager inits compile a program per shape and option.
            states = jax.jit(lambda ps: [(p, tx.init(p)) for (_, _, tx), p in zip(static, ps, strict=True)])(params)
            step_all = jax.jit(
                lambda states, batches: tuple(
                    zip(*(_jax_step(*m, s, b) for m, s, b in zip(static, states, batches, strict=True)), strict=True)
                )
            )
            losses = []
            for t in range(steps):
                states, step_losses = step_all(states, batches)
                losses.append(step_losses)
                if t == 0:
                    first = [p for p, _ in states]
            as_torch = lambda p: None if p is None else {k: v.numpy() for k, v in to_torch_state_dict(p).items()}  # noqa: E731
            curves = np.asarray(jax.device_get(losses), np.float64).T  # (step, member) -> (member, step)
            return [
                (curves[i], as_torch(first[i]), as_torch(p), as_torch(_averaged(cfg, s)))
                for i, ((p, s), (_, cfg)) in enumerate(zip(states, members, strict=True))
            ]

    def torch_half():
        out = []
        for spec, cfg in members:
            module = spec.torch_module(inits[spec], dtype)
            x, target = (to_tensor(a, dtype) for a in data[spec])
            optimizer = cfg.torch(module.parameters())
            trained = _torch_train(spec, module, optimizer, x, target, steps)
            out.append((*trained, _torch_averaged(cfg, optimizer, dict(module.named_parameters()))))
        return out

    def compare(jax_out, torch_out):
        rows = []
        for (spec, cfg), j, t in zip(members, jax_out, torch_out, strict=True):
            (j_losses, j_first, j_last, j_ax), (t_losses, t_first, t_last, t_ax) = j, t
            step_id, *traj_id = ids(spec, cfg)
            note = f"lr={cfg.lr}, torch.optim.{cfg.torch_name} vs jaxnets.optim.{cfg.family}, x {spec.x_shape}"
            if _selected(select, step_id):
                loss0 = {"loss": precision.errors(j_losses[0], t_losses[0])}
                rows.append(result(spec.name, f"step/{cfg.name}", dtype, params_errors(j_first, t_first), loss0, note))
            if traj_id and _selected(select, *traj_id):
                curves = {"torch": t_losses, "jax": j_losses}
                losses = {"losses": precision.errors(j_losses, t_losses), **_ax_errors(j_ax, t_ax)}
                per_param = params_errors(j_last, t_last)
                note = f"{steps} steps, {note}"
                rows.append(result(spec.name, f"trajectory/{cfg.name}", dtype, per_param, losses, note, curves))
        return rows

    return Job([i for s, c in members for i in ids(s, c) if _selected(select, i)], jax_half, torch_half, compare)


def update_job(
    configs: list[OptimConfig],
    dtype: str,
    *,
    spec: ModelSpec | None = None,
    steps: int = UPDATE_STEPS,
    seed: int = 0,
    select=None,
) -> Job | None:
    """``update/<optimizer>`` rows: ``torch.optim`` and ``jaxnets.optim`` stepped on the same given gradients.

    Both start from torch's initial weights of ``spec`` (default: the optimizer
    rows' ``TwoLayerNet``) and take ``steps`` steps on the gradients of
    :func:`parity._specs.update_grads` (torch: ``p.grad = g; optimizer.step()``;
    JAX: ``tx.update`` and ``optax.apply_updates`` in one ``lax.scan``). No
    forward or backward pass runs, so the rows compare the optimizers' arithmetic
    alone, and the weights after *every* step. All configs are one compiled program.
    """
    if steps < 1:
        raise ValueError(f"update_job needs steps >= 1; got {steps}.")
    spec = spec or optimizer_model()
    row_id = lambda cfg: f"{spec.name}/update/{cfg.name}/{dtype}"  # noqa: E731
    configs = [c for c in configs if _selected(select, row_id(c))]
    if not configs:
        return None
    init = spec.torch_init(seed)
    grads = update_grads(init, seed, steps)

    def jax_half():
        with x64(dtype):
            txs = [c.jax() for c in configs]
            params = {k: jnp.asarray(np.asarray(v, np_dtype(dtype))) for k, v in init.items()}
            stacked = {k: jnp.asarray(np.stack([g[k] for g in grads]).astype(np_dtype(dtype))) for k in init}

            def run(params, stacked):
                def body(carry, g):
                    carry = [
                        (optax.apply_updates(p, u), s)
                        for tx, (p, s) in zip(txs, carry, strict=True)
                        for u, s in [tx.update(g, s, p)]
                    ]
                    return carry, [p for p, _ in carry]

                final, per_step = jax.lax.scan(body, [(params, tx.init(params)) for tx in txs], stacked)
                return per_step, [_averaged(c, s) for c, (_, s) in zip(configs, final, strict=True)]

            per_config, averaged = jax.tree.map(to_numpy, jax.jit(run)(params, stacked))  # [config]{name: (step, ...)}
            weights = [[{k: p[k][t] for k in init} for t in range(steps)] for p in per_config]  # torch's name order
            averaged = [None if a is None else {k: a[k] for k in init} for a in averaged]
            return weights, averaged

    def torch_half():
        out = []
        for cfg in configs:
            params = {k: torch.nn.Parameter(to_tensor(v, dtype)) for k, v in init.items()}
            optimizer = cfg.torch(params.values())
            weights = []
            for g in grads:
                for k, p in params.items():
                    p.grad = to_tensor(g[k], dtype)
                optimizer.step()
                weights.append({k: to_numpy(p) for k, p in params.items()})
            out.append((weights, _torch_averaged(cfg, optimizer, params)))
        return out

    def compare(jax_out, torch_out):
        rows = []
        for cfg, j_steps, j_ax, (t_steps, t_ax) in zip(configs, *jax_out, torch_out, strict=True):
            per_param = {}
            for j, t in zip(j_steps, t_steps, strict=True):
                for name, err in params_errors(j, t).items():
                    merge(per_param, name, err)
            note = (
                f"{steps} steps on the same given gradients (standard normal x {UPDATE_DECAY}**t), every step's "
                f"weights, lr={cfg.lr}, torch.optim.{cfg.torch_name} vs jaxnets.optim.{cfg.family}"
            )
            rows.append(result(spec.name, f"update/{cfg.name}", dtype, per_param, _ax_errors(j_ax, t_ax), note))
        return rows

    return Job([row_id(c) for c in configs], jax_half, torch_half, compare)


# -- seed 004: the seven stages -----------------------------------------------------------------


def bias_free_grad_job(dtype: str, *, seed: int = 0, select=None) -> Job | None:
    """Stages 2 and 3's first-step loss and gradients: hand-written and autograd, JAX and torch.

    Rows: ``grad/stage2 manual`` (JAX's hand-written backward against torch's,
    :func:`parity.torch_models.manual_grads`), ``grad/stage3 autograd``
    (``jax.value_and_grad`` against ``loss.backward()``) and ``grad/manual vs
    autograd`` (JAX's hand-written backward against torch's autograd).
    """
    checks = ("grad/stage2 manual", "grad/stage3 autograd", "grad/manual vs autograd")
    wanted = [c for c in checks if _selected(select, f"bias_free/{c}/{dtype}")]
    if not wanted:
        return None
    d = progression.make_data(seed)

    def jax_half():
        with x64(dtype):
            x, y, w1, w2 = (jnp.asarray(a, np_dtype(dtype)) for a in (d.x, d.y, d.w1, d.w2))
            # Stage 2's and stage 3's own gradient functions (their loops differ only in these).
            both = jax.jit(
                lambda w: (
                    progression._manual_grads(w, x, y),
                    jax.value_and_grad(progression._bias_free_loss)(w, x, y),
                )
            )
            return jax.tree.map(to_numpy, both((w1, w2)))

    def torch_half():
        manual = tm.manual_grads(d.x, d.y, d.w1, d.w2, dtype=torch_dtype(dtype))
        auto = tm.autograd_grads(d.x, d.y, d.w1, d.w2, dtype=torch_dtype(dtype))
        return [tuple(to_numpy(a) for a in r) for r in (manual, auto)]

    def compare(jax_out, torch_out):
        ((j_manual_loss, j_manual), (j_auto_loss, j_auto)), (t_manual, t_auto) = jax_out, torch_out
        pairs = {
            "grad/stage2 manual": ((j_manual_loss, *j_manual), t_manual),
            "grad/stage3 autograd": ((j_auto_loss, *j_auto), t_auto),
            "grad/manual vs autograd": ((j_manual_loss, *j_manual), t_auto),
        }
        rows = []
        for check in wanted:
            (jl, jw1, jw2), (tl, tw1, tw2) = pairs[check]
            per_param = {"w1": precision.errors(jw1, tw1), "w2": precision.errors(jw2, tw2)}
            loss = {"loss": precision.errors(jl, tl)}
            rows.append(result("bias_free", check, dtype, per_param, loss, "first step on make_data(seed)"))
        return rows

    return Job([f"bias_free/{c}/{dtype}" for c in wanted], jax_half, torch_half, compare)


def bias_free_trajectory_job(dtype: str, *, seed: int = 0, steps: int = STAGE_STEPS, select=None) -> Job | None:
    """Stages 1 to 3's loss curves (no weights come back from them) on ``progression.make_data(seed)``.

    float64: ``trajectory/stage1 numpy`` (jaxnets' NumPy loop,
    :func:`jaxnets.progression.numpy_manual`, against torch running the same
    hand-written algorithm, :func:`parity.torch_models.tensor_manual_loop`),
    ``stage2 manual``, ``stage3 autograd`` and ``jax vs numpy`` (both JAX loops
    against the seed's NumPy code, :func:`parity.torch_models.numpy_loop`).
    float32: stages 2 and 3 (NumPy's stage is float64 only).
    """
    checks = ["trajectory/stage2 manual", "trajectory/stage3 autograd"]
    if dtype == "float64":
        checks = ["trajectory/stage1 numpy", *checks, "trajectory/jax vs numpy"]
    wanted = [c for c in checks if _selected(select, f"bias_free/{c}/{dtype}")]
    if not wanted:
        return None
    d = progression.make_data(seed)
    need_numpy = "trajectory/jax vs numpy" in wanted

    def jax_half():
        out = {"numpy": progression.numpy_manual(steps, data=d)} if "trajectory/stage1 numpy" in wanted else {}
        with x64(dtype):
            out["manual"] = progression.jax_manual(steps, data=d, dtype=jax_dtype(dtype))
            out["autograd"] = progression.jax_autograd(steps, data=d, dtype=jax_dtype(dtype))
        return out

    def torch_half():
        out = {"numpy": tm.numpy_loop(d.x, d.y, d.w1, d.w2, steps)} if need_numpy else {}
        out["manual"] = tm.tensor_manual_loop(d.x, d.y, d.w1, d.w2, steps, dtype=torch_dtype(dtype))
        out["autograd"] = tm.autograd_loop(d.x, d.y, d.w1, d.w2, steps, dtype=torch_dtype(dtype))
        return out

    def compare(j, t):
        rows = []
        pairs = {
            # NumPy against torch: the seed's block 2 is block 1's algorithm written with torch tensors.
            "trajectory/stage1 numpy": ("numpy", "manual", "progression.numpy_manual vs torch tensor_manual_loop"),
            "trajectory/stage2 manual": ("manual", "manual", "jax_manual vs tensor_manual_loop"),
            "trajectory/stage3 autograd": ("autograd", "autograd", "jax_autograd vs autograd_loop"),
        }
        for check in wanted:
            if check == "trajectory/jax vs numpy":
                other = {f"jax_{k} losses": precision.errors(j[k], t["numpy"]) for k in ("manual", "autograd")}
                note = f"{steps} steps, jax_manual and jax_autograd vs numpy_loop"
                rows.append(result("bias_free", check, dtype, {}, other, note))
                continue
            jk, tk, note = pairs[check]
            losses = {"losses": precision.errors(j[jk], t[tk])}
            curves = {"torch": t[tk], "jax": j[jk]}
            rows.append(result("bias_free", check, dtype, {}, losses, f"{steps} steps, {note}", curves))
        return rows

    return Job([f"bias_free/{c}/{dtype}" for c in wanted], jax_half, torch_half, compare)


def depth_schedule(seed: int = 0, steps: int = STAGE_STEPS) -> np.ndarray:
    """The depths 0..3 that both frameworks' DynamicNet follow, one per step.

    Random, except that step 0 runs depth 3 and every tenth step (9, 19, ...)
    depth 0: so there are depth-0 steps after ``middle_linear``'s momentum has
    built up, where ``zero_grad(set_to_none=True)`` and ``False`` part ways.
    That is what gives the semantics checks their teeth.
    """
    depths = np.random.default_rng([seed, 3]).integers(0, 4, steps)
    depths[0] = 3
    depths[9::10] = 0
    return depths


def _stage_members(seed: int, steps: int):
    """(row model, check, torch model spec, torch loop, jax stage) for stages 4 to 7 and the skip variant."""
    depths = depth_schedule(seed, steps)
    lr, momentum = 1e-4, 0.9
    sgd_momentum = lambda m: torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum)  # noqa: E731

    def skip_unused(steps, *, data, model, dtype):
        x, y = (jnp.asarray(a, dtype) for a in (data.x, data.y))
        loss_fn = lambda m, x, y, d: mse_loss(m(x, d), y, reduction="sum")  # noqa: E731
        trainer = jaxnets.Trainer(
            model, jaxnets.optim.sgd(lr=lr, momentum=momentum), loss_fn, skip_unused=lambda m, x, y, d: m.used_params(d)
        )
        losses = trainer.run(steps, x, y, per_step=(jnp.asarray(depths[:steps], jnp.int32),))
        trainer.model  # noqa: B018 - writes the trained weights back into `model`
        return np.asarray(losses)

    return [
        ("sequential", "stage4 sequential_manual", sequential(),
         lambda m, x, y, n: tm.sequential_manual_loop(m, x, y, n, lr=lr), progression.sequential_manual),
        ("sequential", "stage5 sequential_adam", sequential(),
         lambda m, x, y, n: tm.optim_loop(m, torch.optim.Adam(m.parameters(), lr=lr), x, y, n),
         progression.sequential_adam),
        ("two_layer", "stage6 two_layer_sgd", two_layer(),
         lambda m, x, y, n: tm.optim_loop(m, torch.optim.SGD(m.parameters(), lr=lr), x, y, n),
         progression.two_layer_sgd),
        ("dynamic", "stage7 dynamic_sgd, set_to_none=False", dynamic(),
         lambda m, x, y, n: tm.optim_loop(m, sgd_momentum(m), x, y, n, depths=depths, set_to_none=False),
         lambda n, **kw: progression.dynamic_sgd(n, lr=lr, momentum=momentum, depths=depths[:n], **kw)),
        ("dynamic", "skip_unused, set_to_none=True", dynamic(),
         lambda m, x, y, n: tm.optim_loop(m, sgd_momentum(m), x, y, n, depths=depths, set_to_none=True),
         skip_unused),
    ]  # fmt: skip


SEMANTICS_CHECK = "semantics differ"


def stages_job(dtype: str, *, seed: int = 0, steps: int = STAGE_STEPS, select=None) -> Job | None:
    """Stages 4 to 7 and DynamicNet's two ``zero_grad`` semantics, from identical weights and data.

    Every stage starts from torch's initial weights (``torch.manual_seed(seed)``)
    copied into the jaxnets model passed as ``model=``, trains on
    ``progression.make_data(seed)`` for ``steps`` steps, and is compared on
    every loss and on the final weights. DynamicNet follows :func:`depth_schedule`:
    ``progression.dynamic_sgd`` (a plain ``Trainer``, zero gradients for unused
    parameters) against ``optim_loop(..., set_to_none=False)``, and ``Trainer(...,
    skip_unused=...)`` against ``set_to_none=True``. The ``semantics differ`` row
    compares the two torch runs with each other and the two JAX runs with each
    other, and passes only if each pair differs by more than
    ``precision.DISTINCT_RTOL``.
    """
    members = [m for m in _stage_members(seed, steps) if _selected(select, f"{m[0]}/trajectory/{m[1]}/{dtype}")]
    semantics_id = f"dynamic/{SEMANTICS_CHECK}/{dtype}"
    want_semantics = _selected(select, semantics_id)
    if want_semantics:  # needs both DynamicNet runs
        names = {m[1] for m in members}
        members += [m for m in _stage_members(seed, steps) if m[0] == "dynamic" and m[1] not in names]
    if not members:
        return None
    d = progression.make_data(seed)
    inits = [spec.torch_init(seed) for _, _, spec, _, _ in members]

    def jax_half():
        out = []
        with x64(dtype):
            for (_, _, spec, _, stage), init in zip(members, inits, strict=True):
                module = spec.jax_module(init, dtype)
                losses = stage(steps, data=d, model=module, dtype=jax_dtype(dtype))
                params = {k: v.numpy() for k, v in to_torch_state_dict(module).items()}
                out.append((np.asarray(losses, np.float64), params))
        return out

    def torch_half():
        out = []
        for (_, _, spec, loop, _), init in zip(members, inits, strict=True):
            module = spec.torch_module(init, dtype)
            losses = loop(module, d.x, d.y, steps)
            out.append((losses, {k: to_numpy(v) for k, v in module.state_dict().items()}))
        return out

    def compare(jax_out, torch_out):
        rows, runs = [], {}
        for (model, check, *_), j, t in zip(members, jax_out, torch_out, strict=True):
            (j_losses, j_params), (t_losses, t_params) = j, t
            runs[check] = (j_losses, j_params, t_losses, t_params)
            if _selected(select, f"{model}/trajectory/{check}/{dtype}"):
                curves = {"torch": t_losses, "jax": j_losses}
                other = {"losses": precision.errors(j_losses, t_losses)}
                per_param = params_errors(j_params, t_params)
                rows.append(result(model, f"trajectory/{check}", dtype, per_param, other, f"{steps} steps", curves))
        if want_semantics:
            rows.append(_semantics_row(dtype, *(runs[m[1]] for m in _stage_members(seed, steps)[3:])))
        return rows

    ids = [f"{m}/trajectory/{c}/{dtype}" for m, c, *_ in members if _selected(select, f"{m}/trajectory/{c}/{dtype}")]
    return Job(ids + ([semantics_id] if want_semantics else []), jax_half, torch_half, compare)


def _semantics_row(dtype, zeroed, skipped) -> Result:
    """How far ``set_to_none=False`` and ``True`` runs are apart, in torch and in JAX: must exceed DISTINCT_RTOL."""
    j_zero, jp_zero, t_zero, tp_zero = zeroed
    j_skip, jp_skip, t_skip, tp_skip = skipped
    torch_apart = params_errors(tp_skip, tp_zero)
    jax_apart = params_errors(jp_skip, jp_zero)
    per_param = {f"{name} (torch)": err for name, err in torch_apart.items()}
    per_param |= {f"{name} (jax)": err for name, err in jax_apart.items()}
    other = {"losses (torch)": precision.errors(t_skip, t_zero), "losses (jax)": precision.errors(j_skip, j_zero)}
    # The weakest of the two: both frameworks must tell the semantics apart.
    apart = min(worst(torch_apart.values()), worst(jax_apart.values()), key=lambda e: e[1])
    return Result(
        "dynamic",
        SEMANTICS_CHECK,
        dtype,
        max_abs=apart[0],
        max_rel=apart[1],
        tol=precision.DISTINCT_RTOL,
        passed=bool(apart[1] > precision.DISTINCT_RTOL),
        per_param=per_param,
        other=other,
        must_differ=True,
        note="final weights of set_to_none=True vs False runs, per framework; must differ",
        curves={"torch": t_skip, "jax": j_skip, "torch, set_to_none=False": t_zero, "jax, plain Trainer": j_zero},
    )


# -- the matrix ---------------------------------------------------------------------------------


def jobs(*, seed: int = 0, select: Callable[[str], bool] | None = None, ports: bool = True) -> list[Job]:
    """Every job of the matrix (rows rejected by ``select`` left out), longest JAX work first.

    ``ports=False`` leaves out the ported models' rows (:mod:`parity.ports`), which ``tests/test_ports.py`` runs.
    """
    optimizers = [(optimizer_model(), c) for c in optimizer_configs()]
    optimizers += [(lenet(5), c) for c in lenet_optimizer_configs()]
    out = [optimizer_job(optimizers, dtype, seed=seed, select=select) for dtype in DTYPES]
    out += [recipe_job(dtype, seed=seed, select=select) for dtype in DTYPES]
    out += [update_job(update_configs(), dtype, seed=seed, select=select) for dtype in DTYPES]
    # float32 stages run as long as the optimizer trajectories: over 500 steps their error measures how
    # chaotic training is (ReLU patterns flipping on rounding), not the frameworks.
    out += [stages_job("float64", seed=seed, select=select)]
    out += [forward_job(model_specs(), dtype, seed=seed, select=select) for dtype in DTYPES]
    out += [stages_job("float32", seed=seed, steps=OPTIMIZER_STEPS, select=select)]
    out += [bias_free_trajectory_job(dtype, seed=seed, select=select) for dtype in DTYPES]
    out += [bias_free_grad_job(dtype, seed=seed, select=select) for dtype in DTYPES]
    out += [schedule_job(dtype, select=select) for dtype in DTYPES]
    out = [j for j in out if j is not None]
    if ports:
        from . import ports as port_rows

        out = port_rows.jobs(seed=seed, select=select) + out  # ResNet-18's JAX work is the longest
    return out


def row_ids(*, ports: bool = True) -> list[str]:
    """The id (``model/check/dtype``) of every row of the matrix, without running anything."""
    return [i for j in jobs(ports=ports) for i in j.ids]


def run_jobs(
    job_list: list[Job],
    *,
    overlap: bool = True,
    jax_threads: int = 1,
) -> list[Result]:
    """Run jobs: JAX halves in ``jax_threads`` worker threads while the torch halves run here.

    XLA compiles on the thread that asks, one core per compilation, and most of
    the matrix's JAX time is compilation; torch runs one thread, so one JAX
    worker and torch keep two cores busy. One JAX worker by default: tracing
    ``jax.custom_vjp`` functions (LeNet's fast convolutions) from two threads at
    once raced inside JAX once ("StoreException: Store empty"), and a second
    worker saved under 10% of the matrix's time. A job that raises gives FAIL rows.

    Args:
      job_list: e.g. :func:`jobs`, or single jobs such as :func:`forward_job`.
      overlap: False runs each job's JAX half, then its torch half, in this thread.
      jax_threads: worker threads for the JAX halves when overlapping.

    Returns:
      The rows, in job order.
    """

    def guarded(fn):
        try:
            return fn(), None
        except Exception as e:  # a check that crashes is a failed check, not a crashed matrix
            return None, e

    with limited_threads(), ThreadPoolExecutor(max_workers=jax_threads, thread_name_prefix="parity-jax") as pool:
        if overlap:
            futures = [pool.submit(guarded, j.jax) for j in job_list]
            torch_outs = [guarded(j.torch) for j in job_list]
            jax_outs = [f.result() for f in futures]
        else:
            jax_outs, torch_outs = [], []
            for j in job_list:
                jax_outs.append(guarded(j.jax))
                torch_outs.append(guarded(j.torch))
    rows = []
    for job, (j_out, j_err), (t_out, t_err) in zip(job_list, jax_outs, torch_outs, strict=True):
        error = j_err or t_err
        if error is None:
            try:
                job_rows = job.compare(j_out, t_out)
            except Exception as e:
                error = e
        rows += failed_rows(job.ids, error, job.tolerance) if error is not None else job_rows
    return rows


def run(
    only: str | list[str] | None = None, *, seed: int = 0, overlap: bool = True, ports: bool = True
) -> list[Result]:
    """Run the matrix (or the rows whose id contains one of ``only``) and return its rows.

    Args:
      only: substring(s) of row ids (``model/check/dtype``) to keep, e.g. ``"lenet5/"``
        or ``"float64"``.
      seed: seeds data, torch's initial weights, cotangents and the depth schedule.
      overlap: run JAX in worker threads while torch runs (False: one after the other).
      ports: include the ported models' rows (:mod:`parity.ports`).
    """
    only = [only] if isinstance(only, str) else only
    select = None if not only else (lambda row_id: any(s in row_id for s in only))
    return run_jobs(jobs(seed=seed, select=select, ports=ports), overlap=overlap)
