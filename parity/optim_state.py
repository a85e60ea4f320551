"""Optimizer state between ``torch.optim`` and the optax state of :mod:`jaxnets.optim`.

A run started in PyTorch continues in JAX on the same trajectory, and back:
convert the weights with :mod:`parity.convert` and the optimizer state with
:func:`optimizer_state_from_torch` / :func:`load_optimizer_state_into_torch`.
Moments have the shapes of the parameters, so they go through the same layout
table as the weights.

===============================  ==========================================  ==========================
jaxnets.optim                    optax state                                 torch state (per parameter)
===============================  ==========================================  ==========================
``sgd(momentum > 0)``            ``TraceState.trace``                        ``momentum_buffer``
``sgd(dampening != 0)``          ``DampenedTraceState(step, momentum_buffer)``  ``momentum_buffer``
``adam``, ``adamw``              ``ScaleByAdamState(count, mu, nu)``         ``step, exp_avg, exp_avg_sq``
``adam(amsgrad=True)``           ``TorchAmsgradState``                       ``+ max_exp_avg_sq``
``adagrad``                      ``TorchAdagradState(step, sum)``            ``step, sum``
``radam``                        ``TorchRAdamState(step, exp_avg, exp_avg_sq)``  ``step, exp_avg, exp_avg_sq``
``rprop``                        ``TorchRpropState(step, prev, step_size)``  ``step, prev, step_size``
``adadelta``                     ``ScaleByAdaDeltaState(e_g, e_x)``          ``square_avg, acc_delta``
``adamax``                       ``ScaleByAdamState(count, mu, nu)``         ``step, exp_avg, exp_inf``
``nadam``                        ``TorchNAdamState``                         ``step, mu_product, exp_avg, exp_avg_sq``
``asgd``                         ``TorchASGDState(step, eta, mu, ax)``       ``step, eta, mu, ax``
``adafactor``                    ``TorchAdafactorState``                     ``step, row_var, col_var, variance``
``muon``                         ``TorchMuonState(step, momentum_buffer)``   ``momentum_buffer``
``rmsprop``                      ``ScaleByRmsState(nu)``                     ``step, square_avg``
``rmsprop(centered=True)``       ``ScaleByRStdDevState(mu, nu)``             ``+ grad_avg``
``rmsprop(momentum > 0)``        ``+ TraceState.trace``                      ``+ momentum_buffer``
``lr=`` a schedule               ``ScaleByScheduleState(count)``             (the scheduler's position)
``lbfgs``                        :class:`jaxnets.optim.LBFGSState`           ``d, t, old_dirs, ...``
===============================  ==========================================  ==========================

torch keeps a step count per parameter and optax one per optimizer, so the
counts must agree across parameters. A torch momentum buffer that is None (the
parameter has not been stepped) is a zero buffer in optax, which gives the same
next step. ``maximize=True`` adds only a stateless negation, so its states
convert too. Rprop's state converts after torch's first step (before it, torch
has no ``step_size`` and the conversion would give zeros, not ``lr``).
torch's scalars kept per parameter (NAdam's ``mu_product``, ASGD's ``eta``
and ``mu``) are one scalar in optax, so they too must agree across
parameters. optax's Adadelta keeps no step count and torch's does not enter
the update: it goes to torch as 0. torch's Muon keeps no step count: the
``step`` of a ``TorchMuonState`` (which only indexes an lr schedule) is
``steps=`` when given, else kept from the template. Adafactor's row and column factors are
converted through the layout table as the parameter they factor: torch's
``(out, in)`` linear weight is jaxnets' ``(in, out)`` kernel, so torch's
``row_var`` becomes jaxnets' ``col_var`` (transposed, with the flatten
permutation of ``fc1``) and back; a parameter whose last two dims are not
the same pair in both layouts (a Flax ``HWIO`` conv kernel against torch's
``OIHW``) factors differently and is refused.
RMSprop: optax's ``rmsprop`` with a constant lr applies momentum after the
lr, so its ``TraceState.trace`` is ``-lr`` times torch's ``momentum_buffer``
(with a schedule as lr, jaxnets' chain keeps torch's buffer itself); optax
keeps no step count, and torch's does not enter the update: it goes to torch
as the schedule's count when there is one, else as 0.

Schedules: a jaxnets schedule is a function of the optimizer's step count, so
the scheduler's position *is* that count. From torch, a ``ScaleByScheduleState``
gets the step count torch keeps per parameter (Adam, RMSprop, ...) or, for
an optimizer that keeps none (SGD), the ``steps=`` argument. Into torch, pass
the torch scheduler (built fresh on the optimizer, as the run built it) and
``steps_per_epoch``: it is stepped ``count // steps_per_epoch`` times, which
replays torch's own arithmetic (its schedulers are recursive, so setting
``last_epoch`` would not give the same lrs) and sets every group's lr (and
cycled momentum) where the uninterrupted run has them.

LBFGS: :class:`jaxnets.optim.LBFGSState` holds torch's state (that of the
first parameter) with the same names; its vectors are flat, raveled in JAX's
leaf order and jaxnets' layouts, where torch concatenates its parameters in
its order and layouts. Both directions need ``params=`` (the jaxnets
parameters, for the raveling order and shapes).

Parameter groups: a ``jaxnets.optim.param_groups`` state (an
``optax.PartitionState`` of masked states, each group's holding only its own
parameters) maps to torch's ``param_groups`` in order: jaxnets' group i is
torch's ``param_groups[i]`` (and ``unselected="defaults"`` parameters torch's
last group). Each group converts by the rules above, with its own lr (RMSprop's
trace scale) and its own step count; the parameters each group's state holds
must be those of torch's group, else the error names, per group, the
parameters one side holds and the other does not. A parameter in no group
(frozen) has its shape in no state: pass ``params=``. Adafactor's factored
state is not converted under groups (refused).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxnets.interop.optim_state import _RMS, FIELDS, SCALARS, fields_of, node_from_torch, trace_scale
from jaxnets.interop.optim_state import map_nodes as _map_nodes
from jaxnets.interop.optim_state import nodes as _nodes
from jaxnets.optim import (
    DampenedTraceState,
    LBFGSState,
    TorchAdafactorState,
    TorchMuonState,
)

from .convert import state_from_torch, to_torch_state_dict
from .torch_models import to_numpy


def _fields(node, torch_optimizer) -> tuple[str | None, dict[str, str]]:
    """``FIELDS[type(node)]``, with Adamax's name for the second moment (torch's ``exp_inf``)."""
    return fields_of(node, type(torch_optimizer).__name__)


def _param_names(torch_optimizer, torch_module) -> list[str]:
    """torch's state_dict index -> parameter name, from the optimizer's param_groups."""
    names = {id(p): n for n, p in torch_module.named_parameters()}
    order = [p for group in torch_optimizer.param_groups for p in group["params"]]
    unknown = [i for i, p in enumerate(order) if id(p) not in names]
    if unknown:
        raise ValueError(f"the torch optimizer holds parameters {unknown} that are not in the torch module given.")
    return [names[id(p)] for p in order]


# How an Adafactor factor maps between the layouts, per torch parameter name.
_UNFACTORED, _SAME, _SWAPPED = "unfactored", "same", "swapped"


def _full_template(node: TorchAdafactorState):
    """Parameter-shaped zeros in jaxnets' layout, rebuilt from an Adafactor state's factors."""

    def full(row, col, var):
        if row.ndim >= 2:
            return jnp.zeros(row.shape[:-1] + col.shape[-1:], row.dtype)
        return jnp.zeros(var.shape, var.dtype)

    return jax.tree.map(full, node.row_var, node.col_var, node.variance)


def _constant_along(x, axis: int) -> bool:
    return bool(np.array_equal(x, np.broadcast_to(np.take(x, [0], axis=axis), x.shape)))


def _factor_maps(full, flatten_shapes) -> dict[str, str]:
    """Per torch name: is torch's row factor jaxnets' row factor (``same``) or its column factor (``swapped``)?

    Found by sending through the layout table a probe that is constant along torch's
    last dim, and one constant along its second-to-last: the dims along which they
    land constant in jaxnets' layout tell which factor is which. Raises for a
    parameter factored over different dims in the two layouts.
    """
    torch_full = to_torch_state_dict(full, flatten_shapes=flatten_shapes)

    def probe(shape, axis):
        if len(shape) < 2:
            return np.zeros(shape)
        idx = np.arange(1, int(np.prod(shape)) + 1, dtype=np.float64).reshape(shape)
        return np.broadcast_to(np.take(idx, [0], axis=axis), shape).copy()

    rows = state_from_torch(
        {n: probe(tuple(t.shape), -1) for n, t in torch_full.items()}, full, flatten_shapes=flatten_shapes
    )
    cols = state_from_torch(
        {n: probe(tuple(t.shape), -2) for n, t in torch_full.items()}, full, flatten_shapes=flatten_shapes
    )

    def code(row, col):  # 0 unfactored, 1 same, 2 swapped, -1 factored over other dims
        row, col = np.asarray(row), np.asarray(col)
        if row.ndim < 2:
            value = 0
        elif _constant_along(row, -1) and _constant_along(col, -2):
            value = 1
        elif _constant_along(row, -2) and _constant_along(col, -1):
            value = 2
        else:
            value = -1
        return jnp.full(row.shape, value, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)

    codes = to_torch_state_dict(jax.tree.map(code, rows, cols), flatten_shapes=flatten_shapes)
    kinds = {}
    for name, tensor in codes.items():
        value = int(tensor.reshape(-1)[0]) if tensor.numel() else 0
        factored_in_torch = tensor.ndim >= 2
        if value == 0 and not factored_in_torch:
            kinds[name] = _UNFACTORED
        elif value in (1, 2) and factored_in_torch:
            kinds[name] = _SAME if value == 1 else _SWAPPED
        else:
            raise ValueError(
                f"parity cannot convert the Adafactor state of {name!r}: torch factors its {tuple(tensor.shape)} "
                "weight over its last two dims, and jaxnets' layout of it does not have those dims last (e.g. a "
                "Flax HWIO conv kernel against torch's OIHW), so the two optimizers keep different factors. Use "
                "the torch-layout jaxnets.nn layers to move an Adafactor run across."
            )
    return kinds


def _adafactor_to_torch(node: TorchAdafactorState, per_param: dict, flatten_shapes) -> None:
    """Write ``row_var``, ``col_var`` or ``variance`` into torch's per-parameter state dicts."""
    full = _full_template(node)
    kinds = _factor_maps(full, flatten_shapes)

    def widen(x, f):
        return jnp.broadcast_to(x, f.shape) if x.ndim >= 2 else f

    rows = to_torch_state_dict(jax.tree.map(widen, node.row_var, full), flatten_shapes=flatten_shapes)
    cols = to_torch_state_dict(jax.tree.map(widen, node.col_var, full), flatten_shapes=flatten_shapes)
    var = to_torch_state_dict(
        jax.tree.map(lambda v, f: v if f.ndim < 2 else f, node.variance, full), flatten_shapes=flatten_shapes
    )
    for name, kind in kinds.items():
        if kind == _UNFACTORED:
            per_param[name]["variance"] = var[name]
            continue
        torch_row, torch_col = (rows[name], cols[name]) if kind == _SAME else (cols[name], rows[name])
        per_param[name]["row_var"] = torch_row[..., :1].contiguous().clone()
        per_param[name]["col_var"] = torch_col[..., :1, :].contiguous().clone()


def _adafactor_from_torch(node: TorchAdafactorState, states: dict, flatten_shapes) -> dict:
    """``row_var``, ``col_var`` and ``variance`` of a :class:`TorchAdafactorState` from torch's state."""
    full = _full_template(node)
    kinds = _factor_maps(full, flatten_shapes)
    shapes = {n: tuple(t.shape) for n, t in to_torch_state_dict(full, flatten_shapes=flatten_shapes).items()}

    def wide(name, key):
        value = states[name].get(key)
        if value is None or kinds[name] == _UNFACTORED:
            return np.zeros(shapes[name])
        return np.broadcast_to(np.asarray(value), shapes[name]).copy()

    def variance(name):
        value = states[name].get("variance")
        return np.zeros(shapes[name]) if value is None or kinds[name] != _UNFACTORED else np.asarray(value)

    what = "torch's Adafactor state"
    rows = state_from_torch({n: wide(n, "row_var") for n in kinds}, full, flatten_shapes=flatten_shapes, what=what)
    cols = state_from_torch({n: wide(n, "col_var") for n in kinds}, full, flatten_shapes=flatten_shapes, what=what)
    var = state_from_torch({n: variance(n) for n in kinds}, full, flatten_shapes=flatten_shapes, what=what)
    swapped = {n for n, k in kinds.items() if k == _SWAPPED}
    # which leaves are swapped: send the flag through the layout table as a full array
    flags = state_from_torch(
        {n: np.full(shapes[n], float(n in swapped)) for n in kinds}, full, flatten_shapes=flatten_shapes
    )

    def row(t, r, c, flag):
        if t.ndim < 2:
            return t
        src = c if np.asarray(flag).reshape(-1)[0] else r
        return jnp.asarray(src[..., :1], t.dtype)

    def col(t, r, c, flag):
        if t.ndim < 2:
            return t
        src = r if np.asarray(flag).reshape(-1)[0] else c
        return jnp.asarray(src[..., :1, :], t.dtype)

    return {
        "row_var": jax.tree.map(row, node.row_var, rows, cols, flags),
        "col_var": jax.tree.map(col, node.col_var, rows, cols, flags),
        "variance": jax.tree.map(lambda t, v: t if t.ndim != v.ndim or t.shape != v.shape else v, node.variance, var),
    }


def _lr(groups) -> float:
    lrs = {group["lr"] for group in groups}
    if len(lrs) != 1 or callable(next(iter(lrs))):
        raise ValueError(
            f"the torch optimizer has param groups with lrs {sorted(lrs)}; parity converts the state of a single "
            "lr (optax's rmsprop keeps -lr times torch's momentum buffer); with different lrs, build the jaxnets "
            "optimizer with jaxnets.optim.param_groups, one group per torch group."
        )
    return float(next(iter(lrs)))


def _trace_scale(nodes, groups) -> float:
    """:func:`jaxnets.interop.optim_state.trace_scale` with the lr of torch's ``groups`` (which must share one)."""
    return trace_scale(nodes, lambda: _lr(groups))


def _optax_count(nodes) -> int | None:
    """The optimizer's step count: a schedule's count, else the first state's that keeps one.

    ``DampenedTraceState.step`` last: converted from torch without ``steps=`` it is 1 once a buffer exists.
    """
    nodes = sorted(
        nodes, key=lambda n: (not isinstance(n, optax.ScaleByScheduleState), isinstance(n, DampenedTraceState))
    )
    for node in nodes:
        count_field = "step" if isinstance(node, TorchMuonState) else FIELDS[type(node)][0]
        if count_field is not None:
            return int(getattr(node, count_field))
    return None


def replay_torch_scheduler(scheduler, steps: int) -> None:
    """Step a fresh torch scheduler ``steps`` times without optimizer steps: torch's lrs at that position.

    torch's schedulers compute each lr from the previous one, so only a replay
    gives the uninterrupted run's numbers. The optimizer's param groups (lr,
    cycled momentum) are set as the scheduler sets them.
    """
    if scheduler.last_epoch != 0:
        raise ValueError(
            f"replay_torch_scheduler needs a fresh scheduler (last_epoch 0); got last_epoch={scheduler.last_epoch}. "
            "Build the scheduler on the optimizer again, as the run did, and pass that."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "lr_scheduler.step() before optimizer.step()": on purpose
        for _ in range(steps):
            scheduler.step()


def _into_per_param(opt_state, names, lr_groups, torch_optimizer, flatten_shapes, per_param) -> tuple[int | None, set]:
    """Write one optax chain state into ``per_param[name]`` for ``names``; the count and the scalar keys written."""
    keep = set(names)
    nodes = list(_nodes(opt_state))
    count = _optax_count(nodes)
    trace_scale = _trace_scale(nodes, lr_groups)
    scalar_keys = set()
    for node in nodes:
        count_field, fields = _fields(node, torch_optimizer)
        for field, key in fields.items():
            for name, tensor in to_torch_state_dict(getattr(node, field), flatten_shapes=flatten_shapes).items():
                if name in keep:
                    per_param[name][key] = tensor / trace_scale if isinstance(node, optax.TraceState) else tensor
        for field, key in SCALARS.get(type(node), {}).items():
            value = np.asarray(getattr(node, field))  # torch keeps it in its scalar dtype, float32 here too
            scalar_keys.add(key)
            for name in names:
                per_param[name][key] = torch.from_numpy(value.copy())
        if isinstance(node, TorchAdafactorState):
            _adafactor_to_torch(node, per_param, flatten_shapes)
        if isinstance(node, DampenedTraceState):
            if int(node.step) == 0:  # torch: no buffer yet, so the next step sets buf = g undamped
                for name in names:
                    per_param[name].pop("momentum_buffer", None)
        elif isinstance(node, optax.ScaleByScheduleState):
            pass  # the scheduler's position: replayed below; torch's step comes from the optimizer's own state
        elif count_field is not None:
            for name in names:
                per_param[name]["step"] = torch.tensor(float(getattr(node, count_field)))
        elif isinstance(node, (optax.ScaleByAdaDeltaState, *_RMS)):
            for name in names:  # optax keeps no count; torch's does not enter the update
                per_param[name]["step"] = torch.tensor(float(count or 0))
    return count, scalar_keys


def _fill_node(shapes):
    def fill(node):
        fields = _param_fields(node)
        return node._replace(**{f: _filled(getattr(node, f), shapes) for f in fields})

    return fill


def load_optimizer_state_into_torch(
    opt_state, torch_optimizer, torch_module, *, flatten_shapes=None, scheduler=None, steps_per_epoch=1, params=None
) -> None:
    """Write a :mod:`jaxnets.optim` state into a torch optimizer built over ``torch_module``'s parameters.

    Args:
      opt_state: e.g. ``trainer.opt_state``.
      torch_optimizer: the matching ``torch.optim`` optimizer (same algorithm and options;
        for a ``jaxnets.optim.param_groups`` state, the same groups in the same order).
      torch_module: the torch model whose ``parameters()`` the optimizer holds.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.
      scheduler: a torch scheduler built fresh on ``torch_optimizer`` (as the
        run built it), for a jaxnets optimizer whose lr is a schedule: it is
        stepped ``count // steps_per_epoch`` times (:func:`replay_torch_scheduler`).
      steps_per_epoch: the jaxnets schedule's ``steps_per_epoch``.
      params: the jaxnets parameters, for an :class:`jaxnets.optim.LBFGSState`, and for
        param groups when a parameter's shape is in no group's state (a frozen parameter).
    """
    if isinstance(opt_state, LBFGSState):
        _lbfgs_into_torch(opt_state, torch_optimizer, torch_module, params, flatten_shapes)
        return
    names = _param_names(torch_optimizer, torch_module)
    per_param: dict[str, dict] = {n: {} for n in names}
    if isinstance(opt_state, optax.PartitionState):
        groups, shapes = _groups_checked(opt_state, torch_optimizer, torch_module, flatten_shapes, params)
        counts, scalar_keys = {}, set()
        for label, inner, group, group_names in groups:
            filled = _map_nodes(inner, _fill_node(shapes))
            count, keys = _into_per_param(filled, group_names, [group], torch_optimizer, flatten_shapes, per_param)
            scalar_keys |= keys
            if count is not None:
                counts[label] = count
        if len(set(counts.values())) > 1:
            raise ValueError(f"the jaxnets parameter groups have different step counts ({counts}).")
        count = next(iter(counts.values()), None)
    else:
        count, scalar_keys = _into_per_param(
            opt_state, names, torch_optimizer.param_groups, torch_optimizer, flatten_shapes, per_param
        )
    state_dict = torch_optimizer.state_dict()
    state_dict["state"] = {i: per_param[n] for i, n in enumerate(names) if per_param[n]}
    torch_optimizer.load_state_dict(state_dict)
    # load_state_dict casts every floating state to the parameter's dtype, but torch keeps these
    # scalars in its scalar dtype (float32) during a run: restore them, so a float64 run continues
    # as an uninterrupted torch run does (NAdam's mu_product in float64 moves weights by 4e-11).
    torch_params = [p for group in torch_optimizer.param_groups for p in group["params"]]
    for p, name in zip(torch_params, names, strict=True):
        for key in scalar_keys & set(per_param[name]):
            torch_optimizer.state[p][key] = per_param[name][key].clone()
    if scheduler is not None:
        if count is None:
            raise ValueError(
                "load_optimizer_state_into_torch got a scheduler, but the optimizer state keeps no step count "
                "(e.g. sgd with a number as lr); build the jaxnets optimizer with the schedule as lr."
            )
        replay_torch_scheduler(scheduler, count // steps_per_epoch)


def _node_from_torch(node, states, names, trace_scale, torch_optimizer, flatten_shapes, steps):
    """:func:`jaxnets.interop.optim_state.node_from_torch`, with Adafactor's factors (needing torch) converted first."""
    values = _adafactor_from_torch(node, states, flatten_shapes) if isinstance(node, TorchAdafactorState) else None
    return node_from_torch(
        node,
        states,
        names,
        optimizer=type(torch_optimizer).__name__,
        trace_scale=trace_scale,
        flatten_shapes=flatten_shapes,
        steps=steps,
        values=values,
    )


def optimizer_state_from_torch(
    torch_optimizer, torch_module, template, *, flatten_shapes=None, steps=None, params=None
):
    """A torch optimizer's state as the optax state of the matching :mod:`jaxnets.optim` optimizer.

    Args:
      torch_optimizer: a ``torch.optim`` optimizer over ``torch_module``'s parameters.
      torch_module: the torch model.
      template: the optax state to fill, e.g. ``jaxnets.optim.adam().init(params)``
        or ``trainer.opt_state``: gives structure, layouts and dtypes. A
        ``jaxnets.optim.param_groups`` state takes torch's ``param_groups`` in order.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.
      steps: the optimizer steps torch has taken, for a schedule's count where
        torch keeps no step count (SGD, Muon); by default torch's per-parameter
        ``step``. The jaxnets schedule then continues where torch's scheduler
        is. Give it for SGD whenever a schedule is involved, a cycled momentum
        too (``DampenedTraceState.step`` indexes it).
      params: the jaxnets parameters, for an :class:`jaxnets.optim.LBFGSState` template,
        and for param groups when a parameter's shape is in no group's state (a frozen parameter).

    Returns:
      A new optax state of the template's structure; assign it to ``trainer.opt_state``.
    """
    if isinstance(template, LBFGSState):
        return _lbfgs_from_torch(torch_optimizer, torch_module, params, flatten_shapes)
    names = _param_names(torch_optimizer, torch_module)
    torch_state = torch_optimizer.state_dict()["state"]
    states = {
        n: {k: to_numpy(v) if isinstance(v, torch.Tensor) else v for k, v in torch_state.get(i, {}).items()}
        for i, n in enumerate(names)
    }
    if not isinstance(template, optax.PartitionState):
        scale = _trace_scale(_nodes(template), torch_optimizer.param_groups)
        return _map_nodes(
            template,
            lambda node: _node_from_torch(node, states, names, scale, torch_optimizer, flatten_shapes, steps),
        )
    groups, shapes = _groups_checked(template, torch_optimizer, torch_module, flatten_shapes, params)
    inner_states = dict(template.inner_states)
    for label, inner, group, group_names in groups:
        scale = _trace_scale(_nodes(inner), [group])

        def convert(node, group_names=group_names, scale=scale):
            filled = _fill_node(shapes)(node)
            new = _node_from_torch(filled, states, group_names, scale, torch_optimizer, flatten_shapes, steps)
            return new._replace(**{f: _remasked(getattr(new, f), getattr(node, f)) for f in _param_fields(node)})

        new_inner = _map_nodes(inner, convert)
        old = inner_states[label]
        inner_states[label] = old._replace(inner_state=new_inner) if isinstance(old, optax.MaskedState) else new_inner
    return template._replace(inner_states=inner_states)


# -- parameter groups: an optax.PartitionState of masked states ---------------------------------


def _group_states(opt_state, torch_optimizer, torch_module) -> list[tuple[str, object, dict, list[str]]]:
    """``[(label, inner state, torch param group, its torch names)]``: jaxnets' group i is torch's param_groups[i].

    The ``"unselected"`` state is torch's last group when torch has one group more
    (``param_groups(..., unselected="defaults")``); otherwise its parameters are
    frozen (torch's optimizer does not hold them) and it has no state to convert.
    """
    inner = dict(opt_state.inner_states)
    labels = sorted((k for k in inner if k.startswith("group")), key=lambda k: int(k[len("group") :]))
    torch_groups = torch_optimizer.param_groups
    if len(torch_groups) == len(labels) + 1 and "unselected" in inner:
        labels.append("unselected")
    if len(torch_groups) != len(labels):
        raise ValueError(
            f"the jaxnets optimizer state has {len(labels)} parameter groups ({', '.join(labels)}), the torch "
            f"optimizer {len(torch_groups)}; build both with the same groups in the same order (jaxnets' group i "
            "is torch's param_groups[i]; unselected='defaults' parameters are torch's last group)."
        )
    names = {id(p): n for n, p in torch_module.named_parameters()}
    out = []
    for label, group in zip(labels, torch_groups, strict=True):
        unknown = [i for i, p in enumerate(group["params"]) if id(p) not in names]
        if unknown:
            raise ValueError(f"the torch optimizer's {label} holds parameters {unknown} that are not in the module.")
        state = inner[label]
        state = state.inner_state if isinstance(state, optax.MaskedState) else state
        out.append((label, state, group, [names[id(p)] for p in group["params"]]))
    return out


def _param_fields(node) -> list[str]:
    """The fields of a state node that are shaped like the parameters."""
    if isinstance(node, TorchAdafactorState):
        raise TypeError(
            "parity does not convert an Adafactor state under jaxnets.optim.param_groups (its factors are not "
            "parameter-shaped); convert it without param groups."
        )
    return list(FIELDS[type(node)][1])


def _array(like):
    return like[...] if isinstance(like, nnx.Variable) else like


def _like(like, array):
    return like.replace(array) if isinstance(like, nnx.Variable) else array


def _shapes(groups, params) -> dict:
    """jaxnets path -> a parameter-shaped leaf, from ``params`` or any group's moments."""
    found = {}
    for _, inner, _, _ in groups:
        for node in _nodes(inner):
            for field in _param_fields(node):
                for path, v in nnx.to_flat_state(getattr(node, field)):
                    if not isinstance(v, optax.MaskedNode):
                        found.setdefault(tuple(path), v)
    if params is not None:
        state = nnx.state(params, nnx.Param) if isinstance(params, nnx.Module) else params
        found.update({tuple(p): v for p, v in nnx.to_flat_state(state)})
    return found


def _filled(tree, shapes: dict, value=None):
    """A masked parameter-shaped tree with zeros where the group does not hold the parameter.

    With ``value``, every leaf is ``value(held)`` instead (a flag tree).
    """
    flat = []
    for path, v in nnx.to_flat_state(tree):
        held = not isinstance(v, optax.MaskedNode)
        if held and value is None:
            flat.append((path, v))
            continue
        like = shapes.get(tuple(path))
        if like is None:
            raise ValueError(
                f"parity needs the shape of {'/'.join(map(str, path))}, which no parameter group's state holds "
                "(a frozen parameter, or groups of an optimizer without moments): pass params= (the jaxnets "
                "parameters)."
            )
        array = jnp.asarray(_array(like))
        fill = 0.0 if value is None else value(held)
        flat.append((path, _like(like, jnp.full(array.shape, fill, array.dtype))))
    return nnx.from_flat_state(flat)


def _remasked(tree, masked_like):
    """``tree`` with ``masked_like``'s MaskedNodes put back."""
    masks = {tuple(p) for p, v in nnx.to_flat_state(masked_like) if isinstance(v, optax.MaskedNode)}
    return nnx.from_flat_state(
        [(p, optax.MaskedNode() if tuple(p) in masks else v) for p, v in nnx.to_flat_state(tree)]
    )


def _check_held(groups, shapes, flatten_shapes) -> None:
    """Each jaxnets group must hold exactly the parameters of its torch group (when its state shows which)."""
    problems = []
    for label, inner, _, names in groups:
        tree = next((getattr(n, f) for n in _nodes(inner) for f in _param_fields(n)), None)
        if tree is None:
            continue  # no moments (e.g. sgd without momentum): nothing to convert, nothing to check
        flags = to_torch_state_dict(_filled(tree, shapes, value=float), flatten_shapes=flatten_shapes)
        held = {n for n, t in flags.items() if t.numel() and bool(t.reshape(-1)[0])}
        missing, extra = sorted(set(names) - held), sorted(held - set(names))
        if missing or extra:
            problems.append(
                f"{label}: torch's group holds {', '.join(missing) or 'nothing more'} that jaxnets' does not; "
                f"jaxnets' holds {', '.join(extra) or 'nothing more'} that torch's does not"
            )
    if problems:
        raise ValueError(
            "the parameter groups of the jaxnets state and of the torch optimizer differ: "
            + "; ".join(problems)
            + ". Select the same parameters in each group, in the same order as torch's param_groups."
        )


def _groups_checked(opt_state, torch_optimizer, torch_module, flatten_shapes, params):
    groups = _group_states(opt_state, torch_optimizer, torch_module)
    shapes = _shapes(groups, params)
    _check_held(groups, shapes, flatten_shapes)
    return groups, shapes


# -- LBFGS: one state, flat vectors -------------------------------------------------------------


def _flat_converters(torch_optimizer, torch_module, params, flatten_shapes):
    """``(to_torch, from_torch)`` for flat vectors: JAX's ravel order and layouts <-> torch's."""
    if params is None:
        raise ValueError(
            "converting an LBFGS state needs params= (the jaxnets parameters): its vectors are flat, raveled in "
            "their order and layouts."
        )
    names = _param_names(torch_optimizer, torch_module)
    flat, unravel = ravel_pytree(params)
    shapes = {n: tuple(t.shape) for n, t in to_torch_state_dict(params, flatten_shapes=flatten_shapes).items()}

    def to_torch(vector) -> torch.Tensor:
        tensors = to_torch_state_dict(unravel(jnp.asarray(vector)), flatten_shapes=flatten_shapes)
        return torch.cat([tensors[n].reshape(-1) for n in names])

    def from_torch(tensor) -> jax.Array:
        vector, pieces, start = np.asarray(tensor.detach().cpu().numpy()), {}, 0
        for n in names:
            size = int(np.prod(shapes[n]))
            pieces[n] = vector[start : start + size].reshape(shapes[n])
            start += size
        if start != vector.size:
            raise ValueError(f"torch's LBFGS vector has {vector.size} entries; the parameters have {start}.")
        tree = state_from_torch(pieces, params, flatten_shapes=flatten_shapes, what="torch's LBFGS state")
        return ravel_pytree(tree)[0].astype(flat.dtype)

    return to_torch, from_torch


def _number(x):
    """A torch or JAX scalar as a Python number (ints stay ints: torch's H_diag starts as the int 1)."""
    if isinstance(x, (int, float)) or x is None:
        return x
    return float(np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x))


def _lbfgs_into_torch(state: LBFGSState, torch_optimizer, torch_module, params, flatten_shapes) -> None:
    if not isinstance(torch_optimizer, torch.optim.LBFGS):
        raise ValueError(f"an LBFGSState goes into torch.optim.LBFGS; got {type(torch_optimizer).__name__}.")
    to_torch, _ = _flat_converters(torch_optimizer, torch_module, params, flatten_shapes)
    dtype = torch_optimizer.param_groups[0]["params"][0].dtype
    vec = lambda v: None if v is None else to_torch(v).to(dtype)  # noqa: E731
    scalar = lambda v: torch.tensor(_number(v), dtype=dtype)  # noqa: E731
    first = torch_optimizer.param_groups[0]["params"][0]
    torch_optimizer.state[first] = {
        "func_evals": int(state.func_evals),
        "n_iter": int(state.n_iter),
        "d": vec(state.d),
        "t": _number(state.t),
        "old_dirs": [vec(v) for v in state.old_dirs],
        "old_stps": [vec(v) for v in state.old_stps],
        "ro": [scalar(r) for r in state.ro],
        "H_diag": state.H_diag if isinstance(state.H_diag, int) else scalar(state.H_diag),
        "prev_flat_grad": vec(state.prev_flat_grad),
        "prev_loss": _number(state.prev_loss),
    }


def _lbfgs_from_torch(torch_optimizer, torch_module, params, flatten_shapes) -> LBFGSState:
    if not isinstance(torch_optimizer, torch.optim.LBFGS):
        raise ValueError(f"an LBFGSState comes from torch.optim.LBFGS; got {type(torch_optimizer).__name__}.")
    _, from_torch = _flat_converters(torch_optimizer, torch_module, params, flatten_shapes)
    first = torch_optimizer.param_groups[0]["params"][0]
    s = torch_optimizer.state.get(first, {})
    if not s:
        return LBFGSState()
    vec = lambda v: None if v is None else from_torch(v)  # noqa: E731
    dtype = ravel_pytree(params)[0].dtype
    h_diag = s.get("H_diag", 1)
    return LBFGSState(
        func_evals=int(s.get("func_evals", 0)),
        n_iter=int(s.get("n_iter", 0)),
        d=vec(s.get("d")),
        t=_number(s.get("t")),
        old_dirs=tuple(vec(v) for v in s.get("old_dirs") or ()),
        old_stps=tuple(vec(v) for v in s.get("old_stps") or ()),
        ro=tuple(jnp.asarray(_number(r), dtype) for r in s.get("ro") or ()),
        H_diag=h_diag if isinstance(h_diag, int) else jnp.asarray(_number(h_diag), dtype),
        prev_flat_grad=vec(s.get("prev_flat_grad")),
        prev_loss=_number(s.get("prev_loss")),
    )
