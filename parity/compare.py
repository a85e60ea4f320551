"""``parity.compare``: run a torch model and its JAX port on the same weights and inputs, layer by layer.

:func:`compare` copies the torch model's ``state_dict`` into a copy of the JAX
model, runs both on the same inputs, and records, for every submodule call in
execution order, the relative error of its output, of the gradient reaching
its output, and of each of its parameters' gradients. The :class:`Report`
names the first layer where the port diverges:

1. the first call (in execution order) whose output differs: its forward is wrong;
2. else a layer whose parameter gradients differ while the gradient reaching
   its output agrees: its backward is wrong;
3. else the layer that passes a wrong gradient back: the call after the last
   one whose output gradient differs (the loss, if that is the last call).

Both sides record calls as they finish (torch's forward hooks; on the JAX side
each module class's ``__call__`` is wrapped for the duration of the call), so
containers come after their children and a module called twice has two rows.
Calls are matched by module name (torch's ``named_modules()``; a JAX path with
``nnx.Sequential``'s ``layers`` dropped) and call number. A module that exists
on one side only (a functional ReLU, LeNet's fused fast path) is listed as
unmatched. The output gradients come from zero-valued probes added to every
recorded output on the JAX side and from ``retain_grad`` on the torch side.

Parameter gradients are measured norm-wise over the layer's parameters
(``max|jax - torch|`` over the largest torch gradient of that layer), so a
bias gradient that is zero up to rounding does not read as a divergence.

From the command line, ``python -m parity compare MODULE:FACTORY`` imports
``FACTORY`` from ``MODULE`` (a module on ``sys.path`` or a ``.py`` file path),
calls it with no arguments, and compares what it returns: a dict with the
keys ``torch``, ``jax`` and ``inputs`` (a list), and optionally ``jax_inputs``
and ``loss`` (see :func:`compare`). It prints the table and exits with 0 when
every layer agrees, 1 when one diverges, and 2 on bad arguments.

Outputs whose shapes differ by torch's channels-first against JAX's
channels-last layout (``(N, C, H, W)`` against ``(N, H, W, C)``) are
transposed before they are compared. ``compare`` wraps classes globally while
it runs: do not call it from two threads at once.
"""

from __future__ import annotations

import argparse
import contextlib
import copy as copylib
import importlib
import importlib.util
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from jaxnets.interop.torch_layout import _mirror
from jaxnets.nn.module import Module as _JaxModule
from jaxnets.nn.modules.dropout import _DropoutNd as _JaxDropoutNd

from .convert import load_torch_state_dict
from .precision import errors, tolerance

__all__ = ["LayerRow", "Report", "compare", "main"]


@dataclass
class LayerRow:
    """One submodule call: relative errors (norm-wise, :func:`parity.precision.errors`) against torch.

    ``None`` means not measured: the output is not an array, or no gradient reaches it.
    """

    name: str
    call: int
    output: float | None = None
    output_grad: float | None = None
    param_grads: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Report:
    """What :func:`compare` found; ``str(report)`` is a table."""

    rows: list[LayerRow]
    tol: float
    dtype: str
    mode: str
    loss: float | None
    buffers: dict[str, float]
    unmatched_torch: list[str]
    unmatched_jax: list[str]

    def _bad(self, value) -> bool:
        return value is not None and not value <= self.tol

    @property
    def first_divergence(self) -> tuple[str, str] | None:
        """``(layer, what)`` of the first divergence (see the module docstring), or None if all agree."""
        for row in self.rows:
            if self._bad(row.output):
                return row.name or "(model)", f"its output differs (relative error {row.output:.3g})"
        for name, err in self.buffers.items():
            if self._bad(err):
                return name.rsplit(".", 1)[0], f"its buffer {name} differs after the forward pass ({err:.3g})"
        for row in self.rows:
            worst = max(row.param_grads.values(), default=None)
            if self._bad(worst) and not self._bad(row.output_grad):
                return row.name or "(model)", f"its parameter gradients differ ({worst:.3g}) in its backward pass"
        bad = [i for i, row in enumerate(self.rows) if self._bad(row.output_grad)]
        if bad:
            after = self.rows[bad[-1] + 1 :]
            culprit = next((r for r in after if r.output_grad is not None), None)
            if culprit is None:
                return "(loss)", "the gradient of the loss with respect to the model's output differs"
            return culprit.name or "(model)", "it passes back a wrong gradient (its backward pass)"
        if self._bad(self.loss):
            return "(loss)", f"the loss differs ({self.loss:.3g})"
        return None

    @property
    def passed(self) -> bool:
        """Whether every measured error is within ``tol``."""
        return self.first_divergence is None

    def __str__(self) -> str:
        def fmt(value):
            return "-" if value is None else f"{value:.2e}" + (" !" if self._bad(value) else "")

        lines = [f"parity.compare ({self.dtype}, {self.mode} mode, tolerance {self.tol:.0e})"]
        head = ("#", "layer", "call", "output", "grad of output", "param grads (worst)", "")
        body = [
            (
                str(i),
                row.name or "(model)",
                str(row.call),
                fmt(row.output),
                fmt(row.output_grad),
                fmt(max(row.param_grads.values(), default=None)),
                row.note,
            )
            for i, row in enumerate(self.rows)
        ]
        widths = [max(len(h), *(len(r[c]) for r in body)) if body else len(h) for c, h in enumerate(head)]
        for r in (head, *body):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if self.loss is not None:
            lines.append(f"loss: {fmt(self.loss)}")
        for name, err in self.buffers.items():
            lines.append(f"buffer {name}: {fmt(err)}")
        if self.unmatched_torch:
            lines.append("only in torch (not compared): " + ", ".join(self.unmatched_torch))
        if self.unmatched_jax:
            lines.append("only in JAX (not compared): " + ", ".join(self.unmatched_jax))
        first = self.first_divergence
        lines.append("all layers agree" if first is None else f"FIRST DIVERGENCE: {first[0]}: {first[1]}")
        return "\n".join(lines)


def _module_name(path) -> str:
    parts = []
    for i, key in enumerate(path):
        if key == "layers" and i + 1 < len(path) and isinstance(path[i + 1], int):
            continue  # nnx.Sequential keeps its children in `layers`; torch names them 0, 1, 2
        parts.append(str(key))
    return ".".join(parts)


def _jax_modules(model: nnx.Module) -> list[tuple[str, nnx.Module]]:
    if _mirror(model) is not None:
        return list(model.named_modules())
    return [(_module_name(path), module) for path, module in nnx.iter_modules(model)]


def _is_array(value) -> bool:
    return isinstance(value, jax.Array | np.ndarray)


@contextlib.contextmanager
def _recording(model_classes: set[type], on_call: Callable):
    """Wrap ``__call__`` where the model's classes define it, so that ``on_call(module, output)`` sees each output.

    ``on_call`` may replace the output. Each defining class is wrapped once, so a
    subclass that inherits ``__call__`` is recorded once per call.
    """
    owners = set()
    for cls in model_classes:
        owner = next((c for c in cls.__mro__ if "__call__" in c.__dict__), None)
        if owner is not None and owner is not object:
            owners.add(owner)
    originals = {owner: owner.__dict__["__call__"] for owner in owners}

    def wrap(call):
        def recorded(self, *args, **kwargs):
            return on_call(self, call(self, *args, **kwargs))

        return recorded

    try:
        for owner, call in originals.items():
            owner.__call__ = wrap(call)
        yield
    finally:
        for owner, call in originals.items():
            owner.__call__ = call


def _align(jax_value: np.ndarray, torch_shape: tuple) -> np.ndarray | None:
    """The JAX array in torch's layout: as it is, or channels-last moved to channels-first; None if neither fits."""
    if jax_value.shape == torch_shape:
        return jax_value
    if jax_value.ndim >= 3:
        moved = np.moveaxis(jax_value, -1, -3 if jax_value.ndim == 3 else 1)
        if moved.shape == torch_shape:
            return moved
    return None


def _active_dropout(m) -> bool:
    """Whether a module draws random masks in train mode: any torch or jaxnets.nn dropout layer (Dropout,
    Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout) with p > 0, and torch's attention and stacked RNNs with
    their own dropout rate."""
    if isinstance(m, torch.nn.modules.dropout._DropoutNd | _JaxDropoutNd):
        return m.p > 0
    if isinstance(m, torch.nn.MultiheadAttention):
        return m.dropout > 0
    if isinstance(m, torch.nn.RNNBase):
        return m.dropout > 0 and m.num_layers > 1
    return False


def _dropouts(torch_model: torch.nn.Module, jax_model=None) -> list[str]:
    found = [name or "(model)" for name, m in torch_model.named_modules() if _active_dropout(m)]
    if isinstance(jax_model, _JaxModule):
        found += [f"{name or '(model)'} (jax)" for name, m in jax_model.named_modules() if _active_dropout(m)]
    return found


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    return np.array(value, copy=True)


def compare(
    torch_model: torch.nn.Module,
    jax_model: nnx.Module,
    *inputs,
    jax_inputs: Sequence | None = None,
    loss: tuple[Callable, Callable] | None = None,
    mode: str = "eval",
    dtype: str = "float64",
    seed: int = 0,
) -> Report:
    """Run both models on the same weights and inputs and report every layer's errors (see the module docstring).

    Neither model is changed: both are copied, the torch model's weights are
    loaded into the JAX copy (``parity.load_torch_state_dict``, so both Flax
    models through the layout table and :mod:`jaxnets.nn` models by path), and
    both copies are cast to ``dtype``.

    Args:
      torch_model: the reference.
      jax_model: the port: a :mod:`jaxnets.nn` model, or a Flax NNX model that
        ``parity.load_torch_state_dict`` accepts.
      *inputs: the forward arguments, torch tensors or arrays, in torch's layout.
      jax_inputs: the JAX model's arguments when they differ from ``inputs``
        (for example ``parity.to_nhwc(x)`` for the channels-last ``jaxnets.LeNet``).
      loss: ``(torch_fn, jax_fn)``, each mapping its model's output to a scalar.
        Default: the sum of the output times a fixed random cotangent (the same
        numbers on both sides).
      mode: ``"eval"`` or ``"train"`` (both models are switched; in train mode
        BatchNorm uses batch statistics, and the running buffers are compared
        after the forward pass).
      dtype: ``"float64"`` (the sharp test; tolerance 1e-12) or ``"float32"``
        (1e-5): see :mod:`parity.precision`.
      seed: seeds the cotangent.

    Returns:
      A :class:`Report`; ``print(report)`` shows the table and the verdict.

    Raises:
      ValueError: an unknown ``mode`` or ``dtype``, or train mode with active
        dropout (torch and JAX cannot draw the same masks).
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"compare: mode must be 'eval' or 'train'; got {mode!r}.")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"compare: dtype must be 'float64' or 'float32'; got {dtype!r}.")
    if not isinstance(jax_model, nnx.Module):
        raise TypeError(f"compare: jax_model must be a Flax NNX module; got {type(jax_model).__name__}.")
    training = mode == "train"
    if training and _dropouts(torch_model, jax_model):
        raise ValueError(
            f"compare cannot match dropout masks in train mode (torch and JAX draw from different generators); "
            f"active dropout in: {', '.join(_dropouts(torch_model, jax_model))}. Compare in mode='eval', or set p=0."
        )
    tol = tolerance(dtype, "grad")
    with jax.enable_x64(dtype == "float64"):
        return _compare(torch_model, jax_model, inputs, jax_inputs, loss, training, dtype, seed, tol)


def _compare(torch_model, jax_model, inputs, jax_inputs, loss, training, dtype, seed, tol) -> Report:
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    jnp_dtype = {"float64": jnp.float64, "float32": jnp.float32}[dtype]

    # Torch: a copy in the dtype, hooks on every submodule, then one backward pass.
    reference = copylib.deepcopy(torch_model).to(torch_dtype).train(training)
    for module in reference.modules():
        if getattr(module, "inplace", False) is True:
            # ReLU(inplace=True) overwrites the output recorded for the layer before it, whose retained
            # gradient would then be the activation's: out of place, the same numbers, every output kept.
            module.inplace = False
    initial = {k: v.detach().clone() for k, v in reference.state_dict().items()}  # before the forward moves buffers
    t_inputs = [
        torch.as_tensor(_to_numpy(x)).to(torch_dtype).requires_grad_(True)
        if np.issubdtype(_to_numpy(x).dtype, np.floating)
        else torch.as_tensor(_to_numpy(x))
        for x in inputs
    ]
    t_records: list[tuple[str, torch.Tensor, np.ndarray]] = []

    def hook(name):
        def record(module, args, out):
            if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
                out = out[0]  # an RNN's (output, hidden), attention's (output, weights): compare the output
            if isinstance(out, torch.Tensor):
                if out.requires_grad:
                    out.retain_grad()
                t_records.append((name, out, out.detach().numpy().copy()))

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in reference.named_modules()]
    try:
        t_out = reference(*t_inputs)
    finally:
        for h in handles:
            h.remove()

    # JAX: a copy with the torch weights, in the dtype.
    port = nnx.clone(jax_model)
    floats = jax.tree.map(
        lambda v: v.astype(jnp_dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, nnx.state(port)
    )
    nnx.update(port, floats)
    if _mirror(port) is not None:  # by torch's keys, so a tied weight (one Param under two keys) loads too
        port.load_state_dict({k: v.numpy() for k, v in initial.items()})
    else:
        load_torch_state_dict(port, initial)
    if _mirror(port) is not None:
        port.train(training)
    else:
        port.train() if training else port.eval()
    j_inputs = [
        jnp.asarray(_to_numpy(x), jnp_dtype)
        if np.issubdtype(_to_numpy(x).dtype, np.floating)
        else jax.device_put(_to_numpy(x))  # jnp.asarray would compile an identity program per shape
        for x in (inputs if jax_inputs is None else jax_inputs)
    ]
    graphdef, params, rest = nnx.split(port, nnx.Param, ...)
    classes = {type(m) for _, m in _jax_modules(port)}

    def recorder(names: dict[int, str], sink: list, probes: dict | None):
        counts: Counter = Counter()

        def on_call(module, out):
            name = names.get(id(module))
            if name is None:
                return out
            if isinstance(out, tuple) and out and _is_array(out[0]):  # as on the torch side: the first element
                return (on_call_array(name, out[0]), *out[1:])
            if not _is_array(out):
                return out
            return on_call_array(name, out)

        def on_call_array(name, out):
            key = f"{name}#{counts[name]}"
            counts[name] += 1
            if probes is not None and key in probes:
                out = out + probes[key]
            sink.append((name, key, out))
            return out

        return on_call

    def forward(params, rest, probes, inputs):
        """The output, the recorded outputs in call order (their keys into ``keys``) and the state the call leaves."""
        model = nnx.merge(graphdef, params, rest, copy=True)
        sink: list = []
        with _recording(classes, recorder({id(m): n for n, m in _jax_modules(model)}, sink, probes)):
            out = model(*inputs)
        keys[:] = [key for _, key, _ in sink]
        return out, [value for _, _, value in sink], nnx.state(model)

    keys: list[str] = []

    # One compiled program for the forward pass, the records and the gradients. Op by op, every primitive of the
    # model compiled apart: 283 small programs in DCGAN's discriminator, 6.6 of its test's 8.9 s; 0.7 s jitted. A zero
    # probe is added to every recorded output: its gradient is the gradient reaching that output. (A port whose
    # Python code reads its values, an `if` on an array, was never comparable: jax.grad's tracers refuse it too.)
    j_out, shapes, _ = jax.eval_shape(lambda p, r, x: forward(p, r, None, x), params, rest, j_inputs)

    rng = np.random.default_rng(seed)
    t_out_np = t_out.detach().numpy()
    cotangent = rng.normal(size=t_out_np.shape)
    if loss is None:
        t_scalar = (t_out * torch.as_tensor(cotangent, dtype=torch_dtype)).sum()
        j_cot = _align_back(cotangent, np.shape(j_out))

        def j_loss_of(out):
            return jnp.sum(out * j_cot)
    else:
        t_scalar = loss[0](t_out)
        j_loss_of = loss[1]
    t_scalar.backward()

    def run(params, rest, probes, inputs):
        out, records, state = forward(params, rest, probes, inputs)
        return j_loss_of(out), (records, state)

    zero_probes = {key: jnp.zeros(np.shape(out), out.dtype) for key, out in zip(keys, shapes, strict=True)}
    grad = jax.jit(jax.value_and_grad(run, argnums=(0, 2), has_aux=True))
    (j_value, (records, state)), (param_grads, probe_grads) = grad(params, rest, zero_probes, j_inputs)
    nnx.update(port, state)  # in train mode, the buffers the forward pass moved
    j_records = [(key.rsplit("#", 1)[0], key, value) for key, value in zip(keys, records, strict=True)]

    # Match calls by (name, call number).
    t_calls = dict(zip(_torch_order(t_records), t_records, strict=True))
    j_keys = [key for _, key, _ in j_records]
    j_values = {key: np.asarray(out) for _, key, out in j_records}

    torch_grads = {n: p.grad for n, p in reference.named_parameters()}
    jax_grads = _grads_by_torch_name(port, param_grads)
    rows = []
    for key in t_calls:
        if key not in j_values:
            continue
        name, tensor, t_value = t_calls[key]
        row = LayerRow(name=name, call=int(key.rsplit("#", 1)[1]))
        aligned = _align(j_values[key], t_value.shape)
        if aligned is None:
            row.output, row.note = float("inf"), f"shape {j_values[key].shape} against torch's {t_value.shape}"
        else:
            row.output = errors(aligned, t_value)[1]
            if tensor.grad is not None:
                grad = _align(np.asarray(probe_grads[key]), t_value.shape)
                row.output_grad = errors(grad, tensor.grad.numpy())[1]
        if row.call == 0:
            prefix = f"{name}." if name else ""
            own = [p for p in torch_grads if p.startswith(prefix) and "." not in p[len(prefix) :] and p in jax_grads]
            # torch leaves the grad of an unused parameter None: zero, as JAX's
            want = {
                p: np.zeros(jax_grads[p].shape) if torch_grads[p] is None else _to_numpy(torch_grads[p]) for p in own
            }
            # Norm-wise over the layer's parameters: a bias gradient that is zero up to rounding (a linear layer
            # before a BatchNorm) is measured against the layer's gradient scale, not against its own noise.
            scale = max((float(np.max(np.abs(w))) for w in want.values() if w.size), default=0.0)
            for p in own:
                max_abs = errors(jax_grads[p], want[p])[0]
                row.param_grads[p[len(prefix) :]] = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else 1.0)
        rows.append(row)

    buffers = {}
    if training and _mirror(port) is not None:
        mine = port.state_dict()
        for name, value in reference.state_dict().items():
            if name not in dict(reference.named_parameters()) and name in mine:
                buffers[name] = errors(np.asarray(mine[name]), value.numpy())[1]
    return Report(
        rows=rows,
        tol=tol,
        dtype=dtype,
        mode="train" if training else "eval",
        loss=errors(np.asarray(j_value), t_scalar.detach().numpy())[1],
        buffers=buffers,
        unmatched_torch=sorted({k.rsplit("#", 1)[0] or "(model)" for k in t_calls if k not in j_values}),
        unmatched_jax=sorted({k.rsplit("#", 1)[0] or "(model)" for k in j_keys if k not in t_calls}),
    )


def _torch_order(t_records) -> list[str]:
    counts: Counter = Counter()
    keys = []
    for name, _, _ in t_records:
        keys.append(f"{name}#{counts[name]}")
        counts[name] += 1
    return keys


def _align_back(torch_value: np.ndarray, jax_shape: tuple) -> jnp.ndarray:
    """A torch-layout array in the JAX output's layout (the inverse of :func:`_align`)."""
    if torch_value.shape == tuple(jax_shape):
        return jnp.asarray(torch_value)
    moved = np.moveaxis(torch_value, -3 if torch_value.ndim == 3 else 1, -1)
    if moved.shape != tuple(jax_shape):
        raise ValueError(f"compare: outputs of shapes {torch_value.shape} (torch) and {jax_shape} (JAX) do not match.")
    return jnp.asarray(moved)


def _grads_by_torch_name(port: nnx.Module, grads: nnx.State) -> dict[str, np.ndarray]:
    """The JAX parameter gradients under torch's names, in torch's layout."""
    if _mirror(port) is not None:
        # A shared (tied) Param sits once in the state, under whichever path NNX reaches first; torch names it
        # by its first registration, as named_parameters() does.
        by_path = {path: np.asarray(v) for path, v in nnx.to_flat_state(grads)}
        path_of = {id(var): path for path, var in nnx.to_flat_state(nnx.state(port, nnx.Param))}
        return {name: by_path[path_of[id(var)]] for name, var in port.named_parameters()}
    from jaxnets.interop.exchange import to_torch_arrays

    return to_torch_arrays(grads)


def _load_factory(spec: str) -> Callable:
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected MODULE:FACTORY, such as my_port:make_models or ports/lenet.py:make; got {spec!r}.")
    if module_name.endswith(".py"):
        loader_spec = importlib.util.spec_from_file_location("_parity_compare_factory", module_name)
        if loader_spec is None:
            raise ValueError(f"cannot import {module_name!r}: not a Python file.")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    if not hasattr(module, attr):
        raise ValueError(f"{module_name} has no attribute {attr!r}.")
    return getattr(module, attr)


def main(argv: list[str] | None = None) -> int:
    """``python -m parity compare MODULE:FACTORY [--mode eval|train] [--dtype float64|float32]``."""
    parser = argparse.ArgumentParser(
        prog="python -m parity compare",
        description="Run a torch model and its JAX port on the same weights and inputs, layer by layer, and name "
        "the first layer where they diverge. FACTORY() returns a dict with keys torch, jax, inputs (a list) and "
        "optionally jax_inputs and loss.",
    )
    parser.add_argument("factory", metavar="MODULE:FACTORY", help="e.g. my_port:make_models or ports/net.py:make")
    parser.add_argument("--mode", choices=("eval", "train"), default="eval", help="default: eval")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="default: float64")
    parser.add_argument("--seed", type=int, default=0, help="seed of the output cotangent (default: 0)")
    args = parser.parse_args(argv)
    try:
        factory = _load_factory(args.factory)
    except (ValueError, ImportError) as error:
        parser.error(str(error))
    made = factory()
    if not isinstance(made, dict) or not {"torch", "jax", "inputs"} <= set(made):
        keys = sorted(made) if isinstance(made, dict) else type(made).__name__
        parser.error(f"{args.factory}() must return a dict with keys torch, jax and inputs; got {keys}.")
    unknown = set(made) - {"torch", "jax", "inputs", "jax_inputs", "loss"}
    if unknown:
        parser.error(
            f"{args.factory}() returned unknown keys {sorted(unknown)}; expected torch, jax, inputs, jax_inputs, loss."
        )
    report = compare(
        made["torch"],
        made["jax"],
        *made["inputs"],
        jax_inputs=made.get("jax_inputs"),
        loss=made.get("loss"),
        mode=args.mode,
        dtype=args.dtype,
        seed=args.seed,
    )
    print(report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
