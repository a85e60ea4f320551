"""Weight files shared with PyTorch, without pickle: safetensors both ways, and PyTorch ``.pt`` state_dicts in.

Files hold PyTorch's names and layouts, so either framework loads them with its
own strict loader: ``state_dict`` keys (``conv1.weight``, ``0.bias``), OIHW
convolution weights, ``(out, in)`` linear weights, and ``fc1``'s columns in
torch's (C, H, W) flatten order (:mod:`jaxnets.torch_layout` holds the rules)::

    # jaxnets -> PyTorch
    jaxnets.exchange.save_safetensors(model, "lenet.safetensors")
    net.load_state_dict(safetensors.torch.load_file("lenet.safetensors"), strict=True)

    # PyTorch -> jaxnets
    torch.save(net.state_dict(), "net.pt")  # or safetensors.torch.save_file(net.state_dict(), "net.safetensors")
    jaxnets.exchange.load_weights(model, "net.pt")

Safety: a safetensors file is a JSON header and raw arrays; reading it runs no
code. A ``.pt`` file (torch.save's zip format) is a pickle, read without torch
by :mod:`jaxnets._pt_format`, whose restricted unpickler, like
``torch.load(path, weights_only=True)``'s, accepts tensors and plain
containers and refuses everything else (a whole pickled ``nn.Module``, or any
object whose unpickling would run code) before running any of it. jaxnets
never imports torch: a file in torch's legacy, non-zip, format
(``_use_new_zipfile_serialization=False``) is read with
``torch.load(weights_only=True)`` by :mod:`parity.torch_files` in a child
process, which needs torch installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors import numpy as safetensors_numpy

from .._files import atomic_write
from . import _pt_format
from .torch_layout import StateDictMismatch, _params, check_state_dict, layout

__all__ = [
    "StateDictMismatch",
    "WeightsFileError",
    "load_torch_arrays",
    "load_weights",
    "read_metadata",
    "read_weights",
    "save_safetensors",
    "to_torch_arrays",
]

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth")
FORMATS = ("safetensors", "torch")
CASTINGS = ("safe", "same_kind")
WRAPPER_KEYS = ("state_dict", "model_state_dict")  # checkpoint dicts that hold a state_dict under one of these keys


class WeightsFileError(ValueError):
    """A weights file that cannot be read: corrupt, truncated, refused as unsafe, or not a state_dict."""


def to_torch_arrays(model_or_state, *, flatten_shapes: dict | None = None) -> dict[str, np.ndarray]:
    """The parameters under PyTorch's ``state_dict`` names, in PyTorch's layouts, as new NumPy arrays.

    Args:
      model_or_state: a jaxnets model, or an ``nnx.State`` of its parameter
        structure (e.g. gradients from ``jax.grad``).
      flatten_shapes: ``(C, H, W)`` per flattening linear layer whose feature
        map is not square; see :func:`jaxnets.torch_layout.layout`.

    Returns:
      ``{torch_name: array}`` in torch's parameter order (``named_parameters()``),
      each array C-contiguous, owning its memory, in the parameter's dtype;
      ``{k: torch.from_numpy(v) for k, v in arrays.items()}`` is a state_dict
      that ``load_state_dict(strict=True)`` accepts.
    """
    entries = layout(model_or_state, flatten_shapes=flatten_shapes)
    flat = dict(nnx.to_flat_state(_params(model_or_state)))
    out = {}
    for e in entries:
        value = flat[e.jax_path]
        value = value[...] if isinstance(value, nnx.Variable) else value
        out[e.torch_name] = e.to_torch(jax.device_get(value))  # an owned C-ordered copy
    return out


def _casts(src: np.ndarray, dst, casting: str) -> bool:
    """Whether ``src`` may be cast to ``dst``: by ``np.can_cast``, or an integer array whose values fit.

    torch keeps counters such as BatchNorm's ``num_batches_tracked`` in int64,
    which JAX holds as int32 unless ``jax_enable_x64`` is on.
    """
    if np.can_cast(src.dtype, dst, casting=casting):
        return True
    if src.dtype.kind in "iu" and np.dtype(dst).kind in "iu":
        info = np.iinfo(dst)
        return bool(src.size == 0 or (src.min() >= info.min and src.max() <= info.max))
    return False


def _dtype_problems(entries, arrays: Mapping, dtypes: dict, casting: str) -> list[str]:
    """One report line for the arrays whose dtype does not cast to the parameter's under ``casting``."""
    bad = []
    for e in entries:
        if e.torch_name in arrays:
            src = np.asarray(arrays[e.torch_name])
            if not _casts(src, dtypes[e.torch_name], casting):
                bad.append(f"{e.torch_name} {src.dtype} -> {dtypes[e.torch_name]}")
    if not bad:
        return []
    fix = "pass casting='same_kind' to round them" if casting == "safe" else "convert them to floating point first"
    return [
        f"dtypes that do not cast to the model's under casting={casting!r}: {'; '.join(bad)} "
        f"({fix}, or build the model with a matching param_dtype)"
    ]


def _check_arrays(fn: str, arrays, casting: str) -> None:
    if not isinstance(arrays, Mapping):
        raise TypeError(
            f"{fn} expects a mapping {{torch_name: array}}, such as a state_dict; got {type(arrays).__name__}."
        )
    if casting not in CASTINGS:
        raise ValueError(f"{fn}: `casting` must be one of {', '.join(map(repr, CASTINGS))}; got {casting!r}.")


def state_from_torch_arrays(
    template,
    arrays: Mapping[str, np.ndarray],
    *,
    casting: str = "safe",
    flatten_shapes: dict | None = None,
    what: str = "the weights",
) -> nnx.State:
    """Torch-layout arrays as a new ``nnx.State`` shaped like ``template``'s parameters.

    The loader behind :func:`load_torch_arrays`, for anything shaped like the
    parameters: weights, gradients, optimizer moments. Strict as torch's
    ``load_state_dict(strict=True)``, with every problem reported in one error;
    each array is cast to its template entry's dtype under ``casting`` (see
    :func:`load_torch_arrays`).

    Args:
      template: a jaxnets model, or an ``nnx.State`` of its parameters (e.g. an
        optimizer moment); gives the structure, the shapes and the dtypes.
      arrays: ``{torch_name: array}`` in PyTorch's layout; copied, never aliased.
      casting: ``"safe"`` or ``"same_kind"``, as in ``np.can_cast``.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.
      what: how error messages name ``arrays``.

    Returns:
      A new ``nnx.State``; ``template`` is not changed.

    Raises:
      StateDictMismatch: listing every missing, unexpected and mis-shaped key
        and every dtype that does not cast.
    """
    _check_arrays("state_from_torch_arrays", arrays, casting)
    entries = layout(template, flatten_shapes=flatten_shapes)
    flat = dict(nnx.to_flat_state(_params(template)))
    dtypes = {e.torch_name: flat[e.jax_path][...].dtype for e in entries}
    check_state_dict(entries, arrays, what, more_problems=_dtype_problems(entries, arrays, dtypes, casting))
    for e in entries:
        value = np.asarray(arrays[e.torch_name]).astype(dtypes[e.torch_name], casting="unsafe", copy=False)  # checked
        # device_put, not jnp.asarray (a program per shape in this JAX); from_torch returns an owned copy.
        flat[e.jax_path] = flat[e.jax_path].replace(jax.device_put(e.from_torch(value)))
    return nnx.from_flat_state(list(flat.items()))


def load_torch_arrays(
    model: nnx.Module,
    arrays: Mapping[str, np.ndarray],
    *,
    casting: str = "safe",
    flatten_shapes: dict | None = None,
    what: str = "the weights",
) -> None:
    """Copy torch-layout arrays into a jaxnets model, in place (torch: ``load_state_dict(strict=True)``).

    Strict like torch: every parameter must be present with its torch shape and
    nothing else may be; all problems are reported in one error, and the model
    is changed only when everything fits. The model keeps its parameter dtypes:
    an array is cast to its parameter's dtype when ``np.can_cast`` allows it
    under ``casting``. The default, ``"safe"``, casts only losslessly (float16
    or bfloat16 -> float32, float32 -> float64); ``"same_kind"`` also rounds
    (float64 -> float32), as torch's ``load_state_dict`` does silently.

    Args:
      model: the jaxnets model to overwrite, e.g. ``jaxnets.LeNet(rngs=nnx.Rngs(0))``.
      arrays: ``{torch_name: array}`` in PyTorch's layout, e.g. from
        :func:`read_weights` or ``{k: v.numpy() for k, v in net.state_dict().items()}``.
        The values are copied, never aliased.
      casting: ``"safe"`` or ``"same_kind"``, as in ``np.can_cast``.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.
      what: how error messages name ``arrays``, e.g. ``"weights file 'w.pt'"``.

    Raises:
      StateDictMismatch: listing every missing, unexpected and mis-shaped key
        and every dtype that does not cast; the model is unchanged.
      TypeError: ``model`` is not an nnx model or ``arrays`` not a mapping.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"load_torch_arrays expects a jaxnets (nnx) model; got {type(model).__name__}.")
    _check_arrays("load_torch_arrays", arrays, casting)
    state = state_from_torch_arrays(model, arrays, casting=casting, flatten_shapes=flatten_shapes, what=what)
    nnx.update(model, state)


def _check_metadata(metadata) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"save_safetensors: `metadata` must be a dict of str to str; got {type(metadata).__name__}.")
    bad = [f"{k!r}: {type(v).__name__}" for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise TypeError(
            f"save_safetensors: `metadata` must map str to str; got {', '.join(bad)}. "
            "Encode other values as text first, e.g. json.dumps(config)."
        )
    return dict(metadata)


def save_safetensors(
    model_or_state, path: str | os.PathLike, metadata: Mapping[str, str] | None = None, *, flatten_shapes=None
) -> Path:
    """Write the parameters in PyTorch's names and layouts to a safetensors file, atomically.

    The file is written next to ``path`` under a temporary name and then
    renamed over it (``os.replace``), so ``path`` holds either its old content
    or the complete new file, never a partial one; on any error the temporary
    file is removed. PyTorch reads it with
    ``net.load_state_dict(safetensors.torch.load_file(path), strict=True)``.

    Args:
      model_or_state: a jaxnets model or an ``nnx.State`` of its parameters.
      path: the file to write, conventionally ``*.safetensors`` (what
        :func:`load_weights` recognises); its directory must exist.
      metadata: text to store in the header, str to str (e.g. the model's
        configuration as JSON); read it back with :func:`read_metadata`. The
        header always has ``"format": "pt"``, the safetensors convention for
        torch-layout files, unless ``metadata`` sets it.
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.

    Returns:
      ``path`` as a ``Path``.
    """
    meta = {"format": "pt", **_check_metadata(metadata if metadata is not None else {})}
    arrays = to_torch_arrays(model_or_state, flatten_shapes=flatten_shapes)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"save_safetensors: {str(path)!r} is a directory; give a file name, "
            f"e.g. {str(path / 'weights.safetensors')!r}."
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"save_safetensors: the directory {str(path.parent)!r} does not exist; create it first."
        )
    return atomic_write(path, lambda tmp: safetensors_numpy.save_file(arrays, tmp, metadata=meta))


def _format_of(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"`format` must be one of {', '.join(map(repr, FORMATS))} or None; got {format!r}.")
        return format
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    raise ValueError(
        f"cannot tell the format of {str(path)!r} from its suffix {suffix!r}: expected "
        f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}. "
        "Rename it, or pass format='safetensors' or format='torch'."
    )


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory, not a weights file.")
    if not path.exists():
        raise FileNotFoundError(f"no weights file {str(path)!r}.")


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return safetensors_numpy.load_file(path)
    except (SafetensorError, ValueError) as e:
        raise WeightsFileError(f"{str(path)!r} is not a readable safetensors file (corrupt or truncated?): {e}") from e


PT_READER = "parity.torch_files"
"""Reads legacy (non-zip) ``.pt`` files, in a child process: ``python -m parity.torch_files SRC DST``."""

_BAD_FILE = 3  # its exit code for a file it read and refused

_NOT_READABLE = "{path!r} is not a readable PyTorch file (corrupt, truncated, or not written by torch.save): {why}"


def _refused(path: Path, name: str) -> str:
    return (
        f"refused to load {str(path)!r}: it holds Python objects other than tensors (GLOBAL {name}), such as "
        "a whole pickled nn.Module, and jaxnets reads .pt files only as torch.load(weights_only=True) does, "
        "running no code from the file. Save the weights alone: torch.save(model.state_dict(), path) or "
        "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')."
    )


def _state_dict_arrays(obj, path: Path, is_tensor, to_array) -> dict[str, np.ndarray]:
    """The ``{name: array}`` of a loaded ``.pt`` object: a flat dict of tensors, or one under a wrapper key.

    Shared by the reader here and :mod:`parity.torch_files` (``is_tensor`` and
    ``to_array(tensor, name)`` say what a tensor is in each).
    """
    if isinstance(obj, Mapping):
        wrapped = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
        if wrapped:
            obj = obj[wrapped[0]]
    if not isinstance(obj, Mapping):
        raise WeightsFileError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict (a dict of tensors); "
            "save one with torch.save(model.state_dict(), path)."
        )
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not (isinstance(k, str) and is_tensor(v))]
    if bad:
        raise WeightsFileError(
            f"{str(path)!r} is not a flat state_dict: entries that are not tensors: {', '.join(bad)}. Expected "
            f"{{name: tensor}} as from model.state_dict(), or a checkpoint dict holding one under "
            f"{' or '.join(map(repr, WRAPPER_KEYS))}."
        )
    return {k: to_array(v, k) for k, v in obj.items()}


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    """Read a ``.pt`` state_dict without torch: :mod:`jaxnets._pt_format` for torch.save's zip format.

    A file in torch's legacy format (``_use_new_zipfile_serialization=False``)
    goes to :data:`PT_READER` in a child process, which needs torch.
    """
    try:
        obj = _pt_format.read_pt_zip(path)
    except _pt_format.RefusedGlobal as e:
        if e.name in _pt_format.NO_NUMPY_FORM:
            raise WeightsFileError(
                f"{str(path)!r} holds {_pt_format.NO_NUMPY_FORM[e.name]} (GLOBAL {e.name}), which has no NumPy "
                "form; save plain dense CPU tensors, e.g. {k: v.to_dense() for k, v in state_dict.items()}."
            ) from e
        raise WeightsFileError(_refused(path, e.name)) from e
    except _pt_format.NotAZipFile as e:
        with open(path, "rb") as f:
            head = f.read(16)
        if _pt_format.is_legacy_pt(head):
            return _read_torch_in_child(path)
        raise WeightsFileError(
            _NOT_READABLE.format(path=str(path), why=f"it is not a zip archive (starts with {head[:8]!r})")
        ) from e
    except _pt_format.PtFormatError as e:
        raise WeightsFileError(_NOT_READABLE.format(path=str(path), why=e)) from e
    seen: set[int] = set()

    def to_array(tensor: _pt_format.Tensor, name: str) -> np.ndarray:
        """The tensor's array; a copy for a tensor seen before (a tied weight is one object, as torch.load gives it)."""
        first = id(tensor) not in seen
        seen.add(id(tensor))
        return tensor.array if first else tensor.array.copy()

    return _state_dict_arrays(obj, path, lambda v: isinstance(v, _pt_format.Tensor), to_array)


def _read_torch_in_child(path: Path) -> dict[str, np.ndarray]:
    """Read a legacy ``.pt`` file without importing torch here: :data:`PT_READER` converts it in a child process.

    The child (part of the ``parity`` package, which may import torch) reads the
    file with ``torch.load(weights_only=True)`` and writes the tensors to a
    temporary safetensors file, read back here. jaxnets itself never imports torch.
    """
    with tempfile.TemporaryDirectory(prefix="jaxnets-pt-") as tmp:
        out = Path(tmp) / "weights.safetensors"
        # -P: the child's sys.path does not start with the working directory, so a torch.py or
        # parity/ lying there is not imported (and run) in its place.
        proc = subprocess.run(
            [sys.executable, "-P", "-m", PT_READER, str(path), str(out)], capture_output=True, text=True, check=False
        )
        error = subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        no_torch = re.search(r"(ModuleNotFound|Import)Error: No module named '?torch'?$", proc.stderr, re.M)
        if proc.returncode != 0 and no_torch:
            raise ImportError(
                f"the PyTorch file {str(path)!r} is in torch's legacy format (saved with "
                "_use_new_zipfile_serialization=False), and reading it needs torch: pip install torch. Or convert "
                "it where torch is installed to torch.save's default zip format, which jaxnets reads without torch, "
                "with torch.save(torch.load(path, weights_only=True), 'weights.pt'), or to safetensors with "
                "safetensors.torch.save_file(torch.load(path, weights_only=True), 'weights.safetensors')."
            ) from error
        if proc.returncode == _BAD_FILE:
            raise WeightsFileError(message) from error
        if proc.returncode != 0:
            missing = f"No module named '{PT_READER.split('.')[0]}'" in proc.stderr
            hint = " Is jaxnets installed with its parity package (pip install -e '.[torch]')?" if missing else ""
            raise WeightsFileError(
                f"could not read the PyTorch file {str(path)!r}: `python -m {PT_READER}` failed ({message}).{hint}"
            ) from error
        return _read_safetensors(out)


def read_weights(path: str | os.PathLike, *, format: str | None = None) -> dict[str, np.ndarray]:
    """The ``{torch_name: array}`` of a safetensors file or a PyTorch ``.pt``/``.pth`` state_dict.

    A ``.pt`` file may hold a state_dict (``torch.save(model.state_dict(), path)``)
    or a checkpoint dict with one under ``"state_dict"`` or ``"model_state_dict"``
    (other entries, such as an epoch or optimizer state, are then ignored).
    It is read without torch by :mod:`jaxnets._pt_format`, which unpickles only
    tensors and plain containers, as ``torch.load(path, weights_only=True)``
    does, and gives the same arrays. A file in torch's legacy, non-zip, format
    is read with torch in a child process running :mod:`parity.torch_files`
    (about 2 s for torch to start; this process never imports torch).

    Args:
      path: a ``*.safetensors``, ``*.pt`` or ``*.pth`` file.
      format: ``"safetensors"`` or ``"torch"`` for other names; from the suffix when None.

    Returns:
      ``{torch_name: array}`` in the file's order and dtypes; the arrays share memory with nothing else.

    Raises:
      WeightsFileError: the file is corrupt or truncated, holds pickled objects
        other than tensors (refused before any of their code runs), or is not a
        dict of tensors.
      ImportError: a legacy (non-zip) ``.pt`` file and no torch installed.
      FileNotFoundError, IsADirectoryError: no such file.
    """
    path = Path(path)
    kind = _format_of(path, format)
    _check_file(path)
    return _read_safetensors(path) if kind == "safetensors" else _read_torch(path)


def load_weights(
    model: nnx.Module,
    path: str | os.PathLike,
    *,
    format: str | None = None,
    casting: str = "safe",
    flatten_shapes: dict | None = None,
) -> None:
    """Load a safetensors file or a PyTorch ``.pt``/``.pth`` state_dict into a jaxnets model, in place.

    :func:`read_weights` then :func:`load_torch_arrays`: strict, and the model
    is unchanged unless every key, shape and dtype fits.

    Args:
      model: the jaxnets model to overwrite; it must have the file's architecture
        (e.g. ``LeNet(kernel_size=3)`` for weights of the 3x3 net).
      path: a ``*.safetensors``, ``*.pt`` or ``*.pth`` file in PyTorch's names and layouts.
      format: ``"safetensors"`` or ``"torch"`` for other names; from the suffix when None.
      casting: dtype rule, see :func:`load_torch_arrays` (default: lossless casts only).
      flatten_shapes: see :func:`jaxnets.torch_layout.layout`.

    Raises:
      StateDictMismatch: the file does not fit the model (every bad key listed).
      WeightsFileError: see :func:`read_weights`.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"load_weights expects a jaxnets (nnx) model; got {type(model).__name__}.")
    arrays = read_weights(path, format=format)
    load_torch_arrays(
        model, arrays, casting=casting, flatten_shapes=flatten_shapes, what=f"the weights file {str(path)!r}"
    )


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text metadata in a safetensors file's header (as written by :func:`save_safetensors`).

    Args:
      path: a safetensors file.

    Returns:
      ``{key: value}``, empty when the file has none.

    Raises:
      WeightsFileError: the file is not a readable safetensors file.
      ValueError: a PyTorch file, which has no metadata.
    """
    path = Path(path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        raise ValueError(f"{str(path)!r} is a PyTorch file; only safetensors files carry metadata.")
    _check_file(path)
    try:
        with safe_open(path, framework="numpy") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, ValueError) as e:
        raise WeightsFileError(f"{str(path)!r} is not a readable safetensors file (corrupt or truncated?): {e}") from e
