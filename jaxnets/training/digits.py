"""Training LeNet on real handwritten digits: the library behind ``jaxnets train``, ``evaluate`` and ``predict``.

A run lives in one directory::

    RUN_DIR/
      checkpoints/<epoch>/   one checkpoint per epoch: parameters, optimizer state,
                             and as metadata the config, the model and the history
                             so far (jaxnets.checkpoint: NumPy bytes, SHA-256s, JSON)
      metrics.json           config, per-epoch history, final ``test_accuracy``
                             (a fraction in [0, 1]), status
      curves.png             loss and accuracy per epoch (drawn after the last
                             epoch, and during a run every CURVES_EVERY s at most,
                             the first time CURVES_EVERY s after the start)

Every random choice comes from the seed: the initial weights from
``nnx.Rngs(seed)``, epoch ``e``'s batch order from
``jax.random.fold_in(jax.random.key(seed), e)``. A run resumed from the
checkpoint of epoch ``e`` therefore replays exactly the steps an uninterrupted
run takes after epoch ``e``, with the same compiled program, and ends
bit-identical to it.

An epoch runs as :meth:`jaxnets.Trainer.run` loops of up to :data:`CHUNK_STEPS`
compiled steps and one compiled test evaluation; the training images are put
on the device once, and each step gathers its batch there from an index
array. The weights and optimizer state are checked finite on the host, then a
background thread writes the epoch's checkpoint, ``metrics.json`` and
``curves.png`` (each atomically, in that order) while the next epoch trains;
:func:`train` returns or raises only once every finished epoch's files are
written.

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

import ast
import dataclasses
import functools
import inspect
import json
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .. import _programs, optim
from .._files import atomic_write
from ..losses import cross_entropy
from ..models import _init
from ..models._lenet import LeNet
from . import charts, checkpoint, data, distributed, inference
from .trainer import Trainer

MODELS = ("lenet", "resnet18", "mnist_net", "word_lm", "dcgan")
"""``--model``: LeNet on digits or MNIST; torchvision's ResNet-18 (:mod:`jaxnets.training.cifar`) on CIFAR-10;
pytorch/examples' MNIST network (:mod:`jaxnets.training.mnist_net`) on digits or MNIST; pytorch/examples' word
language model (:mod:`jaxnets.training.word_lm`) on WikiText-2; pytorch/examples' DCGAN
(:mod:`jaxnets.training.dcgan`) on digits, MNIST or CIFAR-10."""

_CLASSIFIER_DEFAULTS = {"optimizer": "adam", "epochs": 40, "batch_size": 32}
MODEL_DEFAULTS: dict[str, dict] = {
    "lenet": _CLASSIFIER_DEFAULTS,
    "resnet18": _CLASSIFIER_DEFAULTS,
    "mnist_net": _CLASSIFIER_DEFAULTS,
    # word_language_model/main.py's defaults: --lr 20 --clip 0.25 --epochs 40 --batch_size 20.
    "word_lm": {"optimizer": None, "lr": 20.0, "epochs": 40, "batch_size": 20, "clip_grad_norm": 0.25},
    # dcgan/main.py's defaults: --lr 0.0002 --niter 25 --batchSize 64.
    "dcgan": {"optimizer": None, "lr": 2e-4, "epochs": 25, "batch_size": 64},
}
"""Each model's defaults for the :class:`TrainConfig` settings left out (None)."""

OWN_UPDATE = {
    "word_lm": "word_language_model/main.py's own update: plain SGD (p -= lr * grad) after clip_grad_norm_, its lr "
    "divided by 4 after every epoch whose validation loss is not the best so far",
    "dcgan": "dcgan/main.py's own two updates: Adam with betas (0.5, 0.999) on the discriminator, then on the "
    "generator, every step",
}
"""Models that train with their example's own update rule instead of an ``--optimizer``, and what that rule is."""

OPTIMIZERS: dict[str, tuple[Callable, dict, float]] = {
    # name: (jaxnets.optim factory, fixed options, default learning rate: torch's, except sgd's and adagrad's)
    "sgd": (optim.sgd, {"momentum": 0.9}, 0.01),
    "adam": (optim.adam, {}, 1e-3),
    "adamw": (optim.adamw, {}, 1e-3),
    "rmsprop": (optim.rmsprop, {}, 1e-3),
    "adagrad": (optim.adagrad, {}, 1e-2),
    "adadelta": (optim.adadelta, {}, 1.0),
    "adamax": (optim.adamax, {}, 2e-3),
    "nadam": (optim.nadam, {}, 2e-3),
    "radam": (optim.radam, {}, 1e-3),
    "asgd": (optim.asgd, {}, 1e-2),
    "rprop": (optim.rprop, {}, 1e-2),
    "adafactor": (optim.adafactor, {}, 1e-2),
}
"""The ``--optimizer`` choices: torch-equivalent optimizers from :mod:`jaxnets.optim`, their options and default lr."""

NOT_OFFERED = {
    "lbfgs": "its step calls the loss up to max_iter times on one batch (torch's closure), which the compiled "
    "loop of one gradient per batch does not do; use jaxnets.optim.lbfgs in your own loop",
    "muon": "it updates 2-D weight matrices only (torch's Muon refuses other shapes) and LeNet's convolution "
    "kernels are 4-D and its biases 1-D; torch pairs it with AdamW through parameter groups, which is "
    "jaxnets.optim.param_groups in your own loop",
}
"""torch.optim's optimizers that ``jaxnets train`` does not offer, and why (its error message says so)."""

CYCLED_MOMENTUM = {"sgd": "momentum", "adam": "betas", "adamw": "betas"}
"""Optimizers whose momentum (SGD) or beta1 (Adam, AdamW) ``CyclicLR``/``OneCycleLR`` may cycle here."""

SCHEDULERS = (
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "OneCycleLR",
)
"""The ``--scheduler`` choices (torch's names, any case). Stepped once per epoch as in torch's examples, except
``CyclicLR`` and ``OneCycleLR``, which torch steps after every batch. Not offered: ``LambdaLR`` and
``MultiplicativeLR`` (they take a Python function), ``SequentialLR`` and ``ChainedScheduler`` (other schedulers),
``ReduceLROnPlateau`` (a metric)."""

PER_STEP_SCHEDULERS = ("CyclicLR", "OneCycleLR")
_SET_BY_TRAIN = ("steps_per_epoch", "horizon")  # from the data and --epochs: not for the user to give


def _scheduler_class(name: str):
    by_lower = {s.lower(): s for s in SCHEDULERS}
    if name.lower() not in by_lower:
        others = {"lambdalr", "multiplicativelr", "sequentiallr", "chainedscheduler", "reducelronplateau"}
        why = (
            f" ({name} takes Python functions, other schedulers or a metric, which a command line cannot give; "
            "use jaxnets.optim.lr_scheduler in your own loop)"
            if name.lower() in others
            else ""
        )
        raise ValueError(f"--scheduler: unknown scheduler {name!r}{why}; choose one of {', '.join(SCHEDULERS)}.")
    return by_lower[name.lower()]


def _split_args(text: str) -> list[str]:
    """``"a=1,b=[2,3]"`` -> ``["a=1", "b=[2,3]"]``: commas inside brackets belong to the value."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[(" and 1 or (ch in "])" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def parse_scheduler(spec: str) -> tuple[str, dict]:
    """``"steplr:step_size=1,gamma=0.7"`` -> ``("StepLR", {"step_size": 1, "gamma": 0.7})``.

    The name is torch's (any case); each value is a Python literal (a number, ``True``/``False``, a string such as
    ``'cos'`` or a bare word, a list ``[30,80]``). Raises a ValueError that names the bad part and the fix.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"--scheduler must be NAME or NAME:ARG=VALUE,...; got {spec!r}.")
    name, _, rest = spec.strip().partition(":")
    cls_name = _scheduler_class(name.strip())
    signature = inspect.signature(getattr(optim.lr_scheduler, cls_name))
    params = list(signature.parameters)
    accepted = [p for p in params[1:] if p not in _SET_BY_TRAIN]
    args: dict = {}
    for part in _split_args(rest) if rest.strip() else []:
        key, eq, text = (s.strip() for s in part.partition("="))
        if not eq or not key:
            raise ValueError(
                f"--scheduler {spec!r}: {part!r} is not ARG=VALUE; write e.g. {cls_name.lower()}:"
                f"{accepted[0]}=VALUE (arguments: {', '.join(accepted)})."
            )
        if key in _SET_BY_TRAIN:
            raise ValueError(
                f"--scheduler {spec!r}: {key} is set by jaxnets train (from the data, --batch-size and --epochs); "
                "leave it out."
            )
        if key not in params:
            raise ValueError(f"--scheduler {spec!r}: {cls_name} has no argument {key!r}; its arguments: "
                             f"{', '.join(p for p in params if p not in _SET_BY_TRAIN)}.")  # fmt: skip
        if key in args:
            raise ValueError(f"--scheduler {spec!r}: {key} is given twice.")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word, such as anneal_strategy=linear
        args[key] = list(value) if isinstance(value, tuple) else value
    return cls_name, args


def scheduler_spec(spec: str | None) -> str | None:
    """The canonical ``--scheduler`` spec (torch's name, arguments sorted), so that equal settings compare equal."""
    if spec is None:
        return None
    name, args = parse_scheduler(spec)
    # No spaces ([2,5], not [2, 5]): the form metrics.json shows can be pasted into a command line as it is.
    return name + "".join(
        f"{',' if i else ':'}{k}={repr(v).replace(', ', ',')}" for i, (k, v) in enumerate(sorted(args.items()))
    )


def build_schedule(spec: str, lr: float, *, epochs: int, steps_per_epoch: int):
    """The :mod:`jaxnets.optim.lr_scheduler` schedule of a ``--scheduler`` spec, for a run of ``epochs`` epochs.

    Its first argument (``lr``, ``OneCycleLR``'s ``max_lr``, ``CyclicLR``'s ``base_lr``) defaults to ``lr``.
    Epoch schedulers step every ``steps_per_epoch`` optimizer steps, ``CyclicLR``/``OneCycleLR`` every step;
    ``OneCycleLR`` spans the run (``total_steps = epochs * steps_per_epoch``) unless given ``total_steps`` or
    ``epochs``.
    """
    name, args = parse_scheduler(spec)
    cls = getattr(optim.lr_scheduler, name)
    first = next(iter(inspect.signature(cls).parameters))
    args.setdefault(first, lr)
    per_step = name in PER_STEP_SCHEDULERS
    if name == "OneCycleLR":
        if "epochs" in args:
            args["steps_per_epoch"] = steps_per_epoch
        elif "total_steps" not in args:
            args["total_steps"] = epochs * steps_per_epoch
    else:
        args["steps_per_epoch"] = 1 if per_step else steps_per_epoch
        # Enough table for the whole run: schedules past their table give NaN inside jit.
        args["horizon"] = max(epochs * (steps_per_epoch if per_step else 1), 1) + 1
    try:
        return cls(**args)
    except TypeError as e:  # a missing required argument
        missing = [p.name for p in inspect.signature(cls).parameters.values()
                   if p.default is inspect.Parameter.empty and p.name not in args]  # fmt: skip
        if missing:
            raise ValueError(f"--scheduler {spec!r}: {name} needs {', '.join(missing)}; write e.g. "
                             f"{name.lower()}:{missing[0]}=VALUE.") from None  # fmt: skip
        raise ValueError(f"--scheduler {spec!r}: {e}") from None
    except ValueError as e:
        raise ValueError(f"--scheduler {spec!r}: {e}") from None


CHECKPOINTS = "checkpoints"
METRICS = "metrics.json"
CURVES = "curves.png"
CONFUSION = "confusion.png"  # written by `jaxnets evaluate RUN`: an overwritten run's would describe the old model
_RUN_FILES = (CHECKPOINTS, METRICS, CURVES, CONFUSION, "samples")  # samples/: a DCGAN run's generated images

CURVES_EVERY = 10.0
"""Seconds between draws of ``curves.png`` during a run (the first after as long): a draw takes 0.11 to 0.14 s of
CPU, twice a digits epoch, so a run shorter than this draws once, after its last epoch."""

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
      model: ``"lenet"``: the tutorial's ``Net`` (:class:`jaxnets.LeNet`, 5x5 kernels);
        ``"resnet18"``: torchvision's ResNet-18 (:func:`jaxnets.ports.resnet18`), on ``cifar10:DIR`` only;
        ``"mnist_net"``: pytorch/examples' MNIST ``Net`` (:mod:`jaxnets.training.mnist_net`), on digits or MNIST.
        ``"word_lm"``: pytorch/examples' word language model (:mod:`jaxnets.training.word_lm`), on
        ``wikitext2:DIR`` only, trained with its example's own update (:data:`OWN_UPDATE`).
      data: ``"digits"``, ``"mnist:DIR"`` or ``"cifar10:DIR"`` (see :func:`jaxnets.data.load`), or
        ``"wikitext2:DIR"`` (:func:`jaxnets.training.word_lm.corpus`).
      optimizer: a key of :data:`OPTIMIZERS`; None for the model's default (:data:`MODEL_DEFAULTS`), and
        always None for a model of :data:`OWN_UPDATE`.
      lr: learning rate; None for the model's default, else the optimizer's in :data:`OPTIMIZERS`.
      epochs: passes over the training set; None for the model's default.
      batch_size: images per step (word_lm: the columns the text is cut into); None for the model's default.
        The last incomplete batch of each epoch is dropped (a different one each epoch), so every step has one
        shape and compiles once.
      seed: seeds the initial weights and every epoch's batch order.
      weight_decay: the optimizer's ``weight_decay`` (torch's meaning for each:
        L2 added to the gradient, decoupled for AdamW); None for its default
        (0, AdamW's 0.01). Rprop has none.
      scheduler: a ``--scheduler`` spec, ``NAME[:ARG=VALUE,...]`` with torch's
        scheduler name and arguments (see :data:`SCHEDULERS`,
        :func:`build_schedule`), kept in canonical form; None: a constant lr.
      clip_grad_norm: clip the gradients' total 2-norm to this before each
        step (``torch.nn.utils.clip_grad_norm_``); None: no clipping.
    """

    model: str = "lenet"
    data: str = "digits"
    optimizer: str | None = None
    lr: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    weight_decay: float | None = None
    scheduler: str | None = None
    clip_grad_norm: float | None = None

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}; got {self.model!r}.")
        if self.model in OWN_UPDATE:
            allowed = () if self.model == "dcgan" else ("clip_grad_norm",)  # upstream's DCGAN clips nothing
            given = [f"--{k.replace('_', '-')} {getattr(self, k)}"
                     for k in ("optimizer", "weight_decay", "scheduler", "clip_grad_norm")
                     if getattr(self, k) is not None and k not in allowed]  # fmt: skip
            if given:
                applying = ", ".join(f"--{k.replace('_', '-')}" for k in ("lr", *allowed, "epochs"))
                raise ValueError(
                    f"--model {self.model} trains with {OWN_UPDATE[self.model]}; {' and '.join(given)} would "
                    f"change that. Leave them out ({applying} and --batch-size apply)."
                )
        for name, value in MODEL_DEFAULTS[self.model].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        _check_model_data(self.model, self.data, self.batch_size)
        if self.model in OWN_UPDATE:
            self._check_numbers()
            return
        if self.optimizer not in OPTIMIZERS:
            why = f": {NOT_OFFERED[self.optimizer]}" if self.optimizer in NOT_OFFERED else ""
            raise ValueError(
                f"optimizer {self.optimizer!r} is not offered by jaxnets train{why}. Choose one of "
                f"{', '.join(OPTIMIZERS)}."
            )
        self._check_numbers()
        factory = OPTIMIZERS[self.optimizer][0]
        if self.weight_decay is not None and "weight_decay" not in inspect.signature(factory).parameters:
            raise ValueError(
                f"--weight-decay: {self.optimizer} has no weight decay (torch.optim's has none either); leave "
                "--weight-decay out or choose another --optimizer."
            )
        object.__setattr__(self, "scheduler", scheduler_spec(self.scheduler))
        # Built once with one step per epoch: a bad argument is refused before a run directory is touched.
        build_optimizer(self, steps_per_epoch=1)

    def _check_numbers(self) -> None:
        for name in ("weight_decay", "clip_grad_norm"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"{name} must be a number >= 0; got {value!r}.")
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


def _check_model_data(model: str, data_spec, batch_size) -> None:
    """LeNet and the MNIST net take 1-channel digits, ResNet-18 CIFAR-10's colour images, the word language model
    WikiText-2's text: refuse the other pairs."""
    kind = data_spec.strip().partition(":")[0] if isinstance(data_spec, str) else None
    if (model == "word_lm") != (kind == "wikitext2"):
        raise ValueError(
            f"--model word_lm trains on text: give --data wikitext2:DIR (the folder of train.txt, valid.txt and "
            f"test.txt); got --data {data_spec!r}."
            if model == "word_lm"
            else f"--data {data_spec!r} is text, which only --model word_lm (pytorch/examples' word language model) "
            f"trains on; --model {model} takes images: add --model word_lm, or give it images."
        )
    colour = kind == "cifar10"
    if model == "resnet18" and not colour:
        raise ValueError(
            f"--model resnet18 trains on CIFAR-10's colour images; --data {data_spec!r} holds 1-channel digits, "
            "which are LeNet's. Give --data cifar10:DIR (the cifar-10-batches-py folder), or --model lenet."
        )
    if model == "mnist_net" and colour:
        raise ValueError(
            f"--data {data_spec!r} holds 3-channel colour images, which --model mnist_net (pytorch/examples' MNIST "
            "network, 1-channel 28x28 digits) does not take: give --data digits or --data mnist:DIR (MNIST's IDX "
            "files), or --model resnet18 for CIFAR-10."
        )
    if model == "lenet" and colour:
        raise ValueError(
            f"--data {data_spec!r} holds 3-channel colour images, which LeNet (1-channel digits) does not take: "
            "add --model resnet18."
        )
    if model == "resnet18" and isinstance(batch_size, int) and batch_size == 1:
        raise ValueError(
            "--batch-size 1 leaves ResNet-18's BatchNorm one value per channel at layer4 (1x1 at 32x32), which "
            "torch refuses in train mode: use a batch size of 2 or more."
        )


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
    """A LeNet from a :func:`model_spec` dict (the tutorial's ``Net`` when None), its weights drawn from ``seed``."""
    return _build_model(spec, seed, None)


def _build_model(spec: dict | None, seed: int, programs) -> LeNet:
    """:func:`build_model`; ``programs`` (a :class:`jaxnets._programs.Programs`, as ``jaxnets train`` passes, or
    None): load the compiled draw of the weights from it instead of tracing it; the weights are the same."""
    spec = dict(spec or {"model": "lenet"})
    kind = spec.pop("model", "lenet")
    if kind in MODELS and kind != "lenet":
        raise TrainingError(
            f"this is a {kind} run: jaxnets evaluate, predict, export and import work with LeNet's runs and weights "
            "only. "
            + (
                "Its losses per epoch are in its metrics.json (history) and its generated images in samples/; "
                if kind == "dcgan"
                else "Its test scores after each epoch are in its metrics.json (history), computed in eval mode "
                "(no dropout, BatchNorm's running buffers); "
            )
            + "load its weights in Python with jaxnets.checkpoint.restore."
        )
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r} in the model description; expected one of {', '.join(MODELS)}.")
    return _built_lenet(tuple(sorted(spec.items())), seed, programs)


_LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")
"""LeNet's layers in the order its constructor draws their parameters: each layer's kernel, then its bias."""


def _built_lenet(spec: tuple, seed: int, programs=None) -> LeNet:
    """``LeNet(**dict(spec), rngs=nnx.Rngs(seed))``, its ten uniform draws made by one small compiled program.

    The constructor draws parameter ``i`` (kernel then bias, layer by layer) as ``uniform(fold_in(key(seed), i),
    (size,), -bound, bound)`` with ``bound = 1 / sqrt(fan_in)`` (:mod:`jaxnets.models._init`). Jitted whole,
    that is one threefry per draw for XLA to lower: 0.45 to 0.55 s of a warm ``jaxnets train`` start (the
    persistent cache skips the compilation, not the lowering). :func:`_draws` makes the same ten draws as one
    vmapped ``uniform``, lowered once: 0.17 to 0.21 s instead (warm cache, one process each, under the CPU lock).
    The shapes come from tracing the constructor with zero initialisers (``nnx.eval_shape``). The weights are
    bit-identical to the eager constructor's (tests/test_training.py checks several seeds and shapes); with
    ``jax_threefry_partitionable`` off, where a longer draw does not start with a shorter one, the constructor
    runs eagerly, as it does under another PRNG than threefry. Through ``programs`` the stored draw is loaded
    instead of traced and lowered: 36 against 95 to 98 ms (warm caches, one process each).
    """
    if not (jax.config.jax_threefry_partitionable and _threefry()):
        return LeNet(**dict(spec), rngs=nnx.Rngs(seed))
    zeros = nnx.initializers.zeros
    abstract = nnx.eval_shape(lambda: LeNet(**dict(spec), kernel_init=zeros, bias_init=zeros, rngs=nnx.Rngs(0)))
    shapes = tuple((getattr(abstract, n).kernel.shape, getattr(abstract, n).bias.shape) for n in _LAYERS)
    args = (shapes, _key_words(seed))
    drawn = _draws(*args) if programs is None else programs.call("draws", _draws, args, static_argnums=(0,))
    values = iter(np.asarray(drawn))
    pure = {}
    for name, (kernel_shape, bias_shape) in zip(_LAYERS, shapes, strict=True):
        # jax.device_put, not jnp.asarray: in this JAX the latter stages NumPy input through a program per shape.
        pure[name] = {"kernel": jax.device_put(next(values)[: math.prod(kernel_shape)].reshape(kernel_shape)),
                      "bias": jax.device_put(next(values)[: math.prod(bias_shape)].reshape(bias_shape))}  # fmt: skip
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


@functools.partial(jax.jit, static_argnums=0)
def _draws(shapes: tuple, words) -> jax.Array:
    """Row ``i``: parameter ``i``'s torch-default uniform draw, padded to the longest; ``(2 * layers, longest)``.

    The draw is :mod:`jaxnets.models._init`'s (its ``uniform`` with its ``bound``, which a layer's weights and
    bias share), with the key ``nnx.Rngs(seed)`` hands out for parameter ``i``: ``fold_in(key(seed), i)``.
    With partitionable threefry (JAX's default) element ``j`` of a flat draw depends on the key and ``j``
    alone, so the first ``size`` elements of a longer draw are the draw of ``size``.
    """
    sizes = [math.prod(s) for pair in shapes for s in pair]
    bounds = np.array([_init.bound(_init.kernel_fan_in(k)) for k, _ in shapes for _ in (0, 1)], np.float32)
    key = jax.random.wrap_key_data(words)  # jax.random.key(seed), as nnx.Rngs(seed) makes it
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(len(sizes), dtype=jnp.uint32))
    draw = lambda key, bound: _init.uniform(key, (max(sizes),), jnp.float32, bound)
    return jax.vmap(draw)(keys, jnp.asarray(bounds))


def build_optimizer(config: TrainConfig, *, steps_per_epoch: int):
    """The optax transformation a run of ``config`` trains with, ``steps_per_epoch`` optimizer steps per epoch.

    ``config``'s optimizer with its lr, or with the schedule of its ``scheduler`` (whose step count lives in the
    optimizer state, so a resumed run continues the schedule where it stopped), its ``weight_decay``, and
    ``clip_grad_norm`` first in the chain, over all parameters, as torch's ``clip_grad_norm_`` before
    ``optimizer.step()``. ``CyclicLR``/``OneCycleLR`` also cycle SGD's momentum or Adam's beta1 when their
    ``cycle_momentum`` is on (torch's default).
    """
    factory, options, _ = OPTIMIZERS[config.optimizer]
    options = dict(options)
    lr = config.learning_rate
    if config.weight_decay is not None:
        options["weight_decay"] = config.weight_decay
    if config.scheduler is not None:
        lr = build_schedule(config.scheduler, lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch)
        if lr.momentum is not None:
            if config.optimizer not in CYCLED_MOMENTUM:
                raise ValueError(
                    f"--scheduler {config.scheduler!r} cycles the momentum (cycle_momentum=True, torch's default), "
                    f"which jaxnets does for {', '.join(CYCLED_MOMENTUM)} only, not {config.optimizer}. Add "
                    "cycle_momentum=False to the scheduler's arguments or choose one of those optimizers."
                )
            if CYCLED_MOMENTUM[config.optimizer] == "momentum":
                options["momentum"] = lr.momentum
            else:
                options["betas"] = (lr.momentum, 0.999)
    try:
        tx = factory(lr, **options)
    except ValueError as e:
        raise ValueError(f"--optimizer {config.optimizer}: {e}") from None
    if config.clip_grad_norm is not None:
        tx = optax.chain(optim.clip_grad_norm(config.clip_grad_norm), tx)
    return tx


def _lr_at(config: TrainConfig, schedule, count: int) -> float:
    """The lr of optimizer step ``count`` (from 0), as torch's float64 ``group["lr"]``: the schedule's table value."""
    if schedule is None:
        return config.learning_rate
    lrs = schedule.lrs
    return float(lrs[min(count // schedule.steps_per_epoch, len(lrs) - 1)])


def _loss_and_correct(model, images, labels, idx, loss=cross_entropy):
    """The mean ``loss`` (cross-entropy of logits, or another of the same signature) and the number correct."""
    logits = model(images[idx])
    y = labels[idx]
    return loss(logits, y), jnp.sum(jnp.argmax(logits, axis=-1) == y)


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


def plot_curves(history: list[dict], path: Path, title: str = "", held_out: str = "test") -> None:
    """Loss and accuracy per epoch, train and ``held_out`` (the history's ``test_loss`` and ``test_accuracy``, or
    another set's), as a PNG: the loss on a log scale labelled in plain numbers (0.01, 0.1, 1).

    Drawn with Pillow (:mod:`jaxnets.training.charts`), thread-safe, so the training loop's writer thread draws
    it while the loop runs.
    """
    epochs = [h["epoch"] for h in history]

    def series(key, scale=1.0):
        return [charts.Series(name, epochs, [scale * h[f"{name}_{key}"] for h in history], marker)
                for name, marker in (("train", "o"), (held_out, "s"))]  # fmt: skip

    panels = [
        charts.Panel("loss", "epoch", "cross-entropy", series("loss"), log_y=True),
        charts.Panel("accuracy", "epoch", "%", series("accuracy", 100.0)),
    ]
    charts.save_chart(panels, path, title=title)


def plot_confusion(matrix: np.ndarray, path: Path, title: str = "") -> None:
    """A confusion matrix (rows: true label, columns: predicted) as a PNG, counts written in the cells."""
    from matplotlib.figure import Figure

    n = matrix.shape[0]
    fig = Figure(figsize=(6, 5.4))
    ax = fig.subplots()
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


# -- a run ------------------------------------------------------------------------------------------


def holds_run(out: Path) -> bool:
    """Whether ``out`` already holds a run (checkpoints or metrics)."""
    return any((out / name).exists() for name in (CHECKPOINTS, METRICS))


def _prepare(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an output directory that would lose or mix up a run; delete nothing.

    :func:`_open_run` removes an overwritten run only once the new run's data and settings have passed their checks.
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


def _open_run(out: Path, load: Callable[[], object], *, resume: bool, overwrite: bool, primary: bool = True):
    """Start a run in ``out``, as every model of ``jaxnets train`` does: refuse a directory that would lose or mix up
    a run (:func:`_prepare`), then ``load()`` the run's data, checking it; only then (a bad ``--data`` or
    ``--batch-size`` must not cost the old run) remove an overwritten run and create ``out``, in the ``primary``
    process (the one that writes). Returns what ``load`` returned."""
    _prepare(out, resume=resume, overwrite=overwrite)
    loaded = load()
    if primary:
        if overwrite:
            remove_run(out)
        out.mkdir(parents=True, exist_ok=True)
    return loaded


def _steps_per_epoch(images: int, batch_size: int) -> int:
    """The full batches of ``batch_size`` in ``images`` training images (the last partial one dropped); refused
    when there are none."""
    steps = data.num_batches(images, batch_size, drop_last=True)
    if steps == 0:
        raise TrainingError(
            f"--batch-size {batch_size} is larger than the {images} training images: "
            "nothing to train on. Use a smaller batch size."
        )
    return steps


def _training_data(config: TrainConfig) -> tuple[data.Dataset, data.Dataset, int]:
    """The training and test sets of ``config.data``, and the steps of an epoch."""
    train_set, test_set = data.load(config.data)
    return train_set, test_set, _steps_per_epoch(len(train_set), config.batch_size)


def remove_run(out: Path) -> None:
    """Delete the run in ``out``: what a run writes, and nothing else (other files there are the user's)."""
    for name in _RUN_FILES:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _effective(config: dict) -> dict:
    """``config`` with ``lr`` and ``weight_decay`` resolved to the optimizer's defaults when None, so that equal
    settings compare equal."""
    lr, weight_decay = config.get("lr"), config.get("weight_decay")
    if config.get("optimizer") in OPTIMIZERS:
        factory, _, default_lr = OPTIMIZERS[config["optimizer"]]
        lr = default_lr if lr is None else lr
        if weight_decay is None and "weight_decay" in (params := inspect.signature(factory).parameters):
            weight_decay = params["weight_decay"].default
    # Runs saved before these settings existed had none of them.
    return {"scheduler": None, "clip_grad_norm": None, **config, "lr": lr, "weight_decay": weight_decay}


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
    if (
        not differ
        and saved.get("epochs") != now["epochs"]
        and now["scheduler"] is not None
        and now["scheduler"].startswith("OneCycleLR")
        and not any(f"{k}=" in now["scheduler"] for k in ("total_steps", "epochs"))
    ):
        raise TrainingError(
            f"cannot resume {where} with --epochs {now['epochs']}: its OneCycleLR spans the run's "
            f"{saved.get('epochs')} epochs (total_steps = epochs x steps per epoch), so more epochs would change "
            "every lr already used. Resume with the run's --epochs, or start a new run with a larger one."
        )
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

    def update(self, loss: float | None, steps: int = 1) -> None:
        self.bar.update(steps)
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


CHUNK_STEPS = 128
"""Training steps per compiled loop (one dispatch); a longer epoch runs as several, the bar updated after each."""


def _train_epoch(
    trainer, images, labels, order: np.ndarray, mesh, desc: str, progress, test_batches: tuple
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """One epoch: the steps of ``order`` ``(steps, batch)`` as compiled loops of up to :data:`CHUNK_STEPS` steps,
    then the evaluation of ``test_batches`` with the epoch's weights.

    Returns the host copies of every step's loss and number of correct predictions, and the evaluation's
    outputs, still on the device. The evaluation is dispatched before the last loop is waited for, so that it
    starts as soon as the loop ends, and the host copies run while it computes.
    """
    steps = len(order)
    chunk = min(steps, CHUNK_STEPS)  # at most two loop lengths, each compiled once: CHUNK_STEPS and the remainder
    # Each step's indices are split over the devices (axis 1); the steps (axis 0) run one after another.
    spec = (
        None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, distributed.DATA))
    )
    bar = _Progress(steps, desc, progress)
    outputs, shown = [], 0
    try:
        for start in range(0, steps, chunk):
            part = order[start : start + chunk]
            part = jax.device_put(part) if spec is None else distributed._global(part, spec)
            outputs.append(trainer.run(len(part), images, labels, per_step=(part,)))
            # Dispatched asynchronously: the bar waits for the previous chunk while this one runs.
            if len(outputs) > 1:
                shown = _advance(bar, outputs[-2], shown)
        evaluation = trainer.evaluate(*test_batches)
        if outputs:
            _advance(bar, outputs[-1], shown)
    finally:
        bar.close()
    losses = np.concatenate([np.asarray(loss) for loss, _ in outputs])
    hits = np.concatenate([np.asarray(h) for _, h in outputs])
    return losses, hits, evaluation


def _advance(bar, output, shown: int) -> int:
    losses = np.asarray(output[0])
    bar.update(float(losses[-1]), len(losses))
    return shown + len(losses)


def _eval_batches(dataset: data.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test set as ``(K, B, ...)`` batches of at most :data:`EVAL_BATCH` images, zero-padded, with a 0/1 mask."""
    n = len(dataset)
    size = max(1, min(n, EVAL_BATCH))
    k = max(1, -(-n // size))
    pad = k * size - n
    images = np.concatenate([dataset.images, np.zeros((pad, *dataset.images.shape[1:]), np.float32)])
    labels = np.concatenate([dataset.labels, np.zeros(pad, np.int32)])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return images.reshape(k, size, *images.shape[1:]), labels.reshape(k, size), mask.reshape(k, size)


def _eval_sums(model, images, labels, mask, loss=cross_entropy):
    """Summed ``loss`` (cross-entropy, or another taking ``reduction``) and number correct over ``(K, B, ...)``
    masked batches, in one compiled loop."""

    def one(batch):
        x, y, w = batch
        out = model(x)
        correct = jnp.sum(jnp.where(w > 0, jnp.argmax(out, axis=-1) == y, False))
        return jnp.sum(w * loss(out, y, reduction="none")), correct

    losses, correct = jax.lax.map(one, (images, labels, mask))
    return jnp.sum(losses), jnp.sum(correct)


def first_non_finite(state) -> str | None:
    """The path (``params/fc1/kernel``) of the first array of ``state`` holding a NaN or an infinity, or None."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        a = np.asarray(leaf)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            return jax.tree_util.keystr(path, simple=True, separator="/")
    return None


def _bad_values(state, where: str) -> str:
    leaf = next(v for p, v in jax.tree_util.tree_leaves_with_path(state)
                if jax.tree_util.keystr(p, simple=True, separator="/") == where)  # fmt: skip
    a = np.asarray(leaf)
    bad = a[~np.isfinite(a)]
    kinds = sorted({"nan" if np.isnan(v) else str(v) for v in bad.ravel().tolist()})
    return f"{bad.size} of {a.size} values non-finite ({', '.join(kinds)})"


def _stop(writer, out, metrics, history, primary, status, what, fix) -> None:
    """End a run that went non-finite: every earlier epoch written, metrics marked stopped, a TrainingError."""
    ckpt_dir = out / CHECKPOINTS
    writer.close()  # the earlier epochs' files first: they are the run's last good state
    metrics |= {"status": f"stopped: {status}", "history": history}
    if primary:
        write_json(out / METRICS, metrics)
    last = checkpoint.latest_step(ckpt_dir)
    kept = f"the last good checkpoint is epoch {last} in {ckpt_dir}" if last else "no checkpoint was written"
    raise TrainingError(f"{what}; training stopped and {kept}. {fix}")


def _complete(out, metrics, history, elapsed, primary, **summary) -> None:
    """End a run that finished: metrics marked complete with its history, epochs, seconds and ``summary``, written."""
    metrics |= {"status": "complete", "history": history, "epochs_completed": len(history) and history[-1]["epoch"],
                "train_seconds": elapsed} | summary  # fmt: skip
    if primary:
        write_json(out / METRICS, metrics)


class _Writer:
    """Writes a run's files one after another on a background thread, so the next epoch trains meanwhile.

    Every job is the same call that would otherwise run in the loop (``checkpoint.save``, ``write_json``,
    ``plot_curves``), so each file is as atomic as before. After a failed job the later ones are skipped
    (``metrics.json`` must not name an epoch whose checkpoint failed) and the error is raised in the
    training loop by the next :meth:`check`, :meth:`submit` or :meth:`close`.
    """

    def __init__(self):
        self._jobs: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args = job
            try:
                if self._error is None:
                    fn(*args)
            except BaseException as error:  # handed to the training loop
                self._error = error
            finally:
                self._jobs.task_done()
        self._jobs.task_done()

    def check(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self.close(raise_error=False)
            raise error

    def submit(self, fn, *args) -> None:
        self.check()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="jaxnets-writer", daemon=False)
            self._thread.start()
        self._jobs.put((fn, args))

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        # On an error, the jobs already submitted finish and the error goes on (a job's own error is dropped).
        self.close(raise_error=error_type is None)

    def close(self, raise_error: bool = True) -> None:
        """Wait for every submitted job; then raise the first error of any (unless ``raise_error`` is False)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        if raise_error:
            self.check()


def _network(config: TrainConfig, train_set: data.Dataset, programs):
    """``(model, step loss, evaluation, model description, name)`` of a run: LeNet's, ResNet-18's on CIFAR-10, or
    the MNIST example's network; LeNet's weights drawn through ``programs`` (see :func:`_build_model`)."""
    if config.model in ("resnet18", "mnist_net"):
        from . import cifar, mnist_net

        module, name, prepare, loss = {
            "resnet18": (cifar, "ResNet-18", cifar.normalize, cross_entropy),
            "mnist_net": (mnist_net, "MNIST Net", mnist_net.to_input, mnist_net.nll_loss),
        }[config.model]
        model = module.build_model(config.seed)
        return model, *_mode_fns(prepare, loss), module.model_spec(model), name
    spec = {"model": config.model, "image_size": train_set.images.shape[1]}
    model = _build_model(spec, config.seed, programs)
    return model, _loss_and_correct, _eval_sums, model_spec(model), "LeNet"


def _mode_fns(prepare, loss=cross_entropy):
    """The step's loss and the test evaluation of a model with train and eval modes (BatchNorm, dropout), on
    ``prepare(images)``: :func:`_loss_and_correct` in train mode and :func:`_eval_sums` in eval mode, each set on
    the copy of the model the trainer merges for that call (its own stays in train mode)."""

    def step(model, images, labels, idx):
        model.train()  # set here, before any nested trace uses the model
        return _loss_and_correct(lambda x: model(prepare(x)), images, labels, idx, loss=loss)

    def evaluate(model, images, labels, mask):
        model.eval()
        return _eval_sums(lambda x: model(prepare(x)), images, labels, mask, loss=loss)

    return step, evaluate


def _compiled_init(optimizer):
    """``optimizer`` whose ``init`` is one compiled program (found in the persistent cache from a run's second time
    on): 14 ms against 73 to 96 ms op by op for Adam's state (warm caches, one process each). Same values, dtypes
    and weak types (tests/test_training.py checks every optimizer of ``--optimizer``)."""
    return optimizer._replace(init=jax.jit(optimizer.init))


def _threefry() -> bool:
    """Whether JAX's default PRNG is threefry, whose seeding :func:`_key_words` restates."""
    return jax.config.jax_default_prng_impl == "threefry2x32"


def _key_words(seed: int) -> np.ndarray:
    """``key_data(jax.random.key(seed))`` without a program, for JAX's default threefry PRNG (:func:`_threefry`).

    Threefry's seed words: the high 32 bits of the seed (0 without x64, where JAX keeps only the low 32), then
    the low 32. ``jax.random.key(seed)`` computes them with a few small programs, each traced and lowered in
    every process; passed to a compiled program as a value, they let one program serve every seed. The rule is
    threefry's seeding in JAX, not a public API: tests/test_training.py checks it against ``jax.random.key``
    for five seeds up to ``2**40 + 1``, with and without x64.
    """
    high = (seed >> 32) & 0xFFFFFFFF if jax.config.jax_enable_x64 else 0
    return np.array([high, seed & 0xFFFFFFFF], np.uint32)


def _run_key(seed: int) -> jax.Array:
    """``jax.random.key(seed)``: from :func:`_key_words` (no program) under threefry, else from JAX itself."""
    return jax.random.wrap_key_data(_key_words(seed)) if _threefry() else jax.random.key(seed)


def _run_state(trainer: Trainer) -> dict:
    """A checkpoint's arrays as NumPy copies: parameters, optimizer state, and the buffers of a model with any.

    Copied from the trainer's live buffers to the host directly (no device copy first, which cost a program
    per shape to trace and lower in every process, and 2.2 to 3.0 ms an epoch for LeNet and Adam).
    """
    params, opt_state, buffers = trainer._carry(0, 1, 2, host=True)
    state = {"params": nnx.to_pure_dict(params), "opt_state": opt_state}
    if jax.tree.leaves(buffers := nnx.to_pure_dict(buffers)):
        # A PRNG key (dropout's, in the model's nnx.Rngs) as its uint32 words: NumPy and checkpoints have no key
        # dtype. The resume path wraps them back (:func:`_keys_like`).
        state["buffers"] = jax.tree.map(lambda x: np.asarray(jax.random.key_data(x)) if _is_key(x) else x, buffers)
    return state


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_like(saved: dict, model: nnx.Module) -> dict:
    """``saved`` buffers with every key's words (see :func:`_run_state`) wrapped back as a key of the model's PRNG."""
    current = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))
    wrap = lambda words, now: jax.random.wrap_key_data(words, impl=jax.random.key_impl(now)) if _is_key(now) else words
    return jax.tree.map(wrap, saved, current)


def _resume_state(out: Path, config: TrainConfig, like: dict, log) -> tuple[dict, list[dict], int]:
    """The last checkpoint of the run in ``out``: ``(state, history, epochs done)``, its arrays restored like
    ``like``'s (the new run's state as host copies), for the caller to put into its model and optimizer. The run's
    settings are checked against ``config`` first: another optimizer's state would not fit, and its error would not
    say why. Shared by every model of ``jaxnets train``."""
    ckpt_dir = out / CHECKPOINTS
    step = checkpoint.latest_step(ckpt_dir)  # once: the settings checked and the state restored are one epoch's
    _check_resumable(checkpoint.read_metadata(ckpt_dir, step).get("config"), config, out)
    state, meta = checkpoint.restore(ckpt_dir, step, like=like)
    history, start_epoch = list(meta["history"]), int(meta["epoch"])
    log(f"resuming {out} after epoch {start_epoch} of {config.epochs}")
    if start_epoch >= config.epochs:
        log(f"the run already has {start_epoch} epochs; pass a larger --epochs to train on")
    return state, history, start_epoch


def _resume(trainer: Trainer, model: nnx.Module, config: TrainConfig, out: Path, log) -> tuple[list[dict], int]:
    """Load the last checkpoint of the run in ``out`` into ``trainer`` (``model``: its model, whose parameters and
    buffers are set on the way), through :func:`_resume_state`; ``(history, epochs done)``."""
    # Host copies: restored values go back to the trainer's devices through load_model and opt_state.
    state, history, start_epoch = _resume_state(out, config, _run_state(trainer), log)
    _set_params(model, state["params"])
    if "buffers" in state:
        _set_params(model, _keys_like(state["buffers"], model), nnx.Not(nnx.Param))
    trainer.load_model(model)
    trainer.opt_state = state["opt_state"]
    return history, start_epoch


def _epoch_state(state: dict, losses: np.ndarray | dict[str, np.ndarray], epoch: int, stop, advice: str,
                 state_advice: str | None = None) -> dict:  # fmt: skip
    """``state``, the run's arrays after ``epoch`` as host copies (:func:`_run_state`), checked finite: a non-finite
    loss of the epoch's steps or a non-finite array ends the run through ``stop`` (:func:`_stop` with its run
    bound), naming the step and the first bad array, with ``advice`` on what to change (``state_advice`` for a bad
    array, when it differs).

    ``losses``: the epoch's loss per step, or several per step by name (a GAN's ``{"Loss_D": ..., "Loss_G":
    ...}``), a step being bad when any of them is; the message gives the bad step's value of each.
    """
    named = losses if isinstance(losses, dict) else {"loss": losses}
    finite = np.all([np.isfinite(v) for v in named.values()], axis=0)
    steps = len(finite)
    bad = np.flatnonzero(~finite)
    if bad.size:
        i = int(bad[0])
        step = (epoch - 1) * steps + i + 1
        values = (", ".join(f"{name} {v[i]}" for name, v in losses.items()) if isinstance(losses, dict)
                  else f"the loss became {losses[i]}")  # fmt: skip
        stop(f"non-finite loss at step {step}", f"{values} at step {step} (epoch {epoch}, batch {i + 1})",
             f"{advice}.")  # fmt: skip
    if (where := first_non_finite(state)) is not None:
        step = epoch * steps
        fix = advice if state_advice is None else state_advice
        stop(f"non-finite {where} after step {step}", f"{where} holds {_bad_values(state, where)} after step {step} "
             f"(the end of epoch {epoch}), though every loss of the epoch was finite", f"{fix}; the checkpoint of "
             "this epoch was not written.")  # fmt: skip
    return state


def _submit_epoch(writer, out: Path, state: dict, meta: dict, metrics: dict, epochs: int, drawn: float, plot) -> float:
    """Hand the epoch of ``metrics["history"][-1]`` to ``writer``: its checkpoint (``state``, with ``meta`` and
    the epoch and history as metadata), ``metrics.json``, and ``curves.png`` drawn by ``plot(history, path)``
    after the last epoch and at most every :data:`CURVES_EVERY` s (``drawn``: when it last was); returns
    when it was last drawn."""
    history = list(metrics["history"])
    epoch = history[-1]["epoch"]
    # In this order, each only after the one before succeeded: metrics.json never names an epoch whose checkpoint
    # is missing.
    writer.submit(checkpoint.save, out / CHECKPOINTS, epoch, state, {**meta, "epoch": epoch, "history": history})
    writer.submit(write_json, out / METRICS, dict(metrics))
    if epoch == epochs or time.perf_counter() - drawn >= CURVES_EVERY:
        writer.submit(plot, history, out / CURVES)
        return time.perf_counter()
    return drawn


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
    if config.model == "dcgan":
        from . import dcgan

        return dcgan.train(config, out, resume=resume, overwrite=overwrite, progress=progress, log=log, devices=devices)
    out = Path(out)
    if config.model == "word_lm":
        from . import word_lm

        return word_lm.train(config, out, resume=resume, overwrite=overwrite, progress=progress, log=log,
                             devices=devices)  # fmt: skip
    mesh = _mesh(devices, config.batch_size)  # before anything is read or written: bad settings destroy nothing
    num_devices = 1 if mesh is None else mesh.devices.size
    primary = jax.process_index() == 0  # the one process that prints and writes
    if not primary:
        log, progress = (lambda line: None), False
    train_set, test_set, steps_per_epoch = _open_run(out, lambda: _training_data(config), resume=resume,
                                                     overwrite=overwrite, primary=primary)  # fmt: skip
    # The config and steps per epoch fix the model, optimizer and losses the programs close over; the data's
    # shapes and the devices' shardings are in every program's key through its arguments.
    programs = _programs.programs(
        {"command": "train", "config": config.to_json(), "steps": steps_per_epoch, "devices": num_devices}
    )
    model, loss_fn, eval_fn, spec, name = _network(config, train_set, programs)
    optimizer = _compiled_init(build_optimizer(config, steps_per_epoch=steps_per_epoch))
    trainer = Trainer(model, optimizer, loss_fn, eval_fn=eval_fn, has_aux=True, mesh=mesh)
    trainer.programs = programs
    schedule = (
        None
        if config.scheduler is None
        else build_schedule(
            config.scheduler, config.learning_rate, epochs=config.epochs, steps_per_epoch=steps_per_epoch
        )
    )  # the optimizer's own, rebuilt: its lrs go into the history
    history: list[dict] = []
    start_epoch = 0
    if resume:
        history, start_epoch = _resume(trainer, model, config, out, log)
    # The whole data set on every device, once; each step's indices are split over the devices.
    images, labels = trainer.replicate((train_set.images, train_set.labels))
    test_batches = trainer.replicate(_eval_batches(test_set))
    if mesh is not None:
        log(f"data-parallel over {num_devices} {mesh.devices.flat[0].platform} devices"
            + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""))  # fmt: skip
    metrics = {"config": config.to_json(), "model": spec, "data": {"train": len(train_set),
               "test": len(test_set)}, "devices": num_devices, "processes": jax.process_count(),
               "status": "running"}  # fmt: skip
    elapsed = sum(h["seconds"] for h in history)
    drawn = time.perf_counter()  # when curves.png was last drawn: a short run draws only after its last epoch
    title = f"{name} on {config.data}, {config.optimizer} lr {config.learning_rate:g}"
    run_key = _run_key(config.seed)
    # Every file of every epoch is written before train returns; on an error, what finished epochs wrote is on disk
    # before the error goes on.
    with _Writer() as writer:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            order = data.order(run_key, len(train_set), epoch=epoch)[: steps_per_epoch * config.batch_size]
            step_losses, hits, evaluation = _train_epoch(trainer, images, labels, order.reshape(steps_per_epoch, -1),
                                                         mesh, f"epoch {epoch}/{config.epochs}", progress,
                                                         test_batches)  # fmt: skip
            writer.check()  # a failed write of the last epoch stops the run here, before more work
            stop = functools.partial(_stop, writer, out, metrics, history, primary)
            state = _epoch_state(_run_state(trainer), step_losses, epoch, stop, f"Lower --lr (now "
                                 f"{config.learning_rate:g}) or change --optimizer")  # fmt: skip
            test_loss, test_correct = (float(v) for v in evaluation)
            seconds = time.perf_counter() - t0
            elapsed += seconds
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": float(step_losses.mean()),
                    "train_accuracy": int(hits.sum()) / (steps_per_epoch * config.batch_size),
                    "test_loss": test_loss / len(test_set) if len(test_set) else float("nan"),
                    "test_accuracy": int(test_correct) / len(test_set) if len(test_set) else float("nan"),
                    "lr": _lr_at(config, schedule, (epoch - 1) * steps_per_epoch),
                    "seconds": seconds,
                    "devices": num_devices,
                }
            )
            metrics |= {"history": list(history), "epochs_completed": epoch,
                        "test_accuracy": history[-1]["test_accuracy"], "train_seconds": elapsed}  # fmt: skip
            if primary:
                meta = {"config": config.to_json(), "model": spec}
                plot = functools.partial(plot_curves, title=title)
                drawn = _submit_epoch(writer, out, state, meta, metrics, config.epochs, drawn, plot)
            h = history[-1]
            log(
                f"epoch {epoch:>3}/{config.epochs}  loss {h['train_loss']:.4f}  train acc "
                f"{100 * h['train_accuracy']:5.1f}%  test loss {h['test_loss']:.4f}  test acc "
                f"{100 * h['test_accuracy']:5.1f}%"
                + (f"  lr {h['lr']:.3g}" if schedule is not None else "")
                + f"  ({seconds:.1f} s)"
            )
    last_accuracy = {"test_accuracy": history[-1]["test_accuracy"]} if history else {}
    _complete(out, metrics, history, elapsed, primary, **last_accuracy)
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
    from ..interop import exchange

    path = Path(source)
    if path.is_file():
        arrays = exchange.read_weights(path)  # read once: a legacy .pt file costs a child process with torch
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


def _set_params(model: nnx.Module, pure: dict, kind=nnx.Param) -> None:
    """Write a pure dict of parameters (as :func:`nnx.to_pure_dict` makes) into ``model``, shapes checked.

    ``kind``: which variables; ``nnx.Not(nnx.Param)`` for the buffers (BatchNorm's running statistics).
    """
    params = nnx.state(model, kind)
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
        what = "parameters" if kind is nnx.Param else "buffers"
        raise ValueError(f"the saved {what} do not fit this model: {'; '.join(diff)}.")
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


TORCH_OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad",
                    "adadelta": "Adadelta", "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam", "asgd": "ASGD",
                    "rprop": "Rprop"}  # fmt: skip
"""``--optimizer`` -> torch's class, for ``jaxnets import --optimizer-state`` (adafactor's factors need parity)."""


def import_optimizer_state(path, model, config: TrainConfig):
    """A torch ``optimizer.state_dict()`` file as the optimizer state ``jaxnets train`` keeps for ``config``.

    The torch optimizer must be ``config``'s (``torch.optim.Adam`` for ``adam``, ...),
    built over the tutorial Net's ``parameters()`` in one param group, with the
    hyperparameters ``jaxnets train`` uses for ``config`` (its lr, weight decay, and
    torch's defaults otherwise): each one the file's group holds is compared, so a
    state that would continue differently is refused. Moments go through the
    weights' layout table; the step count is torch's. The conversion is
    :func:`jaxnets.interop.optim_state.node_from_torch`, parity's own.

    Raises:
      ValueError: another optimizer, several param groups, other parameters or
        other hyperparameters (each named, with both values).
    """
    from ..interop import optim_state
    from ..interop.exchange import to_torch_arrays

    if config.optimizer not in TORCH_OPTIMIZERS:
        raise ValueError(
            f"--optimizer-state: jaxnets import converts the state of {', '.join(TORCH_OPTIMIZERS)}, not "
            f"{config.optimizer} (Adafactor's factors swap between torch's and Flax's layouts: use "
            "parity.optimizer_state_from_torch)."
        )
    if config.scheduler is not None or config.clip_grad_norm is not None:
        raise ValueError("--optimizer-state: a run with a scheduler or gradient clipping is not imported.")
    saved = optim_state.read_torch_optimizer_state(path)
    groups = saved["param_groups"]
    names = list(to_torch_arrays(model))
    where = f"the optimizer state {str(path)!r}"
    if len(groups) != 1:
        raise ValueError(
            f"{where} has {len(groups)} param groups; jaxnets train keeps one (all of LeNet's parameters)."
        )
    group = groups[0]
    if len(group.get("params", [])) != len(names):
        raise ValueError(
            f"{where} holds {len(group.get('params', []))} parameters; LeNet has {len(names)} ({', '.join(names)}): "
            "save the state of an optimizer built over the tutorial Net's parameters()."
        )
    factory, options, _ = OPTIMIZERS[config.optimizer]
    used = {n: p.default for n, p in inspect.signature(factory).parameters.items()}
    used.update(options, lr=config.learning_rate)
    if config.weight_decay is not None:
        used["weight_decay"] = config.weight_decay
    differ = []
    for key, value in used.items():
        if key in group and value is not inspect.Parameter.empty:
            theirs = tuple(group[key]) if isinstance(group[key], list | tuple) else group[key]
            if (tuple(value) if isinstance(value, list | tuple) else value) != theirs:
                differ.append(f"{key} {theirs!r} in the file, {value!r} here")
    if differ:
        raise ValueError(
            f"{where} was saved by an optimizer with other hyperparameters than --optimizer {config.optimizer} "
            f"uses: {'; '.join(differ)}. Give jaxnets import the run's --optimizer, --lr and --weight-decay."
        )
    index = {int(i): n for i, n in zip(group["params"], names, strict=True)}
    states = {index[int(i)]: s for i, s in saved["state"].items()}
    template = build_optimizer(config, steps_per_epoch=1).init(nnx.state(model, nnx.Param))
    scale = optim_state.trace_scale(optim_state.nodes(template), lambda: config.learning_rate)
    torch_name = TORCH_OPTIMIZERS[config.optimizer]
    return optim_state.map_nodes(
        template,
        lambda node: optim_state.node_from_torch(node, states, names, optimizer=torch_name, trace_scale=scale),
    )
