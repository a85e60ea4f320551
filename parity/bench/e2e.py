"""End to end: ``jaxnets train`` against a plain PyTorch script of the same job, each a whole process.

``python -m parity.bench.e2e`` (or ``python -m parity.bench --e2e``) runs, in
alternating order over ``--rounds`` rounds, ``jaxnets train`` with its
defaults (digits, LeNet, Adam 1e-3, batch 32, 40 epochs) into a fresh run
directory, and :mod:`parity.bench.train_torch`. For both it records the wall
time of the whole command (process start to exit, imports included) and the
time to the first step: for torch its first-step log line; for jaxnets the
first epoch line, since its first compiled loop holds all of the first epoch's
steps (an upper bound on its first step). Round 0 runs jaxnets with an empty
persistent compilation cache (a private directory, ``JAXNETS_CACHE_DIR``), so
it pays every compilation: it is reported apart as the cold run. Later rounds
find the cache warm; their medians make the ratio. Both sides' Python bytecode
is cached in a private directory (see :func:`environment`), written by an untimed
one-epoch run of each command before round 0 (:func:`warm_bytecode`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import TORCH_ENV

FIRST_STEP = {"jaxnets": "epoch   1/", "torch": "Train Epoch: 1 [0/"}
"""The first stdout line that proves a finished first step, per side."""


def commands(run_dir: Path, epochs: int) -> dict[str, list[str]]:
    return {
        "jaxnets": [sys.executable, "-m", "jaxnets", "train", "--out", str(run_dir), "--no-progress",
                    "--epochs", str(epochs)],
        "torch": [sys.executable, "-m", "parity.bench.train_torch", "--epochs", str(epochs)],
    }  # fmt: skip


def run_once(cmd: list[str], first_marker: str, env: dict, timeout: float) -> dict:
    """One whole process: wall time, time to its first step and first epoch, and its final test accuracy."""
    start = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        first_step = first_epoch = None
        lines = []
        for line in proc.stdout:  # timestamps as the lines arrive (both sides flush per line)
            now = time.perf_counter() - start
            lines.append(line)
            if first_step is None and line.startswith(first_marker):
                first_step = now
            if first_epoch is None and line.startswith("epoch   1/"):
                first_epoch = now
        stderr = proc.stderr.read()
        code = proc.wait(timeout=timeout)
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {code}:\n{stderr[-3000:]}")
    final = next((x for x in reversed(lines) if x.startswith("test accuracy")), "")
    accuracy = float(final.split()[2].rstrip("%")) / 100 if final else None
    return {"wall_s": wall, "first_step_s": first_step, "first_epoch_s": first_epoch, "test_accuracy": accuracy}


def environment(tmp: Path) -> dict:
    """Both commands' environment: a private, initially empty XLA cache for jaxnets, and Python bytecode written
    once (by :func:`warm_bytecode`) and read after, for both sides, as an installed package's is.

    Without the bytecode cache, in a checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as on the machine these
    figures come from) every changed module of the repository was compiled from source in every round: measured
    2026-12-06, ``jaxnets train`` 5.27 s against 5.00 s median (6 alternating runs each, warm XLA cache).
    """
    env = dict(os.environ, JAXNETS_CACHE_DIR=str(tmp / "xla"), PYTHONPYCACHEPREFIX=str(tmp / "pyc"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_bytecode(tmp: Path, env: dict, timeout: float) -> None:
    """Run both commands once for one epoch, untimed, so that round 0 finds every module's bytecode written.

    ``PYTHONPYCACHEPREFIX`` points at an empty directory, so the first run of each side would otherwise compile
    every module it imports from source, torch's and jax's included, which ``pip install`` has done long before a
    user's first run. jaxnets writes its XLA programs to a throwaway cache here: round 0 stays cold for XLA.
    """
    warm_env = dict(env, JAXNETS_CACHE_DIR=str(tmp / "xla-warm-up"))
    for side, cmd in commands(tmp / "warm-up", 1).items():
        done = subprocess.run(cmd, env=warm_env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"the untimed warm-up run of {side} failed ({cmd}):\n{done.stderr[-2000:]}")


def collect(rounds: int, epochs: int = 40, timeout: float = 600) -> dict:
    """Alternate both commands over ``rounds`` rounds (round 0 with a cold jaxnets compilation cache)."""
    with tempfile.TemporaryDirectory(prefix="jaxnets-e2e-") as tmp:
        env = environment(Path(tmp))
        warm_bytecode(Path(tmp), env, timeout)
        runs: dict[str, list[dict]] = {"jaxnets": [], "torch": []}
        for r in range(rounds):
            order = ("jaxnets", "torch") if r % 2 == 0 else ("torch", "jaxnets")
            for side in order:
                run_dir = Path(tmp) / f"run{r}"
                side_env = dict(env, **TORCH_ENV) if side == "torch" else env
                result = run_once(commands(run_dir, epochs)[side], FIRST_STEP[side], side_env, timeout)
                runs[side].append({"round": r, **result})
                print(f"round {r} {side:>7}: {result['wall_s']:6.2f} s, first step {result['first_step_s']:.2f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
    return summarize(runs, epochs)


def summarize(runs: dict[str, list[dict]], epochs: int) -> dict:
    """Cold (round 0) and warm (later rounds, medians) figures per side, and jaxnets' speed-up over torch."""
    doc = {"epochs": epochs, "rounds": len(runs["jaxnets"]), "runs": runs, "cold": {}, "warm": {}}
    for side, rows in runs.items():
        doc["cold"][side] = {k: rows[0][k] for k in ("wall_s", "first_step_s", "first_epoch_s")}
        warm = rows[1:]
        if warm:
            doc["warm"][side] = {
                k: statistics.median(r[k] for r in warm) for k in ("wall_s", "first_step_s", "first_epoch_s")
            }
    for part in ("cold", "warm"):
        if "jaxnets" in doc[part] and "torch" in doc[part]:
            doc[part]["speedup_wall"] = doc[part]["torch"]["wall_s"] / doc[part]["jaxnets"]["wall_s"]
    return doc


def format_table(doc: dict) -> str:
    lines = [f"end to end, {doc['epochs']} epochs, {doc['rounds']} rounds (round 0: cold jaxnets cache)",
             f"{'':>6} {'side':>8} {'wall s':>8} {'1st step s':>11} {'1st epoch s':>12}"]  # fmt: skip
    for part in ("cold", "warm"):
        for side in ("jaxnets", "torch"):
            if side in doc[part]:
                r = doc[part][side]
                fs = f"{r['first_step_s']:.2f}" if r["first_step_s"] is not None else "-"
                lines.append(f"{part:>6} {side:>8} {r['wall_s']:8.2f} {fs:>11} {r['first_epoch_s']:12.2f}")
        if "speedup_wall" in doc[part]:
            lines.append(f"{part:>6} jaxnets train is {doc[part]['speedup_wall']:.2f}x the torch script (wall)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m parity.bench.e2e", description=__doc__)
    p.add_argument("--rounds", type=int, default=4, help="rounds of both commands, alternating (default: 4)")
    p.add_argument("--epochs", type=int, default=40, help="epochs for both (default: 40, jaxnets train's default)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--timeout", type=float, default=600, help="seconds per process (default: 600)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.epochs < 1:
        p.error(f"--rounds and --epochs must be at least 1; got {args.rounds} and {args.epochs}")
    doc = collect(args.rounds, args.epochs, args.timeout)
    print(format_table(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
