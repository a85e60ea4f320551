"""jaxnets.training.data: digits, the fixed split, IDX files, MNIST, keyed batches and image files, all without torch."""

import gzip
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxnets.training import data
from jaxnets.training.data import DataError, Dataset

# -- digits --------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def test_digits_shape_dtype_range_and_labels(digits):
    assert len(digits) == 1797
    assert digits.images.shape == (1797, 32, 32, 1) and digits.images.dtype == np.float32
    assert digits.labels.shape == (1797,) and digits.labels.dtype == np.int32
    assert digits.images.min() == 0.0 and digits.images.max() == 1.0
    assert np.bincount(digits.labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_equal_sklearn_load_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = data.digits(image_size=8)  # the original pixels, read without importing sklearn
    np.testing.assert_array_equal(raw.images[..., 0], bunch.images / 16)
    np.testing.assert_array_equal(raw.labels, bunch.target)


def test_digits_are_upscaled_linearly_into_mnist_frame(digits):
    raw = data.digits(image_size=8).images[..., 0]
    expected = jax.image.resize(raw, (len(raw), 28, 28), method="linear")
    np.testing.assert_allclose(digits.images[:, 2:30, 2:30, 0], expected, atol=2e-6)
    border = digits.images.copy()
    border[:, 2:30, 2:30] = 0
    assert not border.any()


def test_fit_resamples_like_jax_image_resize_when_shrinking():
    x = np.random.default_rng(0).random((2, 50, 70))
    square = np.zeros((2, 70, 70))
    square[:, 10:60] = x  # padded with black to a square, centred
    expected = jax.image.resize(square, (2, 28, 28), method="linear")
    np.testing.assert_allclose(data.fit(x)[:, 2:30, 2:30, 0], expected, atol=2e-6)


def test_import_and_digits_load_neither_torch_nor_sklearn_nor_pillow():
    # What loading costs is measured by the benchmark, not asserted here: a test has no time to compare with.
    code = "import sys; import jaxnets.training.data as d; d.digits(); print(*(m in sys.modules for m in ('torch', 'sklearn', 'PIL')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]


# -- the split -----------------------------------------------------------------


def test_split_is_deterministic_disjoint_covering_and_stratified(digits):
    train, test = data.split_indices(digits.labels, 0.2, seed=0)
    again = data.split_indices(digits.labels, 0.2, seed=0)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(test, again[1])
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    per_class = np.bincount(digits.labels)
    expected = np.floor(0.2 * per_class + 0.5).astype(int)
    np.testing.assert_array_equal(np.bincount(digits.labels[test], minlength=10), expected)
    assert len(test) == 359 and len(train) == 1438


def test_split_depends_on_the_seed(digits):
    assert not np.array_equal(
        data.split_indices(digits.labels, 0.2, 0)[1], data.split_indices(digits.labels, 0.2, 1)[1]
    )


def test_split_never_changes_silently(digits):
    # Reported test accuracies compare across versions only if the held-out images stay the same.
    _, test = data.split_indices(digits.labels, data.DIGITS_TEST_FRACTION, data.DIGITS_SPLIT_SEED)
    assert test[:12].tolist() == [1, 4, 18, 25, 27, 31, 33, 35, 38, 43, 47, 54]


def test_load_digits_returns_the_fixed_split(digits):
    train, test = data.load("digits")
    tr, te = data.split_indices(digits.labels, 0.2, 0)
    np.testing.assert_array_equal(train.images, digits.images[tr])
    np.testing.assert_array_equal(test.labels, digits.labels[te])
    assert (train.name, test.name) == ("digits/train", "digits/test")


def test_split_keeps_a_training_example_per_class():
    labels = np.array([0, 0, 1, 2, 2, 2], np.int32)
    train, test = data.split_indices(labels, 0.9, seed=3)
    assert sorted(labels[train].tolist()) == [0, 1, 2]  # the single 1 stays in training
    assert sorted(labels[test].tolist()) == [0, 2, 2]


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True, "0.2"])
def test_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        data.split_indices(np.zeros(10, np.int32), fraction, 0)


# -- Dataset -------------------------------------------------------------------


def test_dataset_validates_its_arrays():
    x, y = np.zeros((3, 32, 32, 1), np.float32), np.zeros(3, np.int32)
    assert len(Dataset(x, y, "ok")) == 3
    with pytest.raises(ValueError, match=r"channels-last.*images\[\.\.\., None\]"):
        Dataset(x[..., 0], y)
    with pytest.raises(ValueError, match="float32"):
        Dataset(x.astype(np.float64), y)
    with pytest.raises(ValueError, match="int32"):
        Dataset(x, y.astype(np.int64))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        Dataset(x, y[:2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Dataset(x + 2, y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Dataset(np.full_like(x, np.nan), y)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        Dataset(x, y + 10)
    with pytest.raises(TypeError, match="NumPy"):
        Dataset(jax.numpy.asarray(x), y)


# -- IDX -----------------------------------------------------------------------

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", IDX_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(7,), (2, 3, 4)], ids=["1d", "3d"])
def test_idx_round_trip(tmp_path, dtype, compress, shape):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        a = rng.standard_normal(shape).astype(dtype)
    path = data.write_idx(tmp_path / "a", a, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    b = data.read_idx(path)
    assert b.dtype == dtype and b.dtype.isnative and b.shape == shape
    np.testing.assert_array_equal(b, a)
    b[...] = 0  # a writable copy


def test_idx_header_and_byte_order(tmp_path):
    path = data.write_idx(tmp_path / "x", np.array([[1, 258, 3]], np.int16))
    assert path.read_bytes() == bytes.fromhex("0000 0B02 00000001 00000003 0001 0102 0003")


def test_idx_gzip_detected_from_content_not_name(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_named_plain = data.write_idx(tmp_path / "plain.gz", a)
    plain_named_gz = data.write_idx(tmp_path / "images-idx3-ubyte", a, gzip=True)
    np.testing.assert_array_equal(data.read_idx(gz_named_plain), a)
    np.testing.assert_array_equal(data.read_idx(plain_named_gz), a)


def test_write_idx_rejects_unsupported_dtypes_and_writes_nothing(tmp_path):
    for a in (np.arange(3, dtype=np.int64), np.ones(3, bool), np.float32(1.0)):
        with pytest.raises(ValueError, match="IDX"):
            data.write_idx(tmp_path / "bad", a)
    assert not (tmp_path / "bad").exists()


def _idx_images(n=4):
    return bytes.fromhex("00000803") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + bytes(n * 784)


CORRUPT = {
    "empty": (b"", "empty"),
    "short header": (b"\x00\x00", "truncated IDX header"),
    "truncated dims": (bytes.fromhex("00000803 00000004 0000"), "3 dimensions need a 16-byte header"),
    "bad magic": (b"\x01\x02\x08\x01" + bytes(8), "not an IDX file"),
    "html page": (b"<!DOCTYPE html><html>" + bytes(10), "HTML"),
    "unknown type": (bytes.fromhex("0000 0701 00000001 00"), "unknown IDX data type 0x07"),
    "zero dims": (bytes.fromhex("0000 0800"), "0 dimensions"),
    "truncated data": (_idx_images()[:1000], "expected 3,136 bytes of data after the 16-byte header .* found 984"),
    "extra data": (_idx_images() + b"xyz", "found 3,139.* 3 bytes too long"),
    "truncated gzip": (gzip.compress(_idx_images())[:-20], "gzip stream is truncated"),
    "corrupt gzip": (b"\x1f\x8b" + bytes(30), "gzip"),
}


@pytest.mark.parametrize("content, message", CORRUPT.values(), ids=CORRUPT.keys())
def test_read_idx_names_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        data.read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_gives_the_mnist_size_in_the_message(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes.fromhex("00000803 0000EA60 0000001C 0000001C") + bytes(1000))
    with pytest.raises(DataError, match="expected 47,040,000 bytes of data after the 16-byte header .*found 1,000"):
        data.read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: cannot read"):
        data.read_idx(tmp_path / "nope")


# -- MNIST ---------------------------------------------------------------------


def write_mnist(directory, n_train=20, n_test=12, size=28, gz=(False, True), seed=0, dotted=False):
    """Small IDX files in MNIST's names; returns the raw uint8 arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    directory.mkdir(parents=True, exist_ok=True)
    for split, prefix, n, compress in (("train", "train", n_train, gz[0]), ("test", "t10k", n_test, gz[1])):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        sep = "." if dotted else "-"
        suffix = ".gz" if compress else ""
        data.write_idx(directory / f"{prefix}-images{sep}idx3-ubyte{suffix}", images, gzip=compress)
        data.write_idx(directory / f"{prefix}-labels{sep}idx1-ubyte{suffix}", labels, gzip=compress)
        arrays[split] = images, labels
    return arrays


def test_mnist_pads_28x28_into_the_centre(tmp_path):
    arrays = write_mnist(tmp_path)
    for split, n in (("train", 20), ("test", 12)):
        ds = data.mnist(tmp_path, split)
        images, labels = arrays[split]
        assert ds.images.shape == (n, 32, 32, 1) and ds.images.dtype == np.float32
        np.testing.assert_allclose(ds.images[:, 2:30, 2:30, 0], images / 255, rtol=1e-6)
        border = ds.images.copy()
        border[:, 2:30, 2:30] = 0
        assert not border.any()
        np.testing.assert_array_equal(ds.labels, labels)
        assert ds.labels.dtype == np.int32 and ds.name == f"mnist/{split}"


def test_mnist_accepts_dotted_names_torchvision_layout_and_32x32(tmp_path):
    arrays = write_mnist(tmp_path / "MNIST" / "raw", size=32, dotted=True)
    ds = data.mnist(tmp_path, "test")
    np.testing.assert_allclose(ds.images[..., 0], arrays["test"][0] / 255, rtol=1e-6)


def test_load_mnist_spec(tmp_path):
    write_mnist(tmp_path / "m")
    train, test = data.load(f"mnist:{tmp_path / 'm'}")
    assert (len(train), len(test)) == (20, 12)


def _replace(directory, name, array):
    for old in directory.glob(name + "*"):
        old.unlink()
    data.write_idx(directory / name, array)
    return directory / name


MNIST_PROBLEMS = {
    "mismatched counts": ("train-labels-idx1-ubyte", np.zeros(19, np.uint8), "20 images but .* 19 labels"),
    "label 10": ("train-labels-idx1-ubyte", np.full(20, 10, np.uint8), r"labels must be 0\.\.9; label 0 is 10"),
    "int16 images": ("train-images-idx3-ubyte", np.zeros((20, 28, 28), np.int16), "unsigned-byte images"),
    "2-D images": ("train-images-idx3-ubyte", np.zeros((20, 784), np.uint8), "unsigned-byte images"),
    "24x24 images": ("train-images-idx3-ubyte", np.zeros((20, 24, 24), np.uint8), "28x28 .* got 24x24"),
}


@pytest.mark.parametrize("name, array, message", MNIST_PROBLEMS.values(), ids=MNIST_PROBLEMS.keys())
def test_mnist_rejects_inconsistent_files(tmp_path, name, array, message):
    write_mnist(tmp_path)
    path = _replace(tmp_path, name, array)
    with pytest.raises(DataError, match=message) as e:
        data.mnist(tmp_path, "train")
    assert str(path) in str(e.value)


def test_mnist_corrupt_file_names_it(tmp_path):
    write_mnist(tmp_path, gz=(True, True))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="gzip stream is truncated") as e:
        data.mnist(tmp_path, "test")
    assert str(path) in str(e.value)


def test_mnist_missing_file_lists_what_was_looked_for_and_found(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as e:
        data.mnist(tmp_path, "test")
    message = str(e.value)
    for looked_for in ("t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz", "t10k-labels.idx1-ubyte.gz"):
        assert looked_for in message
    assert "t10k-images-idx3-ubyte.gz, train-images-idx3-ubyte" in message  # what the directory holds
    assert data.MNIST_URL in message


def test_mnist_missing_directory(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'none'} does not exist"):
        data.mnist(tmp_path / "none")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.mnist(tmp_path, "val")


@pytest.mark.parametrize("spec", ["", "mnist", "mnist:", "cifar10", "digits:8", "Digits", None])
def test_load_rejects_bad_specs_listing_the_accepted_forms(spec):
    with pytest.raises(DataError, match="mnist:DIR"):
        data.load(spec)


# -- batches -------------------------------------------------------------------


def test_batches_same_key_same_order_and_full_coverage():
    key = jax.random.key(42)
    a = list(data.batches(key, 103, 10))
    b = list(data.batches(key, 103, 10))
    assert [len(x) for x in a] == [10] * 10 + [3] and len(a) == data.num_batches(103, 10)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    order = np.concatenate(a)
    assert order.dtype == np.int32
    np.testing.assert_array_equal(np.sort(order), np.arange(103))
    assert not np.array_equal(order, np.arange(103))
    np.testing.assert_array_equal(order, jax.random.permutation(key, 103))


def test_batches_differ_between_epoch_keys():
    key = jax.random.key(0)
    e0, e1 = (np.concatenate(list(data.batches(jax.random.fold_in(key, e), 50, 8))) for e in (0, 1))
    assert not np.array_equal(e0, e1)


@pytest.mark.parametrize("epoch", [0, 1, 2**31, 2**32 - 1])
def test_order_with_an_epoch_is_the_order_of_the_folded_key(epoch):
    key = jax.random.key(3)
    want = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), 50))
    got = data.order(key, 50, epoch=epoch)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.concatenate(list(data.batches(key, 50, 8, epoch=epoch))), want)


@pytest.mark.parametrize("epoch", [-1, 2**32, 1.0, True, "1"])
def test_order_rejects_bad_epochs(epoch):
    with pytest.raises(ValueError, match="epoch"):
        data.order(jax.random.key(0), 10, epoch=epoch)


def test_batches_drop_last_and_no_shuffle():
    dropped = list(data.batches(jax.random.key(1), 103, 10, drop_last=True))
    assert len(dropped) == 10 == data.num_batches(103, 10, drop_last=True)
    assert all(len(x) == 10 for x in dropped) and len(np.unique(np.concatenate(dropped))) == 100
    in_order = list(data.batches(None, 7, 3, shuffle=False))
    assert [x.tolist() for x in in_order] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(data.batches(None, 0, 3, shuffle=False)) == [] and data.num_batches(0, 3) == 0


def test_batches_of_a_dataset_index_it(digits):
    idx = next(data.batches(jax.random.key(0), digits, 64))
    assert idx.shape == (64,) and digits.images[idx].shape == (64, 32, 32, 1)
    np.testing.assert_array_equal(idx, next(data.batches(jax.random.key(0), 1797, 64)))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8"])
def test_batches_rejects_bad_batch_sizes_immediately(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        data.batches(jax.random.key(0), 10, batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        data.num_batches(10, batch_size)


def test_batches_needs_a_key_to_shuffle():
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        data.batches(0, 10, 2)
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        data.batches(None, 10, 2)


# -- image files ---------------------------------------------------------------


def test_read_images_png_like_mnist(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "d.png")
    Image.fromarray(255 - pixels).convert("RGB").save(tmp_path / "ink.png")
    x = data.read_images([tmp_path / "d.png"])
    assert x.shape == (1, 32, 32, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 2:30, 2:30, 0], pixels / 255, rtol=1e-6)
    assert x[0].sum() == pytest.approx(x[0, 2:30, 2:30].sum())
    np.testing.assert_allclose(data.read_images(str(tmp_path / "ink.png"), invert=True), x, atol=1e-6)


def test_read_images_auto_invert_and_resize(tmp_path):
    paper = np.full((60, 40), 255, np.uint8)
    paper[20:40, 15:25] = 0  # a dark bar on white paper
    Image.fromarray(paper).save(tmp_path / "paper.png")
    x = data.read_images(tmp_path / "paper.png", invert="auto")[0, ..., 0]
    assert x.shape == (32, 32)
    assert x[16, 16] == pytest.approx(1.0) and x[2, 2] == 0.0 and x[0].max() == 0.0


def test_read_images_npy_single_and_stack(tmp_path):
    stack = np.random.default_rng(1).random((3, 28, 28))
    np.save(tmp_path / "stack.npy", stack)
    np.save(tmp_path / "one.npy", (stack[0] * 255).astype(np.uint8))
    x = data.read_images([tmp_path / "stack.npy", tmp_path / "one.npy"])
    assert x.shape == (4, 32, 32, 1)
    np.testing.assert_allclose(x[:3, 2:30, 2:30, 0], stack, rtol=1e-6)
    np.testing.assert_allclose(x[3, 2:30, 2:30, 0], np.floor(stack[0] * 255) / 255, rtol=1e-6)


def test_read_images_16_bit_and_transparent_png(tmp_path):
    Image.fromarray(np.full((28, 28), 65535, np.uint16)).save(tmp_path / "w16.png")
    assert data.read_images(tmp_path / "w16.png")[0, 2:30, 2:30].min() == pytest.approx(1.0)
    rgba = np.zeros((28, 28, 4), np.uint8)  # fully transparent black: shows as white
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    assert data.read_images(tmp_path / "clear.png", invert=True).max() == 0.0


UNREADABLE = {
    "not an image": (b"hello, world", "cannot read as an image"),
    "truncated png": (b"\x89PNG\r\n\x1a\n" + bytes(20), "cannot read as an image"),
    "npy out of range": (None, r"\[0, 1\]"),
}


@pytest.mark.parametrize("content, message", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_read_images_names_unreadable_files(tmp_path, content, message):
    path = tmp_path / "digit.png"
    if content is None:
        path = tmp_path / "digit.npy"
        np.save(path, np.full((28, 28), 255.0))
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        data.read_images([path])
    assert str(path) in str(e.value)


def test_read_images_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'gone.png'}: cannot read"):
        data.read_images(tmp_path / "gone.png")
    with pytest.raises(ValueError, match="no paths"):
        data.read_images([])
    with pytest.raises(ValueError, match="invert"):
        data.read_images(tmp_path / "gone.png", invert="yes")


def test_is_idx_tells_idx_and_gzip_files_from_others(tmp_path):
    data.write_idx(tmp_path / "x.idx", np.zeros((2, 3, 3), np.uint8))
    data.write_idx(tmp_path / "y.idx.gz", np.zeros(4, np.int32))
    (tmp_path / "odd").write_bytes(b"\0\0\x0a\x01")  # 0x0A is no IDX type
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "empty").write_bytes(b"")
    assert data.is_idx(tmp_path / "x.idx") and data.is_idx(tmp_path / "y.idx.gz")
    assert not any(data.is_idx(tmp_path / n) for n in ("odd", "a.npy", "empty"))
