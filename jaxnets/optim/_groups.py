"""torch.optim's parameter groups: parameters chosen by torch name or predicate, each group its own hyperparameters."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping, Sequence

import jax
import optax
from flax import nnx

from ..interop.torch_layout import _torch_name

_UNSELECTED = ("frozen", "defaults", "error")


def _key(entry):
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def _names(tree) -> tuple[list[tuple[str, str]], list, object]:
    """``[(torch_name, jaxnets_path)]``, the leaves and the treedef of a params or gradients pytree."""
    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731 -- nnx.Optimizer inits on Variables
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_var)
    names = []
    for path, _ in flat:
        keys = tuple(_key(entry) for entry in path)
        names.append((_torch_name(keys) if keys else "", "/".join(map(str, keys))))
    leaves = [leaf[...] if is_var(leaf) else leaf for _, leaf in flat]
    return names, leaves, treedef


def _selectors(index: int, params) -> list:
    selectors = list(params) if isinstance(params, list | tuple) else [params]
    for s in selectors:
        if not (isinstance(s, str) or callable(s)):
            raise ValueError(
                f"param_groups: group {index} has params={params!r}; expected a glob pattern on torch-style names "
                '(e.g. "fc1.*" or "*.bias"), a predicate (name, value) -> bool, or a list of these.'
            )
    if not selectors:
        raise ValueError(f"param_groups: group {index} has an empty `params` list; give a pattern or a predicate.")
    return selectors


def param_groups(
    optimizer: Callable[..., optax.GradientTransformation],
    groups: Sequence[Mapping],
    *,
    schedule: Callable | None = None,
    unselected: str = "frozen",
    **defaults,
) -> optax.GradientTransformation:
    """torch.optim's parameter groups: one ``optimizer`` per group, each with its own hyperparameters.

    ``param_groups(jaxnets.optim.sgd, [{"params": "*.bias", "weight_decay": 0.0},
    {"params": "fc1.*", "lr": 1e-3}], lr=1e-2, momentum=0.9)`` takes the steps
    of ``torch.optim.SGD([{"params": biases, "weight_decay": 0.0}, {"params":
    fc1_params, "lr": 1e-3}], lr=1e-2, momentum=0.9)``: each group runs
    ``optimizer(**{**defaults, **group})`` on its own parameters (built with
    ``optax.partition``, so each group's state holds only its parameters).

    A parameter is named as in torch's ``named_parameters()``: ``fc1.weight``
    for the jaxnets path ``fc1/kernel``, ``0.bias`` for ``layers/0/bias`` of a
    Sequential (the mapping of ``jaxnets.torch_layout``); a :mod:`jaxnets.nn`
    model's paths are torch's names already. A pattern (``fnmatch`` glob,
    where ``*`` also matches dots) selects a parameter when it matches its
    torch name or its jaxnets path (``"fc1/kernel"``, ``"*/kernel"``).

    torch's rules hold: every parameter belongs to at most one group, and a
    parameter selected by two groups is refused (torch: "some parameters
    appear in more than one parameter group"). Parameters in no group are not
    optimized, as in torch, whose optimizer never sees them: their update is
    0 and no weight decay touches them (``unselected="frozen"``, the
    default). ``unselected="defaults"`` optimizes them instead with the
    ``defaults`` (an implicit last group), ``unselected="error"`` refuses them.

    Schedules act on every group's own base lr, as torch's schedulers do:
    ``schedule`` is a function of the base lr returning an optax schedule,
    e.g. ``schedule=lambda base_lr: optax.exponential_decay(base_lr, 1, 0.9)``
    or ``lambda base_lr: lr_scheduler.StepLR(base_lr, 30)``; each group gets
    ``lr=schedule(its lr)``. A group may give its own ``"schedule"`` (as
    torch's ``LambdaLR`` takes one lambda per group).

    Clipping over all parameters, as ``torch.nn.utils.clip_grad_norm_(
    model.parameters(), ...)`` before ``optimizer.step()``, goes first:
    ``optax.chain(clip_grad_norm(1.0), param_groups(...))``.

    Args:
      optimizer: a ``jaxnets.optim`` optimizer function (or any function of
        keyword hyperparameters returning an optax transformation), e.g.
        ``jaxnets.optim.adamw``.
      groups: a list of dicts, in order, each with ``"params"``: a glob
        pattern, a predicate ``(name, value) -> bool`` (``name`` the torch name,
        ``value`` a ``jax.ShapeDtypeStruct``: the predicate runs on the
        parameters at ``init`` and on the gradients at every ``update``, so it
        sees shapes and dtypes only), or a list of these; and any of
        ``optimizer``'s arguments, which override ``defaults``; and
        optionally ``"schedule"``.
      schedule: a function ``base_lr -> optax schedule`` applied to every
        group's lr, or None.
      unselected: ``"frozen"`` (torch), ``"defaults"`` or ``"error"``: what
        happens to parameters no group selects.
      **defaults: ``optimizer``'s arguments for every group, as torch's
        optimizer constructor takes them.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its state is an
      ``optax.PartitionState`` whose ``inner_states`` are keyed ``"group0"``,
      ``"group1"``, ... and ``"unselected"``.

    Raises:
      ValueError: at construction for a key that is not an argument of
        ``optimizer``, a group without ``params``, or a hyperparameter that
        ``optimizer`` refuses (the message names the group); at ``init``
        (when traced, before anything runs) for a pattern or predicate that
        selects no parameter, a parameter selected by two groups, or with
        ``unselected="error"`` a parameter in no group.
    """
    name = getattr(optimizer, "__name__", repr(optimizer))
    if isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            "param_groups got an optax transformation; it needs the optimizer function, to build one per group: "
            "pass e.g. jaxnets.optim.sgd and its arguments (lr=0.1, momentum=0.9), not jaxnets.optim.sgd(...)."
        )
    if not callable(optimizer):
        raise ValueError(
            f"param_groups got optimizer={optimizer!r}; expected an optimizer function such as jaxnets.optim.sgd "
            "(the function, not a call of it)."
        )
    signature = inspect.signature(optimizer)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    arguments = [n for n, p in signature.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]

    def check_keys(keys, where: str) -> None:
        unknown = [k for k in keys if k not in arguments]
        if unknown and not takes_any:
            raise ValueError(
                f"param_groups: {where} {', '.join(map(repr, unknown))}, which {name} does not take; expected "
                f"'params', 'schedule' or {name}'s arguments: {', '.join(arguments)}."
            )

    check_keys(defaults, "the defaults have")
    if unselected not in _UNSELECTED:
        raise ValueError(f"param_groups got unselected={unselected!r}; expected one of {', '.join(_UNSELECTED)}.")
    if isinstance(groups, Mapping) or not isinstance(groups, Sequence) or not groups:
        raise ValueError(
            f"param_groups got groups={groups!r}; expected a non-empty list of dicts such as "
            '[{"params": "*.bias", "weight_decay": 0.0}, {"params": "*.weight"}].'
        )

    def build(index, hyper: dict, group_schedule):
        where = f"group {index}" if index is not None else "the unselected parameters (defaults)"
        kwargs = {**defaults, **hyper}
        if group_schedule is not None:
            if "lr" not in arguments:
                raise ValueError(f"param_groups: {where} has a schedule, but {name} takes no `lr`.")
            base_lr = kwargs.get("lr", signature.parameters["lr"].default)
            if callable(base_lr):
                raise ValueError(
                    f"param_groups: {where} has lr={base_lr!r}, a schedule, and a `schedule` of the base lr; "
                    "give a number lr with `schedule`, or a schedule lr without `schedule`."
                )
            kwargs["lr"] = group_schedule(base_lr)
        try:
            return optimizer(**kwargs)
        except (ValueError, TypeError) as error:
            raise ValueError(f"param_groups: {where}: {error}") from error

    transforms, selectors = {}, []
    for index, group in enumerate(groups):
        if not isinstance(group, Mapping) or "params" not in group:
            raise ValueError(
                f"param_groups: group {index} is {group!r}; expected a dict with a 'params' key, as torch's "
                'param groups have, e.g. {"params": "*.bias", "weight_decay": 0.0}.'
            )
        hyper = {k: v for k, v in group.items() if k not in ("params", "schedule")}
        check_keys(hyper, f"group {index} has")
        selectors.append(_selectors(index, group["params"]))
        transforms[f"group{index}"] = build(index, hyper, group.get("schedule", schedule))
    transforms["unselected"] = build(None, {}, schedule) if unselected == "defaults" else optax.set_to_zero()

    def labels(tree):
        names, leaves, treedef = _names(tree)
        owner: list[int | None] = [None] * len(names)
        for index, group_selectors in enumerate(selectors):
            for selector in group_selectors:
                hits = [
                    i
                    for i, ((torch_name, path), leaf) in enumerate(zip(names, leaves, strict=True))
                    if _selects(selector, torch_name, path, leaf)
                ]
                if not hits:
                    raise ValueError(
                        f"param_groups: group {index}'s {_describe(selector)} selects no parameter. The parameters "
                        f"(torch names) are: {', '.join(n for n, _ in names) or 'none'}; jaxnets paths such as "
                        "'fc1/kernel' match too."
                    )
                for i in hits:
                    if owner[i] is not None and owner[i] != index:
                        raise ValueError(
                            f"param_groups: the parameter {names[i][0]} is selected by group {owner[i]} and by "
                            f'group {index}; torch.optim refuses a parameter in more than one group ("some '
                            'parameters appear in more than one parameter group"). Narrow one pattern, e.g. '
                            "with a predicate (name, value) -> bool."
                        )
                    owner[i] = index
        left = [names[i][0] for i, o in enumerate(owner) if o is None]
        if left and unselected == "error":
            raise ValueError(
                f"param_groups: no group selects {', '.join(left)} (unselected='error'). Add a group for them, or "
                "pass unselected='frozen' (torch: not optimized) or 'defaults'."
            )
        return jax.tree.unflatten(treedef, ["unselected" if o is None else f"group{o}" for o in owner])

    return optax.partition(transforms, labels)


def _selects(selector, torch_name: str, path: str, leaf) -> bool:
    if isinstance(selector, str):
        return fnmatch.fnmatchcase(torch_name, selector) or fnmatch.fnmatchcase(path, selector)
    return bool(selector(torch_name, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)))


def _describe(selector) -> str:
    if isinstance(selector, str):
        return f"pattern {selector!r}"
    return f"predicate {getattr(selector, '__name__', repr(selector))}"
