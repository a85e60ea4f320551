"""``python -m parity``: run the parity check matrix, print one table, optionally write JSON and a plot.

Exits with 1 when any check fails, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from . import checks


def _table(rows: list[checks.Result]) -> str:
    headers = ("model", "check", "dtype", "max abs", "max rel", "tol", "result")
    cells = [
        (
            r.model,
            r.check,
            r.dtype,
            f"{r.max_abs:.2e}",
            f"{r.max_rel:.2e}",
            ("> " if r.must_differ else "") + f"{r.tol:.0e}",
            "PASS" if r.passed else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    numeric = {3, 4, 5}
    fmt = lambda row: "  ".join(
        c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
    )  # noqa: E731
    return "\n".join(line.rstrip() for line in [fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, cells)])


MODELS = (
    "lenet5",
    "lenet3",
    "lenet5_lax",
    "two_layer",
    "sequential",
    "dynamic",
    "bias_free",
    "mnist",
    "dcgan_generator",
    "dcgan_discriminator",
    "dcgan",
    "word_language_model",
    "transformer",
    "resnet18",
)


def _order(row: checks.Result) -> tuple:
    """Table order: by model, then forward/grad/vjp before optimizers and stages, float64 before float32."""
    kinds = ("forward", "grad", "vjp", "step", "update", "trajectory")
    kind = row.check.split("/")[0]
    return (
        MODELS.index(row.model) if row.model in MODELS else len(MODELS),
        kinds.index(kind) if kind in kinds else len(kinds),
        "stage" in row.check,
        row.dtype != "float64",
    )


def _versions() -> dict:
    import jax
    import torch

    import jaxnets

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "jaxnets": jaxnets.__version__,
        "platform": platform.platform(),
    }


def write_json(rows: list[checks.Result], path: str | Path, *, seconds: float, seed: int) -> None:
    """``{"summary": {...}, "versions": {...}, "results": [row, ...]}``, rows as :meth:`checks.Result.to_json`."""
    summary = {
        "total": len(rows),
        "passed": sum(r.passed for r in rows),
        "failed": sum(not r.passed for r in rows),
        "seconds": round(seconds, 2),
        "seed": seed,
    }
    doc = {"summary": summary, "versions": _versions(), "results": [r.to_json() for r in rows]}
    Path(path).write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")


def _panels(rows: list[checks.Result]) -> list[tuple[str, list[tuple[str, object, object]]]]:
    """(title, [(label, torch curve, jax curve)]) for each panel that has curves."""
    by_id = {r.id: r for r in rows if r.curves}
    stages = [
        (r.check.removeprefix("trajectory/").split(",")[0], r.curves["torch"], r.curves["jax"])
        for r in rows
        if r.curves and r.dtype == "float64" and "stage" in r.check and r.check != "trajectory/jax vs numpy"
    ]
    semantics = []
    for dtype in ("float64", "float32"):
        row = by_id.get(f"dynamic/{checks.SEMANTICS_CHECK}/{dtype}")
        if row is not None:
            c = row.curves
            semantics = [
                ("set_to_none=True / skip_unused", c["torch"], c["jax"]),
                ("set_to_none=False / plain Trainer", c["torch, set_to_none=False"], c["jax, plain Trainer"]),
            ]
            break
    optimizers = [
        (r.check.removeprefix("trajectory/"), r.curves["torch"], r.curves["jax"])
        for r in rows
        if r.curves and r.model == "two_layer" and r.dtype == "float32" and not r.check.startswith("trajectory/stage")
        and r.check.removeprefix("trajectory/") in ("sgd(momentum=0.9)", "adam", "rmsprop(centered=True)", "adagrad")
    ]  # fmt: skip
    panels = [
        ("seed 004 stages, float64: torch (solid) vs JAX (dashed)", stages),
        ("DynamicNet on one depth schedule: the two zero_grad semantics", semantics),
        ("two_layer optimizers, float32", optimizers),
    ]
    return [(title, curves) for title, curves in panels if curves]


def write_plot(rows: list[checks.Result], path: str | Path) -> None:
    """A PNG of torch's and JAX's loss curves overlaid, one panel per group, plus their relative gap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = _panels(rows)
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5.5 * (len(panels) + 1), 4.5), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels, strict=False):
        for i, (label, torch_curve, jax_curve) in enumerate(curves):
            color = f"C{i % 10}"
            steps = np.arange(len(torch_curve))
            ax.plot(steps, torch_curve, color=color, lw=1.6, label=label)
            ax.plot(steps, jax_curve, color=color, lw=1.6, ls="--", dashes=(3, 3))
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
    gap = axes[0][-1]
    for r in rows:
        if r.curves and r.check.startswith("trajectory"):
            t, j = np.asarray(r.curves["torch"]), np.asarray(r.curves["jax"])
            rel = np.maximum(np.abs(j - t) / np.max(np.abs(t)), 1e-18)
            gap.plot(np.arange(len(t)), rel, lw=0.8, color="C0" if r.dtype == "float64" else "C3", alpha=0.6)
    gap.set_yscale("log")
    gap.set_title("|jax - torch| / max|torch| per step (float64 blue, float32 red)", fontsize=10)
    gap.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:  # python -m parity compare MODULE:FACTORY: one model, layer by layer
        from .compare import main as compare_main

        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m parity",
        description="Check that jaxnets computes what the PyTorch tutorials compute: forward, gradients, VJPs, "
        "every optimizer and option, the seed-004 stages and DynamicNet's zero_grad semantics, in float64 and float32. "
        "`python -m parity compare MODULE:FACTORY` compares a model of your own layer by layer (see its --help).",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE (default: none)")
    parser.add_argument("--plot", metavar="FILE.png", help="also write torch's and JAX's loss curves (default: none)")
    parser.add_argument(
        "--only",
        metavar="SUBSTRING",
        action="append",
        help="run only rows whose id (model/check/dtype) contains SUBSTRING; repeat for several (default: all rows)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for data, weights and depths (default: 0)")
    parser.add_argument(
        "--list", action="store_true", help="print the row ids and exit, without running (default: off)"
    )
    parser.add_argument(
        "--serial",
        action="store_true",
        help="run JAX and torch one after the other instead of side by side in two threads (default: off)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print per-parameter errors for every row (default: failed rows only)",
    )
    args = parser.parse_args(argv)

    if args.list:
        print("\n".join(checks.row_ids()))
        return 0
    select = None if not args.only else (lambda row_id: any(s in row_id for s in args.only))
    job_list = checks.jobs(seed=args.seed, select=select)
    if not job_list:
        parser.error(f"--only {args.only} matches no row; see --list")

    from jaxnets._cache import enable_compilation_cache

    enable_compilation_cache()
    start = time.perf_counter()
    rows = checks.run_jobs(job_list, overlap=not args.serial)
    seconds = time.perf_counter() - start
    rows = sorted(rows, key=_order)
    print(_table(rows))
    failed = [r for r in rows if not r.passed]
    for r in failed if not args.verbose else rows:
        print("\n" + r.describe())
    print(f"\n{len(rows)} checks: {len(rows) - len(failed)} passed, {len(failed)} failed ({seconds:.1f} s)")
    if args.json:
        write_json(rows, args.json, seconds=seconds, seed=args.seed)
    if args.plot:
        write_plot(rows, args.plot)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
