"""What the command-line training tests share (tests/test_training_cifar.py, tests/test_training_mnist_net.py)."""

import shlex
from pathlib import Path

import pytest

from jaxnets import cli

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
