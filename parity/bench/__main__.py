"""``python -m parity.bench``: time PyTorch and jaxnets side by side, each in its own process."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

IMPLS = ("torch-eager", "torch-compile", "jaxnets-jit", "jaxnets-scan")


def _run_worker(module: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", module, "--threads", str(args.threads), "--only", args.only]
    if args.quick:
        cmd.append("--quick")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    env.pop("JAX_ENABLE_X64", None)
    print(f"running {module} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"parity.bench: {module} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"parity.bench: {module} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def collect(args: argparse.Namespace) -> dict:
    """Run both workers and merge their rows into the benchmark's JSON document."""
    start = time.perf_counter()
    results = [_run_worker("parity.bench.worker_torch", args), _run_worker("parity.bench.worker_jax", args)]
    peak = max(r["gemm_gflops"] for r in results)
    rows = [r for result in results for r in result["rows"]]
    flops = {(r["workload"], r["batch"]): r["flops"] for r in rows if r.get("flops")}
    eager = {(r["workload"], r["batch"]): r["median_us"] for r in rows if r["impl"] == "torch-eager"}
    for r in rows:
        key = (r["workload"], r["batch"])
        if r.get("flops") is None and key in flops:
            r["flops"] = flops[key]  # the same math: XLA's count for the JAX step of this workload
        if "median_us" in r:
            r["speedup_vs_torch_eager"] = eager[key] / r["median_us"] if key in eager else None
            r["gflops"] = r["flops"] / (r["median_us"] * 1e-6) / 1e9 if r.get("flops") else None
            r["peak_fraction"] = r["gflops"] / peak if r["gflops"] else None
    return {
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gemm_peak_gflops": peak,
            "gemm_gflops": {r["framework"]: r["gemm_gflops"] for r in results},
            "versions": {k: v for r in results for k, v in r["versions"].items()},
            "jax_device": next(r["device"] for r in results if r["framework"] == "jax"),
            "quick": args.quick,
        },
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }


def format_table(doc: dict) -> str:
    m = doc["machine"]
    head = (
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads each; fp32 GEMM peak "
        f"{m['gemm_peak_gflops']:.1f} GFLOP/s (max of torch and XLA, measured in this run)"
    )
    cols = f"{'workload':<20}{'batch':>6}  {'impl':<14}{'median us':>12}{'spread %':>10}{'vs eager':>10}"
    cols += f"{'GFLOP/s':>9}{'% peak':>8}{'compile s':>11}{'compiles':>10}"
    lines = [head, "", cols, "-" * len(cols)]
    order = {impl: i for i, impl in enumerate(IMPLS)}
    for r in sorted(doc["rows"], key=lambda r: (r["workload"], r["batch"], order.get(r["impl"], 9))):
        if "median_us" not in r:
            lines.append(
                f"{r['workload']:<20}{r['batch']:>6}  {r['impl']:<14}  unavailable: {r.get('error', '?')[:60]}"
            )
            continue
        spread = 100 * (r["max_us"] - r["min_us"]) / r["median_us"]
        fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
        lines.append(
            f"{r['workload']:<20}{r['batch']:>6}  {r['impl']:<14}{r['median_us']:>12.1f}{spread:>10.0f}"
            f"{fmt(r['speedup_vs_torch_eager'], '>9.2f') + 'x':>10}{fmt(r['gflops'], '>9.1f'):>9}"
            f"{fmt(r['peak_fraction'] and 100 * r['peak_fraction'], '>7.0f'):>8}"
            f"{fmt(r['compile_s'], '>10.2f'):>11}{fmt(r['compiles'], '>9'):>10}"
        )
    return "\n".join(lines)


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["workload"], r["batch"]) for r in doc["rows"]})
    labels = [f"{w}\n@{b}" for w, b in keys]
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(keys)), 4.5))
    width = 0.8 / len(IMPLS)
    for i, impl in enumerate(IMPLS):
        values = []
        for key in keys:
            r = next((r for r in doc["rows"] if (r["workload"], r["batch"]) == key and r["impl"] == impl), None)
            values.append(r["speedup_vs_torch_eager"] if r and r.get("speedup_vs_torch_eager") else 0)
        ax.bar([k + (i - 1.5) * width for k in range(len(keys))], values, width, label=impl)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("speed-up over PyTorch eager (higher is better)")
    ax.set_xticks(range(len(keys)), labels, fontsize=7, rotation=30, ha="right")
    ax.legend(fontsize=8)
    ax.set_title(f"parity.bench on {doc['machine']['cpu']} ({doc['machine']['threads']} threads)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run in under a minute: few repeats, short loops")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE", help="write a bar chart PNG of the speed-ups to FILE")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="threads for each framework (default: all cores)"
    )
    parser.add_argument("--only", default="", help="run only workloads whose name contains this (default: all)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per framework (default: 1800)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1; got {args.threads}")
    doc = collect(args)
    print(format_table(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    if args.plot:
        plot(doc, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
