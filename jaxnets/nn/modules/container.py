"""``nn.Sequential``, ``nn.ModuleList`` and ``nn.ModuleDict``: children under torch's keys."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping

from flax import nnx

from ..module import Module


def _add(container: Module, name: str, module: nnx.Module) -> None:
    if not isinstance(module, nnx.Module):
        raise TypeError(f"{type(container).__name__} holds modules; got {type(module).__name__} for key {name!r}.")
    if name not in vars(container) and hasattr(container, name):
        raise KeyError(f"attribute '{name}' already exists")
    setattr(container, name, module)


class _Indexed(Module):
    """Children stored as attributes "0", "1"..., so the state paths are torch's keys."""

    def _names(self) -> list[str]:
        names = [name for name, value in vars(self).items() if isinstance(value, nnx.Module)]
        if all(name.isdigit() for name in names):
            # nnx.clone and nnx.merge (inside nnx.jit too) rebuild the attributes sorted as strings: "10" before "2"
            names.sort(key=int)
        return names

    def __len__(self) -> int:
        return len(self._names())

    def __getitem__(self, index: int):
        names = self._names()
        if isinstance(index, slice):
            children = [getattr(self, n) for n in names[index]]
            return Sequential(*children) if isinstance(self, Sequential) else ModuleList(children)
        if not -len(names) <= index < len(names):
            raise IndexError(f"index {index} is out of range for {type(self).__name__} of length {len(names)}")
        return getattr(self, names[index])

    def __iter__(self) -> Iterator[nnx.Module]:
        return (getattr(self, n) for n in self._names())

    def append(self, module: nnx.Module):
        """Add ``module`` at the end, as torch's ``append``."""
        _add(self, str(len(self)), module)
        return self


class Sequential(_Indexed):
    """``nn.Sequential(*modules)`` or ``nn.Sequential(OrderedDict(name=module, ...))``."""

    def __init__(self, *modules):
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                _add(self, name, module)
        else:
            for index, module in enumerate(modules):
                _add(self, str(index), module)

    def __call__(self, input):
        x = input
        for module in self:
            x = module(x)
        return x


class ModuleList(_Indexed):
    """``nn.ModuleList(modules)``: holds modules; has no forward of its own."""

    def __init__(self, modules: Iterable[nnx.Module] | None = None):
        for index, module in enumerate(modules or ()):
            _add(self, str(index), module)


class ModuleDict(Module):
    """``nn.ModuleDict(modules)``: modules by string key, in insertion order."""

    def __init__(self, modules: Mapping[str, nnx.Module] | None = None):
        for name, module in (modules or {}).items():
            _add(self, name, module)

    def keys(self) -> list[str]:
        return [name for name, value in vars(self).items() if isinstance(value, nnx.Module)]

    def __getitem__(self, key: str) -> nnx.Module:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self):
        return [(k, getattr(self, k)) for k in self.keys()]

    def values(self):
        return [getattr(self, k) for k in self.keys()]
