"""The PyTorch half of the benchmark: the seed code eagerly and under torch.compile (run by ``parity.bench``)."""

from __future__ import annotations

import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from jaxnets import malloc_setting  # what glibc's malloc runs with, for the report
from jaxnets.tutorials import progression  # NumPy data only: jaxnets does not start XLA until asked

from .. import reference_models as ref
from .. import torch_models as tm
from .common import (
    D_IN,
    D_OUT,
    LENET_BATCHES,
    PORT_BATCH,
    PORT_OPTIMIZER,
    PORT_WORKLOADS,
    RESNET,
    TRANSFORMER,
    Cycle,
    H,
    N,
    dynamic_depths,
    emit,
    lenet_batches,
    lenet_data,
    lenet_parts,
    port_batches,
    port_inner,
    row,
    settings,
    worker_args,
)
from .timing import measure, timed

ARGS = worker_args("python -m parity.bench.worker_torch")
CFG = settings(ARGS.quick)
torch.set_num_threads(ARGS.threads)
torch.manual_seed(0)
random.seed(0)
# The same script on a GPU: tensors and models on DEVICE, and IEEE fp32 (no TF32),
# as the JAX worker asks of XLA. Not run on this project's CPU-only machines.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def _sync(result):
    """Wait for queued GPU work (CUDA runs asynchronously); nothing to wait for on the CPU."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return result


def _kernels(step) -> int | None:
    """CUDA kernels one call of ``step`` launches, counted by the profiler; None on the CPU."""
    if DEVICE.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        _sync(step())
    return sum(e.device_type == torch.autograd.DeviceType.CUDA for e in prof.events())


def gemm_peak() -> float:
    n = CFG["gemm_n"]
    a = torch.randn(n, n, device=DEVICE)
    t = measure(lambda: torch.mm(a, a), _sync, steps=1, repeats=max(CFG["repeats"], 10))
    return 2 * n**3 / (t["min_us"] * 1e-6) / 1e9


def _data():
    d = progression.make_data(0)
    return (torch.tensor(a, dtype=torch.float32, device=DEVICE) for a in (d.x, d.y, d.w1, d.w2))


def _steps(step, inner):
    def run():  # every step waited for (a no-op on the CPU, where torch's eager ops are synchronous)
        for _ in range(inner):
            out = _sync(step())
        return out

    return run


def _eager_and_compiled(workload: str, batch: int, make_step) -> list[dict]:
    """Rows for a step run eagerly and, unless --quick, under torch.compile (compile time apart).

    ``make_step(compiled)`` may also take ``parts=k``: then a ``torch-accum``
    row (eager) accumulates the gradient over ``k`` parts of the batch, the
    work jaxnets' Trainer does when it splits the batch itself, for a like-for-like ratio.
    ``make_step.inner``: steps per timed call, where not ``CFG["inner"]``.
    """
    inner = getattr(make_step, "inner", CFG["inner"])
    eager = make_step(False)
    t = measure(_steps(eager, inner), _sync, steps=inner, repeats=CFG["repeats"])
    rows = [row(workload, batch, "torch-eager", t, kernels_per_step=_kernels(eager))]
    parts = getattr(make_step, "parts", 1)
    if parts > 1:
        accum = make_step(False, parts=parts)
        t = measure(_steps(accum, inner), _sync, steps=inner, repeats=CFG["repeats"])
        rows.append(row(workload, batch, "torch-accum", t, kernels_per_step=_kernels(accum), microbatches=parts))
    if not ARGS.quick:
        try:
            torch._dynamo.reset()
            step = make_step(True)
            _, first = timed(lambda: _sync(step()))
            t = measure(_steps(step, inner), _sync, steps=inner, repeats=CFG["repeats"])
            graphs = torch._dynamo.utils.counters["stats"].get("unique_graphs")
            rows.append(row(workload, batch, "torch-compile", t, compile_s=max(first - t["median_us"] * 1e-6, 0.0),
                            compiles=graphs, kernels_per_step=_kernels(step)))  # fmt: skip
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
    model = tm.two_layer_sequential(D_IN, H, D_OUT).to(DEVICE)
    return _optim_step(model, torch.optim.Adam(model.parameters(), lr=1e-4), x, y, compiled)


def two_layer_sgd(compiled: bool):
    x, y, _, _ = _data()
    model = tm.TwoLayerNet(D_IN, H, D_OUT).to(DEVICE)
    return _optim_step(model, torch.optim.SGD(model.parameters(), lr=1e-4), x, y, compiled)


def dynamic_net(compiled: bool):
    x, y, _, _ = _data()
    model = tm.DynamicNet(D_IN, H, D_OUT).to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    # The JAX worker's sequence of depths (the seed draws random.randint(0, 3) here): the same work on both sides.
    return _optim_step(model, opt, x, y, compiled, depth_fn=Cycle(dynamic_depths()))


def _lenet_batches(batch: int):
    """A new batch of images and labels at every call, cycling through the JAX rows' very batches.

    The batches are sliced (views) before the clock starts, as the JAX worker's are.
    """
    images, labels = lenet_data(batch, lenet_batches(batch, CFG["loop_steps"]))  # the JAX worker's very arrays
    xs = torch.from_numpy(images.transpose(0, 1, 4, 2, 3).copy()).to(DEVICE)  # (n, B, 1, 32, 32), channels first
    ys = torch.from_numpy(labels).to(DEVICE)
    n = len(labels)
    return Cycle([(xs[i], ys[i]) for i in range(n)])


def lenet_train(batch: int):
    def make(compiled: bool, parts: int = 1):
        model = tm.Net().to(DEVICE)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        next_batch = _lenet_batches(batch)
        if parts > 1:  # the parts' views, also made before the clock starts
            next_batch = Cycle([tuple(zip(x.chunk(parts), y.chunk(parts), strict=True)) for x, y in next_batch.items])
        fwd = torch.compile(model) if compiled else model

        def step():
            x, y = next_batch()
            loss = F.cross_entropy(fwd(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        def accumulated_step():  # the same update from `parts` equal parts: the mean of their gradients
            opt.zero_grad()
            total = 0.0
            for x, y in next_batch():
                loss = F.cross_entropy(fwd(x), y) / parts
                loss.backward()
                total += loss.detach()
            opt.step()
            return total

        return accumulated_step if parts > 1 else step

    make.parts = lenet_parts(batch)
    return make


def lenet_forward(batch: int):
    def make(compiled: bool):
        model = tm.Net().to(DEVICE)
        next_batch = _lenet_batches(batch)
        fwd = torch.compile(model) if compiled else model

        def step():
            with torch.no_grad():
                return fwd(next_batch()[0])

        return step

    return make


def port_train(workload: str):
    """A ported model's train step (``resnet18_train``, ``transformer_train``): the torch original, SGD, cross-entropy.

    The model is ``parity.reference_models``' original in train mode (BatchNorm
    on batch statistics, dropout on); each step takes the next of the batches
    :func:`~parity.bench.common.port_batches` draws, the JAX worker's arrays,
    moved to ``DEVICE`` before the clock starts.
    """

    def make(compiled: bool):
        torch.manual_seed(0)
        if workload == "resnet18_train":
            model = ref.resnet18(num_classes=RESNET["num_classes"])
        else:
            model = ref.TransformerClassifier(**TRANSFORMER)
        model = model.to(DEVICE).train()
        opt = torch.optim.SGD(model.parameters(), **PORT_OPTIMIZER)
        batches = port_batches(workload, ARGS.quick)
        next_batch = Cycle([tuple(torch.from_numpy(a).to(DEVICE) for a in b) for b in batches])
        fwd = torch.compile(model) if compiled else model

        def step():
            *inputs, y = next_batch()
            loss = F.cross_entropy(fwd(*inputs), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        return step

    make.inner = port_inner(ARGS.quick)
    return make


def dispatch_tiny(compiled: bool):
    model = tm.TwoLayerNet(4, 4, 2).to(DEVICE)
    x, y = torch.ones(2, 4, device=DEVICE), torch.ones(2, 2, device=DEVICE)
    return _optim_step(model, torch.optim.SGD(model.parameters(), lr=1e-2), x, y, compiled)


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
    for name in PORT_WORKLOADS:
        workloads[name] = (PORT_BATCH, port_train(name))
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
            "device": str(DEVICE),
            "malloc": malloc_setting(),
            "gemm_gflops": gemm_peak(),
            "seconds": time.perf_counter() - start,
            "rows": rows,
        }
    )


if __name__ == "__main__":
    main()
