"""jaxnets.interop._pt_format: the torch-free reader of torch.save's zip files gives torch.load(weights_only=True)'s arrays.

Every file here is written by torch.save (or rewritten from one, for the byte
order and the damaged files) and read twice: by torch.load(weights_only=True)
and by the reader, which must agree bit for bit, or both refuse it.
"""

import collections
import io
import os
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from jaxnets.interop import _pt_format, exchange

torch.set_num_threads(1)  # nothing heavy here; keep off the other test worker's core


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _every_dtype():
    base = torch.randn(3, 4, generator=_g(), dtype=torch.float64) * 100
    out = {}
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex128, torch.complex64):
        out[str(dtype)] = (base * (1 + 0.5j) if dtype.is_complex else base).to(dtype)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        out[str(dtype)] = torch.randint(
            torch.iinfo(dtype).min, torch.iinfo(dtype).max, (3, 4), generator=_g(), dtype=dtype
        )
    for dtype in (torch.uint16, torch.uint32, torch.uint64):  # saved with _rebuild_tensor_v3 and an untyped storage
        out[str(dtype)] = torch.randint(0, 2**15, (3, 4), generator=_g(), dtype=torch.int64).to(dtype)
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz):
        out[str(dtype)] = base.clamp(-50, 50).to(dtype)
    out["bool"] = base > 0
    out["nan-inf"] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    return out


def _views():
    x = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    return {
        "x": x,  # the storage the views below share
        "slice": x[1:, 1:3],
        "transpose": x.transpose(0, 2),
        "step": x[:, ::2, 1::3],
        "offset-0d": x[2, 3, 4],
        "expanded": torch.arange(3.0).reshape(3, 1).expand(3, 4),  # stride 0
        "narrow-of-big": torch.arange(10_000, dtype=torch.int32)[9_990:],
        "permuted": torch.randn(2, 3, 4, generator=_g()).permute(2, 0, 1),
        "empty": torch.zeros(0, 3),
        "empty-view": x[:, 2:2],
        "scalar": torch.tensor(3.5),
        "scalar-int": torch.tensor(7),
        "conj": torch.tensor([1 + 2j, -3 - 4j]).conj(),  # saved lazily: metadata {'conj': True}
        "neg": torch.tensor([1 + 2j, -3 - 4j]).conj().imag,  # metadata {'neg': True}
    }


def _module_state_dict():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    )
    return net.state_dict()  # an OrderedDict with _metadata; BatchNorm's int64 num_batches_tracked is 0-d


def _checkpoint():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.8, 0.9))
    net(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {
        "epoch": 3,
        "model_state_dict": net.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "params": [torch.nn.Parameter(torch.ones(2)), net.weight],  # Parameters, shared with the state_dict
        "extras": {
            "tuple": (1, 2.5, "three", None, True),
            "set": {1, 2},
            "bytes": b"\x00\xffbytes",
            "bytearray": bytearray(b"ab"),
            "complex": 1 + 2j,
            "size": torch.Size([2, 3]),
            "device": torch.device("cpu"),
            "big-int": 2**70,
            "counter": collections.Counter("abca"),
        },
    }


def _parameters():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    return {
        "w": w,
        "w-again": w,
        "rg": torch.randn(2).requires_grad_(),
        "frozen": torch.nn.Parameter(torch.ones(1), False),
    }


def _with_attributes():
    t, p = torch.arange(4.0), torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    t.foo, p.bar = 1, "x"
    return {"t": t, "p": p}


CASES = {
    "every-dtype": _every_dtype,
    "views": _views,
    "module-state-dict": _module_state_dict,
    "checkpoint": _checkpoint,
    "parameters": _parameters,
    "nested-wrapper": lambda: {"state_dict": {"model_state_dict": _module_state_dict()}},
    "list": lambda: [torch.ones(2), (torch.zeros(1, dtype=torch.int8),)],
    "python-attributes": _with_attributes,  # saved with _rebuild_from_type_v2 and _rebuild_parameter_with_state
}


def torch_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().resolve_conj().resolve_neg().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


NUMPY_DTYPE = {
    torch.bfloat16: ml_dtypes.bfloat16,
    torch.float8_e4m3fn: ml_dtypes.float8_e4m3fn,
    torch.float8_e5m2: ml_dtypes.float8_e5m2,
    torch.float8_e4m3fnuz: ml_dtypes.float8_e4m3fnuz,
    torch.float8_e5m2fnuz: ml_dtypes.float8_e5m2fnuz,
}


def assert_same(ours, theirs, where="obj"):
    """``ours`` (the reader's) is ``theirs`` (torch.load's): tensors bit for bit, containers item for item."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, _pt_format.Tensor), where
        a = ours.array
        want = NUMPY_DTYPE.get(theirs.dtype) or theirs.detach().resolve_conj().resolve_neg().numpy().dtype
        assert a.dtype == np.dtype(want), (where, a.dtype, theirs.dtype)
        assert a.shape == tuple(theirs.shape), where
        assert a.flags.c_contiguous and a.flags.owndata and a.flags.writeable, where
        assert a.tobytes() == torch_bytes(theirs), where
    elif isinstance(theirs, torch.Size):
        assert ours == tuple(theirs), where
    elif isinstance(theirs, torch.device):
        assert ours == str(theirs), where
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs), where
        assert getattr(ours, "_metadata", None) == getattr(theirs, "_metadata", None), where
        for k in theirs:
            assert_same(ours[k], theirs[k], f"{where}[{k!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (o, t) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(o, t, f"{where}[{i}]")
    else:
        assert type(ours) is type(theirs) and ours == theirs, (where, ours, theirs)


def every_array(obj, seen=None):
    """Each tensor's array once (a tensor pickled twice, such as a tied weight, is one object, as in torch)."""
    seen = set() if seen is None else seen
    if isinstance(obj, _pt_format.Tensor):
        if id(obj) not in seen:
            seen.add(id(obj))
            yield obj.array
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from every_array(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from every_array(v, seen)


@pytest.mark.parametrize("protocol", [2, 4], ids=["pickle2", "pickle4"])
@pytest.mark.parametrize("byteorder_record", [True, False], ids=["byteorder", "no-byteorder-record"])
@pytest.mark.parametrize("case", list(CASES))
def test_reader_gives_torch_loads_values_bit_for_bit(tmp_path, case, byteorder_record, protocol):
    path = tmp_path / "w.pt"
    torch.save(CASES[case](), path, pickle_protocol=protocol)  # torch's default is 2; 4 names globals otherwise
    if not byteorder_record:  # as older torch wrote them (torch 2.13 writes the record even with
        # _disable_byteorder_record=True): both readers then take the file as little-endian
        rewrite(tmp_path / "w.pt", tmp_path / "nb.pt", lambda n, d: None if n == "byteorder" else d)
        path = tmp_path / "nb.pt"
    with zipfile.ZipFile(path) as z:
        assert any(n.endswith("/byteorder") for n in z.namelist()) == byteorder_record
    if protocol == 2:
        theirs = torch.load(path, weights_only=True, map_location="cpu")
    else:  # torch's restricted unpickler knows protocol 2's opcodes only; this file is ours, so trusted
        theirs = torch.load(path, weights_only=False, map_location="cpu")
    ours = _pt_format.read_pt_zip(path)
    assert_same(ours, theirs)
    arrays = list(every_array(ours))
    assert arrays
    for i, a in enumerate(arrays):  # shared storages and repeated tensors come out as separate copies
        assert not any(np.shares_memory(a, b) for b in arrays[i + 1 :])


def test_read_weights_copies_tied_weights_apart(tmp_path):
    w = torch.nn.Parameter(torch.randn(3, 2, generator=_g()))
    torch.save({"embed.weight": w, "out.weight": w, "view": w[1:]}, tmp_path / "w.pt")
    arrays = exchange.read_weights(tmp_path / "w.pt")
    assert arrays["embed.weight"].tobytes() == arrays["out.weight"].tobytes() == torch_bytes(w)
    assert arrays["view"].tobytes() == torch_bytes(w[1:])
    assert not np.shares_memory(arrays["embed.weight"], arrays["out.weight"])


def test_read_weights_state_dict_values_and_dtypes(tmp_path):
    sd = _every_dtype()
    torch.save(sd, tmp_path / "w.pt")
    arrays = exchange.read_weights(tmp_path / "w.pt")
    assert list(arrays) == list(sd)
    for k, t in sd.items():
        assert type(arrays[k]) is np.ndarray and arrays[k].tobytes() == torch_bytes(t), k
    assert arrays["torch.bfloat16"].dtype == ml_dtypes.bfloat16


# -- byte order ------------------------------------------------------------------------------------


def rewrite(path, out, change):
    """Copy the zip at ``path`` to ``out`` with ``change(record_name, data) -> data or None (dropped)``, in order."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = change(info.filename.split("/", 1)[1], src.read(info))
            if data is not None:
                dst.writestr(info.filename, data)


def big_endian_copy(path, out, itemsizes: dict[str, tuple[int, bool]]):
    """``path`` as a big-endian machine's torch.save would write it: each storage's elements byte-reversed."""

    def change(name, data):
        if name == "byteorder":
            return b"big"
        if name.startswith("data/"):
            itemsize, is_complex = itemsizes[name[5:]]
            unit = itemsize // 2 if is_complex else itemsize
            return np.frombuffer(data, np.uint8).reshape(-1, unit)[:, ::-1].tobytes()
        return data

    rewrite(path, out, change)


def test_reader_swaps_a_big_endian_file_as_torch_does(tmp_path):
    # torch 2.13 has no way to write big-endian here (set_default_save_endianness does not exist; it
    # writes sys.byteorder), so the big-endian file is the little-endian one with every element's bytes reversed.
    sd = {k: v for k, v in _every_dtype().items() if "uint" not in k or k == "torch.uint8"}
    sd["complex-view"] = sd["torch.complex64"][1:, ::2]  # shares storage "5" (dict order of first use)
    path, big = tmp_path / "little.pt", tmp_path / "big.pt"
    torch.save(sd, path)
    itemsizes = {str(i): (t.element_size(), t.is_complex()) for i, t in enumerate(list(sd.values())[:-1])}
    big_endian_copy(path, big, itemsizes)
    theirs = torch.load(big, weights_only=True)
    for k, t in sd.items():  # torch swaps them back ...
        assert torch_bytes(theirs[k]) == torch_bytes(t), k
    assert_same(_pt_format.read_pt_zip(big), theirs)  # ... and so does the reader
    assert big.read_bytes() != path.read_bytes()


def test_reader_swaps_v3_dtypes_by_their_element_size(tmp_path):
    # uint16/32/64 are saved as untyped (byte) storages with the dtype beside them; torch 2.13 swaps
    # a big-endian file's storages by their storage type, bytes, so it leaves these unswapped (wrong);
    # the reader swaps by the tensor's dtype and gives the values that were saved.
    sd = {k: v for k, v in _every_dtype().items() if k in ("torch.uint16", "torch.uint32", "torch.uint64")}
    path, big = tmp_path / "little.pt", tmp_path / "big.pt"
    torch.save(sd, path)
    big_endian_copy(path, big, {str(i): (t.element_size(), False) for i, t in enumerate(sd.values())})
    ours = _pt_format.read_pt_zip(big)
    theirs = torch.load(big, weights_only=True)
    for k, t in sd.items():
        assert ours[k].array.tobytes() == torch_bytes(t), k
        assert torch_bytes(theirs[k]) != torch_bytes(t), k  # torch's own reading of it differs


# -- refusals: nothing from the file runs ----------------------------------------------------------


class Payload:
    """Unpickling this calls ``fn(*args)``: a stand-in for any code a malicious pickle would run."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class NewObj:
    """Pickled with NEWOBJ (protocol 2's ``copyreg.__newobj__``) and BUILD: builds a class of this module."""

    def __init__(self):
        self.x = 1


def payloads(marker):
    m = str(marker)
    return {
        "os.mkdir": ({"w": Payload(os.mkdir, m)}, "posix.mkdir"),
        "eval": ({"w": Payload(eval, f"open({m!r}, 'w').close()")}, "builtins.eval"),
        "exec-in-list": ([torch.ones(1), Payload(exec, f"open({m!r}, 'w').close()")], "builtins.exec"),
        "subprocess": ({"w": Payload(subprocess.call, ["touch", m])}, "subprocess.call"),
        "getattr": ({"w": Payload(getattr, "text", "upper")}, "builtins.getattr"),
        "in-a-checkpoint": ({"state_dict": {"a": torch.ones(1)}, "hook": Payload(os.mkdir, m)}, "posix.mkdir"),
        "newobj": ({"w": NewObj()}, f"{__name__}.NewObj"),
        "module": (torch.nn.Linear(2, 2), "torch.nn.modules.linear.Linear"),
    }


@pytest.mark.parametrize("name", list(payloads("m")))
def test_reader_refuses_what_torch_refuses_without_running_it(tmp_path, name):
    marker = tmp_path / "marker"
    obj, global_name = payloads(marker)[name]
    path = tmp_path / "evil.pt"
    torch.save(obj, path)
    with pytest.raises(_pt_format.RefusedGlobal) as exc:
        _pt_format.read_pt_zip(path)
    assert exc.value.name == global_name
    with pytest.raises(exchange.WeightsFileError, match=rf"refused to load .*evil\.pt'.*GLOBAL {global_name}\)"):
        exchange.read_weights(path)
    assert not marker.exists()
    with pytest.raises(Exception, match="Weights only load failed"):  # torch refuses it too
        torch.load(path, weights_only=True)
    assert not marker.exists()
    if name in ("os.mkdir", "eval", "subprocess", "in-a-checkpoint"):
        torch.load(path, weights_only=False)  # the payload is live: an unrestricted load runs it
        assert marker.exists()


def test_reader_refuses_tensors_with_no_numpy_form(tmp_path):
    path = tmp_path / "sparse.pt"
    torch.save({"w": torch.eye(3).to_sparse()}, path)
    assert torch.load(path, weights_only=True)["w"].is_sparse  # torch reads it; NumPy has no such array
    with pytest.raises(exchange.WeightsFileError, match=r"sparse\.pt' holds a sparse tensor .*has no NumPy form"):
        exchange.read_weights(path)


# -- damaged files ---------------------------------------------------------------------------------


class BadView:
    """A tensor whose view reaches past the end of its storage (torch.save never writes one)."""

    def __reduce__(self):
        storage = torch.arange(4.0).untyped_storage()
        typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
        return (torch._utils._rebuild_tensor_v2, (typed, 2, (3,), (1,), False, collections.OrderedDict()))


def damaged(tmp_path, how):
    path = tmp_path / "good.pt"
    torch.save({"a": torch.arange(6.0), "b": torch.ones(2, dtype=torch.int64)}, path)
    out = tmp_path / f"{how}.pt"
    if how == "view-past-the-end":
        torch.save({"a": BadView()}, out)
    elif how == "short-storage":
        rewrite(path, out, lambda n, d: d[:-4] if n == "data/0" else d)
    elif how == "missing-storage":
        rewrite(path, out, lambda n, d: None if n == "data/1" else d)
    elif how == "missing-data.pkl":
        rewrite(path, out, lambda n, d: None if n == "data.pkl" else d)
    elif how == "bad-byteorder":
        rewrite(path, out, lambda n, d: b"middle" if n == "byteorder" else d)
    elif how == "truncated-pickle":
        rewrite(path, out, lambda n, d: d[: len(d) // 2] if n == "data.pkl" else d)
    elif how == "truncated-zip":
        out.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    elif how == "not-a-zip":
        out.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    return out


DAMAGE = {
    "view-past-the-end": "reaches past the end of its storage",
    "short-storage": "storage '0' holds 20 bytes; its tensors need 24",
    "missing-storage": r"the entry \S+/data/1 is missing",
    "missing-data.pkl": "without <archive>/data.pkl",
    "bad-byteorder": "unknown byteorder 'middle'",
    "truncated-pickle": "data.pkl is not a readable pickle",
    "truncated-zip": "not a readable zip archive",
    "not-a-zip": "not a readable zip archive",
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_reader_refuses_damaged_files_clearly(tmp_path, how):
    path = damaged(tmp_path, how)
    with pytest.raises(exchange.WeightsFileError, match=rf"{how}\.pt' is not a readable PyTorch file .*{DAMAGE[how]}"):
        exchange.read_weights(path)
    with pytest.raises(Exception):  # noqa: B017 - torch refuses it too, each time with its own error type
        torch.load(path, weights_only=True)


def test_legacy_format_is_recognised_and_left_to_torch(tmp_path):
    # exchange then reads it with torch in a child process: tests/test_exchange.py's
    # test_legacy_pt_reader_does_not_import_modules_from_the_working_directory reads one that way.
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"w": torch.ones(2)}, tmp_path / "zip.pt")
    assert _pt_format.is_legacy_pt((tmp_path / "legacy.pt").read_bytes()[:16])
    assert not _pt_format.is_legacy_pt((tmp_path / "zip.pt").read_bytes()[:16])
    with pytest.raises(_pt_format.NotAZipFile):
        _pt_format.read_pt_zip(tmp_path / "legacy.pt")


def test_reader_does_not_import_torch(tmp_path):
    torch.save(_checkpoint(), tmp_path / "c.pt")
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from jaxnets import exchange\n"
        f"a = exchange.read_weights({str(tmp_path / 'c.pt')!r})\n"
        "assert list(a) == ['weight', 'bias'], a\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_unpickler_resolves_no_name_outside_its_table():
    # The unpickler's only way to reach a Python object is find_class; a pickle that names one
    # directly (protocol 4's STACK_GLOBAL, here) is refused like any other.
    data = io.BytesIO()
    import pickle

    pickle.dump({"w": Payload(os.getcwd)}, data, protocol=4)
    unpickler = _pt_format._Unpickler(io.BytesIO(data.getvalue()), lambda *a: None)
    with pytest.raises(_pt_format.RefusedGlobal, match=r"GLOBAL posix\.getcwd"):
        unpickler.load()
