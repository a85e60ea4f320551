"""Data-parallel training on a ``jax.sharding`` mesh gives the one-device results: steps, ``jaxnets train``, processes.

JAX fixes its devices when it starts, so every multi-device run happens in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (N
simulated CPU devices) and this pytest process keeps its one device. This file
is also the subprocesses' program: ``python tests/test_distributed.py steps``
runs the library comparisons on 4 devices and prints JSON, and
``python tests/test_distributed.py two-process ID PORT OUT`` is one of the two
processes of a ``jax.distributed`` run.

What is compared, and why the settings are what they are:

- Library: k = 3 steps of a :class:`jaxnets.Trainer` on a mesh of 4 devices
  against 3 steps without a mesh, on the same global batch (LeNet: 32 images,
  8 per device; TwoLayerNet: 16 rows), per leaf ``max|a - b| / max|b|``
  within F64_RTOL in float64 and F32_RTOL in float32 (tests/tolerances.py).
- ``jaxnets train --devices 4`` against ``--devices 1``: one epoch of digits
  (44 steps of 32 images) with SGD (momentum 0.9, its default lr 0.01).
  Measured: the exported weights agree to 1.4e-7 (and stay within 2e-7 over
  4 epochs), and training moved every tensor by 1.5% to 31% of its largest
  value, 1000 times the tolerance, so the agreement is not that of two
  untrained nets. Two float32 runs that sum in different orders agree only as
  long as training does not amplify rounding, and two settings do: Adam
  divides each gradient by its own running magnitude, so where a gradient is
  near zero by cancellation its rounding is magnified (the two runs' weights
  differ by 1e-3 after one epoch; 2e-14 in float64 over 3 steps, where the
  library test checks Adam on LeNet), and SGD at lr 0.05 sits on an unstable
  plateau where differences grow 1.3 times per step (3e-7 after one epoch,
  1e-2 after two).
- Two processes (``jax.distributed`` over localhost, gloo collectives), 2
  devices each: the library's 3 LeNet Adam steps in float64 against one
  process (within F64_RTOL; in float32, Adam's steps differ by 4.5e-5, for
  the reason above), and ``jaxnets train`` in two processes (float32, the SGD
  setting above) against ``--devices 1``.
"""

import faulthandler
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file
from tolerances import F32_RTOL, F64_RTOL

import jaxnets
from jaxnets import cli
from jaxnets.interop import exchange
from jaxnets.losses import cross_entropy, mse_loss
from jaxnets.training import digits as training
from jaxnets.training import distributed

HERE = Path(__file__).resolve()
TIMEOUT = 180  # seconds for any subprocess: a hang (e.g. a process waiting for its peer) fails instead of blocking
STEPS = 3
RTOL = {"float64": F64_RTOL, "float32": F32_RTOL}
MOVED = 1e-3  # every parameter must move by more than this (relative) in STEPS steps: a real comparison, not init
CASES = [  # (model, dtype, optimizer)
    ("lenet", "float64", "adam"),
    ("lenet", "float32", "sgd"),
    ("two_layer", "float64", "sgd"),
    ("two_layer", "float32", "adam"),
]
CLI_SETTING = [
    "--data",
    "digits",
    "--epochs",
    "1",
    "--optimizer",
    "sgd",
    "--seed",
    "0",
    "--no-progress",
]
CLI_MOVED = 0.01  # one epoch moves every tensor by 1.5% to 31% of its largest value (measured)


# -- the computations, shared by the subprocesses and this process -------------------------------


def optimizer(name: str):
    return jaxnets.optim.adam(lr=1e-3) if name == "adam" else jaxnets.optim.sgd(lr=0.1, momentum=0.9)


def model_and_batch(name: str, dtype: str):
    """A model and a global batch, both from fixed seeds: every process builds the same."""
    rng = np.random.default_rng(0)
    if name == "lenet":
        model = jaxnets.LeNet(param_dtype=dtype, rngs=nnx.Rngs(0))
        x = rng.normal(size=(32, 32, 32, 1)).astype(dtype)
        y = rng.integers(0, 10, size=32).astype(np.int32)
        return model, (x, y), lambda m, x, y: cross_entropy(m(x), y)
    model = jaxnets.TwoLayerNet(12, 8, 3, param_dtype=dtype, rngs=nnx.Rngs(0))
    x, y = rng.normal(size=(16, 12)).astype(dtype), rng.normal(size=(16, 3)).astype(dtype)
    return model, (x, y), lambda m, x, y: mse_loss(m(x), y)


def flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def train_steps(name: str, dtype: str, opt: str, mesh=None):
    """STEPS trainer steps on the global batch: parameters before and after (NumPy), the trainer and its batch."""
    model, batch, loss_fn = model_and_batch(name, dtype)
    trainer = jaxnets.Trainer(model, optimizer(opt), loss_fn, mesh=mesh)
    before = flat(nnx.to_pure_dict(trainer.params))
    batch = trainer.shard(*batch)
    for _ in range(STEPS):
        trainer.step(*batch)
    return before, flat(nnx.to_pure_dict(trainer.params)), trainer, batch


def relative_error(a: dict, b: dict) -> float:
    """The largest over leaves of ``max|a - b| / max|b|``."""
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for k in b)


def relative_change(before: dict, after: dict) -> float:
    """The smallest over leaves of ``max|after - before| / max|before|``: how far training moved every leaf."""
    return min(float(np.max(np.abs(after[k] - before[k])) / np.max(np.abs(before[k]))) for k in before)


# -- the subprocesses' side --------------------------------------------------------------------------


def has_all_reduce(trainer, *batch) -> bool:
    """Whether the compiled step averages over devices: XLA inserted an all-reduce."""
    return "all-reduce" in trainer._step.lower(trainer._leaves, *batch).compile().as_text()


def shard_map_grads_error() -> float:
    """LeNet's fast-path gradients inside jax.shard_map (type checks on) against one device's, float64.

    The fast path's custom VJPs must return a replicated kernel's gradient as
    the sum over devices, as JAX's own ops do; without that shard_map refuses
    them ("manual axis types do not match").
    """
    mesh = distributed.mesh(4)
    with jax.enable_x64(True):
        model, (x, y), _ = model_and_batch("lenet", "float64")
        graphdef, params = nnx.split(model)

        def summed_loss(params, x, y):
            return cross_entropy(nnx.merge(graphdef, params)(x), y) * x.shape[0]

        spec, rows = jax.sharding.PartitionSpec, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        grads = jax.shard_map(jax.grad(summed_loss), mesh=mesh, in_specs=(spec(), spec("data"), spec("data")),
                              out_specs=spec())  # fmt: skip
        params_on_mesh = jax.device_put(params, jax.sharding.NamedSharding(mesh, spec()))
        got = jax.jit(grads)(params_on_mesh, jax.device_put(x, rows), jax.device_put(y, rows))
        return relative_error(flat(got), flat(jax.grad(summed_loss)(params, x, y)))


def steps_worker() -> dict:
    """On 4 devices: every CASE with and without a mesh, evidence that the mesh run was split, and the uneven error."""
    mesh = distributed.mesh(4)
    out = {"devices": len(jax.devices()), "cases": {}}
    for name, dtype, opt in CASES:
        with jax.enable_x64(dtype == "float64"):
            before, single, alone, batch = train_steps(name, dtype, opt)
            _, sharded, on_mesh, split = train_steps(name, dtype, opt, mesh=mesh)
            out["cases"][f"{name}-{dtype}-{opt}"] = {
                "error": relative_error(sharded, single),
                "moved": relative_change(before, single),
                "dtype": str(next(iter(sharded.values())).dtype),
                "batch_devices": len(split[0].sharding.device_set),
                "batch_shard_rows": sorted({s.data.shape[0] for s in split[0].addressable_shards}),
                "all_reduce": has_all_reduce(on_mesh, *split),
                "all_reduce_alone": has_all_reduce(alone, *batch),
            }
    out["shard_map_error"] = shard_map_grads_error()
    try:
        distributed.shard_batch(mesh, np.zeros((30, 3)))
    except ValueError as e:
        out["uneven"] = str(e)
    return out


def two_process_worker(process_id: int, port: int, out: str) -> None:
    """One of two processes: STEPS LeNet steps on a mesh over both processes' devices; process 0 saves the result."""
    distributed.initialize(f"localhost:{port}", 2, process_id)
    mesh = distributed.mesh()
    info = {"processes": jax.process_count(), "mesh_devices": int(mesh.devices.size)}
    with jax.enable_x64(True):
        _, after, _, batch = train_steps("lenet", "float64", "adam", mesh=mesh)
    info["batch_fully_addressable"] = batch[0].is_fully_addressable
    if process_id == 0:
        np.savez(out, **after)
        Path(out).with_suffix(".json").write_text(json.dumps(info))


# -- helpers of the tests ------------------------------------------------------------------------------


def env(devices: int) -> dict:
    """This environment with ``devices`` simulated CPU devices, no compilation cache and no coordinator."""
    e = {k: v for k, v in os.environ.items() if k not in distributed.ENV.values() and k != "JAX_NUM_CPU_DEVICES"}
    # Keep the caller's XLA flags (e.g. --xla_cpu_max_isa in CI's instruction-set run); the last device count wins.
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return e | {"XLA_FLAGS": flags, "JAXNETS_CACHE_DIR": "", "JAX_PLATFORMS": "cpu"}


def start(*argv, devices: int = 4) -> subprocess.Popen:
    """A subprocess whose output goes to temporary files, not pipes.

    With pipes, a process blocked writing to a full pipe nobody reads yet (its
    partner is being waited on first) stalls a collective both take part in.
    """
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, *map(str, argv)], env=env(devices), stdout=out, stderr=err, text=True)
    proc.outputs = (out, err)
    return proc


def _read(f) -> str:
    f.seek(0)
    text = f.read()
    f.close()
    return text


def finish(*procs: subprocess.Popen) -> list[tuple[int, str, str]]:
    """Wait for every process (TIMEOUT in all); on a timeout kill them all and fail, showing their stderr."""
    deadline = time.monotonic() + TIMEOUT
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    if any(p.poll() is None for p in procs):
        for p in procs:
            p.kill()
            p.wait()
        tails = "\n".join(f"--- {p.args[1:]}:\n{_read(p.outputs[1])[-2000:]}" for p in procs)
        pytest.fail(f"a subprocess ran longer than {TIMEOUT} s:\n{tails}")
    return [(p.returncode, _read(p.outputs[0]), _read(p.outputs[1])) for p in procs]


def jaxnets_cli(*argv) -> list:
    return ["-m", "jaxnets", *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def export(run: Path, path: Path) -> dict[str, np.ndarray]:
    assert cli.main(["export", str(run), "--output", str(path)]) == 0
    return load_file(path)


# -- the tests ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def steps():
    """The JSON of ``steps_worker``, run once in a 4-device subprocess."""
    [(code, stdout, stderr)] = finish(start(HERE, "steps"))
    assert code == 0, stderr
    return json.loads(stdout.splitlines()[-1])


@pytest.mark.slow  # a 4-device subprocess (about 18 s)
@pytest.mark.parametrize("case", [f"{m}-{d}-{o}" for m, d, o in CASES])
def test_sharded_steps_equal_single_device_steps(steps, case):
    assert steps["devices"] == 4
    result = steps["cases"][case]
    dtype = case.split("-")[1]
    assert result["dtype"] == dtype
    # Really split: the batch lives on 4 devices, a quarter each, and the step all-reduces (the one-device one not).
    assert result["batch_devices"] == 4
    assert result["batch_shard_rows"] == [(32 if case.startswith("lenet") else 16) // 4]
    assert result["all_reduce"] and not result["all_reduce_alone"]
    assert result["moved"] > MOVED, result
    assert result["error"] <= RTOL[dtype], result


@pytest.mark.slow  # a 4-device subprocess (about 18 s)
def test_fast_path_gradients_inside_shard_map_equal_one_devices(steps):
    assert steps["shard_map_error"] <= F64_RTOL


@pytest.mark.slow  # a 4-device subprocess (about 18 s)
def test_shard_batch_refuses_a_batch_the_devices_do_not_divide(steps):
    message = steps["uneven"]
    assert "30 examples" in message and "4 devices" in message and "multiple of 4" in message


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """``jaxnets train`` on 4 and on 1 of 4 devices, and in 2 processes of 2 devices, all side by side.

    Returns:
      ``{name: (run dir, stdout of process 0, stdout of process 1 or None)}`` for names 4, 1 and "2x2".
    """
    root = tmp_path_factory.mktemp("cli")
    runs = {4: root / "devices4", 1: root / "devices1", "2x2": root / "processes2"}
    procs = {n: [start(*jaxnets_cli("train", "--out", runs[n], "--devices", n, *CLI_SETTING))] for n in (4, 1)}
    flags = ["--coordinator", f"localhost:{free_port()}", "--num-processes", "2"]
    procs["2x2"] = [start(*jaxnets_cli("train", "--out", runs["2x2"], *CLI_SETTING, *flags, "--process-id", i),
                          devices=2) for i in (0, 1)]  # fmt: skip
    order = [(n, proc) for n, group in procs.items() for proc in group]
    finished: dict = {}
    for (n, _), (code, stdout, stderr) in zip(order, finish(*(proc for _, proc in order)), strict=True):
        assert code == 0, f"{n}: {stderr}"
        finished.setdefault(n, []).append(stdout)
    return {n: (runs[n], stdouts[0], stdouts[1] if len(stdouts) > 1 else None) for n, stdouts in finished.items()}


@pytest.mark.slow
def test_train_on_4_devices_exports_the_weights_of_1_device(cli_runs, tmp_path):
    weights = {n: export(cli_runs[n][0], tmp_path / f"{n}.safetensors") for n in (4, 1)}
    assert relative_error(weights[4], weights[1]) <= F32_RTOL
    initial = exchange.to_torch_arrays(training.build_model({"model": "lenet", "image_size": 32}, seed=0))
    assert relative_change({k: np.asarray(v) for k, v in initial.items()}, weights[1]) > CLI_MOVED
    for n in (4, 1):
        run, stdout, _ = cli_runs[n]
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["devices"] == n and metrics["processes"] == 1
        assert [h["devices"] for h in metrics["history"]] == [n]
        assert "devices" not in metrics["config"]  # not a setting of the run: it may resume on other devices
        assert ("data-parallel over 4 cpu devices" in stdout) == (n == 4)


@pytest.mark.slow
def test_train_in_two_processes_writes_the_run_of_one(cli_runs, tmp_path):
    run, stdout0, stdout1 = cli_runs["2x2"]
    assert "data-parallel over 4 cpu devices in 2 processes" in stdout0 and "epoch   1/1" in stdout0
    assert "epoch" not in stdout1 and "test accuracy" not in stdout1  # only process 0 prints
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["devices"] == 4 and metrics["processes"] == 2 and metrics["status"] == "complete"
    weights = export(run, tmp_path / "2x2.safetensors")
    assert relative_error(weights, export(cli_runs[1][0], tmp_path / "1.safetensors")) <= F32_RTOL


@pytest.fixture(scope="module")
def cli_errors(tmp_path_factory):
    """``jaxnets train`` with settings the devices refuse, in one 4-device subprocess: ``{name: (code, stderr)}``."""
    out = tmp_path_factory.mktemp("refused") / "run"
    calls = {"uneven": ["--devices", "4", "--batch-size", "30"], "too-many": ["--devices", "8"]}
    code = (
        "import contextlib, io, json, sys\nfrom jaxnets import cli\nresults = {}\n"
        f"for name, flags in {calls!r}.items():\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        f"        rc = cli.main(['train', '--out', {str(out)!r}, '--no-progress', *flags])\n"
        "    results[name] = (rc, err.getvalue())\n"
        "print(json.dumps(results))\n"
    )
    [(rc, stdout, stderr)] = finish(start("-c", code))
    assert rc == 0, stderr
    return out, json.loads(stdout.splitlines()[-1])


def test_train_refuses_a_batch_size_the_devices_do_not_divide(cli_errors):
    out, results = cli_errors
    code, err = results["uneven"]
    assert code == 1
    assert "--batch-size 30" in err and "4 devices" in err and "multiple of 4" in err and "--devices 3" in err
    assert not out.exists()  # refused before anything was written


def test_train_refuses_more_devices_than_visible_and_says_how_to_simulate_them(cli_errors):
    out, results = cli_errors
    code, err = results["too-many"]
    assert code == 1
    assert "8 devices but 4 are visible" in err and "XLA_FLAGS=--xla_force_host_platform_device_count=8" in err
    assert not out.exists()


def test_process_flags_without_a_coordinator_and_zero_devices_are_refused(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--num-processes", "2", "--process-id", "1"]) == 1
    err = capsys.readouterr().err
    assert "--num-processes 2 and --process-id 1 without a coordinator" in err and "--coordinator HOST:PORT" in err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--out", str(out), "--devices", "0"])
    assert exit_.value.code == 2 and "--devices must be at least 1; got 0" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_two_processes_step_like_one(tmp_path, x64):
    port, out = free_port(), tmp_path / "params.npz"
    # One device per process: the cross-process all-reduce alone (gloo), no in-process rendezvous beside it.
    procs = [start(HERE, "two-process", i, port, out, devices=1) for i in (0, 1)]
    for code, _, stderr in finish(*procs):
        assert code == 0, stderr
    info = json.loads(out.with_suffix(".json").read_text())
    assert info == {"processes": 2, "mesh_devices": 2, "batch_fully_addressable": False}
    together = dict(np.load(out))
    _, alone, _, _ = train_steps("lenet", "float64", "adam")
    assert next(iter(together.values())).dtype == np.float64
    assert relative_error(together, alone) <= F64_RTOL


if __name__ == "__main__":
    faulthandler.dump_traceback_later(TIMEOUT - 30, exit=True)  # a hang shows its stacks in the test's failure
    if sys.argv[1] == "steps":
        print(json.dumps(steps_worker()))
    elif sys.argv[1] == "two-process":
        two_process_worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(f"unknown worker {sys.argv[1]!r}; expected 'steps' or 'two-process'.")
