"""Optimizer state from torch's per-parameter form to the optax state of :mod:`jaxnets.optim`, without torch.

The array part of ``parity.optimizer_state_from_torch`` (whose table of states
is in ``parity/optim_state.py``), shared with ``jaxnets import
--optimizer-state``, which reads a torch ``optimizer.state_dict()`` file with
the torch-free reader: one code path for both. The states are those of
:data:`FIELDS`; moments go through the weights' layout table
(:mod:`jaxnets.torch_layout`); torch's per-parameter step counts and scalars
must agree across the parameters (optax keeps one).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from ..optim import (
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
from .exchange import state_from_torch_arrays, to_torch_arrays

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
    optax.ScaleByRmsState: (None, {"nu": "square_avg"}),
    optax.ScaleByRStdDevState: (None, {"mu": "grad_avg", "nu": "square_avg"}),
    optax.ScaleByScheduleState: ("count", {}),  # the optimizer's step count: see _steps_*
}
_RMS = (optax.ScaleByRmsState, optax.ScaleByRStdDevState)
# optax state type -> {optax scalar field: torch per-parameter scalar state key}
SCALARS = {
    TorchNAdamState: {"mu_product": "mu_product"},
    TorchASGDState: {"eta": "eta", "mu": "mu"},
}


def fields_of(node, optimizer: str) -> tuple[str | None, dict[str, str]]:
    """``FIELDS[type(node)]``, with Adamax's name for the second moment (torch's ``exp_inf``)."""
    count_field, fields = FIELDS[type(node)]
    if isinstance(node, optax.ScaleByAdamState) and optimizer == "Adamax":
        fields = {"mu": "exp_avg", "nu": "exp_inf"}
    return count_field, fields


def nodes(opt_state):
    """The state objects in an optax chain's (nested tuple) state, in order."""
    if type(opt_state) in FIELDS:
        yield opt_state
    elif isinstance(opt_state, optax.EmptyState) or opt_state == ():
        return
    elif isinstance(opt_state, tuple) and not hasattr(opt_state, "_fields"):
        for sub in opt_state:
            yield from nodes(sub)
    else:
        supported = ", ".join(t.__name__ for t in FIELDS)
        raise TypeError(
            f"parity cannot convert optimizer state of type {type(opt_state).__name__}; it converts {supported} "
            "(the states of jaxnets.optim.sgd, adam, adamw, rmsprop, adagrad, radam, rprop, adadelta, adamax, nadam, "
            "asgd, adafactor and muon, with a number or a schedule as lr; lbfgs's LBFGSState too)."
        )


def map_nodes(inner, fn):
    """A chain's (nested tuple) state with every convertible node replaced by ``fn(node)``."""
    if type(inner) in FIELDS:
        return fn(inner)
    if isinstance(inner, tuple) and not hasattr(inner, "_fields"):
        return tuple(map_nodes(sub, fn) for sub in inner)
    list(nodes(inner))  # raises for what cannot be converted
    return inner


def node_from_torch(
    node, states, names, *, optimizer: str, trace_scale=1.0, flatten_shapes=None, steps=None, values=None
):
    """One optax state node filled from torch's per-parameter state.

    Args:
      node: a state node of one of the :data:`FIELDS` types (the template: structure, layouts, dtypes).
      states: ``{torch parameter name: {torch state key: array or number}}``, e.g. an
        ``optimizer.state_dict()["state"]`` keyed by name; names missing or without a key are zeros.
      names: the torch names of the parameters this state holds (their step counts and scalars must agree).
      optimizer: torch's optimizer class name, e.g. ``"Adam"`` (Adamax names its second moment ``exp_inf``).
      trace_scale: what torch's ``momentum_buffer`` is multiplied by in an ``optax.TraceState``.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.
      steps: the optimizer steps torch has taken, for states whose count torch does not keep.
      values: fields already converted (parity's Adafactor factors).
    """
    given_steps, torch_optimizer_name = steps, optimizer

    def torch_steps() -> int:
        if given_steps is not None:
            return int(given_steps)
        found = {n: int(float(states[n]["step"])) for n in names if states[n].get("step") is not None}
        if not found:
            raise ValueError(
                f"torch.optim.{torch_optimizer_name} keeps no step count, and the jaxnets optimizer's lr "
                "is a schedule of it: pass steps= (the optimizer steps torch has taken)."
            )
        if len(set(found.values())) > 1:
            raise ValueError(f"torch's parameters have different step counts ({found}); pass steps=.")
        return next(iter(found.values()))

    count_field, fields = fields_of(node, torch_optimizer_name)
    values = dict(values or {})
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
            name: (
                np.asarray(states.get(name, {}).get(key))
                if states.get(name, {}).get(key) is not None
                else np.zeros(t.shape)
            )
            for name, t in to_torch_arrays(field_template, flatten_shapes=flatten_shapes).items()
        }
        if isinstance(node, optax.TraceState) and trace_scale != 1.0:
            torch_dict = {k: np.asarray(v) * trace_scale for k, v in torch_dict.items()}
        values[field] = state_from_torch_arrays(
            field_template, torch_dict, casting="same_kind", flatten_shapes=flatten_shapes, what=f"torch's {key} state"
        )
    if isinstance(node, optax.ScaleByScheduleState):
        values["count"] = jnp.asarray(torch_steps(), dtype=jnp.asarray(node.count).dtype)
    elif isinstance(node, TorchMuonState) and given_steps is not None:  # torch's Muon keeps no step
        values["step"] = jnp.asarray(int(given_steps), dtype=jnp.asarray(node.step).dtype)
    elif count_field is not None:
        if isinstance(node, DampenedTraceState) and given_steps is not None:
            steps = {n: int(given_steps) for n in names}  # its step also indexes a momentum schedule
        elif isinstance(node, DampenedTraceState):
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


def trace_scale(state_nodes, lr) -> float:
    """What torch's ``momentum_buffer`` is multiplied by in the state's ``optax.TraceState``.

    optax's rmsprop with a constant lr applies momentum after the lr, so its trace is
    ``-lr * momentum_buffer``; any other trace (and rmsprop with a schedule as lr, whose
    chain jaxnets builds) is torch's buffer itself. ``lr``: a function returning the
    constant lr, called only for that case.
    """
    state_nodes = list(state_nodes)
    if any(isinstance(n, _RMS) for n in state_nodes) and not any(
        isinstance(n, optax.ScaleByScheduleState) for n in state_nodes
    ):
        return -lr()
    return 1.0


def read_torch_optimizer_state(path) -> dict:
    """A ``torch.save(optimizer.state_dict(), path)`` file, read without torch: tensors become NumPy arrays.

    Returns ``{"state": {index: {key: array or number}}, "param_groups": [...]}`` as
    torch's ``optimizer.state_dict()`` has them (also under an ``"optimizer"`` or
    ``"optimizer_state_dict"`` key of a checkpoint dict). Read by the restricted
    unpickler of :mod:`jaxnets._pt_format` (torch.save's zip format), so no code
    from the file runs.

    Raises:
      jaxnets.exchange.WeightsFileError: the file is not readable, or holds no optimizer state_dict.
    """
    from pathlib import Path

    from . import _pt_format
    from .exchange import WeightsFileError

    path = Path(path)
    try:
        obj = _pt_format.read_pt_zip(path)
    except _pt_format.PtFormatError as e:
        raise WeightsFileError(
            f"cannot read the optimizer state {str(path)!r}: {e}. Save it with "
            "torch.save(optimizer.state_dict(), path) (torch's default zip format)."
        ) from e

    def arrays(x):
        if isinstance(x, _pt_format.Tensor):
            return x.array
        if isinstance(x, dict):
            return {k: arrays(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(arrays(v) for v in x)
        return x

    if isinstance(obj, dict):
        for key in ("optimizer", "optimizer_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not (isinstance(obj, dict) and isinstance(obj.get("state"), dict) and isinstance(obj.get("param_groups"), list)):
        what = f"a dict with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise WeightsFileError(
            f"{str(path)!r} holds {what}, not an optimizer state_dict (keys 'state' and 'param_groups'); save one "
            "with torch.save(optimizer.state_dict(), path)."
        )
    return arrays(obj)
