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
kept from the template. Adafactor's row and column factors are
converted through the layout table as the parameter they factor: torch's
``(out, in)`` linear weight is jaxnets' ``(in, out)`` kernel, so torch's
``row_var`` becomes jaxnets' ``col_var`` (transposed, with the flatten
permutation of ``fc1``) and back; a parameter whose last two dims are not
the same pair in both layouts (a Flax ``HWIO`` conv kernel against torch's
``OIHW``) factors differently and is refused.
RMSprop state is not converted: torch's state carries a step count that
optax's RMSprop does not keep.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jaxnets.optim import (
    DampenedTraceState,
    TorchAdafactorState,
    TorchAdagradState,
    TorchAmsgradState,
    TorchASGDState,
    TorchMuonState,
    TorchNAdamState,
    TorchRAdamState,
    TorchRpropState,
)

from .convert import state_from_torch, to_torch_state_dict

# optax state type -> (its step-count field or None, {optax field: torch state key}); the scalar
# fields torch keeps per parameter are in SCALARS.
FIELDS = {
    optax.TraceState: (None, {"trace": "momentum_buffer"}),
    DampenedTraceState: ("step", {"momentum_buffer": "momentum_buffer"}),
    optax.ScaleByAdamState: ("count", {"mu": "exp_avg", "nu": "exp_avg_sq"}),
    TorchAmsgradState: ("step", {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "max_exp_avg_sq": "max_exp_avg_sq"}),
    TorchAdagradState: ("step", {"sum": "sum"}),
    TorchRAdamState: ("step", {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    TorchRpropState: ("step", {"prev": "prev", "step_size": "step_size"}),
    optax.ScaleByAdaDeltaState: (None, {"e_g": "square_avg", "e_x": "acc_delta"}),
    TorchNAdamState: ("step", {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    TorchASGDState: ("step", {"ax": "ax"}),
    TorchAdafactorState: ("step", {}),  # row_var, col_var, variance: see _adafactor_*
    TorchMuonState: (None, {"momentum_buffer": "momentum_buffer"}),  # torch keeps no step
}
# optax state type -> {optax scalar field: torch per-parameter scalar state key}
SCALARS = {
    TorchNAdamState: {"mu_product": "mu_product"},
    TorchASGDState: {"eta": "eta", "mu": "mu"},
}


def _fields(node, torch_optimizer) -> tuple[str | None, dict[str, str]]:
    """``FIELDS[type(node)]``, with Adamax's name for the second moment (torch's ``exp_inf``)."""
    count_field, fields = FIELDS[type(node)]
    if isinstance(node, optax.ScaleByAdamState) and isinstance(torch_optimizer, torch.optim.Adamax):
        fields = {"mu": "exp_avg", "nu": "exp_inf"}
    return count_field, fields


def _nodes(opt_state):
    """The state objects in an optax chain's (nested tuple) state, in order."""
    if type(opt_state) in FIELDS:
        yield opt_state
    elif isinstance(opt_state, optax.EmptyState) or opt_state == ():
        return
    elif isinstance(opt_state, tuple) and not hasattr(opt_state, "_fields"):
        for sub in opt_state:
            yield from _nodes(sub)
    else:
        supported = ", ".join(t.__name__ for t in FIELDS)
        raise TypeError(
            f"parity cannot convert optimizer state of type {type(opt_state).__name__}; it converts {supported} "
            "(the states of jaxnets.optim.sgd, adam, adamw, adagrad, radam, rprop, adadelta, adamax, nadam, asgd, "
            "adafactor and muon)."
        )


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


def load_optimizer_state_into_torch(opt_state, torch_optimizer, torch_module, *, flatten_shapes=None) -> None:
    """Write a :mod:`jaxnets.optim` state into a torch optimizer built over ``torch_module``'s parameters.

    Args:
      opt_state: e.g. ``trainer.opt_state``.
      torch_optimizer: the matching ``torch.optim`` optimizer (same algorithm and options).
      torch_module: the torch model whose ``parameters()`` the optimizer holds.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.
    """
    names = _param_names(torch_optimizer, torch_module)
    per_param: dict[str, dict] = {n: {} for n in names}
    for node in _nodes(opt_state):
        count_field, fields = _fields(node, torch_optimizer)
        for field, key in fields.items():
            for name, tensor in to_torch_state_dict(getattr(node, field), flatten_shapes=flatten_shapes).items():
                per_param[name][key] = tensor
        for field, key in SCALARS.get(type(node), {}).items():
            value = np.asarray(getattr(node, field))  # torch keeps it in its scalar dtype, float32 here too
            for name in names:
                per_param[name][key] = torch.from_numpy(value.copy())
        if isinstance(node, TorchAdafactorState):
            _adafactor_to_torch(node, per_param, flatten_shapes)
        if isinstance(node, DampenedTraceState):
            if int(node.step) == 0:  # torch: no buffer yet, so the next step sets buf = g undamped
                for name in names:
                    per_param[name].pop("momentum_buffer", None)
        elif count_field is not None:
            for name in names:
                per_param[name]["step"] = torch.tensor(float(getattr(node, count_field)))
        elif isinstance(node, optax.ScaleByAdaDeltaState):
            for name in names:  # optax keeps no count; torch's does not enter the update
                per_param[name]["step"] = torch.tensor(0.0)
    state_dict = torch_optimizer.state_dict()
    state_dict["state"] = {i: per_param[n] for i, n in enumerate(names) if per_param[n]}
    torch_optimizer.load_state_dict(state_dict)
    # load_state_dict casts every floating state to the parameter's dtype, but torch keeps these
    # scalars in its scalar dtype (float32) during a run: restore them, so a float64 run continues
    # as an uninterrupted torch run does (NAdam's mu_product in float64 moves weights by 4e-11).
    params = [p for group in torch_optimizer.param_groups for p in group["params"]]
    scalar_keys = {key for node in _nodes(opt_state) for key in SCALARS.get(type(node), {}).values()}
    for p, name in zip(params, names, strict=True):
        for key in scalar_keys & set(per_param[name]):
            torch_optimizer.state[p][key] = per_param[name][key].clone()


def optimizer_state_from_torch(torch_optimizer, torch_module, template, *, flatten_shapes=None):
    """A torch optimizer's state as the optax state of the matching :mod:`jaxnets.optim` optimizer.

    Args:
      torch_optimizer: a ``torch.optim`` optimizer over ``torch_module``'s parameters.
      torch_module: the torch model.
      template: the optax state to fill, e.g. ``jaxnets.optim.adam().init(params)``
        or ``trainer.opt_state``: gives structure, layouts and dtypes.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.

    Returns:
      A new optax state of the template's structure; assign it to ``trainer.opt_state``.
    """
    names = _param_names(torch_optimizer, torch_module)
    torch_state = torch_optimizer.state_dict()["state"]
    states = {n: torch_state.get(i, {}) for i, n in enumerate(names)}

    def convert(node):
        if type(node) not in FIELDS:
            if isinstance(node, tuple) and not hasattr(node, "_fields"):
                return tuple(convert(sub) for sub in node)
            list(_nodes(node))  # raises for what cannot be converted
            return node
        count_field, fields = _fields(node, torch_optimizer)
        values = {}
        if isinstance(node, TorchAdafactorState):
            values.update(_adafactor_from_torch(node, states, flatten_shapes))
        for field, key in SCALARS.get(type(node), {}).items():
            found = {n: float(states[n][key]) for n in names if states[n].get(key) is not None}
            if len(set(found.values())) > 1:
                raise ValueError(
                    f"torch's parameters have different {key} values "
                    f"({', '.join(f'{n}: {v}' for n, v in found.items())}); optax keeps one for all "
                    "parameters, so this state cannot be converted exactly."
                )
            if found:
                template_value = getattr(node, field)
                values[field] = jnp.asarray(next(iter(found.values())), dtype=jnp.asarray(template_value).dtype)
        for field, key in fields.items():
            field_template = getattr(node, field)
            torch_dict = {
                name: (states[name][key] if states[name].get(key) is not None else np.zeros(tensor.shape))
                for name, tensor in to_torch_state_dict(field_template, flatten_shapes=flatten_shapes).items()
            }
            values[field] = state_from_torch(
                torch_dict, field_template, flatten_shapes=flatten_shapes, what=f"torch's {key} state"
            )
        if count_field is not None:
            if isinstance(node, DampenedTraceState):
                steps = {n: int(states[n].get("momentum_buffer") is not None) for n in names}
            else:
                steps = {n: int(float(states[n].get("step", 0))) for n in names}
            if len(set(steps.values())) > 1:
                raise ValueError(
                    "torch's parameters have different step counts "
                    f"({', '.join(f'{n}: {s}' for n, s in steps.items())}); optax keeps one count for all "
                    "parameters, so this state cannot be converted exactly."
                )
            count = getattr(node, count_field)
            values[count_field] = jnp.asarray(next(iter(steps.values()), 0), dtype=jnp.asarray(count).dtype)
        return type(node)(**{f: values.get(f, getattr(node, f)) for f in node._fields})

    return convert(template)
