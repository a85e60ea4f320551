"""A torch-free reader of PyTorch's ``.pt`` files (``torch.save``'s zip format), as NumPy arrays.

``torch.save`` (by default since torch 1.6) writes a zip archive whose entries
all sit under one folder, ``<archive>/``:

- ``data.pkl``: the object, pickled (protocol 2); each tensor is a call
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
  requires_grad, backward_hooks[, metadata])`` (``_rebuild_tensor_v3`` adds a
  dtype, for the dtypes without a legacy storage class such as uint16 or the
  float8s), wrapped in ``_rebuild_parameter`` for an ``nn.Parameter``; a
  storage is a persistent id ``('storage', storage_type, key, location,
  numel)``;
- ``data/<key>``: each storage's raw bytes, in the byte order of ``byteorder``
  (``little`` when that entry is missing, as torch assumes);
- ``version``, ``.format_version``, ``.storage_alignment``, ``.data/...``.

The pickle is read by a :class:`pickle.Unpickler` whose ``find_class`` knows
only the names a tensor or a plain container needs (the rebuild functions, the
storage classes and dtypes, ``OrderedDict``, ``torch.Size``, ...) and maps
each to a function here that builds NumPy arrays; any other name (a pickled
``nn.Module``, ``os.system``, ``posix.mkdir``) is refused when the unpickler
meets it, before anything it would build or call runs. That is what
``torch.load(path, weights_only=True)`` accepts, less the tensor kinds that
have no NumPy form (sparse, quantized, nested, on the meta device), which are
refused by name; a tensor's Python attributes (``t.foo = 1``) are dropped.
No torch, no code from the file.

Differences from torch 2.13's ``torch.load(weights_only=True)``: in a
big-endian file (``byteorder`` ``big``) the uint16/uint32/uint64 tensors,
whose storages are pickled as untyped bytes beside the dtype
(``_rebuild_tensor_v3``), are swapped here by their element size, where torch
swaps a storage by its pickled type, bytes, and so leaves them as written;
and a pickle of protocol 3 to 5 is read here, where torch's restricted
unpickler knows protocol 2 (torch.save's) only.

Each tensor becomes a new C-contiguous array copied out of its storage through
a strided ``np.ndarray`` view (what ``np.lib.stride_tricks.as_strided`` makes,
which would lose the ml_dtypes types), its offset, shape and strides checked
against the storage's size first, so views, transposes and tensors sharing a
storage come out as ``torch.load`` gives them, each in its own memory (a
tensor pickled twice, such as a tied weight, is one object, as in torch).
bfloat16 and the float8s are ``ml_dtypes`` types (JAX's own).
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import sys
import zipfile
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

__all__ = ["NotAZipFile", "PtFormatError", "RefusedGlobal", "Tensor", "is_legacy_pt", "read_pt_zip"]


class PtFormatError(ValueError):
    """The file is not a readable ``torch.save`` zip archive (corrupt, truncated, or something else)."""


class RefusedGlobal(PtFormatError):
    """The pickle names a global that a tensor or plain container does not need; nothing it names was run."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"GLOBAL {name} ({reason})")
        self.name = name
        self.reason = reason


class NotAZipFile(PtFormatError):
    """The file is not a zip archive: torch's legacy format, or not a torch file at all."""


# torch's legacy (non-zip) format starts with pickle protocol 2 and a pickled magic number
# (torch.serialization.MAGIC_NUMBER, 0x1950a86a20f9469cfc6c, as a LONG1 of 10 bytes).
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"

# numpy dtypes of torch's dtypes, by the name torch pickles them under (torch.<name>).
_DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "complex128": np.dtype(np.complex128),
    "complex64": np.dtype(np.complex64),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint64": np.dtype(np.uint64),
    "uint32": np.dtype(np.uint32),
    "uint16": np.dtype(np.uint16),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "float8_e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "float8_e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "float8_e8m0fnu": np.dtype(ml_dtypes.float8_e8m0fnu),
}
# torch's legacy typed storage classes (torch.FloatStorage, ...) and their dtypes.
_STORAGES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
# What torch.load(weights_only=True) would also build, but NumPy has no array for: refused by name.
NO_NUMPY_FORM = {
    "torch._utils._rebuild_sparse_tensor": "a sparse tensor",
    "torch._utils._rebuild_qtensor": "a quantized tensor",
    "torch._utils._rebuild_nested_tensor": "a nested tensor",
    "torch._utils._rebuild_wrapper_subclass": "a tensor subclass or a tensor on the meta device",
    "torch._utils._rebuild_meta_tensor_no_storage": "a tensor on the meta device",
    "torch._utils._rebuild_device_tensor_from_numpy": "a tensor saved from a NumPy array on another device",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": "a tensor saved from another device",
}
for _name in ("ComplexHalf", "QInt8", "QUInt8", "QInt32", "QUInt4x2", "QUInt2x4"):
    NO_NUMPY_FORM[f"torch.{_name}Storage"] = f"a {_name} tensor"
for _name in ("complex32", "chalf", "qint8", "quint8", "qint32", "quint4x2", "quint2x4", "bits8", "bits16"):
    NO_NUMPY_FORM[f"torch.{_name}"] = f"a {_name} tensor"
for _bits in range(1, 8):
    NO_NUMPY_FORM[f"torch.uint{_bits}"] = f"a uint{_bits} tensor"
    NO_NUMPY_FORM[f"torch.int{_bits}"] = f"an int{_bits} tensor"


class _StorageType:
    """What ``torch.<X>Storage`` (or ``torch.storage.UntypedStorage``, bytes) stands for: a dtype."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _DType:
    """A ``torch.<dtype>`` global, as ``_rebuild_tensor_v3`` receives it."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _Storage:
    """A storage's raw bytes (native byte order) and the dtype the file gives them."""

    __slots__ = ("data", "dtype", "key", "swap")

    def __init__(self, data: np.ndarray, dtype: np.dtype, key: str, swap: bool):
        self.data, self.dtype, self.key, self.swap = data, dtype, key, swap

    def elements(self, dtype: np.dtype) -> np.ndarray:
        """The storage as a 1-D array of ``dtype`` in native byte order (swapped by ``dtype``'s element size)."""
        return (_byteswapped(self.data, dtype) if self.swap else self.data).view(dtype)


class Tensor:
    """A tensor of the file: ``array``, a new C-contiguous array that owns its memory."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array

    def __repr__(self) -> str:
        return f"Tensor({self.array.dtype}, shape={self.array.shape})"


def _index_tuple(value, what: str) -> tuple[int, ...]:
    if not (isinstance(value, tuple) and all(type(v) is int for v in value)):
        raise PtFormatError(f"a tensor's {what} is {value!r}, not a tuple of ints")
    return value


def _tensor(storage, offset, size, stride, dtype: np.dtype | None = None, metadata=None) -> Tensor:
    """The array of a tensor: ``size`` elements at ``offset``/``stride`` (in elements) of the storage, copied."""
    if not isinstance(storage, _Storage):
        raise PtFormatError(f"a tensor's storage is a {type(storage).__name__}, not a storage of the file")
    size, stride = _index_tuple(size, "size"), _index_tuple(stride, "stride")
    if type(offset) is not int or len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
        raise PtFormatError(f"a tensor's offset {offset!r}, size {size} and stride {stride} are not a valid view")
    dtype = storage.dtype if dtype is None else dtype
    if storage.dtype.itemsize == 1 and dtype.itemsize > 1 and storage.data.size % dtype.itemsize:
        raise PtFormatError(f"storage {storage.key!r} holds {storage.data.size} bytes, not whole {dtype} elements")
    numel = storage.data.size // dtype.itemsize
    shape = tuple(size)
    if 0 not in shape and offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) >= numel:
        raise PtFormatError(
            f"a tensor of size {shape}, stride {stride} at offset {offset} reaches past the end of its "
            f"storage {storage.key!r} ({numel} elements)"
        )
    flat = storage.elements(dtype)
    if 0 in shape:
        out = np.empty(shape, dtype)
    else:
        # np.ndarray checks the bounds again (as_strided would not, and would lose ml_dtypes' types)
        view = np.ndarray(
            shape, dtype, buffer=flat, offset=offset * dtype.itemsize, strides=tuple(s * dtype.itemsize for s in stride)
        )
        out = np.array(view, order="C", copy=True)
    if metadata:
        if not isinstance(metadata, Mapping) or set(metadata) - {"conj", "neg"}:
            raise PtFormatError(f"a tensor's metadata is {metadata!r}; expected conj and neg flags")
        if metadata.get("conj"):  # torch's lazy conjugate view: the storage holds the unconjugated values
            out = np.conj(out)
        if metadata.get("neg"):  # and its lazy negative view
            out = np.negative(out)
    return Tensor(out)


def _rebuild_tensor(storage, offset, size, stride):
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks, metadata=None):
    return _tensor(storage, offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(dtype, _DType):
        raise PtFormatError(f"_rebuild_tensor_v3 was given the dtype {dtype!r}, not a torch dtype")
    return _tensor(storage, offset, size, stride, dtype=dtype.dtype, metadata=metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, Tensor):
        raise PtFormatError(f"a Parameter's data is a {type(data).__name__}, not a tensor")
    return data


class _TensorClass:
    """``torch.Tensor`` or ``torch.nn.Parameter`` as ``_rebuild_from_type_v2`` receives it: a name, nothing to call."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


_TENSOR_CLASSES = (_TensorClass("torch.Tensor"), _TensorClass("torch.nn.Parameter"))


def _rebuild_from_type_v2(func, new_type, args, state):
    """A tensor or Parameter that carries Python attributes (``state``, dropped here), saved as ``func(*args)``."""
    if new_type not in _TENSOR_CLASSES or func not in _REBUILDS or not isinstance(args, tuple):
        raise PtFormatError(f"_rebuild_from_type_v2 of {new_type!r} by {func!r}: not a plain tensor")
    return func(*args)


def _device(*args) -> str:
    return ":".join(str(a) for a in args)


def _encode(text, encoding="latin1"):
    """``_codecs.encode``, as protocol 2 pickles ``bytes``: only from text to bytes in latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise PtFormatError(f"_codecs.encode({text!r}, {encoding!r}) is not how a pickle stores bytes")
    return text.encode("latin1")


_REBUILDS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)

_GLOBALS: dict[str, object] = {
    "collections.OrderedDict": OrderedDict,
    "collections.Counter": Counter,
    "builtins.set": set,
    "builtins.bytearray": bytearray,
    "builtins.complex": complex,
    "_codecs.encode": _encode,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch.Tensor": _TENSOR_CLASSES[0],
    "torch.nn.parameter.Parameter": _TENSOR_CLASSES[1],
    "torch.Size": tuple,
    "torch.device": _device,
    "torch.serialization._get_layout": str,
    "torch.storage.UntypedStorage": _StorageType(np.dtype(np.uint8)),
    **{f"torch.{name}": _StorageType(_DTYPES[dtype]) for name, dtype in _STORAGES.items()},
    **{f"torch.{name}": _DType(dtype) for name, dtype in _DTYPES.items()},
}


def _global_name(module: str, name: str) -> str:
    """``module.name``, Python 2 names mapped to Python 3 ones as pickle does (protocol 2 writes ``__builtin__``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


class _Unpickler(pickle.Unpickler):
    """``data.pkl``'s unpickler: names resolve only to :data:`_GLOBALS`, storages to the zip's entries."""

    def __init__(self, file, load_storage: Callable[[str, np.dtype, int], _Storage]):
        super().__init__(file, encoding="ASCII")
        self._load_storage = load_storage

    def find_class(self, module, name):
        full = _global_name(str(module), str(name))
        if full in _GLOBALS:
            return _GLOBALS[full]
        if full in NO_NUMPY_FORM:
            raise RefusedGlobal(full, f"{NO_NUMPY_FORM[full]}, which has no NumPy form")
        raise RefusedGlobal(full, "not a tensor or a plain container")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise PtFormatError(f"the persistent id {pid!r} is not a storage ('storage', type, key, location, numel)")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, _StorageType) or type(numel) is not int or numel < 0:
            raise PtFormatError(f"the persistent id {pid!r} is not a storage ('storage', type, key, location, numel)")
        key = key.decode("ascii") if isinstance(key, bytes) else key
        if not isinstance(key, str):
            raise PtFormatError(f"the persistent id {pid!r} has a key that is not a string")
        return self._load_storage(key, storage_type.dtype, numel)


def _byteswapped(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``raw`` (bytes of ``dtype`` elements in the other byte order) with each element's bytes reversed.

    A complex element is two floats, each swapped on its own (as torch's ``storage.byteswap``).
    """
    unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
    if unit == 1:
        return raw
    return np.ascontiguousarray(raw.reshape(-1, unit)[:, ::-1]).reshape(-1)


def is_legacy_pt(head: bytes) -> bool:
    """Whether a file starting with ``head`` (16 bytes or more) is in torch's legacy, non-zip, format."""
    return head.startswith(_LEGACY_MAGIC)


def read_pt_zip(path: Path):
    """Unpickle ``torch.save``'s zip file at ``path``: tensors become :class:`Tensor` arrays.

    Returns:
      The saved object, with plain containers as they were pickled
      (``dict``, ``OrderedDict``, ``list``, ...) and each tensor or Parameter
      as a :class:`Tensor` holding a new array in the file's dtype.

    Raises:
      NotAZipFile: not a zip archive (see :func:`is_legacy_pt`).
      RefusedGlobal: the pickle names something other than a tensor or plain
        container; nothing it names has run.
      PtFormatError: a corrupt or truncated archive, a missing storage, a view
        outside its storage.
    """
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise NotAZipFile(f"{str(path)!r} is not a zip archive")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise PtFormatError(f"not a readable zip archive: {e}") from e
    with archive:
        names = archive.namelist()
        # As torch's reader: the folder of the first entry holds every record.
        prefix = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else ""
        records = {n[len(prefix) :]: n for n in names if n.startswith(prefix)} if prefix else {}
        if "data.pkl" not in records:
            if "constants.pkl" in records or any(n.endswith("/constants.pkl") for n in names):
                raise PtFormatError("a TorchScript archive (torch.jit.save), not a torch.save file")
            raise PtFormatError(f"a zip archive without <archive>/data.pkl (entries: {', '.join(names[:5])})")

        def record(name: str) -> bytes:
            try:
                return archive.read(records[name])
            except KeyError:
                raise PtFormatError(f"the entry {prefix}{name} is missing") from None
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as e:
                raise PtFormatError(f"the entry {prefix}{name} is unreadable: {e}") from e

        byteorder = record("byteorder").decode("ascii", "replace") if "byteorder" in records else "little"
        if byteorder not in ("little", "big"):
            raise PtFormatError(f"unknown byteorder {byteorder!r}; expected 'little' or 'big'")
        swap = byteorder != sys.byteorder
        storages: dict[str, _Storage] = {}

        def load_storage(key: str, dtype: np.dtype, numel: int) -> _Storage:
            if key in storages:
                if storages[key].dtype != dtype:
                    raise PtFormatError(f"storage {key!r} is given as {storages[key].dtype} and as {dtype}")
                return storages[key]
            raw = record(f"data/{key}")
            nbytes = numel * dtype.itemsize
            if len(raw) < nbytes:
                raise PtFormatError(f"storage {key!r} holds {len(raw)} bytes; its tensors need {nbytes}")
            data = np.frombuffer(raw, np.uint8, count=nbytes)
            storages[key] = _Storage(data, dtype, key, swap)
            return storages[key]

        unpickler = _Unpickler(io.BytesIO(record("data.pkl")), load_storage)
        try:
            return unpickler.load()
        except PtFormatError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise PtFormatError(f"data.pkl is not a readable pickle: {type(e).__name__}: {e}") from e
