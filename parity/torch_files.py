"""Reading PyTorch ``.pt`` state_dicts, for ``jaxnets.exchange``: the one place torch touches a weights file.

``jaxnets`` never imports torch, so it reads a ``.pt`` file by running this
module in a child process::

    python -m parity.torch_files SRC.pt DST.safetensors

which reads ``SRC`` only with ``torch.load(path, weights_only=True,
map_location="cpu")`` (a restricted unpickler that accepts tensors and plain
containers and refuses anything else, such as a whole pickled ``nn.Module`` or
an object whose unpickling would run code, before running any of it) and
writes its tensors, names unchanged, to the safetensors file ``DST``. Exit
codes: 0 written; 3 the file is corrupt, refused or not a state_dict (the last
line on stderr says what and why); without torch, importing this module fails.
"""

from __future__ import annotations

import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import numpy as safetensors_numpy

from jaxnets.exchange import _BAD_FILE, WRAPPER_KEYS, WeightsFileError

from .torch_models import to_numpy


def _refused_global(message: str) -> str | None:
    """The global that torch's restricted unpickler refused (e.g. ``posix.mkdir``), or None if it refused none."""
    found = re.search(r"GLOBAL (\S+?)\.?(?:\s|$)", message)
    return found.group(1) if found else None


def _gist(message: str) -> str:
    """The informative line of a torch.load error: the last one, skipping the pointer to torch's docs."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Check the documentation")]
    return lines[-1] if lines else ""


def _torch_to_numpy(tensor, name: str, path: Path) -> np.ndarray:
    try:
        return to_numpy(tensor)
    except (TypeError, RuntimeError) as e:
        raise WeightsFileError(
            f"{str(path)!r}: the tensor {name!r} ({tensor.dtype}, layout {tensor.layout}) has no NumPy form: {e}"
        ) from e


def read_pt(path: Path) -> dict[str, np.ndarray]:
    """The ``{name: array}`` of a ``.pt`` state_dict (or one under ``"state_dict"``/``"model_state_dict"``).

    Raises:
      WeightsFileError: the file is corrupt or truncated, holds pickled objects
        other than tensors (refused before any of their code runs), or is not a
        dict of tensors.
    """
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        refused = _refused_global(str(e))
        if refused is None:
            raise WeightsFileError(
                f"{str(path)!r} is not a readable PyTorch file (corrupt, truncated, or not written by torch.save): "
                f"{_gist(str(e))}"
            ) from e
        raise WeightsFileError(
            f"refused to load {str(path)!r}: it holds Python objects other than tensors (GLOBAL {refused}), such as "
            "a whole pickled nn.Module, and jaxnets reads .pt files only with torch.load(weights_only=True), which "
            "runs no code from the file. Save the weights alone: torch.save(model.state_dict(), path) or "
            "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')."
        ) from e
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, AttributeError) as e:
        raise WeightsFileError(
            f"{str(path)!r} is not a readable PyTorch file (corrupt, truncated, or not written by torch.save): "
            f"{type(e).__name__}: {_gist(str(e)) or '(no message)'}"
        ) from e
    return _state_dict_arrays(obj, path)


def _state_dict_arrays(obj, path: Path) -> dict[str, np.ndarray]:
    """The ``{name: array}`` of a loaded ``.pt`` object: a flat dict of tensors, or one under a wrapper key."""

    if isinstance(obj, Mapping):
        wrapped = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
        if wrapped:
            obj = obj[wrapped[0]]
    if not isinstance(obj, Mapping):
        raise WeightsFileError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict (a dict of tensors); "
            "save one with torch.save(model.state_dict(), path)."
        )
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if bad:
        raise WeightsFileError(
            f"{str(path)!r} is not a flat state_dict: entries that are not tensors: {', '.join(bad)}. Expected "
            f"{{name: tensor}} as from model.state_dict(), or a checkpoint dict holding one under "
            f"{' or '.join(map(repr, WRAPPER_KEYS))}."
        )
    return {k: _torch_to_numpy(v, k, path) for k, v in obj.items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m parity.torch_files SRC.pt DST.safetensors", file=sys.stderr)
        return 2
    try:
        arrays = read_pt(Path(argv[0]))
    except WeightsFileError as e:
        print(e, file=sys.stderr)
        return _BAD_FILE
    safetensors_numpy.save_file(arrays, argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
