"""The PyTorch half of the benchmark: the seed code eagerly and under torch.compile (run by ``parity.bench``)."""

from __future__ import annotations

import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from jaxnets import progression  # NumPy data only: jaxnets does not start XLA until asked

from .. import torch_models as tm
from .common import D_IN, D_OUT, LENET_BATCHES, H, N, emit, row, settings, worker_args
from .timing import measure, timed

ARGS = worker_args("python -m parity.bench.worker_torch")
CFG = settings(ARGS.quick)
torch.set_num_threads(ARGS.threads)
torch.manual_seed(0)
random.seed(0)


def gemm_peak() -> float:
    n = CFG["gemm_n"]
    a = torch.randn(n, n)
    t = measure(lambda: torch.mm(a, a), lambda r: r, steps=1, repeats=max(CFG["repeats"], 10))
    return 2 * n**3 / (t["min_us"] * 1e-6) / 1e9


def _data():
    d = progression.make_data(0)
    return (torch.tensor(a, dtype=torch.float32) for a in (d.x, d.y, d.w1, d.w2))


def _steps(step, inner):
    def run():
        for _ in range(inner):
            out = step()
        return out

    return run


def _eager_and_compiled(workload: str, batch: int, make_step) -> list[dict]:
    """Rows for a step run eagerly and, unless --quick, under torch.compile (compile time apart)."""
    inner = CFG["inner"]
    rows = [row(workload, batch, "torch-eager", measure(_steps(make_step(False), inner), lambda r: r, steps=inner,
                                                        repeats=CFG["repeats"]))]  # fmt: skip
    if not ARGS.quick:
        try:
            torch._dynamo.reset()
            step = make_step(True)
            _, first = timed(step)
            t = measure(_steps(step, inner), lambda r: r, steps=inner, repeats=CFG["repeats"])
            graphs = torch._dynamo.utils.counters["stats"].get("unique_graphs")
            rows.append(row(workload, batch, "torch-compile", t, compile_s=max(first - t["median_us"] * 1e-6, 0.0),
                            compiles=graphs))  # fmt: skip
        except Exception as exc:  # torch.compile is not available everywhere (no compiler, unsupported op)
            rows.append({"workload": workload, "batch": batch, "impl": "torch-compile", "error": repr(exc)[:300]})
    return rows


def two_layer_manual(compiled: bool):
    x, y, w1, w2 = _data()
    lr = 1e-6

    def step():  # seed block 2, one iteration
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum()
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h = grad_y_pred.mm(w2.t())
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        w1.sub_(lr * grad_w1)
        w2.sub_(lr * grad_w2)
        return loss

    return torch.compile(step) if compiled else step


def two_layer_autograd(compiled: bool):
    x, y, w1, w2 = _data()
    w1.requires_grad_(True)
    w2.requires_grad_(True)
    lr = 1e-6

    def forward():
        return (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()

    fwd = torch.compile(forward) if compiled else forward

    def step():  # seed block 3, one iteration
        loss = fwd()
        loss.backward()
        with torch.no_grad():
            w1.sub_(lr * w1.grad)  # the seed's `w1 -= ...`, which a closure cannot rebind
            w2.sub_(lr * w2.grad)
            w1.grad.zero_()
            w2.grad.zero_()
        return loss

    return step


def _optim_step(model, optimizer, x, y, compiled, depth_fn=None):
    criterion = torch.nn.MSELoss(reduction="sum")
    fwd = torch.compile(model) if compiled else model

    def step():
        y_pred = fwd(x) if depth_fn is None else fwd(x, depth_fn())
        loss = criterion(y_pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def two_layer_adam(compiled: bool):
    x, y, _, _ = _data()
    model = tm.two_layer_sequential(D_IN, H, D_OUT)
    return _optim_step(model, torch.optim.Adam(model.parameters(), lr=1e-4), x, y, compiled)


def two_layer_sgd(compiled: bool):
    x, y, _, _ = _data()
    model = tm.TwoLayerNet(D_IN, H, D_OUT)
    return _optim_step(model, torch.optim.SGD(model.parameters(), lr=1e-4), x, y, compiled)


def dynamic_net(compiled: bool):
    x, y, _, _ = _data()
    model = tm.DynamicNet(D_IN, H, D_OUT)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    return _optim_step(model, opt, x, y, compiled, depth_fn=lambda: random.randint(0, 3))


def lenet_train(batch: int):
    def make(compiled: bool):
        model = tm.Net()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = torch.randn(batch, 1, 32, 32), torch.randint(0, 10, (batch,))
        fwd = torch.compile(model) if compiled else model

        def step():
            loss = F.cross_entropy(fwd(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        return step

    return make


def lenet_forward(batch: int):
    def make(compiled: bool):
        model = tm.Net()
        x = torch.randn(batch, 1, 32, 32)
        fwd = torch.compile(model) if compiled else model

        def step():
            with torch.no_grad():
                return fwd(x)

        return step

    return make


def dispatch_tiny(compiled: bool):
    model = tm.TwoLayerNet(4, 4, 2)
    return _optim_step(
        model, torch.optim.SGD(model.parameters(), lr=1e-2), torch.ones(2, 4), torch.ones(2, 2), compiled
    )


def main() -> None:
    workloads = {
        "two_layer_manual": (N, two_layer_manual),
        "two_layer_autograd": (N, two_layer_autograd),
        "two_layer_adam": (N, two_layer_adam),
        "two_layer_sgd": (N, two_layer_sgd),
        "dynamic_net": (N, dynamic_net),
        "dispatch_tiny": (2, dispatch_tiny),
    }
    for b in LENET_BATCHES:
        workloads[f"lenet_train@{b}"] = (b, lenet_train(b))
        workloads[f"lenet_forward@{b}"] = (b, lenet_forward(b))
    rows = []
    start = time.perf_counter()
    for name, (batch, make) in workloads.items():
        if ARGS.only in name:
            rows.extend(_eager_and_compiled(name.split("@")[0], batch, make))
    emit(
        {
            "framework": "torch",
            "versions": {"torch": torch.__version__, "numpy": np.__version__},
            "threads": torch.get_num_threads(),
            "gemm_gflops": gemm_peak(),
            "seconds": time.perf_counter() - start,
            "rows": rows,
        }
    )


if __name__ == "__main__":
    main()
