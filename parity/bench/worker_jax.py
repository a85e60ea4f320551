"""The JAX half of the benchmark: jaxnets' jit step and whole-loop scan. Run by ``python -m parity.bench``.

With ``--dp N`` it runs only the data-parallel section instead: LeNet's train
step on ``Trainer(mesh=jaxnets.distributed.mesh(N))``, one row per process
(the device count of a process is fixed when XLA starts).
"""

from __future__ import annotations

import functools
import os
import re

from .common import (
    D_IN,
    D_OUT,
    DP_IMPL,
    DP_WORKLOAD,
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
    threads_per_device,
    worker_args,
)

ARGS = worker_args("python -m parity.bench.worker_jax", data_parallel=True)
# Threads before jax is imported: XLA:CPU reads its settings once. PJRT_NPROC sizes the
# intra-op pool (default: every core; XLA_FLAGS has no flag for it), which all devices
# of the process share; multi-threaded Eigen lets one op use several of its threads.
_OP_THREADS = ARGS.threads if ARGS.dp is None else threads_per_device(ARGS.threads, ARGS.dp)
os.environ["PJRT_NPROC"] = str(ARGS.threads)
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={'true' if _OP_THREADS > 1 else 'false'}"
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jaxnets  # noqa: E402
from jaxnets import ports  # noqa: E402
from jaxnets.losses import cross_entropy, mse_loss  # noqa: E402
from jaxnets.models import _fastconv  # noqa: E402
from jaxnets.nn import functional as F  # noqa: E402
from jaxnets.training import distributed, inference  # noqa: E402
from jaxnets.tutorials import progression  # noqa: E402

from .timing import measure, timed  # noqa: E402

# IEEE fp32 matmuls and convolutions, as torch with TF32 off: on a GPU the default
# would use TF32 or bf16 passes; on the CPU this changes nothing.
jax.config.update("jax_default_matmul_precision", "highest")
CFG = settings(ARGS.quick)
COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: (
        COMPILES.append(kw.get("fun_name", "?")) if event == "/jax/core/compile/backend_compile_duration" else None
    )
)


def _flops(lowered) -> float | None:
    cost = lowered.cost_analysis()
    if isinstance(cost, list):  # older jax returned one dict per device
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


# Entry-computation instructions that launch no kernel: they only name, bundle or
# reinterpret buffers.
_NO_KERNEL = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "opt-barrier"}


def kernels(lowered) -> int:
    """Kernels the compiled step launches: the top-level instructions of XLA's optimized program.

    On a GPU each is one kernel launch (a fusion, a cuBLAS or cuDNN custom call, a
    copy); on the CPU each is one loop nest or library call. A ``while`` or
    ``conditional`` counts once here, though its body launches kernels of its own.
    """
    text = lowered.compile().as_text()
    entry = text[text.index("\nENTRY ") :]
    body = entry[entry.index("{") + 1 : entry.index("\n}")]
    ops = []
    for line in body.splitlines():
        if " = " not in line:
            continue
        # "f32[64,10]{1,0} fusion(%a), ..." or "(f32[], f32[4]) tuple(...)": the first word followed by "("
        op = re.search(r"\s([a-z][\w-]*)\(", " " + line.split(" = ", 1)[1])
        if op:
            ops.append(op.group(1))
    return sum(op not in _NO_KERNEL for op in ops)


def gemm_peak() -> float:
    """fp32 GEMM GFLOP/s of this process's XLA, square matrices."""
    n = CFG["gemm_n"]
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    t = measure(lambda: mm(a, a), jax.block_until_ready, steps=1, repeats=max(CFG["repeats"], 10))
    return 2 * n**3 / (t["min_us"] * 1e-6) / 1e9


def two_layer_gemm() -> float:
    """GFLOP/s of the two-layer step's five matrix products alone, at the tutorial's shapes.

    The forward ``x @ w1`` (64x1000 @ 1000x100) and ``h @ w2``, and the backward
    ``h.T @ g``, ``g @ w2.T`` and ``x.T @ gh``, looped in a ``lax.scan`` (as the
    scan rows are, so no per-call dispatch counts) with nothing else but a tiny
    update of ``w1`` that keeps each iteration dependent on the last: what the
    two-layer loops could reach if everything but their matrix products were
    free. Both layouts of ``w1`` are timed, the tutorial's ``(d_in, hidden)`` and
    the ``(hidden, d_in)`` that jaxnets' hand-written and autograd loops carry,
    and the faster counts. Set against :func:`gemm_peak` (large square
    matrices), it shows how much of the peak these small, skinny shapes allow.
    """
    keys = jax.random.split(jax.random.key(0), 4)
    x, w1 = jax.random.normal(keys[0], (N, D_IN)), jax.random.normal(keys[1], (D_IN, H))
    w2, g = jax.random.normal(keys[2], (H, D_OUT)), jax.random.normal(keys[3], (N, D_OUT))
    loop = CFG["loop_steps"]

    def products(transposed):
        def body(w, _):  # every product depends on the carried weights: none is hoisted out of the loop
            w1, w2 = w
            h = x @ (w1.T if transposed else w1)
            gh = g @ w2.T
            y, gw2 = h @ w2, h.T @ g
            gw1 = gh.T @ x if transposed else x.T @ gh
            return (w1 - 1e-9 * gw1, w2 - 1e-9 * gw2), y.sum()

        return jax.jit(lambda w1, w2: jax.lax.scan(body, (w1, w2), length=loop))

    flops = 2 * (N * D_IN * H + N * H * D_OUT + H * N * D_OUT + N * D_OUT * H + D_IN * N * H)
    best_us = min(
        measure(functools.partial(mm, w, w2), jax.block_until_ready, steps=loop, repeats=CFG["repeats"])["min_us"]
        for mm, w in ((products(False), w1), (products(True), w1.T.copy()))
    )
    return flops / (best_us * 1e-6) / 1e9


def _timed_row(workload, batch, impl, first, run, *, steps, first_steps=1, counts=lambda name: True, **extra):
    """One row: ``first()`` traces and compiles, then ``run()`` (``steps`` steps per call) is timed.

    ``compile_s`` is the first call's time less ``first_steps`` steps at the
    timed median; ``compiles`` counts the XLA compilations, during both, of
    the functions whose name ``counts`` accepts.
    """
    COMPILES.clear()
    _, first_s = timed(lambda: jax.block_until_ready(first()))
    t = measure(run, jax.block_until_ready, steps=steps, repeats=CFG["repeats"])
    compile_s = max(first_s - t["median_us"] * 1e-6 * first_steps, 0.0)
    return row(workload, batch, impl, t, compile_s=compile_s, compiles=sum(map(counts, COMPILES)), **extra)


def _cost(jitted, *args) -> dict:
    """FLOPs and kernels per call of ``jitted`` on ``args``; call it after the timed first call, which compiled."""
    lowered = jitted.lower(*args)
    return {"flops": _flops(lowered), "kernels_per_step": kernels(lowered)}


def _step_rows(
    workload: str,
    batch: int,
    trainer: jaxnets.Trainer,
    data: tuple,
    per_step: tuple = (),
    scan: bool = True,
    loop: int | None = None,
    inner: int | None = None,
) -> list[dict]:
    """Rows for ``trainer.step`` and (with ``scan``) ``trainer.run``: time, compile time, compilations, FLOPs.

    ``data`` goes to every step; ``per_step`` holds arrays with a leading axis of
    steps, step ``i`` taking entry ``i`` of each, cycling, the position carried
    from one timed call to the next (as the torch worker's). ``loop``: steps of
    the whole-loop row (default ``CFG["loop_steps"]``); ``inner``: steps per
    timed call (default ``CFG["inner"]``). Every step of the jit row is waited
    for before the next starts, as torch's eager step is.
    """
    inner, loop = inner or CFG["inner"], loop or CFG["loop_steps"]
    # Sliced before the clock starts (indexing a device array is a dispatch of its own), as torch's are.
    per_call = [data + tuple(a[i] for a in per_step) for i in range(min(map(len, per_step), default=1))]
    step_args, next_args = per_call[0], Cycle(per_call)

    def steps():
        for _ in range(inner):
            loss = jax.block_until_ready(trainer.step(*next_args()))
        return loss

    jit_row = _timed_row(workload, batch, "jaxnets-jit", lambda: trainer.step(*step_args), steps, steps=inner,
                         counts=lambda name: "_step_impl" in name)  # fmt: skip
    jit_row |= _cost(trainer._step, trainer._leaves, *step_args)
    if not scan:
        return [jit_row]
    xs = tuple(a[:loop] for a in per_step)
    run = lambda: trainer.run(loop, *data, per_step=xs)  # noqa: E731
    scan_row = _timed_row(workload, batch, "jaxnets-scan", run, run, steps=loop, first_steps=loop,
                          counts=lambda name: "_run_impl" in name, flops=jit_row["flops"])  # fmt: skip
    return [jit_row, scan_row]


def _bare_jit_row(workload: str, batch: int, trainer: jaxnets.Trainer, data: tuple) -> dict:
    """The same compiled step as ``trainer.step``, called as a bare ``jax.jit`` function: the floor of dispatch.

    ``trainer._step`` is the ``jax.jit`` of the trainer's pure step over the flat
    list of arrays; calling it directly skips only ``Trainer.step``'s own Python
    (unpacking, storing the new state). The dispatch target compares the two.
    """
    inner = CFG["inner"]
    state = {"leaves": trainer._leaves}

    def call():
        state["leaves"], loss, _ = trainer._step(state["leaves"], *data)
        return loss

    def steps():
        for _ in range(inner):
            loss = jax.block_until_ready(call())
        return loss

    counts = lambda name: "_step_impl" in name  # noqa: E731
    out = _timed_row(workload, batch, "jax-bare-jit", call, steps, steps=inner, counts=counts)
    trainer._leaves = state["leaves"]  # the donated buffers' successors
    return out


def _bias_free_rows(workload: str, grad_fn) -> list[dict]:
    """The hand-written and autograd stages: bias-free weights, lr 1e-6, plain SGD, as in the seed.

    Both rows run jaxnets.progression's own step, which carries ``w1`` in
    PyTorch's ``(hidden, d_in)`` layout; the whole-loop row is the stages' loop
    itself, taking and returning the tutorial's layout.
    """
    d = progression.make_data(0)
    x, y = jnp.asarray(d.x, jnp.float32), jnp.asarray(d.y, jnp.float32)
    w = tuple(jnp.asarray(a, jnp.float32) for a in (d.w1, d.w2))
    lr, inner, loop = 1e-6, CFG["inner"], CFG["loop_steps"]
    carried = lambda: (w[0].T.copy(), w[1].copy())  # noqa: E731 - the step's layout; `w` itself stays intact
    step = jax.jit(progression._sgd_update(grad_fn, lr), donate_argnums=0)
    run = progression._sgd_loop(grad_fn, loop, lr)
    state, first = {"carry": carried(), "w": w}, carried()  # copied before the clock starts

    def steps():
        for _ in range(inner):
            state["carry"], loss = step(state["carry"], x, y)
            jax.block_until_ready(loss)
        return loss

    def loop_once():
        state["w"], losses = run(state["w"], x, y)
        return losses

    jit_row = _timed_row(workload, N, "jaxnets-jit", lambda: step(first, x, y), steps,
                         steps=inner, counts=lambda name: "update" in name)  # fmt: skip
    jit_row |= _cost(step, carried(), x, y)
    scan_row = _timed_row(workload, N, "jaxnets-scan", lambda: run(w, x, y), loop_once, steps=loop, first_steps=loop,
                          counts=lambda name: "loop" in name, flops=jit_row["flops"])  # fmt: skip
    return [jit_row, scan_row]


def _sum_mse(m, x, y, *args):
    return mse_loss(m(x, *args), y, reduction="sum")


def workloads() -> dict:
    d = progression.make_data(0)
    x, y = jnp.asarray(d.x, jnp.float32), jnp.asarray(d.y, jnp.float32)
    # The one sequence of depths the torch worker steps through too, as int32 scalars: one program for all.
    depths = jnp.asarray(dynamic_depths(), jnp.int32)
    dyn_loss = lambda m, x, y, depth: _sum_mse(m, x, y, depth)
    out = {
        "two_layer_manual": lambda: _bias_free_rows("two_layer_manual", progression._manual_grads),
        "two_layer_autograd": lambda: _bias_free_rows(
            "two_layer_autograd", jax.value_and_grad(progression._bias_free_loss)
        ),
        "two_layer_adam": lambda: _step_rows(
            "two_layer_adam",
            N,
            jaxnets.Trainer(
                jaxnets.two_layer_sequential(D_IN, H, D_OUT, rngs=nnx.Rngs(0)), jaxnets.optim.adam(1e-4), _sum_mse
            ),
            (x, y),
        ),  # fmt: skip
        "two_layer_sgd": lambda: _step_rows(
            "two_layer_sgd",
            N,
            jaxnets.Trainer(jaxnets.TwoLayerNet(D_IN, H, D_OUT, rngs=nnx.Rngs(0)), jaxnets.optim.sgd(1e-4), _sum_mse),
            (x, y),
        ),  # fmt: skip
        "dynamic_net": lambda: _step_rows(
            "dynamic_net",
            N,
            jaxnets.Trainer(
                jaxnets.DynamicNet(D_IN, H, D_OUT, rngs=nnx.Rngs(0)), jaxnets.optim.sgd(1e-4, momentum=0.9), dyn_loss
            ),
            (x, y),
            per_step=(depths,),
            loop=min(CFG["loop_steps"], len(depths)),
        ),  # fmt: skip
        "dispatch_tiny": _dispatch_rows,
    }
    for b in LENET_BATCHES:
        out[f"lenet_train@{b}"] = lambda b=b: _lenet_train(b)
        out[f"lenet_forward@{b}"] = lambda b=b: _lenet_forward(b)
    for name in PORT_WORKLOADS:
        out[name] = lambda name=name: _port_train(name)
    return out


def _port_loss(m, *batch):
    *inputs, y = batch
    return F.cross_entropy(m(*inputs), y)


def _port_train(workload: str) -> list[dict]:
    """A ported model's jit step (``resnet18_train``, ``transformer_train``): ``jaxnets.ports``, SGD, cross-entropy.

    The port in train mode (BatchNorm's running statistics and dropout's RNG
    state carried through the step as the trainer's non-parameter state),
    ``Trainer.step`` (``jax.jit`` over the flat list of arrays), stepping
    through the torch worker's batches (:func:`~parity.bench.common.port_batches`).
    No whole-loop row: the targets judge the step.
    """
    if workload == "resnet18_train":
        model = ports.resnet18(num_classes=RESNET["num_classes"], rngs=nnx.Rngs(0))
    else:
        model = ports.TransformerClassifier(**TRANSFORMER, rngs=nnx.Rngs(0))
    model.train()
    trainer = jaxnets.Trainer(model, jaxnets.optim.sgd(**PORT_OPTIMIZER), _port_loss)
    batches = port_batches(workload, ARGS.quick)
    # Stacked per argument (int64 -> int32: JAX without x64), one leading axis of steps, sliced before the clock.
    per_step = tuple(
        jnp.asarray(np.stack(arrays).astype(np.int32) if arrays[0].dtype == np.int64 else np.stack(arrays))
        for arrays in zip(*batches, strict=True)
    )
    return _step_rows(workload, PORT_BATCH, trainer, (), per_step=per_step, scan=False, inner=port_inner(ARGS.quick))


def _products(jaxpr, platform: str) -> list[tuple]:
    """Every ``dot_general`` of ``jaxpr`` (nested jaxprs included) as ``(lhs aval, rhs aval, params)``.

    Of a ``lax.platform_dependent`` switch only ``platform``'s branch counts (the branch that runs there);
    any other conditional is refused, since which branch runs would depend on the data.
    """
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append((eqn.invars[0].aval, eqn.invars[1].aval, eqn.params))
            continue
        if eqn.primitive.name == "cond":
            platforms = eqn.params.get("branches_platforms")
            if not platforms:
                raise ValueError("_products: a data-dependent conditional; its products cannot be counted")
            # the branch naming the platform, else the default (named None)
            i = next((i for i, ps in enumerate(platforms) if ps and platform in ps), platforms.index(None))
            found += _products(eqn.params["branches"][i].jaxpr, platform)
            continue
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _products(inner, platform)
    return found


def resnet18_products() -> dict | None:
    """The ResNet-18 train step's matrix products alone, at its shapes: the ceiling of its jit step.

    Every ``dot_general`` that the benchmark's ``resnet18_train`` step computes
    (:func:`_port_train`; on the CPU its convolutions are products of patches,
    see :func:`jaxnets.nn.functional.conv`), each on random operands of its
    shapes, in one jitted program with nothing else in it, so XLA may run
    independent products side by side as it can in the step. Fastest of the
    repeats (as :func:`two_layer_gemm`): what the step would take if everything
    but its products were free. None off the CPU, where the convolutions are
    XLA's own and not products.
    """
    if jax.default_backend() != "cpu":
        return None
    model = ports.resnet18(num_classes=RESNET["num_classes"], rngs=nnx.Rngs(0))
    model.train()
    trainer = jaxnets.Trainer(model, jaxnets.optim.sgd(**PORT_OPTIMIZER), _port_loss)
    batch = tuple(jnp.asarray(a) for a in port_batches("resnet18_train", True)[0])
    jaxpr = jax.make_jaxpr(trainer._step_impl)(trainer._leaves, *batch)
    found = _products(jaxpr.jaxpr, jax.default_backend())
    avals = [aval for f in found for aval in f[:2]]
    keys = jax.random.split(jax.random.key(0), len(avals))
    operands = [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, avals, strict=True)]
    params = [f[2] for f in found]

    def products(ops):
        return [jax.lax.dot_general(a, b, **p) for a, b, p in zip(ops[::2], ops[1::2], params, strict=True)]

    run = jax.jit(products)
    repeats = max(CFG["repeats"], 10)
    t = measure(lambda: run(operands), jax.block_until_ready, steps=1, repeats=repeats)
    flops = _flops(run.lower(operands))  # XLA's count, as for the rows
    params, opt_state, _ = jax.tree.unflatten(trainer._treedef, trainer._leaves)
    return {"products": len(found), "ms": t["min_us"] / 1e3, "gflop": flops / 1e9 if flops else None,
            "update_ms": _update_alone(trainer._tx, params, opt_state, repeats),
            "params": sum(p.size for p in jax.tree.leaves(params))}  # fmt: skip


def _update_alone(tx, params, opt_state, repeats: int) -> float:
    """Milliseconds of the optimizer's update alone (``tx.update`` and ``optax.apply_updates``), as the step makes
    it: one jitted call, parameters and state donated; gradients the size of the parameters. Fastest repeat."""

    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    run = jax.jit(update, donate_argnums=(0, 1))
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    state = [jax.tree.map(jnp.copy, (params, opt_state))]  # copies: donation deletes what it is given

    def call():
        state[0] = run(*state[0], grads)
        return state[0]

    return measure(call, jax.block_until_ready, steps=1, repeats=repeats)["min_us"] / 1e3


def _dispatch_rows() -> list[dict]:
    """``Trainer.step`` on a tiny model, and the same compiled function called bare: dispatch and its floor."""
    trainer = jaxnets.Trainer(jaxnets.TwoLayerNet(4, 4, 2, rngs=nnx.Rngs(0)), jaxnets.optim.sgd(1e-2), _sum_mse)
    data = (jnp.ones((2, 4)), jnp.ones((2, 2)))
    step_row = _step_rows("dispatch_tiny", 2, trainer, data, scan=False)
    return step_row + [_bare_jit_row("dispatch_tiny", 2, trainer, data)]


def _lenet_batch(b, steps=None):
    """A batch of ``b`` images and labels; with ``steps``, that many distinct batches stacked: the torch worker's
    (:func:`~parity.bench.common.lenet_data`), labels as int32 (JAX without x64)."""
    images, labels = lenet_data(b, steps or 1)
    images, labels = jnp.asarray(images), jnp.asarray(labels.astype(np.int32))
    return (images, labels) if steps else (images[0], labels[0])


def _lenet_loop(b):
    """Steps of LeNet's whole-loop rows, and the distinct batches every LeNet row cycles through."""
    return lenet_batches(b, CFG["loop_steps"])


def _lenet_loss(m, x, y):
    return cross_entropy(m(x), y)


def _lenet_flops(b: int, parts: int, lowered_at) -> float | None:
    """FLOPs of a LeNet fast-path call at batch ``b`` in ``parts`` parts, from ``lowered_at(batch)`` (a lowered call).

    XLA's cost analysis counts a loop's body once, not once per trip, and the
    fast path runs a batch above 64 images as a loop over 64-image chunks (or
    a trainer's parts as a loop over parts): such a batch is counted on one
    part and scaled, so GFLOP/s stay comparable across batch sizes.
    """
    flops = _flops(lowered_at(b // parts))
    return flops * parts if flops is not None else None


def _lenet_train(b):
    def trainer(impl):  # the default Trainer: it splits a batch into parts by itself where that is exact
        return jaxnets.Trainer(jaxnets.LeNet(impl=impl, rngs=nnx.Rngs(0)), jaxnets.optim.sgd(0.01), _lenet_loss)

    # A distinct batch every step, as in real training: with one batch for every step, XLA
    # hoists the work that depends on the images alone out of the compiled loop (measured
    # at batch 64: 13% faster), which PyTorch's eager loop cannot do.
    loop = _lenet_loop(b)
    batches = _lenet_batch(b, steps=loop)
    fast = trainer("fast")
    parts = fast.parts(*(a[0] for a in batches))
    rows = _step_rows("lenet_train", b, fast, (), per_step=batches, loop=loop)
    if parts > 1:  # counted on one part (see _lenet_flops); the torch worker's torch-accum row takes the same parts
        if parts != lenet_parts(b):
            raise SystemExit(f"worker_jax: Trainer split lenet_train@{b} into {parts} parts, the torch "
                             f"worker's torch-accum row into {lenet_parts(b)}: update common.lenet_parts")  # fmt: skip
        one = trainer("fast")
        flops = _lenet_flops(b, parts, lambda batch: one._step.lower(one._leaves, *_lenet_batch(batch)))
        rows = [{**r, "flops": flops, "microbatches": parts} for r in rows]
    # The lax.conv reference path, to show what the default's rewrites buy (jit step only; never split).
    lax_row = _step_rows("lenet_train", b, trainer("lax"), (), per_step=batches, scan=False)[0]
    return rows + [{**lax_row, "impl": "jaxnets-lax"}]


def _lenet_forward(b):
    return [
        {**row, "impl": "jaxnets-lax"} if impl == "lax" else row
        for impl in ("fast", "lax")
        for row in _lenet_forward_rows(b, impl)
    ]


def _lenet_forward_rows(b, impl):
    graphdef, state = nnx.split(jaxnets.LeNet(impl=impl, rngs=nnx.Rngs(0)))
    # Distinct batches (see lenet_batches): the jit row cycles through them, the whole-loop row maps over them.
    loop = _lenet_loop(b)
    xs = _lenet_batch(b, steps=loop)[0]
    batches = list(xs)  # sliced before the clock starts
    x = batches[0]
    # Over the flat list of arrays, as Trainer.step is: an nnx.State argument costs more Python per call.
    leaves, treedef = jax.tree.flatten(state)
    fwd_flat = jax.jit(lambda leaves, x: nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))(x))
    inner = CFG["inner"]

    next_batch = Cycle(batches)

    def steps():  # every call waited for: the calls are independent, and XLA:CPU could overlap them
        for _ in range(inner):
            out = jax.block_until_ready(fwd_flat(leaves, next_batch()))
        return out

    jit_row = _timed_row("lenet_forward", b, "jaxnets-jit", lambda: fwd_flat(leaves, x), steps, steps=inner)
    jit_row |= _cost(fwd_flat, leaves, x)
    if impl != "fast":
        return [jit_row]
    chunks = _fastconv.chunks(x).shape[0]
    if chunks > 1:  # the fast path's chunk loop: counted on one chunk (see _lenet_flops)
        jit_row["flops"] = _lenet_flops(b, chunks, lambda batch: fwd_flat.lower(leaves, _lenet_batch(batch)[0]))
    # The whole-loop variant: jaxnets.inference.forward_batches, the forward pass of the `loop` distinct
    # batches in one compiled lax.map (distinct, so XLA cannot hoist the work out of the loop).
    run = inference.forward_batches(graphdef)
    scan_row = _timed_row("lenet_forward", b, "jaxnets-scan", lambda: run(state, xs), lambda: run(state, xs),
                          steps=loop, first_steps=loop, flops=jit_row["flops"])  # fmt: skip
    return [jit_row, scan_row]


def _lenet_train_dp(devices: int) -> dict:
    """The row of LeNet's train step, data-parallel over the first ``devices`` devices.

    The global batch (``settings()["dp_batch"]``) is split evenly over the
    devices with ``trainer.shard``; weights and optimizer state are replicated
    and XLA averages the gradients. Every device count starts from the same
    weights and batch and takes the same steps, so the losses the row reports
    must agree across device counts up to float32 rounding (the gradient sums
    run in another order): ``first_loss`` (before any update), ``final_loss``
    (the last timed step's, after ``steps - 1`` updates) and ``steps``.
    ``images_per_s`` counts the global batch.
    """
    batch = CFG["dp_batch"]
    mesh = distributed.mesh(devices)
    trainer = jaxnets.Trainer(jaxnets.LeNet(rngs=nnx.Rngs(0)), jaxnets.optim.sgd(0.01), _lenet_loss, mesh=mesh)
    data = trainer.shard(*_lenet_batch(batch))
    losses = []
    step = trainer.step

    def recorded_step(*batch):  # every step the timing takes, in order: device scalars, read after timing
        loss = step(*batch)
        losses.append(loss)
        return loss

    trainer.step = recorded_step
    timed_row = _step_rows(DP_WORKLOAD, batch, trainer, data, scan=False)[0]
    return {
        **timed_row,
        "impl": DP_IMPL,
        "devices": devices,
        "images_per_s": batch / (timed_row["median_us"] * 1e-6),
        "threads_per_device": _OP_THREADS,
        "steps": len(losses),
        "first_loss": float(losses[0]),
        "final_loss": float(losses[-1]),
    }


def _versions() -> dict:
    return {
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "flax": nnx.__name__ and __import__("flax").__version__,
        "numpy": np.__version__,
    }


def _placement() -> dict:
    """Where the worker ran: the platform and how many devices it saw (the parent decides what to simulate)."""
    return {"device": str(jax.devices()[0]), "platform": jax.devices()[0].platform, "device_count": jax.device_count()}


def main() -> None:
    if ARGS.dp is not None:
        emit(
            {
                "framework": "jax",
                "versions": _versions(),
                **_placement(),
                "threads": ARGS.threads,
                "rows": [_lenet_train_dp(ARGS.dp)],
            }
        )
        return
    rows = []
    for name, fn in workloads().items():
        if ARGS.only in name:
            rows.extend(fn())
    emit(
        {
            "framework": "jax",
            "versions": _versions(),
            **_placement(),
            "threads": ARGS.threads,
            "malloc": jaxnets.malloc_setting(),
            "gemm_gflops": gemm_peak(),
            "two_layer_gemm_gflops": two_layer_gemm(),
            "resnet18_products": resnet18_products() if ARGS.only in "resnet18_train" else None,
            "rows": rows,
        }
    )


if __name__ == "__main__":
    main()
