"""Reading legacy PyTorch ``.pt`` state_dicts with torch, for ``jaxnets.exchange``.

``jaxnets`` reads torch.save's zip format itself, without torch
(:mod:`jaxnets._pt_format`). A file in torch's legacy format
(``torch.save(..., _use_new_zipfile_serialization=False)``) it reads by
running this module in a child process (``jaxnets`` never imports torch)::

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
from pathlib import Path

import numpy as np
import torch
from safetensors import numpy as safetensors_numpy

from jaxnets.interop.exchange import _BAD_FILE, _NOT_READABLE, WeightsFileError, _refused, _state_dict_arrays

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
            raise WeightsFileError(_NOT_READABLE.format(path=str(path), why=_gist(str(e)))) from e
        raise WeightsFileError(_refused(path, refused)) from e
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, AttributeError) as e:
        why = f"{type(e).__name__}: {_gist(str(e)) or '(no message)'}"
        raise WeightsFileError(_NOT_READABLE.format(path=str(path), why=why)) from e
    return _state_dict_arrays(obj, path, torch.is_tensor, lambda v, k: _torch_to_numpy(v, k, path))


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
