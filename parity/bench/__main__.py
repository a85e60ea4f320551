"""``python -m parity.bench``: time PyTorch and jaxnets side by side, each in its own process.

Then a data-parallel section times LeNet's train step on
``Trainer(mesh=jaxnets.distributed.mesh(n))`` for each n in ``--devices``, one
process per n (simulated devices on a CPU, where the rows show correctness,
not speed-up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import DP_IMPL, DP_WORKLOAD, PORT_BATCH, PORT_WORKLOADS, TORCH_ENV, settings

IMPLS = ("torch-eager", "torch-accum", "torch-compile", "jaxnets-jit", "jaxnets-scan", "jaxnets-lax", "jax-bare-jit")
"""``torch-accum``: torch eager accumulating the gradient over the parts jaxnets' Trainer splits the batch into
(where it does), the same work as the JAX rows; ``jaxnets-lax``: LeNet's jit step on ``impl="lax"`` (``lax.conv``),
the reference the default rewrites beat; ``jax-bare-jit``: the tiny model's compiled step called as a bare
``jax.jit`` function, the floor of ``Trainer.step``'s dispatch."""

TWO_LAYER = ("two_layer_manual", "two_layer_autograd", "two_layer_adam", "two_layer_sgd")
KINDS = {"jaxnets-jit": "step", "jaxnets-scan": "loop"}
"""The step (``Trainer.step``, one jitted call per step) and the whole loop (``Trainer.run``, one ``lax.scan``;
for the forward pass ``forward_batches``, one ``lax.map``) are judged apart: the step must reach each target alone."""


def targets(rows: list[dict], two_layer_gemm_gflops: float | None = None) -> list[dict]:
    """The targets, checked against this run's rows (ratios measured in the same run).

    Every speed-up target is checked twice, on the step (``jaxnets-jit``) and on
    the whole loop (``jaxnets-scan``), each against torch eager. The two-layer
    loops must reach 80% of the rate of their own five matrix products alone
    (``two_layer_gemm_gflops``, measured in the same run); ``Trainer.step`` on a
    tiny model at most 1.5x the time of a bare ``jax.jit`` call of the same
    compiled function. The ported models' train steps (ResNet-18, the
    Transformer encoder; issue #18) have a step row only, which must reach
    1.5x torch eager. Compile time is reported (:func:`worst_compile`), with no target.

    Returns:
      One ``{"target", "value", "met", "impl"}`` per target; ``met`` is None when a row is missing.
    """

    def find(workload, batch, impl):
        return next((r for r in rows if (r["workload"], r["batch"], r["impl"]) == (workload, batch, impl)
                     and "median_us" in r), None)  # fmt: skip

    out = []

    def check(name, r, value, bound, above=True, fmt="{:.2f}x", impl=None):
        met = None if value is None else (value >= bound if above else value <= bound)
        out.append({"target": name, "value": None if value is None else fmt.format(value), "met": met,
                    "impl": impl or (r["impl"] if r else None)})  # fmt: skip

    def speedups(w, b, bound):
        for impl, kind in KINDS.items():
            r = find(w, b, impl)
            check(f"{w}@{b} {kind}: >= {bound:g}x torch eager", r, r and r.get("speedup_vs_torch_eager"), bound,
                  impl=impl)  # fmt: skip

    for w in TWO_LAYER:
        speedups(w, 64, 2.0)
        r = find(w, 64, "jaxnets-scan")
        share = r["gflops"] / two_layer_gemm_gflops if r and r.get("gflops") and two_layer_gemm_gflops else None
        check(f"{w}@64 loop: >= 80% of its 5 products' rate", r, share, 0.8, fmt="{:.0%}", impl="jaxnets-scan")
    for w in ("lenet_train", "lenet_forward"):
        for b, bound in ((1, 5.0), (64, 2.0), (256, 2.0)):
            speedups(w, b, bound)
    speedups("dynamic_net", 64, 2.0)
    for impl, kind in KINDS.items():
        r = find("dynamic_net", 64, impl)
        check(f"dynamic_net@64 {kind}: 1 compilation", r, r and r.get("compiles"), 1, above=False, fmt="{}", impl=impl)
    for w in PORT_WORKLOADS:
        r = find(w, PORT_BATCH, "jaxnets-jit")
        check(f"{w}@{PORT_BATCH} step: >= 1.5x torch eager", r, r and r.get("speedup_vs_torch_eager"), 1.5,
              impl="jaxnets-jit")  # fmt: skip
    step, bare = find("dispatch_tiny", 2, "jaxnets-jit"), find("dispatch_tiny", 2, "jax-bare-jit")
    ratio = step["median_us"] / bare["median_us"] if step and bare else None
    check("dispatch: Trainer.step <= 1.5x a bare jax.jit call", step, ratio, 1.5, above=False, impl="jaxnets-jit")
    return out


def worst_compile(rows: list[dict]) -> dict | None:
    """The longest compile time of a jaxnets step (``jaxnets-jit`` or ``jaxnets-lax``): reported, no target."""
    found = [r for r in rows if r["impl"] in ("jaxnets-jit", "jaxnets-lax") and r.get("compile_s") is not None]
    worst = max(found, key=lambda r: r["compile_s"], default=None)
    return None if worst is None else {"workload": worst["workload"], "batch": worst["batch"],
                                       "impl": worst["impl"], "compile_s": worst["compile_s"]}  # fmt: skip


def _run_worker(module: str, args: argparse.Namespace, extra: tuple[str, ...] = (), env: dict | None = None) -> dict:
    """Run one worker process and return the JSON document it printed last.

    Args:
      module: the worker, e.g. ``"parity.bench.worker_jax"``.
      args: the benchmark's options (threads, quick, only, timeout).
      extra: more command-line arguments for the worker, e.g. ``("--dp", "4")``.
      env: environment variables to set on top of this process's.
    """
    cmd = [sys.executable, "-m", module, "--threads", str(args.threads), "--only", args.only, *extra]
    if args.quick:
        cmd.append("--quick")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), **(env or {})}
    env.pop("JAX_ENABLE_X64", None)
    name = " ".join([module, *extra])
    print(f"running {name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"parity.bench: {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"parity.bench: {name} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def merge_rounds(docs: list[dict]) -> dict:
    """One worker's documents from several rounds -> one: each row's median over the rounds' medians.

    ``min_us`` and ``max_us`` become the extremes over every round (so the spread
    shows the drift between rounds too), ``compile_s`` the median; the GEMM rates
    and the ResNet-18 products' time are the best round's (they measure what the
    hardware allows). Rows and fields are otherwise the first round's.
    """
    if len(docs) == 1:
        return docs[0]
    merged = {**docs[0], "rounds": len(docs)}
    for key in ("gemm_gflops", "two_layer_gemm_gflops"):
        if docs[0].get(key) is not None:
            merged[key] = max(d[key] for d in docs)
    if docs[0].get("resnet18_products"):  # likewise the fastest round's
        merged["resnet18_products"] = min((d["resnet18_products"] for d in docs), key=lambda p: p["ms"])
    by_key = {}
    for d in docs:
        for r in d["rows"]:
            by_key.setdefault((r["workload"], r["batch"], r["impl"]), []).append(r)
    rows = []
    for r in docs[0]["rows"]:
        same = by_key[(r["workload"], r["batch"], r["impl"])]
        r = {**r, "rounds": len(same)}
        if "median_us" in r:
            r["median_us"] = statistics.median(x["median_us"] for x in same)
            r["min_us"] = min(x["min_us"] for x in same)
            r["max_us"] = max(x["max_us"] for x in same)
        compiles = [x["compile_s"] for x in same if x.get("compile_s") is not None]
        if compiles:
            r["compile_s"] = statistics.median(compiles)
        rows.append(r)
    merged["rows"] = rows
    return merged


def parse_devices(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``: the device counts of the data-parallel section (empty: none).

    Raises:
      ValueError: a count that is not a positive integer, or one given twice.
    """
    counts = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--devices takes positive integers separated by commas, e.g. 1,2,4; got {text!r}")
        if int(part) in counts:
            raise ValueError(f"--devices lists {part} twice ({text!r}); give each device count once")
        counts.append(int(part))
    return counts


def _data_parallel(args: argparse.Namespace, jax_result: dict) -> tuple[list[dict], dict]:
    """The data-parallel section: one ``worker_jax --dp N`` process per device count in ``args.devices``.

    On a CPU the N devices are simulated (``--xla_force_host_platform_device_count``,
    set before XLA starts, hence one process per count); on an accelerator the
    counts beyond the visible devices are skipped with a note.

    Returns:
      The rows and the JSON document's ``data_parallel`` entry.
    """
    platform, visible = jax_result["platform"], jax_result["device_count"]
    simulated = platform == "cpu"
    wanted = args.devices if args.only in DP_WORKLOAD else []
    run = wanted if simulated else [n for n in wanted if n <= visible]
    skipped = [n for n in wanted if n not in run]
    rows = []
    for n in run:
        env = {}
        if simulated:
            flags = os.environ.get("XLA_FLAGS", "")
            env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
        result = _run_worker("parity.bench.worker_jax", args, ("--dp", str(n)), env)
        rows.extend(result["rows"])
    for r in rows:
        one = next((o for o in rows if o["devices"] == 1 and o["batch"] == r["batch"]), None)
        r["scaling_vs_1_device"] = r["images_per_s"] / one["images_per_s"] if one else None
    finals = {r["devices"]: r["final_loss"] for r in rows}
    base = finals[min(finals)] if finals else None
    if simulated:
        note = (
            f"On a CPU the devices are simulated (XLA_FLAGS=--xla_force_host_platform_device_count=N): they share "
            f"the same {os.cpu_count()} cores and {args.threads} threads, so these rows show the data-parallel code "
            "path and its correctness, not a speed-up."
        )
    else:
        note = f"{visible} {platform} device(s) visible: images/s over 1 device is the data-parallel speed-up."
    if skipped:
        note += f" Skipped {', '.join(map(str, skipped))} device(s): only {visible} {platform} device(s) visible."
    if not wanted:
        note = "Not run (--devices is empty, or --only excludes " + DP_WORKLOAD + ")."
    section = {
        "platform": platform,
        "simulated": simulated,
        "devices": run,
        "skipped": skipped,
        "batch": settings(args.quick)["dp_batch"],
        "threads": args.threads,
        "final_loss_max_rel_diff": max((abs(f - base) / abs(base) for f in finals.values()), default=None),
        "note": note,
    }
    return rows, section


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
    # Rounds alternate the frameworks (torch, jax, torch, jax, ...): on a shared VM the speed of the
    # machine drifts over minutes (measured: the same JAX loop at 120 us, then 230 us, then 120 us again),
    # and alternating lets both frameworks sample the same drift.
    rounds = [
        [_run_worker("parity.bench.worker_torch", args, env=TORCH_ENV), _run_worker("parity.bench.worker_jax", args)]
        for _ in range(args.rounds)
    ]
    results = [merge_rounds([r[i] for r in rounds]) for i in range(2)]
    dp_rows, dp_section = _data_parallel(args, results[1])
    peak = max(r["gemm_gflops"] for r in results)
    rows = [r for result in results for r in result["rows"]] + dp_rows
    flops = {(r["workload"], r["batch"]): r["flops"] for r in rows if r.get("flops")}
    eager = {(r["workload"], r["batch"]): r["median_us"] for r in rows if r["impl"] == "torch-eager"}
    accum = {(r["workload"], r["batch"], r.get("microbatches")): r["median_us"] for r in rows
             if r["impl"] == "torch-accum" and "median_us" in r}  # fmt: skip
    for r in rows:
        key = (r["workload"], r["batch"])
        if r.get("flops") is None and key in flops:
            r["flops"] = flops[key]  # the same math: XLA's count for the JAX step of this workload
        if "median_us" in r:
            r["speedup_vs_torch_eager"] = eager[key] / r["median_us"] if key in eager else None
            r["gflops"] = r["flops"] / (r["median_us"] * 1e-6) / 1e9 if r.get("flops") else None
            r["peak_fraction"] = r["gflops"] / peak if r["gflops"] else None
            if r["impl"].startswith("jaxnets") and r.get("microbatches", 1) > 1:
                # Different work from torch eager's whole batch: also the ratio against torch doing the same parts.
                same = accum.get((*key, r["microbatches"]))
                r["speedup_vs_torch_same_parts"] = same / r["median_us"] if same else None
    two_layer_gemm = next(r.get("two_layer_gemm_gflops") for r in results if r["framework"] == "jax")
    products = next(r.get("resnet18_products") for r in results if r["framework"] == "jax")
    return {
        "targets": targets(rows, two_layer_gemm),
        "compile": worst_compile(rows),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gemm_peak_gflops": peak,
            "gemm_gflops": {r["framework"]: r["gemm_gflops"] for r in results},
            # The two-layer step's matrix products alone, at its small shapes: the realistic ceiling of those rows.
            "two_layer_gemm_gflops": two_layer_gemm,
            # The ResNet-18 step's matrix products alone (the fastest round): the ceiling of its jit step.
            "resnet18_products": products,
            "versions": {k: v for r in results for k, v in r["versions"].items()},
            "jax_device": next(r["device"] for r in results if r["framework"] == "jax"),
            "torch_device": next(r.get("device") for r in results if r["framework"] == "torch"),
            # Each worker's malloc: JAXNETS_MALLOC changes the jax worker's; the torch worker runs at glibc's defaults.
            "malloc": {r["framework"]: r.get("malloc") for r in results if r.get("malloc")},
            "quick": args.quick,
            "rounds": args.rounds,
        },
        "rows": rows,
        "data_parallel": dp_section,
        "seconds": time.perf_counter() - start,
    }


def format_table(doc: dict) -> str:
    m = doc["machine"]
    head = (
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads each; fp32 GEMM peak "
        f"{m['gemm_peak_gflops']:.1f} GFLOP/s (max of torch and XLA, measured in this run)"
    )
    if m.get("rounds", 1) > 1:
        head += f"\n{m['rounds']} rounds alternating torch and jax; each row is the median over the rounds"
    if m.get("malloc"):
        head += "\nmalloc: " + "; ".join(f"{fw} worker {how}" for fw, how in sorted(m["malloc"].items()))
    if m.get("two_layer_gemm_gflops"):
        share = m["two_layer_gemm_gflops"] / m["gemm_peak_gflops"]
        head += (
            f"\nthe two-layer step's 5 matrix products alone, at its shapes (64x1000x100 ...): "
            f"{m['two_layer_gemm_gflops']:.1f} GFLOP/s = {share:.0%} of peak, the ceiling of the two-layer rows"
        )
    if m.get("resnet18_products"):
        p = m["resnet18_products"]
        eager = [r["median_us"] for r in doc["rows"]
                 if (r["workload"], r["impl"]) == ("resnet18_train", "torch-eager") and "median_us" in r]  # fmt: skip
        rate = f" ({p['gflop'] / p['ms'] * 1e3:.0f} GFLOP/s)" if p.get("gflop") else ""
        head += f"\nthe ResNet-18 step's {p['products']} matrix products alone, at its shapes: {p['ms']:.1f} ms{rate}"
        if p.get("update_ms") is not None:  # not in runs before 2026-12-07's afternoon
            head += (
                f", and SGD's update of its {p['params'] / 1e6:.1f} M parameters alone: {p['update_ms']:.1f} ms; "
                f"{p['ms'] + p['update_ms']:.1f} ms together"
            )
        head += ", the ceiling of its jit step"
        if eager:
            head += f"; 1.5x torch eager needs the whole step in {eager[0] / 1.5e3:.1f} ms"
    cols = f"{'workload':<20}{'batch':>6}  {'impl':<14}{'median us':>12}{'spread %':>10}{'vs eager':>10}"
    cols += f"{'GFLOP/s':>9}{'% peak':>8}{'compile s':>11}{'compiles':>10}{'kernels':>9}"
    lines = [head, "", cols, "-" * len(cols)]
    order = {impl: i for i, impl in enumerate(IMPLS)}
    single = [r for r in doc["rows"] if r["impl"] != DP_IMPL]
    for r in sorted(single, key=lambda r: (r["workload"], r["batch"], order.get(r["impl"], 9))):
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
            f"{fmt(r.get('kernels_per_step'), '>8'):>9}"
        )
    for r in single:
        if r.get("microbatches", 1) > 1 and r["impl"] != DP_IMPL:
            k, part = r["microbatches"], r["batch"] // r["microbatches"]
            if r["impl"] == "torch-accum":
                lines.append(f"{r['workload']}@{r['batch']} torch-accum: torch eager accumulating the gradient over "
                             f"{k} parts of {part} images, the work of the jaxnets rows")  # fmt: skip
                continue
            same = r.get("speedup_vs_torch_same_parts")
            lines.append(
                f"{r['workload']}@{r['batch']} {r['impl']}: DIFFERENT WORK from torch-eager: the default Trainer "
                f"splits the batch itself into {k} parts of {part} images (the same update: the loss is a mean); "
                f"against torch-accum (the same {k} parts) " + (f"{same:.2f}x" if same else "-")
            )
    lines += _data_parallel_table(doc)
    lines += ["", "targets" + (" (--quick: a smoke run, not a measurement)" if m.get("quick") else "")]
    for t in doc.get("targets", []):
        verdict = {True: "met", False: "MISSED", None: "not run"}[t["met"]]
        lines.append(f"  {verdict:<8}{t['target']:<58}{t['value'] or '-':>10}  {t.get('impl') or ''}")
    if worst := doc.get("compile"):
        lines.append(f"  compile time, reported with no target: worst {worst['compile_s']:.2f} s "
                     f"({worst['workload']}@{worst['batch']} {worst['impl']})")  # fmt: skip
    return "\n".join(lines)


def _data_parallel_table(doc: dict) -> list[str]:
    """The data-parallel section of the table: one line per device count, then the losses and the note."""
    section = doc.get("data_parallel")
    if not section:
        return []
    rows = sorted((r for r in doc["rows"] if r["impl"] == DP_IMPL), key=lambda r: r["devices"])
    lines = ["", f"data parallel: {DP_WORKLOAD}, {DP_IMPL} = Trainer(mesh=jaxnets.distributed.mesh(n)), "
             f"global batch {section['batch']} split over n devices ({section['platform']})"]  # fmt: skip
    if rows:
        cols = f"{'devices':>8}{'per device':>12}{'median us':>12}{'spread %':>10}{'images/s':>11}{'vs 1 dev':>10}"
        cols += f"{'compile s':>11}{'compiles':>10}{'kernels':>9}{'threads/dev':>13}{'final loss':>13}"
        lines += [cols, "-" * len(cols)]
    for r in rows:
        spread = 100 * (r["max_us"] - r["min_us"]) / r["median_us"]
        scaling = f"{r['scaling_vs_1_device']:.2f}x" if r.get("scaling_vs_1_device") is not None else "-"
        lines.append(
            f"{r['devices']:>8}{r['batch'] // r['devices']:>12}{r['median_us']:>12.1f}{spread:>10.0f}"
            f"{r['images_per_s']:>11.0f}{scaling:>10}{r['compile_s']:>11.2f}{r['compiles']:>10}"
            f"{r['kernels_per_step'] if r['kernels_per_step'] is not None else '-':>9}"
            f"{r['threads_per_device']:>13}{r['final_loss']:>13.7f}"
        )
    if len(rows) > 1:
        lines.append(
            f"final loss after {rows[0]['steps']} steps from the same weights and batch: largest relative difference "
            f"from {rows[0]['devices']} device(s) {section['final_loss_max_rel_diff']:.1e} "
            "(only float32 rounding may differ: the gradient sums run in another order)"
        )
    lines.append(section["note"])
    return lines


def plot(doc: dict, path: str) -> None:
    """A PNG of the speed-ups over PyTorch eager, and of the data-parallel images/s when that section ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = [r for r in doc["rows"] if r["impl"] != DP_IMPL]
    dp = sorted((r for r in doc["rows"] if r["impl"] == DP_IMPL and "median_us" in r), key=lambda r: r["devices"])
    keys = sorted({(r["workload"], r["batch"]) for r in single})
    labels = [f"{w}\n@{b}" for w, b in keys]
    width_ratios = [max(8, 0.9 * len(keys))] + ([max(2.5, 0.8 * len(dp))] if dp else [])
    fig, axes = plt.subplots(1, len(width_ratios), figsize=(sum(width_ratios), 4.5), squeeze=False,
                             gridspec_kw={"width_ratios": width_ratios})  # fmt: skip
    ax = axes[0][0]
    width = 0.8 / len(IMPLS)
    for i, impl in enumerate(IMPLS):
        values = []
        for key in keys:
            r = next((r for r in single if (r["workload"], r["batch"]) == key and r["impl"] == impl), None)
            values.append(r["speedup_vs_torch_eager"] if r and r.get("speedup_vs_torch_eager") else 0)
        offset = (i - (len(IMPLS) - 1) / 2) * width
        ax.bar([k + offset for k in range(len(keys))], values, width, label=impl)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("speed-up over PyTorch eager (higher is better)")
    ax.set_xticks(range(len(keys)), labels, fontsize=7, rotation=30, ha="right")
    ax.legend(fontsize=8)
    ax.set_title(f"parity.bench on {doc['machine']['cpu']} ({doc['machine']['threads']} threads)", fontsize=9)
    if dp:
        _plot_data_parallel(axes[0][1], dp, doc["data_parallel"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_data_parallel(ax, rows: list[dict], section: dict) -> None:
    ax.bar([str(r["devices"]) for r in rows], [r["images_per_s"] for r in rows], color="tab:gray")
    for i, r in enumerate(rows):
        if r.get("scaling_vs_1_device") is not None:
            ax.annotate(
                f"{r['scaling_vs_1_device']:.2f}x", (i, r["images_per_s"]), ha="center", va="bottom", fontsize=7
            )
    ax.set_xlabel("devices" + (" (simulated: same cores)" if section["simulated"] else ""))
    ax.set_ylabel("images/s (higher is better)")
    ax.set_title(f"{DP_WORKLOAD}, global batch {section['batch']}", fontsize=9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run in under a minute: few repeats, short loops")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE", help="write a bar chart PNG of the speed-ups to FILE")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="threads for each framework (default: all cores)"
    )
    parser.add_argument("--only", default="", help="run only workloads whose name contains this (default: all)")
    parser.add_argument(
        "--devices",
        default="1,2,4",
        help=f"device counts for the data-parallel section ({DP_WORKLOAD}), comma-separated; on a CPU they are "
        "simulated, on an accelerator counts beyond the visible devices are skipped; '' skips the section "
        "(default: 1,2,4)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds of both workers, alternating torch and jax; each row is the median over the rounds "
        "(default: 3, with --quick 1)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker process (default: 1800)")
    parser.add_argument(
        "--e2e", action="store_true", help="also run the end-to-end section (python -m parity.bench.e2e), rounds + 1"
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1; got {args.threads}")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1; got {args.rounds}")
    try:
        args.devices = parse_devices(args.devices)
    except ValueError as exc:
        parser.error(str(exc))
    batch = settings(args.quick)["dp_batch"]
    if uneven := [n for n in args.devices if batch % n]:
        parser.error(
            f"--devices {','.join(map(str, uneven))}: the global batch of {batch} cannot be split evenly over "
            f"{' or '.join(map(str, uneven))} devices; use counts that divide {batch} (e.g. 1,2,4,8)"
        )
    doc = collect(args)
    print(format_table(doc))
    if args.e2e:  # jaxnets train against a PyTorch script, whole processes; its own module
        from . import e2e

        doc["e2e"] = e2e.collect(args.rounds + 1)
        print(e2e.format_table(doc["e2e"]))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    if args.plot:
        plot(doc, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
