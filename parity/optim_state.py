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
===============================  ==========================================  ==========================

torch keeps a step count per parameter and optax one per optimizer, so the
counts must agree across parameters. A torch momentum buffer that is None (the
parameter has not been stepped) is a zero buffer in optax, which gives the same
next step. ``maximize=True`` adds only a stateless negation, so its states
convert too. Rprop's state converts after torch's first step (before it, torch
has no ``step_size`` and the conversion would give zeros, not ``lr``).
Adadelta, Adamax, NAdam and ASGD states are not converted yet (#14).
RMSprop state is not converted: torch's state carries a step count that
optax's RMSprop does not keep.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import torch

from jaxnets.optim import (
    DampenedTraceState,
    TorchAdagradState,
    TorchAmsgradState,
    TorchRAdamState,
    TorchRpropState,
)

from .convert import state_from_torch, to_torch_state_dict

# optax state type -> (its step-count field or None, {optax field: torch state key})
FIELDS = {
    optax.TraceState: (None, {"trace": "momentum_buffer"}),
    DampenedTraceState: ("step", {"momentum_buffer": "momentum_buffer"}),
    optax.ScaleByAdamState: ("count", {"mu": "exp_avg", "nu": "exp_avg_sq"}),
    TorchAmsgradState: ("step", {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "max_exp_avg_sq": "max_exp_avg_sq"}),
    TorchAdagradState: ("step", {"sum": "sum"}),
    TorchRAdamState: ("step", {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    TorchRpropState: ("step", {"prev": "prev", "step_size": "step_size"}),
}


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
            "(the states of jaxnets.optim.sgd, adam, adamw, adagrad, radam and rprop)."
        )


def _param_names(torch_optimizer, torch_module) -> list[str]:
    """torch's state_dict index -> parameter name, from the optimizer's param_groups."""
    names = {id(p): n for n, p in torch_module.named_parameters()}
    order = [p for group in torch_optimizer.param_groups for p in group["params"]]
    unknown = [i for i, p in enumerate(order) if id(p) not in names]
    if unknown:
        raise ValueError(f"the torch optimizer holds parameters {unknown} that are not in the torch module given.")
    return [names[id(p)] for p in order]


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
        count_field, fields = FIELDS[type(node)]
        for field, key in fields.items():
            for name, tensor in to_torch_state_dict(getattr(node, field), flatten_shapes=flatten_shapes).items():
                per_param[name][key] = tensor
        if isinstance(node, DampenedTraceState):
            if int(node.step) == 0:  # torch: no buffer yet, so the next step sets buf = g undamped
                for name in names:
                    per_param[name].pop("momentum_buffer", None)
        elif count_field is not None:
            for name in names:
                per_param[name]["step"] = torch.tensor(float(getattr(node, count_field)))
    state_dict = torch_optimizer.state_dict()
    state_dict["state"] = {i: per_param[n] for i, n in enumerate(names) if per_param[n]}
    torch_optimizer.load_state_dict(state_dict)


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
        count_field, fields = FIELDS[type(node)]
        values = {}
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
