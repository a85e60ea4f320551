"""CIFAR-10 for ResNet-18: the python batches read safely, and what ``jaxnets train --model resnet18`` trains.

The data are the CIFAR-10 python batches (``cifar-10-python.tar.gz`` from
:data:`CIFAR_URL`, extracted to ``cifar-10-batches-py/``): pickled dicts
``data_batch_1`` to ``data_batch_5`` (50,000 training images) and
``test_batch`` (10,000), each with ``data``, ``(N, 3072)`` unsigned bytes, one
row per image, channel-major (the 1,024 red pixels of the 32x32 image row by
row, then the green, then the blue), and ``labels``, N ints in 0..9; and
``batches.meta`` with the 10 ``label_names``. They come out as
:class:`jaxnets.data.Dataset`\\ s of float32 ``(N, 3, 32, 32)`` images in
[0, 1], channels-first as :mod:`jaxnets.nn` and torchvision take them (the
rows reshaped, no transpose), and int32 labels.

The batches are pickles, which can run code when loaded: they are read with an
unpickler that builds NumPy arrays, dicts, lists, strings and numbers only, and
refuses anything else.

The model is torchvision's ``resnet18(num_classes=10)`` as ported
(:func:`jaxnets.ports.resnet18`), unchanged (its ImageNet stem included).
Its input is normalised per channel inside the compiled step, as torchvision's
``transforms.Normalize(MEAN, STD)`` after ``ToTensor()``: ``(x - MEAN) / STD``
with the fixed :data:`MEAN` and :data:`STD` of CIFAR-10's training set, not
numbers computed from the directory given, so every run and every subset of
the data sees the same input scale. Training steps run the model in train
mode (BatchNorm normalises with the batch's statistics and updates its running
buffers); the test evaluation runs it in eval mode (the running buffers), as
``model.train()`` / ``model.eval()`` around torch's loops.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from .data import NUM_CLASSES, DataError, Dataset

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
"""Where CIFAR-10 comes from (``cifar-10-python.tar.gz``, "CIFAR-10 python version")."""

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
FOLDER = "cifar-10-batches-py"
"""The folder ``cifar-10-python.tar.gz`` extracts to; ``cifar10:DIR`` may name it or the folder holding it."""

IMAGE_SHAPE = (3, 32, 32)

MEAN = (0.4914, 0.4822, 0.4465)
"""Per-channel (R, G, B) mean of CIFAR-10's 50,000 training images in [0, 1], as commonly published (fixed)."""
STD = (0.2470, 0.2435, 0.2616)
"""Per-channel standard deviation of the same pixels (over all pixels of the set, fixed)."""

_HOW_TO_GET = (
    f"download cifar-10-python.tar.gz from {CIFAR_URL} and extract it (tar xzf cifar-10-python.tar.gz), "
    f"then pass --data cifar10:DIR with DIR the {FOLDER} folder"
)


# -- reading the batches -----------------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and NumPy arrays; any other class or function is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("_codecs", "encode"): ("_codecs", "encode"),  # bytes in protocol 2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch never holds")
        module, name = self._ALLOWED[module, name]
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """A batch file's dict with str keys (Python 2's pickles, as the batches are, read as torchvision reads them)."""
    try:
        raw = path.read_bytes()
        doc = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except OSError:
        raise
    except Exception as e:  # a truncated or foreign file: any of pickle's many errors
        raise DataError(
            f"{path} is not a CIFAR-10 python batch (a pickled dict): {type(e).__name__}: {e}. The file may be "
            f"truncated or of another data set; {_HOW_TO_GET}."
        ) from None
    if not isinstance(doc, dict):
        raise DataError(
            f"{path} holds a pickled {type(doc).__name__}, not the dict of a CIFAR-10 batch; {_HOW_TO_GET}."
        )
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in doc.items()}


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file as ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` (channel-major) and int32 ``(N,)``.

    Raises:
      DataError: not a pickled dict, no ``data``/``labels``, data that are not
        ``(N, 3072)`` unsigned bytes, a label count other than N, or a label
        outside 0..9.
    """
    path = Path(path)
    doc = _unpickle(path)
    missing = [k for k in ("data", "labels") if k not in doc]
    if missing:
        raise DataError(
            f"{path} has no {' and no '.join(repr(k) for k in missing)} (its keys: "
            f"{', '.join(map(repr, doc)) or 'none'}); a CIFAR-10 batch holds b'data' (N x 3072 bytes) and "
            f"b'labels'. To get the data, {_HOW_TO_GET}."
        )
    data = doc["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(
            f"{path}: b'data' must be unsigned bytes of shape (N, 3072), one 3x32x32 image per row; got {got}."
        )
    try:
        labels = np.asarray(doc["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: b'labels' must be a list of ints in 0..9; {e}.") from None
    if len(labels) != len(data):
        raise DataError(f"{path} holds {len(data):,} images but {len(labels):,} labels; they must match one to one.")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        bad = int(np.argmax((labels < 0) | (labels >= NUM_CLASSES)))
        raise DataError(f"{path}: labels must be 0..9; label {bad:,} is {labels[bad]}.")
    # (N, 3072) -> (N, 3, 32, 32): each row is the red plane, then the green, then the blue, each row-major.
    return data.reshape(len(data), *IMAGE_SHAPE), labels.astype(np.int32)


def find_directory(directory: str | os.PathLike) -> Path:
    """The folder holding the batches: ``directory`` itself or its ``cifar-10-batches-py`` (torchvision's root).

    Raises:
      DataError: no such folder, or no batch files in it; the message lists
        what the folder holds and says how to get the data.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        state = "is not a directory" if directory.exists() else "does not exist"
        raise DataError(f"CIFAR-10 directory {directory} {state}. To get the data, {_HOW_TO_GET}.")
    expected = [*TRAIN_FILES, TEST_FILE]
    for d in (directory, directory / FOLDER):
        if d.is_dir() and any((d / name).is_file() for name in expected):
            missing = [name for name in expected if not (d / name).is_file()]
            if missing:
                raise DataError(
                    f"{d} lacks {', '.join(missing)} of CIFAR-10's batches ({', '.join(expected)}). "
                    f"It holds: {_listing(d)}. To get the whole set, {_HOW_TO_GET}."
                )
            return d
    hint = ""
    if (directory / "cifar-10-python.tar.gz").is_file():
        hint = (
            " It holds cifar-10-python.tar.gz: extract it there (tar xzf cifar-10-python.tar.gz) and pass "
            f"{directory / FOLDER}."
        )
    elif (directory / "train").is_file() and (directory / "meta").is_file():
        hint = " Its train, test and meta files look like CIFAR-100's python version; jaxnets trains on CIFAR-10."
    raise DataError(
        f"no CIFAR-10 python batches in {directory}: expected {', '.join(expected)} and {META_FILE} there or in "
        f"{directory / FOLDER}. {directory} holds: {_listing(directory)}.{hint} To get the data, {_HOW_TO_GET}."
    )


def _listing(directory: Path) -> str:
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    return ", ".join(held[:20]) + (f" and {len(held) - 20} more" if len(held) > 20 else "") if held else "nothing"


def label_names(directory: str | os.PathLike) -> list[str] | None:
    """The 10 class names of ``batches.meta`` (``airplane``, ``automobile``...), or None when the file is absent.

    Raises:
      DataError: a ``batches.meta`` that is not a pickled dict with 10 ``label_names``.
    """
    path = find_directory(directory) / META_FILE
    if not path.is_file():
        return None
    names = _unpickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DataError(f"{path}: expected a list of {NUM_CLASSES} b'label_names'; got {names!r:.200}.")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def cifar10(directory: str | os.PathLike, split: str = "train") -> Dataset:
    """CIFAR-10's training (five batches, 50,000 images) or test set (10,000) from its python batches.

    Args:
      directory: the ``cifar-10-batches-py`` folder, or the folder holding it.
      split: ``"train"`` or ``"test"``.

    Returns:
      A :class:`~jaxnets.data.Dataset` named ``"cifar10/train"`` or
      ``"cifar10/test"``: float32 ``(N, 3, 32, 32)`` images (NCHW, pixels / 255, not
      normalised: see :func:`normalize`) and int32 labels, in the files' order.

    Raises:
      DataError: a missing folder or file (the message lists what is there and
        how to get the data) or a malformed batch (see :func:`read_batch`).
    """
    if split not in ("train", "test"):
        raise ValueError(f"cifar10: `split` must be 'train' or 'test'; got {split!r}.")
    found = find_directory(directory)
    label_names(found)  # a malformed batches.meta means a wrong folder: refused before any training
    parts = [read_batch(found / name) for name in (TRAIN_FILES if split == "train" else (TEST_FILE,))]
    n = sum(len(labels) for _, labels in parts)
    images = np.empty((n, *IMAGE_SHAPE), np.float32)
    start = 0
    for pixels, _ in parts:
        np.divide(pixels, np.float32(255), out=images[start : start + len(pixels)])
        start += len(pixels)
    return Dataset(images, np.concatenate([labels for _, labels in parts]), f"cifar10/{split}")


# -- the model and its step ----------------------------------------------------


def normalize(images):
    """``(images - MEAN) / STD`` per channel of ``(N, 3, H, W)`` images in [0, 1] (torchvision's ``Normalize``)."""
    import jax.numpy as jnp

    mean = jnp.asarray(MEAN, images.dtype).reshape(1, 3, 1, 1)
    std = jnp.asarray(STD, images.dtype).reshape(1, 3, 1, 1)
    return (images - mean) / std


def model_spec(model) -> dict:
    """The JSON description of a run's ResNet-18, with the input it expects."""
    return {
        "model": "resnet18",
        "num_classes": int(model.fc.out_features),
        "input": "float32 (N, 3, 32, 32) in [0, 1], normalised in the model's step as (x - mean) / std",
        "mean": list(MEAN),
        "std": list(STD),
    }


def build_model(seed: int):
    """torchvision's ``resnet18(num_classes=10)``, ported, with weights drawn from ``nnx.Rngs(seed)``; train mode."""
    from flax import nnx

    from ..ports import resnet18

    return resnet18(num_classes=NUM_CLASSES, rngs=nnx.Rngs(seed))
