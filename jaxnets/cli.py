"""The ``jaxnets`` command: ``jaxnets tutorial``, ``jaxnets progression``."""

from __future__ import annotations

import sys

from . import progression, tutorial

COMMANDS = {
    "tutorial": (tutorial.main, 'walk through the "Neural Networks" tutorial (LeNet) in JAX'),
    "progression": (progression.main, 'run the seven stages of "Learning PyTorch with examples"'),
}


def _usage() -> str:
    lines = ["usage: jaxnets COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'jaxnets COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"jaxnets: unknown command {name!r}; expected one of {', '.join(COMMANDS)}.\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    return COMMANDS[name][0](rest)
