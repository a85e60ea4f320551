"""jaxnets.interop.exchange: weight files shared with PyTorch (safetensors both ways, .pt state_dicts in), no pickle."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from flax import nnx
from tolerances import F32_ATOL, F32_RTOL, F64_ATOL, F64_RTOL

import jaxnets
import parity
from jaxnets.interop import exchange
from jaxnets.interop.torch_layout import to_nchw
from parity import torch_models as tm

torch.set_num_threads(1)  # torch and XLA share two cores in this process

ARCHS = ["lenet-5x5", "lenet-3x3", "two_layer", "sequential"]


def make_jax(arch, dtype=jnp.float32, seed=0):
    rngs = nnx.Rngs(seed)
    if arch.startswith("lenet"):
        return jaxnets.LeNet(kernel_size=int(arch[-1]), param_dtype=dtype, rngs=rngs)
    if arch == "two_layer":
        return jaxnets.TwoLayerNet(20, 8, 3, param_dtype=dtype, rngs=rngs)
    return jaxnets.two_layer_sequential(20, 8, 3, param_dtype=dtype, rngs=rngs)


def make_torch(arch, seed=0):
    torch.manual_seed(seed)
    if arch.startswith("lenet"):
        return tm.Net(kernel_size=int(arch[-1]))
    return tm.TwoLayerNet(20, 8, 3) if arch == "two_layer" else tm.two_layer_sequential(20, 8, 3)


def jax_input(arch, dtype=np.float32):
    """A batch in jaxnets' layout (NHWC for images)."""
    shape = (3, 32, 32, 1) if arch.startswith("lenet") else (5, 20)
    return np.random.default_rng(1).standard_normal(shape).astype(dtype)


def torch_input(x):
    """The same batch in torch's layout: (N, H, W, C) -> (N, C, H, W) for images."""
    return torch.tensor(to_nchw(x) if x.ndim == 4 else x)


def torch_out(net, x):
    with torch.no_grad():
        return net(torch_input(x)).numpy()


def snapshot(model):
    return jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def assert_unchanged(model, before):
    jax.tree.map(np.testing.assert_array_equal, snapshot(model), before)


# -- jaxnets -> PyTorch ----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_export_safetensors_loads_strictly_into_torch_and_gives_the_same_outputs(tmp_path, arch):
    model = make_jax(arch)
    path = exchange.save_safetensors(model, tmp_path / "w.safetensors")
    net = make_torch(arch, seed=5)
    net.load_state_dict(safetensors.torch.load_file(path), strict=True)
    x = jax_input(arch)
    np.testing.assert_allclose(torch_out(net, x), model(jax.device_put(x)), rtol=F32_RTOL, atol=F32_ATOL)
    arrays = exchange.to_torch_arrays(model)
    assert list(arrays) == [n for n, _ in net.named_parameters()]  # torch's order and names, e.g. 0.weight
    assert all(a.flags.c_contiguous and a.flags.owndata and a.dtype == np.float32 for a in arrays.values())


@pytest.mark.parametrize("arch", ["lenet-5x5", "lenet-3x3"])
def test_export_safetensors_float64_matches_torch_to_1e12(tmp_path, x64, arch):
    model = make_jax(arch, dtype=jnp.float64)
    exchange.save_safetensors(model, tmp_path / "w.safetensors")
    net = make_torch(arch).double()
    net.load_state_dict(safetensors.torch.load_file(tmp_path / "w.safetensors"), strict=True)
    x = jax_input(arch, np.float64)
    np.testing.assert_allclose(torch_out(net, x), model(jax.device_put(x)), rtol=F64_RTOL, atol=F64_ATOL)


def test_export_arrays_are_copies_and_fc1_is_in_torch_flatten_order():
    model = make_jax("lenet-5x5")
    arrays = exchange.to_torch_arrays(model)
    kernel = np.asarray(model.fc1.kernel[...])  # (H*W*C, out) = (5*5*16, 120), rows in (h, w, c) order
    # torch's column c*25 + h*5 + w is JAX's row h*80 + w*16 + c
    c, h, w = 3, 2, 4
    np.testing.assert_array_equal(arrays["fc1.weight"][:, c * 25 + h * 5 + w], kernel[h * 80 + w * 16 + c])
    assert not np.array_equal(arrays["fc1.weight"], kernel.T)  # a plain transpose would be wrong
    arrays["fc1.bias"][:] = 7.0
    assert not np.any(np.asarray(model.fc1.bias[...]) == 7.0)


# -- PyTorch -> jaxnets ----------------------------------------------------------------------------


def save_torch(net, path, kind):
    if kind == "pt":
        torch.save(net.state_dict(), path)
    else:
        safetensors.torch.save_file(net.state_dict(), path)


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
@pytest.mark.parametrize("arch", ARCHS)
def test_import_torch_state_dict_file_gives_the_same_outputs(tmp_path, arch, kind):
    net = make_torch(arch)
    path = tmp_path / f"w.{kind}"
    save_torch(net, path, kind)
    model = make_jax(arch, seed=7)
    exchange.load_weights(model, path)
    x = jax_input(arch)
    np.testing.assert_allclose(model(jax.device_put(x)), torch_out(net, x), rtol=F32_RTOL, atol=F32_ATOL)
    for name, value in exchange.to_torch_arrays(model).items():  # and back: a permutation, exact
        np.testing.assert_array_equal(value, net.state_dict()[name].numpy(), err_msg=name)


def test_import_checkpoint_dict_wrappers(tmp_path):
    net = make_torch("two_layer")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.save(
        {"epoch": 3, "model_state_dict": net.state_dict(), "optimizer_state_dict": opt.state_dict()}, tmp_path / "c.pt"
    )
    torch.save({"state_dict": net.state_dict()}, tmp_path / "s.pt")
    x = jax_input("two_layer")
    for name in ("c.pt", "s.pt"):
        model = make_jax("two_layer", seed=3)
        exchange.load_weights(model, tmp_path / name)
        np.testing.assert_allclose(model(jax.device_put(x)), torch_out(net, x), rtol=F32_RTOL, atol=F32_ATOL)


def test_import_rejects_a_dict_that_is_not_a_flat_state_dict(tmp_path):
    net = make_torch("two_layer")
    torch.save({**net.state_dict(), "epoch": 3}, tmp_path / "w.pt")
    torch.save([t for t in net.state_dict().values()], tmp_path / "l.pt")
    model = make_jax("two_layer")
    before = snapshot(model)
    with pytest.raises(exchange.WeightsFileError, match=r"w\.pt' is not a flat state_dict: .*'epoch' \(int\)"):
        exchange.load_weights(model, tmp_path / "w.pt")
    with pytest.raises(exchange.WeightsFileError, match=r"l\.pt' holds a list, not a state_dict"):
        exchange.load_weights(model, tmp_path / "l.pt")
    assert_unchanged(model, before)


def test_import_bfloat16_pt_casts_losslessly_to_float32(tmp_path):
    net = make_torch("two_layer").to(torch.bfloat16)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    model = make_jax("two_layer")
    exchange.load_weights(model, tmp_path / "w.pt")
    want = net.linear1.weight.detach().float().numpy().T
    np.testing.assert_array_equal(model.linear1.kernel[...], want)
    assert model.linear1.kernel[...].dtype == jnp.float32


# -- safety: no pickled code runs ------------------------------------------------------------------


class MakesMarker:
    """Unpickling this runs os.mkdir(path): a stand-in for any code a malicious pickle would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_import_refuses_pickled_code_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"linear1.weight": MakesMarker(marker)}, path)
    model = make_jax("two_layer")
    before = snapshot(model)
    with pytest.raises(exchange.WeightsFileError, match=r"refused to load .*evil\.pt'.*GLOBAL posix\.mkdir"):
        exchange.load_weights(model, path)
    assert not marker.exists()
    assert_unchanged(model, before)
    torch.load(path, weights_only=False)  # the payload is live: an unrestricted load runs it
    assert marker.exists()


def test_import_refuses_a_whole_pickled_module(tmp_path):
    torch.save(make_torch("lenet-5x5"), tmp_path / "net.pt")
    with pytest.raises(exchange.WeightsFileError) as exc:
        exchange.load_weights(make_jax("lenet-5x5"), tmp_path / "net.pt")
    message = str(exc.value)
    assert "net.pt" in message and "parity.torch_models.Net" in message
    assert "torch.save(model.state_dict(), path)" in message


# -- broken files ----------------------------------------------------------------------------------


def corrupt(data: bytes, how: str) -> bytes:
    return {"truncated": data[: len(data) * 2 // 3], "garbage": b"not a weights file " * 20, "empty": b""}[how]


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("kind", ["pt", "safetensors"])
def test_import_corrupt_file_raises_a_clear_error_naming_it(tmp_path, kind, how):
    good = tmp_path / f"good.{kind}"
    save_torch(make_torch("two_layer"), good, kind)
    path = tmp_path / f"broken-{how}.{kind}"
    path.write_bytes(corrupt(good.read_bytes(), how))
    model = make_jax("two_layer")
    before = snapshot(model)
    fmt = "PyTorch" if kind == "pt" else "safetensors"
    with pytest.raises(exchange.WeightsFileError, match=rf"broken-{how}\.{kind}' is not a readable {fmt} file") as exc:
        exchange.load_weights(model, path)
    assert exc.value.__cause__ is not None  # the library's own error is chained
    assert_unchanged(model, before)


def test_import_wrong_model_lists_keys_and_shapes_and_changes_nothing(tmp_path):
    path = exchange.save_safetensors(make_jax("lenet-3x3"), tmp_path / "k3.safetensors")
    model = make_jax("lenet-5x5")
    before = snapshot(model)
    with pytest.raises(exchange.StateDictMismatch) as exc:
        exchange.load_weights(model, path)
    message = str(exc.value)
    assert "k3.safetensors' does not fit the model; nothing was changed" in message
    assert "conv1.weight: got (6, 1, 3, 3), expected (6, 1, 5, 5)" in message
    assert "fc1.weight: got (120, 576), expected (120, 400)" in message
    assert isinstance(exc.value, parity.StateDictMismatch)  # one exception class for jaxnets and parity
    assert_unchanged(model, before)


def test_load_arrays_reports_missing_unexpected_and_dtype_problems_at_once():
    model = make_jax("two_layer")
    before = snapshot(model)
    arrays = exchange.to_torch_arrays(model)
    del arrays["linear2.bias"]
    arrays["linear3.weight"] = np.zeros(3, np.float32)
    arrays["linear1.weight"] = arrays["linear1.weight"].astype(np.float64)
    with pytest.raises(exchange.StateDictMismatch) as exc:
        exchange.load_torch_arrays(model, arrays)
    message = str(exc.value)
    assert "missing keys: linear2.bias" in message and "unexpected keys: linear3.weight" in message
    assert "linear1.weight float64 -> float32" in message and "casting='same_kind'" in message
    assert_unchanged(model, before)


def test_load_arrays_casting_rule_and_copies(x64):
    net = make_torch("two_layer").double()
    arrays = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    model = make_jax("two_layer")  # float32
    exchange.load_torch_arrays(model, arrays, casting="same_kind")  # rounding asked for
    np.testing.assert_array_equal(model.linear1.bias[...], arrays["linear1.bias"].astype(np.float32))
    model64 = make_jax("two_layer", dtype=jnp.float64)
    exchange.load_torch_arrays(model64, {k: v.astype(np.float32) for k, v in arrays.items()})  # lossless: default
    assert model64.linear1.kernel[...].dtype == jnp.float64
    exchange.load_torch_arrays(model64, arrays)
    arrays["linear1.bias"][:] = 123.0  # the model holds copies, not views of the caller's arrays
    np.testing.assert_array_equal(model64.linear1.bias[...], net.linear1.bias.detach().numpy())


# -- writing ---------------------------------------------------------------------------------------


def test_save_is_atomic_when_the_writer_fails(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    exchange.save_safetensors(make_jax("two_layer", seed=0), path)
    old = path.read_bytes()

    def failing_save_file(arrays, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        exchange.save_safetensors(make_jax("two_layer", seed=1), path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary file left
    monkeypatch.undo()
    exchange.save_safetensors(make_jax("two_layer", seed=1), path)  # a working writer replaces it
    assert path.read_bytes() != old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_save_metadata_round_trip_and_validation(tmp_path):
    path = exchange.save_safetensors(make_jax("two_layer"), tmp_path / "w.safetensors", {"config": '{"H": 8}'})
    assert exchange.read_metadata(path) == {"format": "pt", "config": '{"H": 8}'}
    with pytest.raises(TypeError, match=r"must map str to str; got 'H': int\. .*json\.dumps"):
        exchange.save_safetensors(make_jax("two_layer"), tmp_path / "x.safetensors", {"H": 8})
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        exchange.save_safetensors(make_jax("two_layer"), tmp_path / "nope" / "w.safetensors")


def test_read_errors_for_names_and_missing_files(tmp_path):
    path = exchange.save_safetensors(make_jax("two_layer"), tmp_path / "w.safetensors")
    odd = tmp_path / "w.weights"
    odd.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"suffix '\.weights'.*format='safetensors' or format='torch'"):
        exchange.read_weights(odd)
    assert list(exchange.read_weights(odd, format="safetensors")) == list(safetensors.numpy.load_file(path))
    with pytest.raises(FileNotFoundError, match=r"no weights file .*missing\.pt"):
        exchange.read_weights(tmp_path / "missing.pt")


def test_pt_without_torch_reads_the_zip_format_and_says_pip_install_torch_for_the_legacy_one(tmp_path, monkeypatch):
    net = make_torch("two_layer")
    torch.save(net.state_dict(), tmp_path / "w.pt")
    torch.save(net.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails as if it were not installed
    # ... here and in the child process that reads legacy .pt files (parity.torch_files): a `torch`
    # package first on its path that fails to import, as a missing one would.
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named torch')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]))
    arrays = exchange.read_weights(tmp_path / "w.pt")  # torch.save's default format needs no torch
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(arrays[name], value.numpy(), err_msg=name)
    with pytest.raises(ImportError, match=r"legacy\.pt' is in torch's legacy format .*needs torch: pip install torch"):
        exchange.read_weights(tmp_path / "legacy.pt")


def test_import_jaxnets_exchange_does_not_import_torch():
    code = "import jaxnets.interop.exchange, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_legacy_pt_reader_does_not_import_modules_from_the_working_directory(tmp_path, monkeypatch):
    # A legacy (non-zip) .pt file is read by torch in a child process, `python -P -m parity.torch_files`:
    # a torch.py where the user stands is not imported (and run).
    net = tm.Net()
    torch.save(net.state_dict(), tmp_path / "w.pt", _use_new_zipfile_serialization=False)
    marker = tmp_path / "ran"
    (tmp_path / "torch.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(7)\n")
    monkeypatch.chdir(tmp_path)
    arrays = exchange.read_weights("w.pt")
    assert not marker.exists()
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(arrays[name], value.numpy(), err_msg=name)
