"""The ``jaxnets`` command: the tutorials, and training LeNet on real digits.

``jaxnets tutorial`` and ``jaxnets progression`` walk through the two PyTorch
tutorials; ``train``, ``evaluate``, ``predict``, ``export`` and ``import`` train
LeNet on handwritten digits and move its weights to and from PyTorch (see
:mod:`jaxnets.training` and :mod:`jaxnets.exchange`). Every command turns the
persistent XLA compilation cache on (``JAXNETS_CACHE_DIR``; empty disables it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from ._cache import enable_compilation_cache

# Every command imports what it needs when it runs: `jaxnets --help` loads no JAX, and `train` no tutorial.


def _train(argv: list[str]) -> int:
    from .training import digits as training
    from .training import distributed

    defaults = training.TrainConfig()
    p = argparse.ArgumentParser(
        prog="jaxnets train",
        description="Train LeNet (or pytorch/examples' MNIST network) on real handwritten digits, ResNet-18 on "
        "CIFAR-10, or pytorch/examples' word language model on WikiText-2, with a checkpoint per epoch, metrics and "
        "curves.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="run directory: checkpoints/, metrics.json, curves.png")
    p.add_argument(
        "--model",
        choices=training.MODELS,
        help="lenet (digits, MNIST), resnet18 (torchvision's, on cifar10:DIR), mnist_net (pytorch/examples' "
        "MNIST network, on digits or MNIST), word_lm (pytorch/examples' word language model, on wikitext2:DIR, "
        "with its own defaults and update) or dcgan (pytorch/examples' DCGAN, on digits, MNIST or CIFAR-10) "
        f"(default: {defaults.model})",
    )
    p.add_argument(
        "--data",
        metavar="SPEC",
        help="'digits' (scikit-learn's 1,797 8x8 digits, no download), 'mnist:DIR' (MNIST's IDX files in DIR) or "
        "'cifar10:DIR' (CIFAR-10's python batches, for --model resnet18) or 'wikitext2:DIR' (WikiText-2's train.txt, "
        f"valid.txt and test.txt, for --model word_lm); default: {defaults.data}",
    )
    p.add_argument(
        "--optimizer",
        metavar="NAME",
        help=f"{', '.join(training.OPTIMIZERS)}: torch.optim's, with torch's defaults (sgd with momentum 0.9); "
        f"not lbfgs and muon, which do not fit this loop (default: {defaults.optimizer})",
    )
    defaults_lr = ", ".join(f"{k} {v[2]:g}" for k, v in training.OPTIMIZERS.items())
    lm = training.MODEL_DEFAULTS["word_lm"]
    lr_help = f"learning rate (default per optimizer: {defaults_lr}; word_lm {lm['lr']:g})"
    p.add_argument("--lr", type=float, help=lr_help)
    p.add_argument(
        "--weight-decay",
        type=float,
        metavar="WD",
        help="the optimizer's weight_decay, as torch applies it (default: the optimizer's, 0 but adamw 0.01)",
    )
    p.add_argument(
        "--scheduler",
        metavar="NAME[:ARG=VALUE,...]",
        help=f"an lr scheduler with torch's name and arguments, e.g. steplr:step_size=1,gamma=0.7 or "
        f"cosineannealinglr:T_max=40 or onecyclelr:max_lr=0.01; one of {', '.join(training.SCHEDULERS)}. "
        "Stepped once per epoch, CyclicLR and OneCycleLR after every batch; its lr argument defaults to --lr "
        "(default: none, a constant lr)",
    )
    p.add_argument(
        "--clip-grad-norm",
        type=float,
        metavar="MAX_NORM",
        help="clip the gradients' total 2-norm to MAX_NORM before each step, as torch.nn.utils.clip_grad_norm_ "
        f"(default: no clipping, but word_lm {lm['clip_grad_norm']:g})",
    )
    p.add_argument("--epochs", type=int, help=f"default: {defaults.epochs}")
    p.add_argument("--batch-size", type=int, help=f"default: {defaults.batch_size}, word_lm {lm['batch_size']}")
    p.add_argument("--seed", type=int, help=f"initial weights and batch order (default: {defaults.seed})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal anyway)")
    parallel = p.add_argument_group(
        "data-parallel training",
        "The batch is split over the devices, the weights are replicated, XLA averages the gradients. On a CPU, "
        "simulate N devices with XLA_FLAGS=--xla_force_host_platform_device_count=N.",
    )
    parallel.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="train on the first N devices; --batch-size must be a multiple of N (default: every visible device)",
    )
    parallel.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help=f"several processes (hosts): process 0's address and a free port, the same in every process "
        f"(default: ${distributed.ENV['coordinator_address']}; none: one process)",
    )
    parallel.add_argument(
        "--num-processes",
        type=int,
        metavar="N",
        help=f"how many processes take part (default: ${distributed.ENV['num_processes']})",
    )
    parallel.add_argument(
        "--process-id",
        type=int,
        metavar="I",
        help=f"this process's rank, 0 to N-1; process 0 prints and writes the run (default: "
        f"${distributed.ENV['process_id']})",
    )
    args = p.parse_args(argv)
    if args.devices is not None and args.devices < 1:
        p.error(f"--devices must be at least 1; got {args.devices}.")
    # Before anything touches a device: JAX fixes the set of devices when it first uses one.
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    settings = ("model", "data", "optimizer", "lr", "epochs", "batch_size", "seed", "weight_decay", "scheduler",
                "clip_grad_norm")  # fmt: skip
    given = {k: getattr(args, k) for k in settings}
    given = {k: v for k, v in given.items() if v is not None}
    try:
        if args.resume and Path(args.out, training.CHECKPOINTS).is_dir():
            given = {**training.saved_config(Path(args.out)), **given}  # the run's settings, unless overridden
        config = training.TrainConfig(**given)
    except ValueError as e:
        p.error(str(e))
    enable_compilation_cache()
    progress = False if args.no_progress else None  # None: a bar when stderr is a terminal
    training.train(
        config, args.out, resume=args.resume, overwrite=args.overwrite, progress=progress, devices=args.devices
    )
    return 0


def _epoch(text: str) -> int:
    """``--checkpoint``: an epoch number, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"EPOCH must be an integer >= 0 (a checkpoint's epoch); got {text!r}")
    return int(text)


def _score(model, out: np.ndarray, labels: np.ndarray, args: argparse.Namespace, title: str):
    """Scores and confusion matrix of the logits ``out``, the matrix drawn to ``--confusion`` (default: beside source).

    Returns:
      ``(scores, matrix, figure path)``.
    """
    from .training import digits as training

    s = training.scores(out, labels)
    matrix = training.confusion_matrix(out.argmax(-1), labels, model.num_classes)
    source = Path(args.source)
    beside = source if source.is_dir() else source.parent
    figure = Path(args.confusion) if args.confusion else beside / training.CONFUSION
    training.plot_confusion(matrix, figure, title=f"{title}: {100 * s['accuracy']:.2f}% correct")
    return s, matrix, figure


def _evaluate(argv: list[str]) -> int:
    from .training import data
    from .training import digits as training

    p = argparse.ArgumentParser(
        prog="jaxnets evaluate",
        description="Accuracy and confusion matrix of a trained LeNet on a data set or on IDX files.",
    )
    p.add_argument("source", help="a run directory (jaxnets train --out) or a .safetensors/.pt weights file")
    p.add_argument("--data", metavar="SPEC", help="'digits' or 'mnist:DIR' (default: the run's data, else digits)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which part of --data (default: test)")
    p.add_argument("--images", metavar="IDX", help="an IDX images file (e.g. t10k-images-idx3-ubyte.gz) instead")
    p.add_argument("--labels", metavar="IDX", help="the IDX labels file that goes with --images")
    p.add_argument("--checkpoint", type=_epoch, metavar="EPOCH", help="a checkpoint other than the latest")
    p.add_argument("--confusion", metavar="PNG", help="where to write the confusion matrix (default: beside source)")
    p.add_argument("--json", metavar="FILE", help="also write the scores and the confusion matrix as JSON")
    args = p.parse_args(argv)
    if bool(args.images) != bool(args.labels):
        p.error("--images and --labels go together: give both IDX files, or neither and use --data.")
    if args.images and args.data:
        p.error("give either --data or --images/--labels, not both.")
    enable_compilation_cache()
    model, info = training.load_model(args.source, step=args.checkpoint)
    if args.images:
        chosen = data.from_idx(args.images, args.labels)
        images, labels, name = chosen.images, chosen.labels, Path(args.images).name
    else:
        spec = args.data or (info.get("config") or {}).get("data") or "digits"
        train_set, test_set = data.load(spec)
        chosen = test_set if args.split == "test" else train_set
        images, labels, name = chosen.images, chosen.labels, f"{spec} ({args.split})"
    out = training.logits(model, images)
    title = f"{Path(args.source).name}" + (f", epoch {info['epoch']}" if info.get("epoch") else "") + f" on {name}"
    s, matrix, figure = _score(model, out, labels, args, title)
    print(f"{title}: accuracy {100 * s['accuracy']:.2f}% ({s['correct']}/{s['total']}), loss {s['loss']:.4f}")
    print(f"confusion matrix: {figure}")
    if args.json:
        training.write_json(Path(args.json), {**s, "data": name, "confusion": matrix.tolist(), **info})
    return 0


def _predict(argv: list[str]) -> int:
    from .training import data
    from .training import digits as training

    p = argparse.ArgumentParser(
        prog="jaxnets predict",
        description="Predict the digit in image files, .npy arrays or an IDX images file with a trained LeNet.",
    )
    p.add_argument("source", help="a run directory (jaxnets train --out) or a .safetensors/.pt weights file")
    p.add_argument("inputs", nargs="+", help="image files (PNG, JPEG, ...), .npy files, or one IDX images file")
    p.add_argument("--labels", metavar="IDX", help="IDX labels for the inputs: also print accuracy and a confusion PNG")
    p.add_argument(
        "--invert",
        choices=("auto", "yes", "no"),
        default="auto",
        help="dark digits on a light background must be inverted to MNIST's white on black (default: auto)",
    )
    p.add_argument("--checkpoint", type=_epoch, metavar="EPOCH", help="a checkpoint other than the latest")
    p.add_argument("--confusion", metavar="PNG", help="confusion matrix PNG with --labels (default: beside source)")
    p.add_argument("--json", metavar="FILE", help="write the predictions (and scores) as JSON")
    args = p.parse_args(argv)
    enable_compilation_cache()
    model, info = training.load_model(args.source, step=args.checkpoint)
    paths = [Path(x) for x in args.inputs]
    for path in paths:
        if not path.is_file():
            p.error(f"input {path} is not a file.")
    if len(paths) == 1 and data.is_idx(paths[0]):
        images, names = data.idx_images(paths[0]), None
    else:
        invert = {"auto": "auto", "yes": True, "no": False}[args.invert]
        images, names = data.read_images(paths, invert=invert, image_size=model.image_size), [p.name for p in paths]
    out = training.logits(model, images)
    probs = np.exp(out - out.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    predicted = out.argmax(-1)
    if names is None or len(names) != len(predicted):  # an IDX file, or .npy files of several images
        names = [f"{paths[0].name}[{i}]" for i in range(len(predicted))] if len(paths) == 1 else None
        names = names or [f"input[{i}]" for i in range(len(predicted))]
    shown = len(predicted) if len(predicted) <= 50 else 20
    for name, k, prob in list(zip(names, predicted, probs, strict=True))[:shown]:
        print(f"{name}: {k} ({100 * prob[k]:.1f}%)")
    if shown < len(predicted):
        print(f"... {len(predicted) - shown} more (use --json FILE for all)")
    doc = {"predictions": [{"input": n, "label": int(k), "probability": float(pr[k])}
                           for n, k, pr in zip(names, predicted, probs, strict=True)], **info}  # fmt: skip
    if args.labels:
        labels = data.idx_labels(args.labels)
        if len(labels) != len(predicted):
            p.error(f"{args.labels} holds {len(labels)} labels for {len(predicted)} inputs.")
        s, matrix, figure = _score(model, out, labels, args, paths[0].name)
        print(f"accuracy {100 * s['accuracy']:.2f}% ({s['correct']}/{s['total']}); confusion matrix: {figure}")
        doc |= {**s, "confusion": matrix.tolist()}
    if args.json:
        training.write_json(Path(args.json), doc)
    return 0


def _export(argv: list[str]) -> int:
    from .interop import exchange
    from .training import digits as training

    p = argparse.ArgumentParser(
        prog="jaxnets export",
        description="Write a trained LeNet's weights in PyTorch's names and layouts (the seed's Net loads them "
        "with load_state_dict(strict=True)).",
    )
    p.add_argument("source", help="a run directory (jaxnets train --out)")
    p.add_argument("--format", choices=("torch",), default="torch", help="PyTorch layout (the only one so far)")
    p.add_argument("--output", required=True, metavar="FILE.safetensors", help="the file to write")
    p.add_argument("--checkpoint", type=_epoch, metavar="EPOCH", help="a checkpoint other than the latest")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = p.parse_args(argv)
    if not args.output.endswith(".safetensors"):
        p.error(f"--output must end in .safetensors (no pickle is written); got {args.output!r}.")
    if Path(args.output).exists() and not args.overwrite:
        p.error(f"{args.output} already exists; pass --overwrite to replace it, or choose another --output.")
    model, info = training.load_model(args.source, step=args.checkpoint)
    metadata = {"jaxnets_model": json.dumps(training.model_spec(model))}
    if info.get("epoch") is not None:
        metadata["epoch"] = str(info["epoch"])
    path = exchange.save_safetensors(model, args.output, metadata=metadata)
    print(f"wrote {path}: {', '.join(e.torch_name for e in exchange.layout(model))}")
    print("PyTorch: net.load_state_dict(safetensors.torch.load_file(path), strict=True)")
    return 0


def _import(argv: list[str]) -> int:
    from .training import checkpoint
    from .training import digits as training

    p = argparse.ArgumentParser(
        prog="jaxnets import",
        description="Bring PyTorch LeNet weights (.safetensors, or a .pt state_dict read as "
        "torch.load(weights_only=True) reads it) into a jaxnets run directory, for evaluate, predict and export.",
    )
    p.add_argument("weights", help="a .safetensors file or a .pt/.pth state_dict of the tutorial's Net")
    p.add_argument("--out", required=True, metavar="DIR", help="the run directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument(
        "--optimizer-state",
        metavar="OPT.pt",
        help="torch.save(optimizer.state_dict()) of the run that trained WEIGHTS: imported as a run that "
        "'jaxnets train --out DIR --resume' continues with it (its moments and step count); the run's settings "
        "are the options below, and the file's hyperparameters must be theirs",
    )
    defaults = training.TrainConfig()
    for flag, kind, what in (
        (
            "--optimizer",
            str,
            f"the run's optimizer (default: {defaults.optimizer}; {', '.join(training.TORCH_OPTIMIZERS)})",
        ),
        ("--lr", float, "its learning rate (default: the optimizer's, as jaxnets train)"),
        ("--weight-decay", float, "its weight_decay (default: the optimizer's)"),
        ("--data", str, f"the data the resumed run trains on (default: {defaults.data})"),
        ("--batch-size", int, f"default: {defaults.batch_size}"),
        ("--epochs", int, f"default: {defaults.epochs}"),
        ("--seed", int, f"the resumed run's batch order (default: {defaults.seed})"),
    ):
        p.add_argument(flag, type=kind, help=f"with --optimizer-state: {what}")
    args = p.parse_args(argv)
    out = Path(args.out)
    settings = {
        k: getattr(args, k) for k in ("optimizer", "lr", "weight_decay", "data", "batch_size", "epochs", "seed")
    }
    given = {k: v for k, v in settings.items() if v is not None}
    if given and args.optimizer_state is None:
        p.error(f"--{next(iter(given)).replace('_', '-')} describes the run of --optimizer-state; give that file too.")
    if training.holds_run(out) and not args.overwrite:
        p.error(f"{out} already holds a run; pass --overwrite to replace it, or choose another --out.")
    model, _ = training.load_model(args.weights)
    meta = {"model": training.model_spec(model), "epoch": 0, "config": None, "history": [],
            "imported_from": str(Path(args.weights).resolve())}  # fmt: skip
    from flax import nnx

    state = {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param))}
    if args.optimizer_state is not None:
        try:
            config = training.TrainConfig(**given)
            state["opt_state"] = training.import_optimizer_state(args.optimizer_state, model, config)
        except ValueError as e:
            p.error(str(e))
        meta.update(config=config.to_json(), optimizer_state_from=str(Path(args.optimizer_state).resolve()))

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # Saved beside the run first, then swapped in: a failed save leaves the run it would replace intact
    # (and no directory this command made).
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=out))
    try:
        checkpoint.save(staging, 0, state, meta)
        if args.overwrite:
            training.remove_run(out)
        staging.rename(out / training.CHECKPOINTS)
    except BaseException:
        shutil.rmtree(staging if not created else out, ignore_errors=True)
        raise
    with_state = "" if args.optimizer_state is None else f" with the optimizer state of {args.optimizer_state}"
    print(f"imported {args.weights}{with_state} into {out} ({training.model_spec(model)})")
    return 0


def _tutorial(argv: list[str]) -> int:
    return importlib.import_module(".tutorials.lenet", __package__).main(argv)


def _progression(argv: list[str]) -> int:
    return importlib.import_module(".tutorials.progression", __package__).main(argv)


COMMANDS = {
    "tutorial": (_tutorial, 'walk through the "Neural Networks" tutorial (LeNet) in JAX'),
    "progression": (_progression, 'run the seven stages of "Learning PyTorch with examples"'),
    "train": (_train, "train LeNet on real digits (scikit-learn's digits or MNIST), or ResNet-18 on CIFAR-10"),
    "evaluate": (_evaluate, "accuracy and confusion matrix of a trained model"),
    "predict": (_predict, "predict digits in image, .npy or IDX files"),
    "export": (_export, "write trained weights for PyTorch (safetensors)"),
    "import": (_import, "bring PyTorch weights (.safetensors or .pt) into a run directory"),
}


def _usage() -> str:
    lines = ["usage: jaxnets COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'jaxnets COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"jaxnets: unknown command {name!r}; expected one of {', '.join(COMMANDS)}.\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    from .interop import exchange
    from .training import checkpoint, data
    from .training import digits as training

    expected = (training.TrainingError, data.DataError, checkpoint.CheckpointError, exchange.WeightsFileError)
    try:
        return COMMANDS[name][0](rest)
    except (*expected, OSError, ValueError) as e:
        # Errors about the user's files and settings (a missing file, a full disk, a path through a file): the
        # message says what and how to fix it; no traceback.
        print(f"jaxnets {name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\njaxnets {name}: interrupted; checkpoints written so far are complete.", file=sys.stderr)
        return 130


def _teardown_needed() -> bool:
    """Whether the interpreter's clean-up at exit does any work this process still needs.

    Once a command has returned, every file it writes is on disk (``jaxnets train`` joins its writer thread,
    and each file was flushed with fsync). What is left is freeing memory and JAX's backends, about 0.4 s
    after a run. It matters only for a multi-process run (``jax.distributed`` disconnects from its
    coordinator at exit), or if another thread is still running.
    """
    # A cancelled threading.Timer does no more work: JAX starts one while it looks for a TPU and cancels it
    # once the backend is up, and its thread may still be winding down here (seen in about one run in five).
    if any(
        t is not threading.main_thread()
        and not t.daemon
        and not (isinstance(t, threading.Timer) and t.finished.is_set())
        for t in threading.enumerate()
    ):
        return True
    jax = sys.modules.get("jax")
    return jax is not None and jax.process_count() > 1


def run() -> None:
    """The ``jaxnets`` command (``python -m jaxnets``): :func:`main`, then exit, skipping the teardown if unneeded."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if not _teardown_needed():
        os._exit(code)
    raise SystemExit(code)
