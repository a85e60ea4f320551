"""Training LeNet on real handwritten digits: the library behind ``jaxnets train``, ``evaluate`` and ``predict``.

A run lives in one directory::

    RUN_DIR/
      checkpoints/<epoch>/   one orbax checkpoint per epoch: parameters, optimizer
                             state, and as metadata the config, the model and the
                             history so far (jaxnets.checkpoint)
      metrics.json           config, per-epoch history, final ``test_accuracy``
                             (a fraction in [0, 1]), status
      curves.png             loss and accuracy per epoch (redrawn after the last
                             epoch, and during a run at most every CURVES_EVERY s)

Every random choice comes from the seed: the initial weights from
``nnx.Rngs(seed)``, epoch ``e``'s batch order from
``jax.random.fold_in(jax.random.key(seed), e)``. A run resumed from the
checkpoint of epoch ``e`` therefore replays exactly the steps an uninterrupted
run takes after epoch ``e``, with the same compiled program, and ends
bit-identical to it.

The loop is :class:`jaxnets.Trainer`'s compiled step; the training images are
put on the device once, and each step gathers its batch there from an index
array.

Data-parallel: with ``devices`` > 1 (by default every visible device) the
trainer runs over a ``jax.sharding`` mesh (:mod:`jaxnets.distributed`). The
data set and the state are replicated on every device, each step's index
array is split along the mesh's ``"data"`` axis, so each device gathers and
computes its share of the batch, and XLA averages the gradients with an
all-reduce. The result is the one-device run's up to the order of
floating-point sums; one device runs exactly as without a mesh. The device
count is recorded in ``metrics.json`` and per epoch in the history, not in the
config: a run may be resumed on another number of devices, and then differs
from an uninterrupted run only by rounding. In a multi-process run
(``jax.distributed``, see :func:`jaxnets.distributed.initialize`) every process
runs this loop on the same data and seed; only process 0 prints and writes
checkpoints, ``metrics.json`` and ``curves.png``, so ``out`` must be a directory
every process sees (the same path on a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import checkpoint, data, distributed, inference, optim
from ._files import atomic_write
from ._lenet import LeNet
from .losses import cross_entropy
from .train import Trainer

MODELS = ("lenet",)

OPTIMIZERS: dict[str, tuple[Callable, dict, float]] = {
    # name: (jaxnets.optim factory, fixed options, default learning rate)
    "sgd": (optim.sgd, {"momentum": 0.9}, 0.01),
    "adam": (optim.adam, {}, 1e-3),
    "adamw": (optim.adamw, {}, 1e-3),
    "rmsprop": (optim.rmsprop, {}, 1e-3),
    "adagrad": (optim.adagrad, {}, 1e-2),
}
"""The ``--optimizer`` choices: torch-equivalent optimizers from :mod:`jaxnets.optim`, their options and default lr."""

CHECKPOINTS = "checkpoints"
METRICS = "metrics.json"
CURVES = "curves.png"
CONFUSION = "confusion.png"  # written by `jaxnets evaluate RUN`: an overwritten run's would describe the old model
_RUN_FILES = (CHECKPOINTS, METRICS, CURVES, CONFUSION)

CURVES_EVERY = 10.0
"""Seconds between redraws of ``curves.png`` during a run: a redraw takes about 0.3 s, more than a digits epoch."""

EVAL_BATCH = 500
"""Images per evaluation batch; the last batch of a larger set is padded to this size, so one program serves."""
EVAL_GROUP = 16
"""Batches of EVAL_BATCH images that :func:`logits` evaluates per compiled loop (one dispatch)."""


class TrainingError(RuntimeError):
    """A run cannot start or continue: an occupied output directory, a mismatched resume, a non-finite loss."""


@dataclass(frozen=True)
class TrainConfig:
    """What a run trains, on what, and how. Its defaults reach about 99% test accuracy on ``digits``.

    Attributes:
      model: ``"lenet"``: the tutorial's ``Net`` (:class:`jaxnets.LeNet`, 5x5 kernels).
      data: ``"digits"`` or ``"mnist:DIR"`` (see :func:`jaxnets.data.load`).
      optimizer: a key of :data:`OPTIMIZERS`.
      lr: learning rate; None for the optimizer's default in :data:`OPTIMIZERS`.
      epochs: passes over the training set.
      batch_size: images per step. The last incomplete batch of each epoch is
        dropped (a different one each epoch), so every step has one shape and
        compiles once.
      seed: seeds the initial weights and every epoch's batch order.
    """

    model: str = "lenet"
    data: str = "digits"
    optimizer: str = "adam"
    lr: float | None = None
    epochs: int = 40
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}; got {self.model!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}.")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {self.seed!r}.")
        if self.lr is not None and not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number; got {self.lr!r}.")

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimizer's default."""
        return float(self.lr) if self.lr is not None else OPTIMIZERS[self.optimizer][2]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# -- models and optimizers ------------------------------------------------------------------------


def model_spec(model: LeNet) -> dict:
    """The JSON description of ``model`` that :func:`build_model` rebuilds it from."""
    return {
        "model": "lenet",
        "kernel_size": model.kernel_size,
        "image_size": model.image_size,
        "in_channels": model.in_channels,
        "num_classes": model.num_classes,
    }


def build_model(spec: dict | None = None, *, seed: int = 0) -> LeNet:
    """A LeNet from a :func:`model_spec` dict (the tutorial's ``Net`` when None)."""
    spec = dict(spec or {"model": "lenet"})
    kind = spec.pop("model", "lenet")
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r} in the model description; expected one of {', '.join(MODELS)}.")
    return LeNet(**spec, rngs=nnx.Rngs(seed))


def build_optimizer(name: str, lr: float):
    """The ``--optimizer`` ``name`` with learning rate ``lr``, as an optax transformation."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}.")
    factory, options, _ = OPTIMIZERS[name]
    return factory(lr, **options)


def _loss_and_correct(model, images, labels, idx):
    logits = model(images[idx])
    y = labels[idx]
    return cross_entropy(logits, y), jnp.sum(jnp.argmax(logits, axis=-1) == y)


def logits(model: nnx.Module, images: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """The model's outputs for ``images`` ``(N, H, W, C)``.

    Up to ``batch_size`` images run as one batch of their own shape; more run in
    padded batches of ``batch_size``, up to :data:`EVAL_GROUP` of them per
    compiled loop (:func:`jaxnets.inference.forward_batches`).

    Weights living on several devices (a data-parallel :class:`Trainer`'s, replicated on a mesh, possibly of
    several processes) are copied to this process's default device first: evaluation runs there, on one device.
    """
    graphdef, state = nnx.split(model)
    state = jax.tree.map(_on_one_device, state)
    n = len(images)
    if n == 0:
        return np.zeros((0, getattr(model, "num_classes", 10)), np.float32)
    if n <= batch_size:
        return np.asarray(inference.forward(graphdef)(state, jnp.asarray(images)))
    out = []
    group_size = batch_size * EVAL_GROUP
    for start in range(0, n, group_size):
        group = np.asarray(images[start : start + group_size])
        k = -(-len(group) // batch_size)
        pad = k * batch_size - len(group)
        if pad:
            group = np.concatenate([group, np.zeros((pad, *group.shape[1:]), group.dtype)])
        batches = jnp.asarray(group.reshape(k, batch_size, *group.shape[1:]))  # (K*B, ...) -> (K, B, ...)
        scores_ = np.asarray(inference.forward_batches(graphdef)(state, batches))
        out.append(scores_.reshape(k * batch_size, *scores_.shape[2:])[: k * batch_size - pad])
    return np.concatenate(out)


def _on_one_device(x):
    """``x`` itself if it lives on one device; else a host copy (it must be replicated) put on the default device."""
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
        return jax.device_put(np.asarray(x))
    return x


def scores(out: np.ndarray, labels: np.ndarray) -> dict:
    """Mean cross-entropy, accuracy (a fraction) and the number correct, from logits and labels."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "correct": 0, "total": 0}
    loss = float(cross_entropy(jnp.asarray(out), jnp.asarray(labels)))
    correct = int(np.sum(out.argmax(axis=-1) == labels))
    return {"loss": loss, "accuracy": correct / len(labels), "correct": correct, "total": len(labels)}


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """``m[true, predicted]`` counts."""
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(predicted)), 1)
    return m


# -- files, written so that a crash never leaves half a file ---------------------------------------


def write_json(path: Path, doc: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1) + "\n"))


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train and test, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["test_loss"] for h in history], "s-", label="test")
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="%", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, path: Path, title: str = "") -> None:
    """A confusion matrix (rows: true label, columns: predicted) as a PNG, counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(6, 5.4))
    im = ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true label", title=title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


# -- a run ------------------------------------------------------------------------------------------


def holds_run(out: Path) -> bool:
    """Whether ``out`` already holds a run (checkpoints or metrics)."""
    return any((out / name).exists() for name in (CHECKPOINTS, METRICS))


def _prepare(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an output directory that would lose or mix up a run; delete nothing.

    :func:`train` removes an overwritten run only once the new run's data and settings have passed their checks.
    """
    if resume and overwrite:
        raise TrainingError(
            f"--resume and --overwrite contradict each other for {out}: pass --resume to continue the run there, "
            "or --overwrite to replace it, not both."
        )
    if out.exists() and not out.is_dir():
        raise TrainingError(f"output {out} is a file, not a directory: choose another --out.")
    if resume:
        ckpt_dir = out / CHECKPOINTS
        if checkpoint.latest_step(ckpt_dir) is None:
            raise TrainingError(f"nothing to resume in {out}: it holds no checkpoint. Start the run without --resume.")
        return
    if holds_run(out):
        if not overwrite:
            raise TrainingError(
                f"{out} already holds a run ({', '.join(n for n in _RUN_FILES if (out / n).exists())}). "
                "Pass --resume to continue it, --overwrite to replace it, or choose another --out."
            )


def remove_run(out: Path) -> None:
    """Delete the run in ``out``: what a run writes, and nothing else (other files there are the user's)."""
    for name in _RUN_FILES:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _effective(config: dict) -> dict:
    """``config`` with ``lr`` resolved to the optimizer's default when None, so that equal rates compare equal."""
    lr = config.get("lr")
    if lr is None and config.get("optimizer") in OPTIMIZERS:
        lr = OPTIMIZERS[config["optimizer"]][2]
    return {**config, "lr": lr}


def _check_resumable(saved: dict | None, config: TrainConfig, where: Path) -> None:
    """A resumed run must train the same thing the same way; only ``epochs`` may grow."""
    if saved is None:
        raise TrainingError(
            f"cannot resume {where}: it holds imported weights (jaxnets import), not a training run, so there is "
            "no optimizer state to continue from. Start a new run with another --out."
        )
    saved, now = _effective(saved), _effective(config.to_json())
    differ = [
        f"{k}: {saved.get(k)!r} in the run, {v!r} now" for k, v in now.items() if k != "epochs" and saved.get(k) != v
    ]
    if differ:
        raise TrainingError(
            f"cannot resume {where} with other settings ({'; '.join(differ)}). Resume with the run's settings "
            "(or leave them out: `jaxnets train --out DIR --resume` reads them from the run), or start a new run."
        )


def saved_config(out: Path) -> dict:
    """The config of the run in ``out``, from its latest checkpoint; ``{}`` for imported weights, which have none."""
    return checkpoint.read_metadata(Path(out) / CHECKPOINTS).get("config") or {}


class _Progress:
    """A progress bar with the live loss on a terminal; nothing when output is not a terminal (CI, logs)."""

    def __init__(self, total: int, desc: str, enabled: bool | None):
        from tqdm.auto import tqdm

        # tqdm's disable=None: off when stderr is not a terminal.
        self.bar = tqdm(
            total=total, desc=desc, unit="step", leave=False, disable=None if enabled is None else not enabled
        )

    def update(self, loss: float | None) -> None:
        self.bar.update(1)
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _mesh(devices: int | None, batch_size: int) -> jax.sharding.Mesh | None:
    """The mesh of ``devices`` devices (None: every visible one), or None for one device: no mesh at all."""
    if devices is not None and (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ValueError(f"--devices must be a positive integer (or left out for every device); got {devices!r}.")
    mesh = distributed.mesh(devices)
    n = mesh.devices.size
    if batch_size % n:
        below = batch_size // n * n
        examples = f"{below} or {below + n}" if below else f"{n}"
        fewer = max(d for d in range(1, n + 1) if batch_size % d == 0)
        other = "" if jax.process_count() > 1 else f", or --devices {fewer}"
        raise TrainingError(
            f"--batch-size {batch_size} cannot be split evenly over {n} devices: each device takes an equal share "
            f"of every batch. Use a batch size that is a multiple of {n} (e.g. {examples}){other}."
        )
    return mesh if n > 1 else None


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    devices: int | None = None,
) -> dict:
    """Train ``config`` into the run directory ``out``; return the metrics written to ``out/metrics.json``.

    Args:
      config: what to train (see :class:`TrainConfig`).
      out: the run directory; created if missing.
      resume: continue the run in ``out`` from its last checkpoint. ``config``
        must match the run's except ``epochs``, which may grow.
      overwrite: replace the run in ``out`` (its checkpoints, metrics and curves;
        other files are left alone).
      progress: show a progress bar with the live loss (None: when stderr is a terminal).
      log: called with one line per epoch and a final summary (in process 0 only).
      devices: train data-parallel over this many devices (the first of
        ``jax.devices()``); None for every visible device, of every process.
        ``config.batch_size`` must be a multiple of it. With one device there
        is no mesh: the run is exactly the single-device one.

    Raises:
      TrainingError: ``out`` already holds a run (without ``resume`` or
        ``overwrite``), a resume with other settings, a batch size the number
        of devices does not divide, or a non-finite loss (the message names the
        step; the last good checkpoint stays).
      ValueError: more devices asked for than are visible (the message says how
        to simulate CPU devices).
    """
    out = Path(out)
    mesh = _mesh(devices, config.batch_size)  # before anything is read or written: bad settings destroy nothing
    num_devices = 1 if mesh is None else mesh.devices.size
    primary = jax.process_index() == 0  # the one process that prints and writes
    if not primary:
        log, progress = (lambda line: None), False
    _prepare(out, resume=resume, overwrite=overwrite)
    train_set, test_set = data.load(config.data)
    steps_per_epoch = data.num_batches(len(train_set), config.batch_size, drop_last=True)
    if steps_per_epoch == 0:
        raise TrainingError(
            f"--batch-size {config.batch_size} is larger than the {len(train_set)} training images: "
            "nothing to train on. Use a smaller batch size."
        )
    if primary:
        if overwrite:
            remove_run(out)  # only now: a bad --data or --batch-size must not cost the old run
        out.mkdir(parents=True, exist_ok=True)
    model = build_model({"model": config.model, "image_size": train_set.images.shape[1]}, seed=config.seed)
    optimizer = build_optimizer(config.optimizer, config.learning_rate)
    trainer = Trainer(model, optimizer, _loss_and_correct, has_aux=True, mesh=mesh)
    history: list[dict] = []
    start_epoch = 0
    ckpt_dir = out / CHECKPOINTS
    if resume:
        # Settings first: another optimizer's state would not fit `like`, and its error would not say why.
        step = checkpoint.latest_step(ckpt_dir)  # once: the settings checked and the state restored are one epoch's
        _check_resumable(checkpoint.read_metadata(ckpt_dir, step).get("config"), config, out)
        # Host copies: restored values go back to the trainer's devices through load_model and opt_state.
        like = jax.tree.map(np.asarray, {"params": nnx.to_pure_dict(trainer.params), "opt_state": trainer.opt_state})
        state, meta = checkpoint.restore(ckpt_dir, step, like=like)
        _set_params(model, state["params"])
        trainer.load_model(model)
        trainer.opt_state = state["opt_state"]
        history, start_epoch = list(meta["history"]), int(meta["epoch"])
        log(f"resuming {out} after epoch {start_epoch} of {config.epochs}")
        if start_epoch >= config.epochs:
            log(f"the run already has {start_epoch} epochs; pass a larger --epochs to train on")
    # The whole data set on every device, once; each step's indices are split over the devices.
    images, labels = trainer.replicate((train_set.images, train_set.labels))
    if mesh is not None:
        log(f"data-parallel over {num_devices} {mesh.devices.flat[0].platform} devices"
            + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""))  # fmt: skip
    key = jax.random.key(config.seed)
    metrics = {"config": config.to_json(), "model": model_spec(model), "data": {"train": len(train_set),
               "test": len(test_set)}, "devices": num_devices, "processes": jax.process_count(),
               "status": "running"}  # fmt: skip
    elapsed = sum(h["seconds"] for h in history)
    drawn = -math.inf  # when curves.png was last drawn
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t0 = time.perf_counter()
        bar = _Progress(steps_per_epoch, f"epoch {epoch}/{config.epochs}", progress)
        losses, correct = [], []
        try:
            order = data.batches(jax.random.fold_in(key, epoch), len(train_set), config.batch_size, drop_last=True)
            for i, idx in enumerate(order):
                loss, hits = trainer.step(images, labels, trainer.shard(idx))
                losses.append(loss)
                correct.append(hits)
                shown = None
                if i % 10 == 0 or i == steps_per_epoch - 1:  # reading the loss waits for the step: not every step
                    shown = float(loss)
                    if not math.isfinite(shown):
                        break
                bar.update(shown)
        finally:
            bar.close()
        step_losses = np.asarray(jnp.stack(losses))
        bad = np.flatnonzero(~np.isfinite(step_losses))
        if bad.size:
            step = (epoch - 1) * steps_per_epoch + int(bad[0]) + 1
            metrics |= {"status": f"stopped: non-finite loss at step {step}", "history": history}
            if primary:
                write_json(out / METRICS, metrics)
            last = checkpoint.latest_step(ckpt_dir)
            kept = f"the last good checkpoint is epoch {last} in {ckpt_dir}" if last else "no checkpoint was written"
            raise TrainingError(
                f"the loss became {step_losses[bad[0]]} at step {step} (epoch {epoch}, batch {int(bad[0]) + 1}); "
                f"training stopped and {kept}. Lower --lr (now {config.learning_rate:g}) or change --optimizer."
            )
        trainer_model = trainer.model
        test = scores(logits(trainer_model, test_set.images), test_set.labels)
        seconds = time.perf_counter() - t0
        elapsed += seconds
        history.append(
            {
                "epoch": epoch,
                "train_loss": float(step_losses.mean()),
                "train_accuracy": int(np.asarray(jnp.stack(correct)).sum()) / (steps_per_epoch * config.batch_size),
                "test_loss": test["loss"],
                "test_accuracy": test["accuracy"],
                "seconds": seconds,
                "devices": num_devices,
            }
        )
        # trainer_model already holds a copy of the parameters: no second copy from trainer.params.
        state = {"params": nnx.to_pure_dict(nnx.state(trainer_model, nnx.Param)), "opt_state": trainer.opt_state}
        meta = {"config": config.to_json(), "model": model_spec(model), "epoch": epoch, "history": history}
        metrics |= {"history": history, "epochs_completed": epoch, "test_accuracy": test["accuracy"],
                    "train_seconds": elapsed}  # fmt: skip
        if primary:
            checkpoint.save(ckpt_dir, epoch, state, meta)
            write_json(out / METRICS, metrics)
        if primary and (epoch == config.epochs or time.perf_counter() - drawn >= CURVES_EVERY):
            title = f"LeNet on {config.data}, {config.optimizer} lr {config.learning_rate:g}"
            plot_curves(history, out / CURVES, title=title)
            drawn = time.perf_counter()
        h = history[-1]
        log(
            f"epoch {epoch:>3}/{config.epochs}  loss {h['train_loss']:.4f}  train acc {100 * h['train_accuracy']:5.1f}%"
            f"  test loss {h['test_loss']:.4f}  test acc {100 * h['test_accuracy']:5.1f}%  ({seconds:.1f} s)"
        )
    metrics |= {"status": "complete", "history": history, "epochs_completed": len(history) and history[-1]["epoch"],
                "train_seconds": elapsed}  # fmt: skip
    if history:
        metrics["test_accuracy"] = history[-1]["test_accuracy"]
    if primary:
        write_json(out / METRICS, metrics)
    if history:
        last = history[-1]
        log(
            f"test accuracy {100 * last['test_accuracy']:.2f}% ({round(last['test_accuracy'] * len(test_set))}/"
            f"{len(test_set)}) after {last['epoch']} epochs, {elapsed:.1f} s of training; run in {out}"
        )
    return metrics


# -- using a trained model --------------------------------------------------------------------------


def load_model(source: str | os.PathLike, *, step: int | None = None) -> tuple[LeNet, dict]:
    """A trained LeNet from a run directory, its ``checkpoints`` directory, or a weights file.

    Args:
      source: a run directory (``jaxnets train --out``), a checkpoints
        directory, or a ``.safetensors``/``.pt`` file in PyTorch's layout
        (see :mod:`jaxnets.exchange`; the architecture is read off the weights).
      step: the checkpoint's epoch; the latest when None.

    Returns:
      ``(model, info)``: ``info`` holds ``"source"``, and for checkpoints
      ``"epoch"`` and ``"config"``.
    """
    from . import exchange

    path = Path(source)
    if path.is_file():
        arrays = exchange.read_weights(path)  # read once: a .pt file costs a child process with torch
        model = model_from_weights(arrays)
        exchange.load_torch_arrays(model, arrays, what=f"the weights file {str(path)!r}")
        return model, {"source": str(path)}
    ckpt_dir = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give a run directory (jaxnets train --out) or a weights file.")
    state, meta = checkpoint.restore(ckpt_dir, step)  # one read: weights and description of the same epoch
    model = build_model(meta["model"])
    _set_params(model, state["params"])
    return model, {"source": str(path), "epoch": meta.get("epoch"), "config": meta.get("config")}


def _set_params(model: nnx.Module, pure: dict) -> None:
    """Write a pure dict of parameters (as :func:`nnx.to_pure_dict` makes) into ``model``, shapes checked."""
    params = nnx.state(model, nnx.Param)
    want = {
        jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(params))
    }
    got = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(pure)}
    if want != got:
        diff = sorted(
            f"{k}: {got.get(k)} saved, {want.get(k)} expected"
            for k in set(want) | set(got)
            if want.get(k) != got.get(k)
        )
        raise ValueError(f"the saved parameters do not fit this model: {'; '.join(diff)}.")
    nnx.replace_by_pure_dict(params, jax.tree.map(jnp.asarray, pure))
    nnx.update(model, params)


def model_from_weights(arrays: dict) -> LeNet:
    """An untrained LeNet shaped to hold ``arrays`` (a torch-layout ``Net`` state_dict as NumPy arrays)."""
    try:
        conv1, fc1, fc3 = arrays["conv1.weight"], arrays["fc1.weight"], arrays["fc3.weight"]
    except KeyError as e:
        raise ValueError(
            f"these weights are not a LeNet `Net` state_dict: no {e.args[0]!r} (keys: {', '.join(sorted(arrays))})."
        ) from None
    kernel_size, in_channels = int(conv1.shape[2]), int(conv1.shape[1])
    side = math.isqrt(fc1.shape[1] // 16)
    # The smallest image whose two conv+pool stages leave `side` (32 for the tutorial's 5x5 net).
    candidates = [s for s in range(4, 257) if ((s - kernel_size + 1) // 2 - kernel_size + 1) // 2 == side]
    image_size = 32 if 32 in candidates else (candidates[0] if candidates else 32)
    spec = {"model": "lenet", "kernel_size": kernel_size, "image_size": image_size, "in_channels": in_channels,
            "num_classes": int(fc3.shape[0])}  # fmt: skip
    return build_model(spec)
