"""The end-to-end benchmark section (parity.bench.e2e): its timing of a whole process and its summary."""

import subprocess
import sys
from pathlib import Path

import pytest

from parity.bench import e2e


def test_run_once_times_the_first_step_line_the_first_epoch_and_reads_the_accuracy():
    # Lines 1 s apart, and 1 s before the exit: the timestamps must fall near the lines, not at the exit.
    # Half a second of slack either way, since a loaded machine may read a line late (a 0.3 s gap was
    # measured as 0.297 s once); the test is about which moment is timed, not how precisely.
    code = (
        "import time; print('starting', flush=True); time.sleep(1); print('Train Epoch: 1 [0/10]', flush=True); "
        "time.sleep(1); print('epoch   1/2  loss 1', flush=True); print('test accuracy 98.89% (355/359)', flush=True); "
        "time.sleep(1)"
    )
    r = e2e.run_once([sys.executable, "-c", code], e2e.FIRST_STEP["torch"], env=None, timeout=60)
    assert 1.0 <= r["first_step_s"] < r["first_epoch_s"] <= r["wall_s"]
    assert r["first_epoch_s"] - r["first_step_s"] >= 0.5  # timestamps as lines arrive, not at exit
    assert r["wall_s"] - r["first_epoch_s"] >= 0.5
    assert r["test_accuracy"] == pytest.approx(0.9889)


def test_run_once_reports_a_failed_command_with_its_stderr():
    with pytest.raises(RuntimeError, match=r"exited with 3:\n.*boom"):
        e2e.run_once([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], "x", None, 60)


def test_summary_keeps_the_cold_round_apart_and_takes_warm_medians():
    row = lambda r, wall: {"round": r, "wall_s": wall, "first_step_s": wall / 4, "first_epoch_s": wall / 2}
    runs = {"jaxnets": [row(0, 12.0), row(1, 4.0), row(2, 5.0), row(3, 100.0)],
            "torch": [row(0, 9.0), row(1, 10.0), row(2, 8.0), row(3, 9.0)]}  # fmt: skip
    doc = e2e.summarize(runs, epochs=40)
    assert doc["cold"]["jaxnets"]["wall_s"] == 12.0 and doc["cold"]["speedup_wall"] == pytest.approx(9 / 12)
    assert doc["warm"]["jaxnets"]["wall_s"] == 5.0 and doc["warm"]["torch"]["wall_s"] == 9.0
    assert doc["warm"]["speedup_wall"] == pytest.approx(9 / 5)
    table = e2e.format_table(doc)
    assert "cold" in table and "1.80x the torch script" in table


def test_environment_caches_bytecode_privately_and_gives_jaxnets_a_private_xla_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = e2e.environment(tmp_path)
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONPYCACHEPREFIX"] == str(tmp_path / "pyc")
    assert env["JAXNETS_CACHE_DIR"] == str(tmp_path / "xla")


def test_warm_up_runs_each_command_for_one_epoch_with_a_throwaway_xla_cache_and_names_a_failure(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, env, **kwargs):
        calls.append((cmd, env["JAXNETS_CACHE_DIR"]))
        failed = len(calls) == 4  # the torch command of the second warm-up
        return subprocess.CompletedProcess(cmd, 1 if failed else 0, "", "boom" if failed else "")

    monkeypatch.setattr(e2e.subprocess, "run", fake_run)
    env = e2e.environment(tmp_path)
    e2e.warm_bytecode(tmp_path, env, timeout=5)
    assert [c[0][c[0].index("--epochs") + 1] for c in calls] == ["1", "1"]
    assert {c[0][2] for c in calls} == {"jaxnets", "parity.bench.train_torch"}
    assert all(c[1] != env["JAXNETS_CACHE_DIR"] for c in calls), "round 0 must find jaxnets' XLA cache empty"
    with pytest.raises(RuntimeError, match="warm-up run of torch failed(.|\n)*boom"):
        e2e.warm_bytecode(tmp_path, env, timeout=5)  # its jaxnets run succeeds, its torch run fails


def test_the_torch_script_does_jaxnets_trains_default_job():
    from jaxnets.training.digits import OPTIMIZERS, TrainConfig
    from parity.bench import train_torch

    config, args = TrainConfig(), train_torch.parser().parse_args([])
    # What the script hard-codes: the seed's Net (LeNet), the digits, Adam at its default learning rate
    assert (config.model, config.data, config.optimizer, config.lr) == ("lenet", "digits", "adam", None)
    assert (args.epochs, args.batch_size, args.seed, args.lr) == (
        config.epochs, config.batch_size, config.seed, OPTIMIZERS["adam"][2])  # fmt: skip
    # and jaxnets train runs with its defaults: nothing but where to write, no bar, and the epochs of both
    cmd = e2e.commands(Path("run"), 7)["jaxnets"]
    assert cmd[cmd.index("train") + 1 :] == ["--out", "run", "--no-progress", "--epochs", "7"]
    assert e2e.commands(Path("run"), 7)["torch"][-2:] == ["--epochs", "7"]


@pytest.mark.slow
def test_collect_runs_both_commands_for_real_and_both_learn():
    doc = e2e.collect(rounds=2, epochs=2, timeout=600)
    for side in ("jaxnets", "torch"):
        assert [r["round"] for r in doc["runs"][side]] == [0, 1]
        for r in doc["runs"][side]:
            assert 0 < r["first_step_s"] <= r["first_epoch_s"] <= r["wall_s"], (side, r)
            assert r["test_accuracy"] >= 0.5, (side, r)  # two epochs; guessing gets 0.1
    assert doc["cold"]["speedup_wall"] > 0 and doc["warm"]["speedup_wall"] > 0
