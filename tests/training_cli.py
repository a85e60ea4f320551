"""What the command-line training tests share (tests/test_training_cifar.py, tests/test_training_mnist_net.py)."""

import json
import shlex
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxnets import cli
from jaxnets.training import checkpoint

DOCS = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def doc_commands(title: str) -> list[str]:
    """The shell lines of docs/training.md's section ``## {title}``, comments dropped."""
    section = DOCS.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```sh\n")[1:]
    lines = [line.split("#")[0].strip() for block in blocks for line in block.split("```")[0].splitlines()]
    return [line for line in lines if line]


def train(args: list[str]) -> int:
    """``jaxnets train ARGS --no-progress`` in this process; its exit code."""
    return cli.main(["train", *args, "--no-progress"])


def run_doc_command(title: str, model: str, replace: dict[str, str], extra: list[str]) -> list[str]:
    """Run section ``title``'s ``jaxnets train --model MODEL`` line in this process, each key of ``replace`` in it
    replaced by its value and ``extra`` appended (argparse keeps an option's last value); its arguments."""
    (command, *_) = [c for c in doc_commands(title) if f"--model {model}" in c]
    for old, new in replace.items():
        command = command.replace(old, new)
    args = shlex.split(command)
    assert args[:2] == ["jaxnets", "train"], command
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXNETS_CACHE_DIR", "")  # a module's fixture runs before conftest's per-test one
        assert train([*args[2:], *extra]) == 0
    return [*args[2:], *extra]


def assert_other_commands_refuse(run: Path, tmp_path: Path, capsys, kind: str) -> None:
    """``jaxnets evaluate``, ``predict`` and ``export`` refuse a ``kind`` run by name and write nothing."""
    for command in (["evaluate", str(run)], ["predict", str(run), str(run / "curves.png")],
                    ["export", str(run), "--output", str(tmp_path / "w.safetensors")]):  # fmt: skip
        assert cli.main(command) == 1
        err = capsys.readouterr().err
        assert f"this is a {kind} run" in err and "LeNet's runs and weights only" in err, err
    assert not (run / "confusion.png").exists() and not (tmp_path / "w.safetensors").exists()


def checkpoint_arrays(out: Path, epoch: int) -> dict:
    """Every array of the run's checkpoint of ``epoch``, by its path in the checkpoint's tree."""
    state, _ = checkpoint.restore(out / "checkpoints", epoch)
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(state)}


def assert_resume_is_bit_identical(run: Path, args: list[str], tmp_path: Path, capsys, title: str, docs_out: str,
                                   held: str) -> None:  # fmt: skip
    """``args`` for 1 epoch, then section ``title``'s resume line (``--out DOCS_OUT --resume``, the settings from
    the checkpoint) to 2: every checkpoint array (``held`` among their paths) and the history but its seconds
    equal the 2-epoch ``run``'s."""
    out = tmp_path / "resumed"
    assert train([*args, "--out", str(out), "--epochs", "1"]) == 0
    (resume,) = [shlex.split(c) for c in doc_commands(title) if "--resume" in c]
    assert resume == ["jaxnets", "train", "--out", docs_out, "--resume"]  # the run's settings from its checkpoint
    assert train(["--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert "resuming" in capsys.readouterr().out
    resumed, straight = checkpoint_arrays(out, 2), checkpoint_arrays(run, 2)
    assert resumed.keys() == straight.keys() and any(held in k for k in resumed)
    for key in straight:
        np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)
    drop = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    history, straight_history = (json.loads((d / "metrics.json").read_text())["history"] for d in (out, run))
    assert [drop(h) for h in history] == [drop(h) for h in straight_history]
