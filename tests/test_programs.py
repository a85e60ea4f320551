"""Stored compiled programs (jaxnets._programs): a warm run loads them untraced and trains bit-identically; any
change of what they depend on, or any damage, compiles them again; nothing is stored when the cache is off."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import _cache, _programs
from jaxnets.training import checkpoint
from jaxnets.training import digits as training

ROOT = Path(__file__).resolve().parents[1]
TRAINER_PROGRAMS = ("_run_impl", "_evaluate_impl")
STORED = ("_draws", *TRAINER_PROGRAMS)
"""What a LeNet run stores: its weights' draw (digits._draws), its epoch loop and its evaluation."""


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The programs directory ``jaxnets train`` uses, as if enable_compilation_cache had switched it on."""
    directory = tmp_path / "programs"
    monkeypatch.setattr(_cache, "_programs", directory)
    training._draws.clear_cache()  # a draw traced by an earlier test of this process would not be traced again
    return directory


def train(out, **config):
    return training.train(training.TrainConfig(**{"epochs": 2, **config}), out, log=lambda line: None,
                          progress=False)  # fmt: skip


def weights(out):
    state, _ = checkpoint.restore(out / training.CHECKPOINTS)
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(state)]


def trained(traces):
    return [name for name in traces if name in STORED]


def test_programs_warm_train_loads_untraced_and_matches_the_cold_run_bit_for_bit(store, tmp_path, traces):
    cold = train(tmp_path / "cold")
    assert sorted(trained(traces)) == sorted(STORED)
    assert sorted(p.name.split("-")[0] for p in store.iterdir()) == ["draws", "evaluate", "run"]
    traces.clear()
    warm = train(tmp_path / "warm")
    assert trained(traces) == []  # loaded from disk: neither traced nor lowered
    assert weights(tmp_path / "warm") == weights(tmp_path / "cold")
    assert [h["train_loss"] for h in warm["history"]] == [h["train_loss"] for h in cold["history"]]


@pytest.mark.slow  # ResNet-18's epoch loop and evaluation compiled, stored and loaded (about 20 s)
def test_programs_resnet18_on_cifar_loads_untraced_and_matches_the_cold_run_bit_for_bit(store, tmp_path, traces):
    from test_training_cifar import write_cifar10

    write_cifar10(tmp_path / "cifar-10-batches-py")
    config = dict(model="resnet18", data=f"cifar10:{tmp_path / 'cifar-10-batches-py'}", batch_size=16, optimizer="sgd")
    cold = train(tmp_path / "cold", **config)
    assert sorted(trained(traces)) == sorted(TRAINER_PROGRAMS)
    traces.clear()
    warm = train(tmp_path / "warm", **config)
    assert trained(traces) == []  # BatchNorm's buffers and all: loaded from disk, neither traced nor lowered
    assert weights(tmp_path / "warm") == weights(tmp_path / "cold")
    assert [h["train_loss"] for h in warm["history"]] == [h["train_loss"] for h in cold["history"]]


def test_programs_another_config_value_compiles_anew(store, tmp_path, traces):
    train(tmp_path / "a")
    traces.clear()
    train(tmp_path / "b", lr=2e-3)  # same shapes, another constant in the optimizer's update
    assert sorted(trained(traces)) == sorted(TRAINER_PROGRAMS)  # the draw: lowered from this process' trace
    assert sorted(p.name.split("-")[0] for p in store.iterdir()) == ["draws", "draws", "evaluate", "evaluate",
                                                                     "run", "run"]  # fmt: skip


def test_programs_changed_sources_compile_anew(store, tmp_path, traces, monkeypatch):
    train(tmp_path / "a")
    traces.clear()
    monkeypatch.setattr(_programs, "_environment", None)
    monkeypatch.setattr(_programs, "source_digest", lambda: "0" * 64)  # as if a jaxnets file had been edited
    train(tmp_path / "b")
    assert sorted(trained(traces)) == sorted(TRAINER_PROGRAMS)  # the draw: lowered from this process' trace
    assert sorted(p.name.split("-")[0] for p in store.iterdir()) == ["draws", "draws", "evaluate", "evaluate",
                                                                     "run", "run"]  # fmt: skip


def test_programs_another_host_cpu_compiles_anew(tmp_path, monkeypatch):
    calls = []
    _programs.Programs(tmp_path, "test").call("f", _program(calls), (jnp.ones(3), 2), static_argnums=(1,))
    monkeypatch.setattr(_programs, "_environment", None)
    monkeypatch.setattr(_programs, "host_cpu", lambda: "('x86_64', '', [('flags', 'sse sse2 avx2')])")
    programs = _programs.Programs(tmp_path, "test")
    programs.call("f", _program(calls), (jnp.ones(3), 2), static_argnums=(1,))
    assert len(calls) == 2 and programs.loads == 0 and len(list(tmp_path.iterdir())) == 2


def _program(calls):
    def f(x, n):
        calls.append(n)  # runs once per trace
        return x * n + 1.0

    return jax.jit(f, static_argnums=1)


def test_programs_static_arguments_and_shapes_are_part_of_the_key(tmp_path):
    calls = []
    programs = _programs.Programs(tmp_path, {"what": "test"})
    for x, n in [(jnp.ones(3), 2), (jnp.ones(3), 3), (jnp.ones(4), 2), (jnp.ones(3, jnp.int32), 2)]:
        np.testing.assert_array_equal(programs.call("f", _program(calls), (x, n), static_argnums=(1,)), x * n + 1.0)
    assert len(calls) == 4 and len(list(tmp_path.iterdir())) == 4
    again = _programs.Programs(tmp_path, {"what": "test"})
    np.testing.assert_array_equal(again.call("f", _program(calls), (jnp.ones(3), 3), static_argnums=(1,)), 4.0)
    assert len(calls) == 4 and again.loads == 1
    other = _programs.Programs(tmp_path, {"what": "another context"})
    other.call("f", _program(calls), (jnp.ones(3), 3), static_argnums=(1,))
    assert len(calls) == 5 and other.loads == 0


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[:-100], id="truncated"),
        pytest.param(lambda raw: raw[:-50] + bytes([raw[-50] ^ 1]) + raw[-49:], id="one-bit-flipped"),
        pytest.param(lambda raw: b"not a program at all", id="garbage"),
    ],
)
def test_programs_damaged_entry_compiles_anew_with_a_warning(tmp_path, damage, caplog):
    calls = []
    _programs.Programs(tmp_path, "test").call("f", _program(calls), (jnp.ones(3), 2), static_argnums=(1,))
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(damage(entry.read_bytes()))
    programs = _programs.Programs(tmp_path, "test")
    with caplog.at_level(logging.WARNING, logger="jaxnets"):
        out = programs.call("f", _program(calls), (jnp.ones(3), 2), static_argnums=(1,))
    np.testing.assert_array_equal(out, 3.0)
    assert len(calls) == 2 and programs.loads == 0 and programs.stores == 1
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [f"jaxnets: ignoring the stored program {entry}"]
    again = _programs.Programs(tmp_path, "test").call("f", _program(calls), (jnp.ones(3), 2), static_argnums=(1,))
    np.testing.assert_array_equal(again, 3.0)
    assert len(calls) == 2  # the damaged entry was replaced by a good one


class _FailsToRun:
    def __call__(self, *args):
        raise RuntimeError("NOT_FOUND: Function slice_concatenate_fusion.4 not found")


def test_programs_entry_that_loads_but_fails_to_run_compiles_anew_and_keeps_the_arguments(
    tmp_path, monkeypatch, caplog
):
    from jax.experimental import serialize_executable

    calls = []
    donating = lambda: jax.jit(lambda x: (calls.append(1), x * 2.0 + 1.0)[1], donate_argnums=0)  # noqa: E731
    _programs.Programs(tmp_path, "test").call("f", donating(), (jnp.ones(3),))
    monkeypatch.setattr(serialize_executable, "deserialize_and_load", lambda *args, **kwargs: _FailsToRun())
    programs, x = _programs.Programs(tmp_path, "test"), jnp.ones(3)
    with caplog.at_level(logging.WARNING, logger="jaxnets"):
        out = programs.call("f", donating(), (x,))
    np.testing.assert_array_equal(out, 3.0)
    assert len(calls) == 2 and programs.loads == 0 and programs.stores == 1
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"jaxnets: the stored program {next(tmp_path.iterdir())} failed"
    ]


def test_programs_nothing_stored_when_the_cache_is_off(store, tmp_path, monkeypatch, traces):
    assert _cache.programs_dir() == store
    monkeypatch.setenv("JAXNETS_CACHE_DIR", "")  # as tests/conftest.py and users turn the cache off
    assert _cache.enable_compilation_cache() is None
    assert _cache.programs_dir() is None
    train(tmp_path / "run", epochs=1)
    assert not store.exists()
    assert sorted(trained(traces)) == sorted(STORED)


def test_xla_cache_has_a_directory_per_host_cpu(tmp_path, monkeypatch):
    # Two machines sharing a home directory: each CPU's XLA entries apart, the stored programs in one place.
    before = jax.config.jax_compilation_cache_dir  # tests/conftest.py's
    monkeypatch.setattr(_cache, "_programs", _cache.programs_dir())  # restored after the test
    seen = []
    try:
        for cpu in ("('x86_64', 'AVX-512 one')", "('x86_64', 'AVX2 other')", "('x86_64', 'AVX-512 one')"):
            monkeypatch.setattr(_programs, "host_cpu", lambda cpu=cpu: cpu)
            assert _cache.enable_compilation_cache(tmp_path / "xla") == tmp_path / "xla"
            seen.append(Path(jax.config.jax_compilation_cache_dir))
            assert _cache.programs_dir() == tmp_path / "xla" / "programs"
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    assert seen[0] == seen[2] != seen[1]
    assert [p.parent for p in seen] == [tmp_path / "xla"] * 3 and all(p.name.startswith("cpu-") for p in seen)


ONE_DEVICE_OF_TWO = """
import sys
import jax, jax.numpy as jnp
from jaxnets import _programs
assert len(jax.devices()) == 2
programs = _programs.Programs(sys.argv[1], "test")
out = programs.call("f", jax.jit(lambda x: x * 2.0 + 1.0), (jax.device_put(jnp.ones(3), jax.devices()[0]),))
assert out.tolist() == [3.0, 3.0, 3.0], out
print(programs.loads, programs.stores)
"""


def test_programs_a_one_device_program_loads_on_a_backend_of_two(tmp_path):
    # Loaded onto every device of the backend by default, it refused its one-device argument on its first run.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    run = lambda: subprocess.run([sys.executable, "-c", ONE_DEVICE_OF_TWO, str(tmp_path)], env=env, cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert run() == ["0", "1"]
    assert run() == ["1", "0"]
