"""The base of the torch-mirror layers: torch's names, order, modes and ``state_dict``.

A :class:`Module` is a Flax NNX module (it jits, differentiates and splits like
any other) that keeps what a PyTorch user relies on:

- **Names and layouts.** Parameters are :class:`flax.nnx.Param` and buffers are
  :class:`Buffer` (an ``nnx.BatchStat``, so ``nnx.Optimizer(..., wrt=nnx.Param)``
  leaves them alone), stored under torch's attribute names (``weight``,
  ``bias``, ``running_mean``...) in torch's layouts. Children of containers are
  stored under torch's keys (``"0"``, ``"1"``...), so a path in the NNX state is
  the torch ``state_dict`` key.
- **Order.** torch orders ``parameters()`` and ``state_dict()`` by registration:
  a module's own parameters, then its own buffers, then its children, each in
  the order they were assigned. :meth:`Module.named_parameters` and
  :meth:`Module.state_dict` follow the same rule (each module records the order
  its members were assigned in, which survives ``nnx.split``/``nnx.merge``,
  ``nnx.jit`` and ``nnx.eval_shape``, whose rebuilt modules list attributes
  by name), so the i-th parameter is torch's i-th, which is what an
  optimizer ``state_dict`` indexes by.
- **Modes.** ``training`` is a plain attribute, ``True`` after construction as
  in torch; :meth:`Module.train` and :meth:`Module.eval` set it on every
  jaxnets.nn module inside. It is static: a compiled function sees a mode
  switch as a new graph and compiles again, once per mode.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class Buffer(nnx.BatchStat):
    """A torch buffer: state that is saved and loaded but not trained (``running_mean``...)."""


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns, as torch's ``_IncompatibleKeys``."""

    missing_keys: list[str]
    unexpected_keys: list[str]


_ORDER = "_torch_order"
"""The attribute where a :class:`Module` keeps its members' names in assignment order (a static tuple)."""


@functools.partial(jax.jit, static_argnums=1)
def _cast(arrays: list, dtype) -> list:
    # Every array of Module.to in one program: cast one by one outside jit, each shape compiled a program of its
    # own (ResNet-18's to(float64): 17 programs, 0.77 s).
    return [a.astype(dtype) for a in arrays]


def _in_order(module: nnx.Module) -> Iterator[tuple[str, object]]:
    # Assignment order, as torch registers. Python keeps it in vars(), but a module rebuilt by nnx.merge (after
    # nnx.split, nnx.jit, nnx.eval_shape) gets its attributes back sorted by name; the tuple survives as static data.
    members = vars(module)
    order = members.get(_ORDER, ())
    yield from ((name, members[name]) for name in order if name in members)
    yield from ((name, value) for name, value in members.items() if name not in order)


def _children(module: nnx.Module) -> Iterator[tuple[str, nnx.Module]]:
    for name, value in _in_order(module):
        if isinstance(value, nnx.Module):
            yield name, value


def _own(module: nnx.Module, kind: type) -> Iterator[tuple[str, nnx.Variable]]:
    for name, value in _in_order(module):
        if isinstance(value, kind):
            yield name, value


class Module(nnx.Module):
    """Base class of the jaxnets.nn layers (see the module docstring)."""

    training: bool = True

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, nnx.Module | nnx.Variable):
            order = vars(self).get(_ORDER, ())
            if name not in order:
                super().__setattr__(_ORDER, (*order, name))
        super().__setattr__(name, value)

    def train(self, mode: bool = True) -> Module:  # type: ignore[override]
        """Set training mode on this module and every jaxnets.nn module inside, as ``torch.nn.Module.train``."""
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode) takes a bool; got {mode!r}. Use model.train() or model.eval().")
        for _, module in self.named_modules():
            if isinstance(module, Module):
                module.training = mode
        return self

    def eval(self) -> Module:  # type: ignore[override]
        """Set evaluation mode, as ``torch.nn.Module.eval``: ``train(False)``."""
        return self.train(False)

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, nnx.Module]]:
        """This module and every module inside, depth first in registration order, named as torch names them."""
        seen: set[int] = set()

        def walk(module, path):
            if id(module) in seen:  # torch lists a shared module once
                return
            seen.add(id(module))
            yield path, module
            for name, child in _children(module):
                yield from walk(child, f"{path}.{name}" if path else name)

        yield from walk(self, prefix)

    def _members(self, kind: type, shared: bool) -> Iterator[tuple[str, nnx.Variable]]:
        seen: set[int] = set()

        def walk(module, prefix):
            for name, var in _own(module, kind):
                if not shared and id(var) in seen:
                    continue
                seen.add(id(var))
                yield prefix + name, var
            for name, child in _children(module):
                yield from walk(child, f"{prefix}{name}.")

        yield from walk(self, "")

    def named_parameters(self) -> Iterator[tuple[str, nnx.Param]]:
        """``(name, Param)`` in torch's ``named_parameters()`` order; a shared parameter appears once."""
        return self._members(nnx.Param, shared=False)

    def parameters(self) -> list[nnx.Param]:
        """The parameters in torch's order."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> Iterator[tuple[str, Buffer]]:
        """``(name, Buffer)`` in torch's ``named_buffers()`` order."""
        return self._members(Buffer, shared=False)

    def state_dict(self) -> OrderedDict[str, jnp.ndarray]:
        """Parameters and buffers by torch's keys and in torch's order, as JAX arrays.

        Per module: its parameters, then its buffers, then its children's entries.
        A parameter shared between modules appears under each name, as in torch.
        """

        def walk(module, prefix):
            for kind in (nnx.Param, Buffer):
                for name, var in _own(module, kind):
                    yield prefix + name, var[...]
            for name, child in _children(module):
                yield from walk(child, f"{prefix}{name}.")

        return OrderedDict(walk(self, ""))

    def load_state_dict(self, state_dict: Mapping[str, object], strict: bool = True) -> IncompatibleKeys:
        """Copy ``state_dict``'s arrays into this module, as ``torch.nn.Module.load_state_dict``.

        Values may be JAX or NumPy arrays (convert torch tensors with
        ``t.detach().cpu().numpy()`` first; jaxnets does not import torch). Each
        is copied, so the module never shares memory with the source, and cast to
        the dtype of the parameter or buffer it replaces, as torch's ``copy_``
        does. Nothing is written unless every key and shape fits.

        Raises:
          RuntimeError: with ``strict=True``, when keys are missing or unexpected
            (torch's message, listing them); with any ``strict``, when a shape
            differs.
        """
        targets: dict[str, nnx.Variable] = {}

        def walk(module, prefix):
            for kind in (nnx.Param, Buffer):
                for name, var in _own(module, kind):
                    targets[prefix + name] = var
            for name, child in _children(module):
                walk(child, f"{prefix}{name}.")

        walk(self, "")
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        values = {}
        for key, var in targets.items():
            if key not in state_dict:
                continue
            value = np.array(state_dict[key], copy=True)
            current = var[...]
            if value.shape != current.shape:
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {tuple(value.shape)} from checkpoint, "
                    f"the shape in current model is {tuple(current.shape)}."
                )
                continue
            # Cast by NumPy and put on the device: jnp.asarray would compile a program per shape and dtype.
            values[key] = jax.device_put(value.astype(current.dtype, copy=False))
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for key, value in values.items():
            targets[key][...] = value
        return IncompatibleKeys(missing, unexpected)

    def to(self, dtype) -> Module:
        """Cast every floating-point parameter and buffer to ``dtype`` in place, as ``module.to(dtype)``."""
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"to(dtype) takes a floating-point dtype, as torch's Module.to does; got {dtype}.")
        members = [*self._members(nnx.Param, shared=False), *self._members(Buffer, shared=False)]
        floating = [var for _, var in members if jnp.issubdtype(var[...].dtype, jnp.floating)]
        for var, value in zip(floating, _cast([var[...] for var in floating], dtype), strict=True):
            var.set_value(value)
        return self

    def double(self) -> Module:
        """Cast floating-point parameters and buffers to float64 (needs ``jax_enable_x64``), as torch's."""
        return self.to(jnp.float64)

    def float(self) -> Module:
        """Cast floating-point parameters and buffers to float32, as torch's."""
        return self.to(jnp.float32)

    def extra_repr(self) -> str:
        """The constructor arguments shown by ``repr``, as torch's ``extra_repr``."""
        return ""
