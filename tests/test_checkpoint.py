"""jaxnets.training.checkpoint: bit-identical round trips, steps and retention, clear errors, and saves killed mid-write."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxnets
from jaxnets.training import checkpoint

REPO = Path(__file__).resolve().parents[1]


def lenet_state(kernel_size=5, seed=0):
    """Params and Adam state of a LeNet, the optimizer state a few steps in (so nothing is all zeros)."""
    model = jaxnets.LeNet(kernel_size=kernel_size, rngs=nnx.Rngs(seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {"params": params, "opt_state": _adam_state(params)}


@jax.jit  # one program per LeNet shape (op by op, the three updates compiled 113 small programs: 2.8 s)
def _adam_state(params):
    optimizer = jaxnets.optim.adam(1e-3)
    opt_state = optimizer.init(params)
    grads = jax.tree.map(lambda p: jnp.sin(p * 3.0), params)
    for _ in range(3):
        _, opt_state = optimizer.update(grads, opt_state, params)
    return opt_state


def fresh_like(state):
    """What a freshly built model and optimizer would pass as `like`: same structure, other values."""

    def fresh(x):
        if isinstance(x, jax.Array):
            return jnp.zeros_like(x)
        return x.dtype.type(0) if isinstance(x, np.generic) else np.zeros_like(x)

    return jax.tree.map(fresh, state)


def assert_trees_identical(restored, saved):
    assert jax.tree.structure(restored) == jax.tree.structure(saved)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(saved), strict=True):
        assert type(got) is type(want) or (isinstance(got, jax.Array) and isinstance(want, jax.Array)), path
        assert np.asarray(got).dtype == np.asarray(want).dtype, path
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=jax.tree_util.keystr(path))
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), path  # also tells -0.0 from 0.0, NaN payloads


METADATA = {
    "model": {"name": "LeNet", "kernel_size": 5},
    "optimizer": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]},
    "epoch": 3,
    "history": {"loss": [2.3, 1.1, float("nan")], "accuracy": [0.1, 0.6, None]},
    "version": jaxnets.__version__,
}


def metadata_equal(got, want):
    return json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)  # NaN != NaN, but "NaN" == "NaN"


def test_import_leaves_torch_out():
    code = "import sys, jaxnets.training.checkpoint; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_save_and_restore_of_format_2_load_no_orbax(tmp_path):
    # orbax and tensorstore cost start-up time and 31-39 ms of CPU a save; only format 1 needs them.
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from jaxnets.training import checkpoint
        checkpoint.save({str(tmp_path)!r}, 1, {{"w": np.arange(3.0)}}, {{"epoch": 1}})
        state, meta = checkpoint.restore({str(tmp_path)!r})
        assert meta == {{"epoch": 1}} and state["w"].tolist() == [0.0, 1.0, 2.0]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("orbax", "tensorstore"))
        assert not loaded, loaded
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


# -- round trips --------------------------------------------------------------------


def test_round_trip_lenet_adam_is_bit_identical(tmp_path):
    state = lenet_state()
    state["rng_data"] = np.arange(4, dtype=np.uint32)
    state["best"] = np.float64(0.123456789012345678)
    path = checkpoint.save(tmp_path, 3, state, METADATA)
    assert path == tmp_path / "3"
    restored, metadata = checkpoint.restore(tmp_path, like=fresh_like(state))
    assert_trees_identical(restored, state)
    assert type(restored["opt_state"][0]).__name__ == "ScaleByAdamState"
    assert restored["opt_state"][0].count.dtype == jnp.int32 and restored["opt_state"][0].count == 3
    assert isinstance(restored["best"], np.float64)
    assert metadata_equal(metadata, METADATA)
    assert metadata_equal(checkpoint.read_metadata(tmp_path), METADATA)


def test_round_trip_accepts_shape_dtype_structs_as_like(tmp_path):
    state = lenet_state()
    checkpoint.save(tmp_path, 1, state, {})
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    restored, _ = checkpoint.restore(tmp_path, like=like)
    assert_trees_identical(restored, state)


@pytest.mark.parametrize(
    "dtype",
    [np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, jnp.bfloat16],
    ids=lambda d: np.dtype(d).name,
)
def test_round_trip_is_bit_identical_per_dtype(tmp_path, x64, dtype):
    values = np.random.default_rng(0).standard_normal((7, 5)) * 1e3
    if np.dtype(dtype).kind == "f":
        values[0, :3] = [np.inf, -0.0, np.nextafter(1.0, 2.0)]
    host = values.astype(dtype)
    state = {"host": host, "device": jnp.asarray(host), "scalar": jnp.asarray(host[1, 1])}
    checkpoint.save(tmp_path, 0, state, {})
    restored, _ = checkpoint.restore(tmp_path, like=fresh_like(state))
    assert_trees_identical(restored, state)
    assert restored["device"].dtype == jnp.dtype(dtype)


def test_restore_without_like_gives_numpy_in_nested_dicts_and_lists(tmp_path):
    state = lenet_state()
    checkpoint.save(tmp_path, 1, state, METADATA)
    restored, metadata = checkpoint.restore(tmp_path)
    adam, empty = restored["opt_state"]
    assert empty is None
    assert set(adam) == {"count", "mu", "nu"}
    for name in ("mu", "nu"):
        for layer, leaves in state["opt_state"][0]._asdict()[name].items():
            for leaf, value in leaves.items():
                got = adam[name][layer][leaf]
                assert isinstance(got, np.ndarray)
                np.testing.assert_array_equal(got, np.asarray(value))
    np.testing.assert_array_equal(restored["params"]["fc1"]["kernel"], np.asarray(state["params"]["fc1"]["kernel"]))
    assert metadata_equal(metadata, METADATA)


def test_restore_of_float64_into_jax_without_x64_says_how_to_fix(tmp_path):
    checkpoint.save(tmp_path, 1, {"w": np.arange(3.0)}, {})
    with jax.enable_x64(False), pytest.raises(checkpoint.CheckpointError, match=r"w is float64.*jax_enable_x64"):
        checkpoint.restore(tmp_path, like={"w": jax.ShapeDtypeStruct((3,), np.float64)})  # even if JAX_ENABLE_X64=1
    restored, _ = checkpoint.restore(tmp_path, like={"w": np.zeros(3)})  # on the host it works
    np.testing.assert_array_equal(restored["w"], np.arange(3.0))


# -- steps, retention ----------------------------------------------------------------


def test_steps_of_a_missing_or_empty_directory(tmp_path):
    assert checkpoint.all_steps(tmp_path / "missing") == []
    assert checkpoint.latest_step(tmp_path / "missing") is None
    assert checkpoint.latest_step(tmp_path) is None
    assert not (tmp_path / "missing").exists()  # reading creates nothing


def test_steps_are_listed_in_order_and_each_restores_its_own_state(tmp_path):
    for step in (0, 2, 10):
        checkpoint.save(tmp_path, step, {"w": np.full(3, step, np.int32)}, {"epoch": step})
    (tmp_path / "11.partial-0a1b2c").mkdir()  # an unfinished save
    (tmp_path / "12.orbax-checkpoint-tmp").mkdir()  # an unfinished save of format 1
    (tmp_path / "notes").mkdir()
    assert checkpoint.all_steps(tmp_path) == [0, 2, 10]
    assert checkpoint.latest_step(str(tmp_path)) == 10
    for step in (0, 2, 10):
        state, metadata = checkpoint.restore(tmp_path, step=step)
        np.testing.assert_array_equal(state["w"], np.full(3, step, np.int32))
        assert metadata == {"epoch": step} == checkpoint.read_metadata(tmp_path, step)
    assert checkpoint.restore(tmp_path)[1] == {"epoch": 10}


def test_keep_last_k(tmp_path):
    for step in range(1, 6):
        checkpoint.save(tmp_path, step, {"w": np.full(2, step)}, {"epoch": step}, keep=2)
        assert checkpoint.all_steps(tmp_path) == list(range(max(1, step - 1), step + 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "5"]
    np.testing.assert_array_equal(checkpoint.restore(tmp_path, step=4)[0]["w"], np.full(2, 4))


def test_keep_defaults_to_all(tmp_path):
    for step in range(1, 5):
        checkpoint.save(tmp_path, step, {"w": np.zeros(1)})
    assert checkpoint.all_steps(tmp_path) == [1, 2, 3, 4]


def test_saves_from_several_threads_into_their_own_directories(tmp_path):
    # jaxnets train saves from a writer thread while the training thread reads the directory.
    saves = [(tmp_path / name, step) for name in ("a", "b") for step in (1, 2, 3)]
    errors = []

    def save_all(directory):  # one thread per directory, its steps in order
        try:
            for step in (1, 2, 3):
                checkpoint.save(directory, step, {"w": np.full(2, step)}, {"d": directory.name})
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=save_all, args=(tmp_path / name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for directory, step in saves:
        state, metadata = checkpoint.restore(directory, step=step, like={"w": np.zeros(2, np.int64)})
        np.testing.assert_array_equal(state["w"], np.full(2, step))
        assert metadata == {"d": directory.name}
    assert checkpoint.all_steps(tmp_path / "a") == checkpoint.all_steps(tmp_path / "b") == [1, 2, 3]


def test_round_trip_keeps_empty_and_shared_arrays(tmp_path):
    shared = np.arange(3.0)  # one object in two places: two entries, each restored
    state = {"z": np.zeros((0, 3), np.float32), "a": np.arange(5, dtype=np.int16), "e": [np.zeros(0, np.uint8)],
             "s": (shared, shared)}  # fmt: skip
    checkpoint.save(tmp_path, 1, state, {})
    assert_trees_identical(checkpoint.restore(tmp_path, like=fresh_like(state))[0], state)
    restored, _ = checkpoint.restore(tmp_path)
    assert restored["z"].shape == (0, 3) and restored["e"][0].shape == (0,)
    assert [x.tolist() for x in restored["s"]] == [[0.0, 1.0, 2.0]] * 2
    np.testing.assert_array_equal(restored["a"], state["a"])


# -- bad input to save ------------------------------------------------------------------


def test_save_refuses_a_step_that_is_not_after_the_latest_and_changes_nothing(tmp_path):
    checkpoint.save(tmp_path, 5, {"w": np.ones(2)}, {"epoch": 5})
    for step, what in [(5, "step 5 already exists"), (3, "step 3 is not after the latest step 5")]:
        with pytest.raises(checkpoint.CheckpointError, match=rf"cannot save checkpoint {step} in .*{what}"):
            checkpoint.save(tmp_path, step, {"w": np.zeros(2)}, {"epoch": 0})
    assert checkpoint.all_steps(tmp_path) == [5]
    state, metadata = checkpoint.restore(tmp_path)
    np.testing.assert_array_equal(state["w"], np.ones(2))
    assert metadata == {"epoch": 5}


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(state={"w": 1.5}), TypeError, r"state leaf w is a float; every leaf must be a jax or numpy array"),
        (dict(state={"k": jax.random.key(0)}), TypeError, r"state leaf k is a typed PRNG key.*key_data"),
        (dict(state={}), ValueError, r"`state` holds no arrays"),
        (dict(metadata={"mean": np.float32(1.0)}), TypeError, r"metadata\['mean'\] is a float32.*float\(\.\.\.\)"),
        (dict(metadata={"h": [1, {2: 3}]}), TypeError, r"metadata\['h'\]\[1\] has the key 2 of type int"),
        (dict(metadata=[1]), TypeError, r"`metadata` must be a dict; got list"),
        (dict(step=-1), TypeError, r"`step` must be a non-negative int; got -1"),
        (dict(step=True), TypeError, r"`step` must be a non-negative int; got True"),
        (dict(keep=0), ValueError, r"`keep` must be a positive int or None"),
        (dict(directory=3), TypeError, r"`directory` must be a path"),
    ],
    ids=[
        "python-float",
        "prng-key",
        "empty-state",
        "numpy-in-metadata",
        "int-key",
        "list-metadata",
        "negative-step",
        "bool-step",
        "keep-0",
        "int-directory",
    ],
)
def test_save_rejects_bad_input_before_writing(tmp_path, kwargs, error, message):
    args = dict(directory=tmp_path / "ckpt", step=1, state={"w": np.ones(2)}, metadata={}) | kwargs
    keep = args.pop("keep", None)
    with pytest.raises(error, match=message):
        checkpoint.save(**args, keep=keep)
    assert not (tmp_path / "ckpt").exists()


def test_save_into_a_file_says_so(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(checkpoint.CheckpointError, match=r"file\b.* is a file, not a directory"):
        checkpoint.save(tmp_path / "file", 1, {"w": np.ones(1)})


# -- restoring into another model ---------------------------------------------------------


def test_restore_into_another_model_names_every_differing_key_with_both_shapes(tmp_path):
    checkpoint.save(tmp_path, 1, lenet_state(kernel_size=3), {})
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.restore(tmp_path, like=fresh_like(lenet_state(kernel_size=5)))
    message = str(info.value)
    assert f"checkpoint {tmp_path / '1'} was saved from a different model" in message
    assert "params/fc1/kernel has shape (576, 120) in the checkpoint, (400, 120) here" in message
    assert "params/conv1/kernel has shape (3, 3, 1, 6) in the checkpoint, (5, 5, 1, 6) here" in message
    assert "opt_state/0/mu/fc1/kernel has shape (576, 120) in the checkpoint, (400, 120) here" in message
    assert "fc2" not in message  # same shapes: not listed
    assert "read_metadata" in message


def test_restore_reports_other_dtypes_and_missing_and_extra_keys(tmp_path):
    state = lenet_state()
    checkpoint.save(tmp_path, 1, state, {})
    like = fresh_like(state)
    like["params"]["fc3"]["bias"] = np.zeros(10, np.float64)
    del like["opt_state"]
    like["ema"] = np.zeros(3, np.float32)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.restore(tmp_path, like=like)
    message = str(info.value)
    assert "params/fc3/bias has dtype float32 in the checkpoint, float64 here" in message
    assert "ema (3,) float32 is missing from the checkpoint" in message
    assert "opt_state/0/count () int32 is in the checkpoint but not here" in message


def test_restore_rejects_a_like_that_is_not_arrays(tmp_path):
    checkpoint.save(tmp_path, 1, {"w": np.ones(2)})
    with pytest.raises(TypeError, match=r"`like` leaf w/0 is a int; `like` must be a pytree of jax/numpy arrays"):
        checkpoint.restore(tmp_path, like={"w": [0, 0]})
    with pytest.raises(TypeError, match=r"`like` leaf w is a typed PRNG key array.*key_data"):
        checkpoint.restore(tmp_path, like={"w": jax.random.key(0)})


# -- missing and damaged checkpoints -------------------------------------------------------


@pytest.mark.parametrize("read", [checkpoint.restore, checkpoint.read_metadata], ids=["restore", "read_metadata"])
def test_no_checkpoint_says_how_to_make_one(tmp_path, read):
    run = tmp_path / "run" / "checkpoints"
    with pytest.raises(
        checkpoint.NoCheckpointError,
        match=rf"no checkpoint in {run}: the directory does not exist\. Train first with `jaxnets train --out {run.parent}`",
    ):
        read(run)
    run.mkdir(parents=True)
    with pytest.raises(checkpoint.NoCheckpointError, match=r"it holds no finished checkpoint"):
        read(run)
    checkpoint.save(run, 1, {"w": np.ones(1)})
    checkpoint.save(run, 4, {"w": np.ones(1)})
    with pytest.raises(checkpoint.NoCheckpointError, match=r"no checkpoint of step 2 in .*; it holds steps 1, 4"):
        read(run, step=2)
    assert issubclass(checkpoint.NoCheckpointError, checkpoint.CheckpointError)
    assert issubclass(checkpoint.CheckpointError, ValueError)


def _truncate(step_dir: Path) -> None:
    arrays = step_dir / checkpoint.ARRAYS
    os.truncate(arrays, arrays.stat().st_size // 2)


def _delete(step_dir: Path) -> None:
    (step_dir / checkpoint.ARRAYS).unlink()


def _flip_bit(step_dir: Path) -> None:
    # A changed value of the right size: only the manifest's SHA-256 notices.
    arrays = step_dir / checkpoint.ARRAYS
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0x10
    arrays.write_bytes(bytes(data))


def _garbage(item: str):
    def corrupt(step_dir: Path) -> None:
        (step_dir / f"{item}.json").write_text("{not json")

    return corrupt


def _empty(step_dir: Path) -> None:
    for f in sorted(step_dir.rglob("*"), key=lambda p: -len(p.parts)):
        f.rmdir() if f.is_dir() else f.unlink()


def _no_manifest(step_dir: Path) -> None:
    (step_dir / checkpoint.MANIFEST).unlink()


def _bad_tree(step_dir: Path) -> None:
    manifest = step_dir / checkpoint.MANIFEST
    doc = json.loads(manifest.read_text())
    doc["tree"] = {"a": 0, "b": 0}
    manifest.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_truncate, r"is damaged: its arrays in .*/2/arrays.bin take 2020 bytes, but the manifest lists 4040"),
        (_delete, r"checkpoint .*/2 is incomplete: arrays.bin missing"),
        (_flip_bit, r"is damaged: a reads back with other bytes than were saved \(SHA-256 mismatch\)"),
        (_garbage("metadata"), r"is damaged: its metadata file in .*/2/metadata.json cannot be read \(JSONDecodeErr"),
        (_garbage("manifest"), r"is damaged: its manifest file in .*/2/manifest.json cannot be read \(JSONDecodeErr"),
        (_empty, r"checkpoint .*/2 is empty: .* Delete .*/2\. Other checkpoints in this directory: steps 1"),
        (_no_manifest, r"checkpoint .*/2 is incomplete: manifest.json missing"),
        (_bad_tree, r"is damaged: the tree in its manifest .*/2/manifest.json does not name each of its 2 arrays"),
    ],
    ids=[
        "truncated-array-file",
        "deleted-array-file",
        "flipped-bit",
        "garbage-metadata",
        "garbage-manifest",
        "empty-step-dir",
        "no-manifest",
        "bad-tree",
    ],
)
def test_damaged_checkpoint_raises_checkpoint_error_naming_it_and_spares_the_others(tmp_path, corrupt, message):
    good = {"a": np.random.default_rng(1).standard_normal(1000).astype(np.float32), "b": np.arange(5)}
    checkpoint.save(tmp_path, 1, good, {"epoch": 1})
    checkpoint.save(
        tmp_path,
        2,
        {"a": np.random.default_rng(2).standard_normal(1000).astype(np.float32), "b": np.arange(5)},
        {"epoch": 2},
    )
    corrupt(tmp_path / "2")
    with pytest.raises(checkpoint.CheckpointError, match=message) as info:
        checkpoint.restore(tmp_path, like={"a": np.zeros(1000, np.float32), "b": np.zeros(5, np.int64)})
    assert str(tmp_path / "2") in str(info.value)
    assert "tensorstore_spec" not in str(info.value)
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.restore(tmp_path)
    restored, metadata = checkpoint.restore(tmp_path, step=1)
    assert_trees_identical(restored, good)
    assert metadata == {"epoch": 1}


def test_errors_of_reading_are_chained(tmp_path):
    checkpoint.save(tmp_path, 1, {"a": np.ones(1000, np.float32)})
    _garbage("metadata")(tmp_path / "1")
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.read_metadata(tmp_path)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


# -- a save killed mid-write -----------------------------------------------------------------

BIG_BYTES = 4 * 12_500_000 * 4
PARTIAL_BYTES = 20_000_000  # kill once this much of step 2 is on disk: well inside its arrays

_KILLED_SAVER = """
import numpy as np
from jaxnets.training import checkpoint
checkpoint.save({directory!r}, 1, {{"w": np.arange(12, dtype=np.float32).reshape(3, 4)}}, {{"epoch": 1}})
rng = np.random.default_rng(0)
# About 200 MB of incompressible data: most of a second to write and flush.
big = {{"w": [rng.integers(0, 2**32, 12_500_000, dtype=np.uint32) for _ in range(4)]}}
checkpoint.save({directory!r}, 2, big, {{"epoch": 2}})
print("save 2 finished", flush=True)
"""


def _bytes_under(path: Path) -> int:
    try:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    except FileNotFoundError:  # renamed or removed while we looked
        return 0


def _wait_for_partial_save(directory: Path, process: subprocess.Popen, timeout: float) -> tuple[Path, int]:
    """Step 2's temporary directory once it holds some array data (the save is then mid-write)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tmp = [p for p in directory.iterdir() if p.name.startswith("2.partial-")] if directory.exists() else []
        if tmp and (written := _bytes_under(tmp[0])) >= PARTIAL_BYTES:
            return tmp[0], written
        if process.poll() is not None:
            pytest.fail(
                f"the saver exited ({process.returncode}) before step 2 was half written:\n{process.communicate()}"
            )
        time.sleep(0.002)
    process.kill()
    pytest.fail(f"step 2's temporary directory did not reach {PARTIAL_BYTES} bytes within {timeout} s")


@pytest.mark.slow
def test_save_killed_mid_write_leaves_the_previous_checkpoint_restorable(tmp_path):
    directory = tmp_path / "checkpoints"
    code = textwrap.dedent(_KILLED_SAVER).format(directory=str(directory))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        tmp, written = _wait_for_partial_save(directory, process, timeout=45)
        process.send_signal(signal.SIGKILL)
    finally:
        stdout, _ = process.communicate(timeout=30)  # reaps the process and closes the pipes
    # The kill must have landed mid-save: otherwise this test proves nothing.
    assert process.returncode == -signal.SIGKILL, stdout
    assert "save 2 finished" not in stdout
    assert tmp.is_dir() and not (directory / "2").exists(), sorted(p.name for p in directory.iterdir())
    assert PARTIAL_BYTES <= written < BIG_BYTES

    assert checkpoint.all_steps(directory) == [1]
    assert checkpoint.latest_step(directory) == 1
    state, metadata = checkpoint.restore(directory, like={"w": np.zeros((3, 4), np.float32)})
    assert_trees_identical(state, {"w": np.arange(12, dtype=np.float32).reshape(3, 4)})
    assert metadata == {"epoch": 1}

    # Saving step 2 again removes the leftover and works.
    checkpoint.save(directory, 2, {"w": np.full((3, 4), 2.0, np.float32)}, {"epoch": 2})
    assert sorted(p.name for p in directory.iterdir()) == ["1", "2"]
    state, metadata = checkpoint.restore(directory)
    np.testing.assert_array_equal(state["w"], np.full((3, 4), 2.0, np.float32))
    assert metadata == {"epoch": 2}


def test_leftovers_of_an_interrupted_clean_up_are_ignored_and_removed(tmp_path):
    checkpoint.save(tmp_path, 1, {"w": np.ones(1)})
    (tmp_path / ".deleting-0" / "state").mkdir(parents=True)  # a kill during keep=K's deletion
    assert checkpoint.all_steps(tmp_path) == [1]
    checkpoint.save(tmp_path, 2, {"w": np.ones(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_save_after_a_damaged_or_empty_step_works_and_keep_prunes_them(tmp_path):
    checkpoint.save(tmp_path, 1, {"w": np.ones(2)})
    (tmp_path / "2").mkdir()  # an empty step directory
    checkpoint.save(tmp_path, 3, {"w": np.ones(2)})
    _garbage("metadata")(tmp_path / "3")
    (tmp_path / "3" / "_CHECKPOINT_METADATA").write_text("{bad")
    checkpoint.save(tmp_path, 4, {"w": np.full(2, 4.0)}, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4"]
    np.testing.assert_array_equal(checkpoint.restore(tmp_path)[0]["w"], np.full(2, 4.0))


def test_checkpoint_of_another_format_version_says_so(tmp_path):
    checkpoint.save(tmp_path, 1, {"w": np.ones(2)})
    manifest = tmp_path / "1" / checkpoint.MANIFEST
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"format": 99}))
    with pytest.raises(checkpoint.CheckpointError, match=r"1 has format 99; this jaxnets reads formats 1 and 2"):
        checkpoint.restore(tmp_path)


# -- format 1: checkpoints jaxnets wrote with orbax -------------------------------------------

V1 = REPO / "tests" / "data" / "checkpoints_v1"
"""Two steps written by jaxnets.checkpoint.save of format 1 (commit b1837e5, orbax 0.11) from `v1_state()`."""


def v1_state():
    import optax

    k = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    b = np.array([-0.0, 1.5, np.inf, 2.0], np.float32)
    mu = {"fc": {"kernel": k * 0.1, "bias": b * 0.5}}
    nu = {"fc": {"kernel": k * k, "bias": np.array([0.0, 2.25, np.inf, 4.0], np.float32)}}
    adam = optax.ScaleByAdamState(count=np.int32(3), mu=mu, nu=nu)
    return {"params": {"fc": {"kernel": k, "bias": b}}, "opt_state": (adam, optax.EmptyState()),
            "rng": np.arange(4, dtype=np.uint32), "best": np.float64(0.123456789012345678)}  # fmt: skip


def test_checkpoints_of_format_1_restore_bit_identical(tmp_path):
    assert checkpoint.all_steps(V1) == [1, 2]
    state = v1_state()
    restored, metadata = checkpoint.restore(V1, like=fresh_like(state))
    assert_trees_identical(restored, state)
    assert metadata == {"epoch": 2, "model": {"model": "toy"}, "history": [{"loss": 2.5}, {"loss": 1.25}]}
    assert checkpoint.read_metadata(V1, 1)["epoch"] == 1
    plain, _ = checkpoint.restore(V1, step=1)
    assert plain["opt_state"][1] is None and set(plain["opt_state"][0]) == {"count", "mu", "nu"}
    np.testing.assert_array_equal(plain["params"]["fc"]["bias"], state["params"]["fc"]["bias"])
    # A run continues in format 2 beside them.
    copy = tmp_path / "checkpoints"
    import shutil

    shutil.copytree(V1, copy)
    checkpoint.save(copy, 3, restored, metadata | {"epoch": 3})
    assert checkpoint.all_steps(copy) == [1, 2, 3] and (copy / "3" / checkpoint.MANIFEST).is_file()
    assert_trees_identical(checkpoint.restore(copy, like=fresh_like(state))[0], state)


def test_a_damaged_checkpoint_of_format_1_is_still_caught(tmp_path):
    import shutil

    copy = tmp_path / "checkpoints"
    shutil.copytree(V1, copy)
    for f in (copy / "2" / "state").rglob("*"):  # flip one bit of every array file: values change, sizes do not
        if f.is_file() and f.parent.name == "d":
            data = bytearray(f.read_bytes())
            data[-8] ^= 0x01
            f.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint .*/2 is damaged") as info:
        checkpoint.restore(copy, like=fresh_like(v1_state()))
    assert "Other checkpoints in this directory: steps 1" in str(info.value)
    assert_trees_identical(checkpoint.restore(copy, step=1, like=fresh_like(v1_state()))[0], v1_state())
