"""Handwritten digits for LeNet: scikit-learn's digits, MNIST's IDX files, image files, and keyed batching.

Everything here is NumPy (plus ``jax.random`` for the batch order, imported
only there); torch is never imported, and scikit-learn and Pillow only when a function needs them.
Every data set comes out in the layout ``jaxnets.LeNet()`` takes: float32
images ``(N, 32, 32, 1)``, channels-last, in [0, 1], white digit on black,
and int32 labels ``(N,)`` in 0..9.

One rule fits every source into LeNet's 32x32 input, the one the "Neural
Networks" tutorial gives for MNIST: the digit fills the central 28x28 and a
2-pixel black border surrounds it. MNIST's 28x28 images are padded; the
digits set's 8x8 images are upscaled to 28x28 first; image files for
prediction are padded to a square, resized to 28x28 and padded the same way.

Typical use, in the trainer::

    train, test = data.load("digits")  # or data.load("mnist:~/data/mnist")
    key = jax.random.key(0)
    for epoch in range(epochs):
        for idx in data.batches(key, train, 64, drop_last=True, epoch=epoch):
            loss = trainer.step(train.images[idx], train.labels[idx])

Every problem with a file or a spec raises :class:`DataError` (a
``ValueError``) naming the file and what is wrong with it.
"""

from __future__ import annotations

import functools
import gzip as _gzip
import importlib.util
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._files import atomic_write

if TYPE_CHECKING:
    import jax

IMAGE_SIZE = 32
"""Side of LeNet's square input images."""

NUM_CLASSES = 10

DIGITS_TEST_FRACTION = 0.2
"""Share of each class of the digits set held out for testing by ``load("digits")``."""

DIGITS_SPLIT_SEED = 0
"""Seed of ``load("digits")``'s split; fixed so that every run trains and tests on the same images."""

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
"""A mirror of the four MNIST files (the one torchvision downloads from)."""


class DataError(ValueError):
    """A data file, directory or data-set spec that cannot be used; the message names it and says why."""


# -- the data set --------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images and labels in the layout LeNet takes.

    Attributes:
      images: float32 NumPy array ``(N, H, W, C)``, channels-last, values in
        [0, 1]; ``(N, 32, 32, 1)`` for every loader in this module. CIFAR-10's
        (:mod:`jaxnets.training.cifar`) are ``(N, 3, 32, 32)``, channels-first
        as the torch-mirror ResNet-18 takes them.
      labels: int32 NumPy array ``(N,)`` with class indices in 0..9.
      name: a short description for logs, e.g. ``"digits/train"``.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str = "dataset"

    def __post_init__(self):
        images, labels = self.images, self.labels
        for what, a in (("images", images), ("labels", labels)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"Dataset: `{what}` must be a NumPy array; got {type(a).__name__}. Use np.asarray.")
        if images.ndim != 4:
            raise ValueError(
                f"Dataset: `images` must be channels-last (N, H, W, C), e.g. (N, 32, 32, 1); got shape {images.shape}."
                + (" Add the channel axis: images[..., None]." if images.ndim == 3 else "")
            )
        if images.dtype != np.float32:
            raise ValueError(
                f"Dataset: `images` must be float32 in [0, 1]; got {images.dtype}. "
                "Convert, e.g. images.astype(np.float32) / 255 for 8-bit pixels."
            )
        if labels.ndim != 1 or labels.dtype != np.int32:
            raise ValueError(
                f"Dataset: `labels` must be int32 of shape (N,); got {labels.dtype} of shape {labels.shape}. "
                "Convert, e.g. labels.astype(np.int32).reshape(-1)."
            )
        if len(images) != len(labels):
            raise ValueError(f"Dataset: {len(images):,} images but {len(labels):,} labels; they must match one to one.")
        if images.size:
            lo, hi = float(images.min()), float(images.max())
            if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
                raise ValueError(f"Dataset: `images` must lie in [0, 1]; got values from {lo} to {hi}.")
        if labels.size:
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= NUM_CLASSES:
                raise ValueError(f"Dataset: `labels` must lie in 0..{NUM_CLASSES - 1}; got values from {lo} to {hi}.")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices, name: str | None = None) -> Dataset:
        """The examples at ``indices`` (an integer array or anything NumPy indexes with), as a new Dataset."""
        indices = np.asarray(indices)
        return Dataset(self.images[indices], self.labels[indices], self.name if name is None else name)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self):,} images of shape {self.images.shape[1:]})"


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
    return int(value)


# -- fitting images into LeNet's input ----------------------------------------


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of linear (triangle-filter) resampling with pixel centres at ``i + 0.5``.

    Equal to ``jax.image.resize(..., method="linear")`` (antialiased): when
    shrinking, the triangle widens by the shrink factor so that every input
    pixel contributes; at the edges the weights are renormalised, which
    repeats the edge pixel.
    """
    scale = n_out / n_in
    width = max(1.0, 1.0 / scale)
    centres = (np.arange(n_out) + 0.5) / scale - 0.5  # output pixel centres in input coordinates
    w = np.maximum(0.0, 1.0 - np.abs(centres[:, None] - np.arange(n_in)[None, :]) / width)
    return w / w.sum(axis=1, keepdims=True)


def _margin(image_size: int) -> int:
    return image_size // 16  # 2 for 32: the digit fills the central 28x28, as MNIST padded to 32


def fit(images: np.ndarray, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Fit grayscale images in [0, 1] into LeNet's input, the way MNIST is prepared.

    Images already ``image_size`` square are taken as they are. Others are
    padded with black to a square (centred), resized with linear
    interpolation to fill the central ``image_size - 2 * (image_size // 16)``
    pixels (28 of 32) and surrounded by a black border of ``image_size // 16``
    pixels (2), as MNIST's 28x28 digits padded to 32x32. A 28x28 image is
    only padded: resizing 28 to 28 leaves it exactly as it was.

    Args:
      images: ``(N, H, W)`` array with values in [0, 1], white on black.
      image_size: side of the square output.

    Returns:
      float32 ``(N, image_size, image_size, 1)`` with values in [0, 1].
    """
    image_size = _positive_int("image_size", image_size)
    images = np.asarray(images)
    if images.ndim != 3 or 0 in images.shape[1:]:
        raise ValueError(f"fit: `images` must be (N, H, W) with H, W > 0; got shape {images.shape}.")
    n, h, w = images.shape
    if (h, w) == (image_size, image_size):
        return images.astype(np.float32)[..., None]
    side = max(h, w)
    if h != w:  # (N, H, W) -> (N, side, side), centred
        top, left = (side - h) // 2, (side - w) // 2
        square = np.zeros((n, side, side), images.dtype)
        square[:, top : top + h, left : left + w] = images
        images = square
    margin = _margin(image_size)
    content = image_size - 2 * margin
    out = np.zeros((n, image_size, image_size, 1), np.float32)
    if side == content:
        out[:, margin : margin + content, margin : margin + content, 0] = images
    else:
        r = _resize_matrix(side, content)
        resized = r @ images.astype(np.float64) @ r.T  # two products: 14 ms for the digits, einsum's loops 64 ms
        out[:, margin : margin + content, margin : margin + content, 0] = np.clip(resized, 0.0, 1.0)
    return out


# -- scikit-learn's digits -----------------------------------------------------


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as ``(images (N, 8, 8) float64 0..16, labels (N,) int)``."""
    # `import sklearn` alone takes most of a second, and the data is one small CSV
    # inside the package: read it directly, and let load_digits do it if the file moves.
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        csv = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",")
            if table.shape == (1797, 65):
                return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def digits(image_size: int = IMAGE_SIZE) -> Dataset:
    """scikit-learn's embedded handwritten digits (``sklearn.datasets.load_digits``), ready for LeNet.

    1,797 images of 8x8 pixels counting ink from 0 to 16 (each pixel is the
    number of set pixels in a 4x4 block of a 32x32 bitmap), labels 0..9, about
    180 per class. Shipped with scikit-learn: nothing is downloaded.

    The pixels are divided by 16, so they lie in [0, 1] with the digit white
    on black as in MNIST, and :func:`fit` upscales them with linear
    interpolation to 28x28 and adds MNIST's 2-pixel border (for
    ``image_size=32``). Linear rather than nearest-neighbour upscaling: the
    8x8 pixels are block averages of a smooth pen stroke, and blocks of 4x4
    equal pixels would give LeNet's 5x5 kernels artificial edges to learn,
    which no real image (MNIST's, or a photo for ``jaxnets predict``) has.
    The same 28-plus-border framing as MNIST means a model trained on one
    sees digits of the same size as the other.

    Args:
      image_size: side of the square output images; 8 returns the original pixels.

    Returns:
      A :class:`Dataset` named ``"digits"`` with images ``(1797, image_size, image_size, 1)``.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"digits: `image_size` must be an int >= 8 (LeNet takes 32); got {image_size!r}.")
    images, labels = _digits_raw()
    return Dataset(fit(images / 16.0, image_size), labels.astype(np.int32), "digits")


# -- a fixed, stratified split -------------------------------------------------

_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays: the same bits on every platform and NumPy version."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def split_indices(labels, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/test split: ``round(test_fraction * n_c)`` of each class's ``n_c`` to test.

    Each class keeps at least one training example, and gives at least one
    test example when it has two or more. Which examples are held out depends
    only on ``seed`` and the labels, through a fixed integer hash (not a
    library's random stream), so the split never changes with NumPy or JAX
    versions.

    Args:
      labels: ``(N,)`` integer class labels.
      test_fraction: share of each class to hold out, strictly between 0 and 1.
      seed: non-negative int; the same seed gives the same split.

    Returns:
      ``(train_indices, test_indices)``, int64, each sorted ascending, disjoint,
      together ``0..N-1``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"split: labels must be a 1-D integer array; got {labels.dtype} of shape {labels.shape}.")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float) or not 0 < test_fraction < 1:
        raise ValueError(
            f"split: `test_fraction` must be a number strictly between 0 and 1, e.g. 0.2; got {test_fraction!r}."
        )
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MASK64:
        raise ValueError(f"split: `seed` must be an int from 0 to 2**64 - 1; got {seed!r}.")
    keys = _mix64(np.arange(len(labels), dtype=np.uint64) ^ _mix64(np.array([seed], dtype=np.uint64)))
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = min(max(int(np.floor(test_fraction * len(members) + 0.5)), 1), len(members) - 1)
        test.append(members[np.argsort(keys[members], kind="stable")[:n_test]])
    is_test = np.zeros(len(labels), bool)
    is_test[np.concatenate(test) if test else []] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def split(dataset: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A stratified train/test split of ``dataset`` (see :func:`split_indices`), named ``name/train``, ``name/test``."""
    train, test = split_indices(dataset.labels, test_fraction, seed)
    return dataset.subset(train, f"{dataset.name}/train"), dataset.subset(test, f"{dataset.name}/test")


# -- the IDX format ------------------------------------------------------------

_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> tuple[bytes, bool]:
    """The file's bytes, decompressed if they are a gzip stream, and whether they were."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file: {e.strerror or e}.") from e
    if not raw.startswith(_GZIP_MAGIC):
        return raw, False
    try:
        return _gzip.decompress(raw), True
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: the gzip stream is truncated or corrupt ({e}); download the file again.") from e


def is_idx(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like an IDX file (two zero bytes and a known type byte) or a gzip stream."""
    with Path(path).open("rb") as f:
        head = f.read(3)
    return head.startswith(_GZIP_MAGIC) or (len(head) == 3 and head[:2] == b"\0\0" and head[2] in _IDX_TYPES)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST's ``train-images-idx3-ubyte`` and friends), gzipped or not.

    The format: two zero bytes, a type byte (0x08 ubyte, 0x09 byte, 0x0B
    short, 0x0C int, 0x0D float, 0x0E double), a dimension count, one
    big-endian uint32 per dimension, then the data, big-endian, row-major.
    Gzip is recognised from the content (bytes 1f 8b), not from the name.

    Args:
      path: the file.

    Returns:
      A new, writable NumPy array in native byte order (uint8, int8, int16,
      int32, float32 or float64) of the shape the header gives.

    Raises:
      DataError: the file is missing or unreadable, its gzip stream is
        truncated, its header is truncated or not IDX, or its data is shorter
        or longer than the header says.
    """
    path = Path(path)
    data, was_gzip = _read_bytes(path)
    where = f"{path}{' (after gunzip)' if was_gzip else ''}"
    if not data:
        raise DataError(f"{where}: the file is empty; expected an IDX file (MNIST's format).")
    if len(data) < 4:
        raise DataError(f"{where}: truncated IDX header: the file has {len(data)} bytes, the header needs at least 4.")
    if data[:2] != b"\x00\x00":
        hint = " It looks like an HTML or XML page (a failed download?)." if data.lstrip()[:1] == b"<" else ""
        raise DataError(
            f"{where}: not an IDX file: it must start with two zero bytes, a type byte and a dimension count; "
            f"it starts with {data[:4].hex(' ')}.{hint}"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X} ({n})" for c, n in _IDX_NAMES.items())
        raise DataError(f"{where}: unknown IDX data type 0x{code:02X}; expected one of {known}.")
    if ndim == 0:
        raise DataError(f"{where}: the IDX header declares 0 dimensions; expected at least 1.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{where}: truncated IDX header: {ndim} dimensions need a {header}-byte header; "
            f"the file has {len(data)} bytes."
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[code]
    expected = dtype.itemsize * int(np.prod(shape, dtype=object))
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else f"{found - expected:,} bytes too long"
        raise DataError(
            f"{where}: expected {expected:,} bytes of data after the {header}-byte header "
            f"(shape {shape}, {_IDX_NAMES[code]}), found {found:,}: the file is {what}."
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array, gzip: bool = False) -> Path:
    """Write ``array`` as an IDX file that :func:`read_idx` (and MNIST readers) read back exactly.

    Args:
      path: the file to write (replaced if it exists, atomically: never left half written).
      array: anything ``np.asarray`` takes, of dtype uint8, int8, int16,
        int32, float32 or float64, with 1 to 255 dimensions.
      gzip: compress the file (reproducibly: no time stamp in the header).

    Returns:
      ``path`` as a ``Path``.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(
            f"write_idx: IDX stores uint8, int8, int16, int32, float32 or float64; got {array.dtype}. "
            "Convert first, e.g. array.astype(np.uint8) for pixels or labels, np.int32 for int64."
        )
    if not 1 <= array.ndim <= 255 or max(array.shape) >= 2**32:
        raise ValueError(f"write_idx: IDX needs 1 to 255 dimensions, each below 2**32; got shape {array.shape}.")
    header = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    content = header + np.ascontiguousarray(array, _IDX_TYPES[code]).tobytes()
    content = _gzip.compress(content, mtime=0) if gzip else content
    return atomic_write(path, lambda tmp: tmp.write_bytes(content))


# -- MNIST ---------------------------------------------------------------------

_MNIST_FILES = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _search_dirs(directory: Path) -> list[Path]:
    # torchvision keeps the files in ROOT/MNIST/raw.
    return [d for d in (directory, directory / "raw", directory / "MNIST" / "raw") if d.is_dir()]


def _find_mnist_file(directory: Path, split: str, kind: str) -> Path:
    names = [n + gz for n in _MNIST_FILES[split, kind] for gz in ("", ".gz")]
    dirs = _search_dirs(directory)
    for d in dirs:
        for name in names:
            if (d / name).is_file():
                return d / name
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    shown = ", ".join(held[:20]) + (f" and {len(held) - 20} more" if len(held) > 20 else "") if held else "nothing"
    raise DataError(
        f"MNIST {split} {kind} not found: looked for {', '.join(names)} in {', '.join(map(str, dirs))}. "
        f"{directory} holds: {shown}. The four files are at {MNIST_URL} (gzipped is fine)."
    )


def mnist(directory: str | os.PathLike, split: str = "train") -> Dataset:
    """MNIST (or a drop-in such as Fashion-MNIST) from its four IDX files, ready for LeNet.

    Looks in ``directory``, then ``directory/raw`` and ``directory/MNIST/raw``
    (torchvision's layout), for ``train-images-idx3-ubyte`` and
    ``train-labels-idx1-ubyte`` (``split="train"``) or ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte`` (``split="test"``), each plain or with
    ``.gz``, also spelled ``train-images.idx3-ubyte``. Pixels are divided by
    255, and 28x28 images get a 2-pixel black border to make LeNet's 32x32, as
    the "Neural Networks" tutorial says; 32x32 images are taken as they are.

    Args:
      directory: the directory holding the files.
      split: ``"train"`` (60,000 images in MNIST) or ``"test"`` (10,000).

    Returns:
      A :class:`Dataset` named ``"mnist/train"`` or ``"mnist/test"``.

    Raises:
      DataError: a missing directory or file (the message lists what was
        looked for and what the directory holds), a corrupt file, image and
        label counts that differ, labels outside 0..9, or images that are not
        3-D unsigned bytes of 28x28 or 32x32.
    """
    if split not in ("train", "test"):
        raise ValueError(f"mnist: `split` must be 'train' or 'test'; got {split!r}.")
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        state = "is not a directory" if directory.exists() else "does not exist"
        raise DataError(
            f"MNIST directory {directory} {state}. Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            f"t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (from {MNIST_URL}) in a directory and pass it."
        )
    images_path = _find_mnist_file(directory, split, "images")
    labels_path = _find_mnist_file(directory, split, "labels")
    return from_idx(images_path, labels_path, name=f"mnist/{split}")


def idx_images(path: str | os.PathLike) -> np.ndarray:
    """MNIST-style images from an IDX file, as LeNet takes them: float32 ``(N, 32, 32, 1)`` in [0, 1].

    Pixels are divided by 255; 28x28 images get a 2-pixel black border, 32x32
    ones are taken as they are.

    Raises:
      DataError: a corrupt file, or images that are not 3-D unsigned bytes of 28x28 or 32x32.
    """
    images_path = Path(path)
    images = read_idx(images_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected unsigned-byte images (N, 28, 28); got {images.dtype} of shape {images.shape}."
        )
    if images.shape[1:] not in ((28, 28), (IMAGE_SIZE, IMAGE_SIZE)):
        raise DataError(
            f"{images_path}: expected 28x28 images (padded to 32x32 here) or 32x32; "
            f"got {images.shape[1]}x{images.shape[2]}."
        )
    out = np.zeros((len(images), IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
    m = (IMAGE_SIZE - images.shape[1]) // 2
    # (N, 28, 28) uint8 -> the centre of (N, 32, 32, 1) float32, without a float copy of the whole set.
    np.divide(images, np.float32(255), out=out[:, m : IMAGE_SIZE - m, m : IMAGE_SIZE - m, 0])
    return out


def idx_labels(path: str | os.PathLike) -> np.ndarray:
    """Digit labels from an IDX file: int32 ``(N,)`` in 0..9.

    Raises:
      DataError: a corrupt file, labels that are not 1-D unsigned bytes, or a label above 9.
    """
    labels_path = Path(path)
    labels = read_idx(labels_path)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{labels_path}: expected unsigned-byte labels (N,); got {labels.dtype} of shape {labels.shape}."
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(f"{labels_path}: labels must be 0..9; label {bad:,} is {labels[bad]}.")
    return labels.astype(np.int32)


def from_idx(images_path: str | os.PathLike, labels_path: str | os.PathLike, name: str | None = None) -> Dataset:
    """A :class:`Dataset` from an IDX images file and its IDX labels file (see :func:`idx_images`, :func:`idx_labels`).

    Raises:
      DataError: as :func:`idx_images` and :func:`idx_labels`, or image and label counts that differ.
    """
    images, labels = idx_images(images_path), idx_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images):,} images but {labels_path} holds {len(labels):,} labels; "
            "they must come from the same split."
        )
    return Dataset(images, labels, name or Path(images_path).name)


# -- data-set specs ------------------------------------------------------------


def load(spec: str) -> tuple[Dataset, Dataset]:
    """The ``(train, test)`` data sets a spec names.

    Args:
      spec: ``"digits"``: scikit-learn's 1,797 digits split per class, 20% to
        test (:data:`DIGITS_TEST_FRACTION`), always the same split
        (:data:`DIGITS_SPLIT_SEED`): 1,438 train and 359 test images.
        ``"mnist:DIR"``: MNIST's own 60,000 train and 10,000 test images from
        the IDX files in ``DIR`` (see :func:`mnist`). ``"cifar10:DIR"``:
        CIFAR-10's 50,000 train and 10,000 test colour images from its python
        batches in ``DIR`` (see :func:`jaxnets.training.cifar.cifar10`).

    Returns:
      ``(train, test)``, both :class:`Dataset` of ``(N, 32, 32, 1)`` images
      (CIFAR-10: ``(N, 3, 32, 32)``, channels-first).
    """
    accepted = (
        "'digits' (scikit-learn's 8x8 digits, no download), 'mnist:DIR' (MNIST's IDX files in DIR) or "
        "'cifar10:DIR' (CIFAR-10's python batches in DIR)"
    )
    if not isinstance(spec, str):
        raise DataError(f"data set spec must be a string, {accepted}; got {type(spec).__name__}.")
    name, sep, arg = spec.strip().partition(":")
    if name == "digits" and not sep:
        return split(digits(), DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    if name == "mnist" and arg:
        return mnist(arg, "train"), mnist(arg, "test")
    if name == "cifar10" and arg:
        from .cifar import cifar10

        return cifar10(arg, "train"), cifar10(arg, "test")
    if name in ("mnist", "cifar10"):
        example = {"mnist": "~/data/mnist", "cifar10": "~/data/cifar-10-batches-py"}[name]
        raise DataError(
            f"data set spec {spec!r} names no directory: write '{name}:DIR', e.g. '{name}:{example}' (accepted: "
            f"{accepted})."
        )
    raise DataError(f"unknown data set spec {spec!r}; expected {accepted}.")


# -- batching ------------------------------------------------------------------


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields for ``n`` examples.

    ``n // batch_size``, plus one partial batch when ``batch_size`` does not divide ``n`` and not ``drop_last``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"num_batches: `n` must be a number of examples >= 0; got {n!r}.")
    batch_size = _positive_int("batch_size", batch_size)
    return n // batch_size if drop_last else -(-n // batch_size)


def order(key: jax.Array, n: int, *, epoch: int | None = None) -> np.ndarray:
    """The order :func:`batches` draws for ``n`` examples, as one int32 NumPy array.

    ``jax.random.permutation(key, n)``, or with ``epoch`` that of
    ``jax.random.fold_in(key, epoch)``: the same key (and epoch) gives the same
    order. Drawn by one compiled program per ``n``, the key and the epoch its
    arguments. Run op by op, the fold-in and the permutation are six small
    programs, each traced and lowered in every process even when JAX's
    persistent cache holds them: about 0.1 s of a warm ``jaxnets train`` start.

    Args:
      key: a JAX PRNG key, e.g. ``jax.random.key(0)``.
      n: the number of examples, an int >= 0.
      epoch: an int in ``[0, 2**32)`` folded into ``key`` first, or None.

    Returns:
      A permutation of ``0, 1, ..., n - 1``, int32.
    """
    if key is None or isinstance(key, int | np.integer):
        raise TypeError(
            f"the batch order needs `key`, a JAX PRNG key such as jax.random.key(0); got {key!r}. "
            "For the order 0..n-1 pass shuffle=False to batches."
        )
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"order: `n` must be a number of examples >= 0; got {n!r}.")
    if epoch is not None:
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or not 0 <= epoch < 2**32:
            raise ValueError(f"order: `epoch` must be an int in [0, 2**32) or None; got {epoch!r}.")
        epoch = np.uint32(epoch)
    return np.asarray(_permutation()(key, epoch, int(n)), dtype=np.int32)


@functools.cache
def _permutation():
    """``(key, epoch or None, n) -> permutation``, jitted (built on first use: reading data sets needs no JAX)."""
    import jax

    def draw(key, epoch, n):
        return jax.random.permutation(key if epoch is None else jax.random.fold_in(key, epoch), n)

    return jax.jit(draw, static_argnums=2)


def batches(
    key: jax.Array | None,
    data: Dataset | int,
    batch_size: int,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    epoch: int | None = None,
) -> Iterator[np.ndarray]:
    """Index arrays of one epoch's mini-batches, in an order drawn from a JAX key.

    Yields indices rather than arrays, so the caller chooses where to gather:
    ``train.images[idx]`` on the host, or, with the data set put on the
    device once (``x = jnp.asarray(train.images)``), ``x[idx]`` there, with no
    copy of images per step. The order is ``jax.random.permutation(key, n)``:
    the same key gives the same order (:func:`order`). Use one key per epoch,
    ``jax.random.fold_in(key, epoch)`` or the same key with ``epoch=epoch``
    (one compiled program for both), so that epochs differ and a resumed run
    replays the same epoch's order.

    A last batch smaller than ``batch_size`` has a new shape, which makes a
    jitted step compile once more; ``drop_last=True`` avoids that (and skips
    up to ``batch_size - 1`` examples per epoch, different ones each epoch).

    Args:
      key: a JAX PRNG key, e.g. ``jax.random.key(0)``; unused (and may be
        None) when ``shuffle`` is False.
      data: a :class:`Dataset` or the number of examples ``n``.
      batch_size: examples per batch, a positive int.
      shuffle: draw the order from ``key``; False gives ``0, 1, ..., n - 1``.
      drop_last: skip the last batch if it is smaller than ``batch_size``.
      epoch: with ``shuffle``, the order of ``jax.random.fold_in(key, epoch)``.

    Returns:
      An iterator of :func:`num_batches` int32 NumPy arrays of indices into
      ``data``; together they cover every index once (but the dropped ones).
    """
    n = len(data) if isinstance(data, Dataset) else data
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"batches: `data` must be a Dataset or a number of examples >= 0; got {data!r}.")
    count = num_batches(int(n), batch_size, drop_last)
    indices = order(key, int(n), epoch=epoch) if shuffle else np.arange(n, dtype=np.int32)
    return (indices[i * batch_size : (i + 1) * batch_size] for i in range(count))


# -- image files for prediction ------------------------------------------------

_NPY_MAGIC = b"\x93NUMPY"


def _array_to_unit(path: Path, a: np.ndarray) -> np.ndarray:
    """An ``.npy`` array as float64 ``(N, H, W)`` in [0, 1]."""
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]  # (N, H, W, 1) -> (N, H, W)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or 0 in a.shape[1:]:
        raise DataError(f"{path}: expected an (H, W) image or (N, H, W) images; got shape {a.shape}.")
    if a.dtype == np.uint8:
        return a / 255.0
    if a.dtype == np.bool_:
        return a.astype(np.float64)
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if a.size and not (a.min() >= 0.0 and a.max() <= 1.0):
            raise DataError(
                f"{path}: float images must lie in [0, 1]; got values from {a.min()} to {a.max()}. "
                "Divide 8-bit values by 255 before saving."
            )
        return a
    raise DataError(f"{path}: expected uint8 (0..255), bool or float (0..1) pixels; got {a.dtype}.")


def _image_to_unit(path: Path) -> np.ndarray:
    """An image file's first frame as float64 ``(1, H, W)`` grayscale in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode.startswith("I;16"):
                return np.asarray(im, dtype=np.float64)[None] / 65535.0
            if mode not in ("I", "F"):
                if mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                    # Transparent pixels show as white, as on a web page.
                    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(white, im.convert("RGBA"))
                return np.asarray(im.convert("L"), dtype=np.float64)[None] / 255.0
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read as an image ({e}).") from e
    raise DataError(
        f"{path}: 32-bit {'integer' if mode == 'I' else 'float'} images have no fixed range; "
        "save the digit as an 8-bit PNG, or as a .npy array with values in [0, 1]."
    )


def _auto_invert(images: np.ndarray) -> np.ndarray:
    """Invert the images whose border is mostly light: a dark digit on a light background."""
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    light = border.mean(axis=1) > 0.5
    return np.where(light[:, None, None], 1.0 - images, images)


def read_images(
    paths: str | os.PathLike | Iterable[str | os.PathLike], *, invert: bool | str = False, image_size: int = IMAGE_SIZE
) -> np.ndarray:
    """Images from files, prepared like the training data, for ``jaxnets predict``.

    Expects MNIST's look: a white (light) digit on a black (dark) background,
    roughly centred. Each image becomes grayscale in [0, 1] and goes through
    :func:`fit`: a 32x32 image is taken as it is; any other is padded with
    black to a square, resized to 28x28 and given a 2-pixel black border,
    exactly how MNIST's 28x28 digits and the upscaled 8x8 digits were framed.

    Args:
      paths: one path or several. Image files (PNG, JPEG, BMP, GIF, TIFF, ...;
        read with Pillow, first frame only; colour becomes luma; transparent
        pixels count as white) hold one image each; ``.npy`` files (recognised
        from their content) hold an ``(H, W)`` image or ``(N, H, W)`` images
        (a trailing channel axis of 1 is allowed) of uint8 0..255, bool, or
        floats in 0..1.
      invert: True for dark digits on a light background (ink on paper):
        pixels become ``1 - x``. ``"auto"`` inverts each image whose border is
        mostly light.
      image_size: side of the square output.

    Returns:
      float32 ``(N, image_size, image_size, 1)``, the images of all files in order.
    """
    if invert not in (True, False, "auto"):
        raise ValueError(f"read_images: `invert` must be True, False or 'auto'; got {invert!r}.")
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("read_images: no paths given; pass one or more image or .npy files.")
    out = []
    for path in paths:
        try:
            with path.open("rb") as f:
                is_npy = f.read(len(_NPY_MAGIC)) == _NPY_MAGIC
        except OSError as e:
            raise DataError(f"{path}: cannot read the file: {e.strerror or e}.") from e
        if is_npy:
            try:
                a = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DataError(f"{path}: cannot read as a .npy array ({e}).") from e
            images = _array_to_unit(path, a)
        else:
            images = _image_to_unit(path)
        if invert == "auto":
            images = _auto_invert(images)
        elif invert:
            images = 1.0 - images
        out.append(fit(images, image_size))
    return np.concatenate(out)
