"""jaxnets train --model resnet18 --data cifar10:DIR: CIFAR-10's python batches read as written, and a real run.

Nothing can be downloaded here: :func:`write_cifar10` writes a small directory in the format of
``cifar-10-batches-py`` (pickled dicts with b"data", b"labels", b"batch_label", b"filenames", and
``batches.meta``), and one short run through the command's entry function serves several tests.
"""

import json
import pickle
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from training_cli import (
    assert_other_commands_refuse,
    assert_resume_is_bit_identical,
    checkpoint_arrays,
    doc_commands,
    run_doc_command,
    train,
)

from jaxnets.losses import cross_entropy
from jaxnets.training import checkpoint, cifar, data

PER_BATCH, TEST_IMAGES = 16, 24  # 80 training images in five batches; batch 16 -> 5 steps per epoch
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(directory: Path, per_batch: int = PER_BATCH, test: int = TEST_IMAGES, seed: int = 0) -> dict:
    """A ``cifar-10-batches-py`` folder of random images; returns each file's (pixels, labels)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        doc = {b"batch_label": f"{name} of 5".encode(), b"labels": labels, b"data": pixels,
               b"filenames": [f"img_{i}.png".encode() for i in range(n)]}  # fmt: skip
        (directory / name).write_bytes(pickle.dumps(doc, protocol=2))
        written[name] = (pixels, np.array(labels))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in NAMES], b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


TINY = ["--epochs", "2", "--batch-size", "16"]  # appended to the docs' command: argparse keeps the last value


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    return directory, write_cifar10(directory)


@pytest.fixture(scope="module")
def run(cifar_dir, tmp_path_factory):
    """The docs' command on the small folder, 2 epochs of 5 steps, run in this process: (run dir, its arguments)."""
    directory, _ = cifar_dir
    out = tmp_path_factory.mktemp("runs") / "cifar"
    replace = {"~/data/cifar-10-batches-py": str(directory), "runs/cifar": str(out)}
    return out, run_doc_command("Training ResNet-18 on CIFAR-10", "resnet18", replace, TINY)


# -- the data -------------------------------------------------------------------------------------


def test_cifar10_images_are_the_files_pixels_channel_major_nchw(cifar_dir):
    directory, written = cifar_dir
    train, test = data.load(f"cifar10:{directory}")
    assert train.images.shape == (5 * PER_BATCH, 3, 32, 32) and train.images.dtype == np.float32
    assert test.images.shape == (TEST_IMAGES, 3, 32, 32)
    pixels = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    np.testing.assert_array_equal(train.labels, labels)
    np.testing.assert_array_equal(test.labels, written["test_batch"][1])
    # Row layout: 1,024 red values row by row, then green, then blue: pixel (c, y, x) is byte c*1024 + y*32 + x.
    for i, c, y, x in [(0, 0, 0, 1), (3, 1, 5, 0), (17, 2, 31, 30), (79, 2, 0, 31)]:
        assert train.images[i, c, y, x] == np.float32(pixels[i, c * 1024 + y * 32 + x]) / np.float32(255)
    np.testing.assert_array_equal(train.images * 255, pixels.reshape(-1, 3, 32, 32).astype(np.float32))
    # The folder holding cifar-10-batches-py (torchvision's root) is found too.
    np.testing.assert_array_equal(data.load(f"cifar10:{directory.parent}")[1].images, test.images)
    assert cifar.label_names(directory) == NAMES


def test_cifar10_reads_python2_style_pickles_with_str_keys(tmp_path):
    pixels = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    (tmp_path / "b").write_bytes(pickle.dumps({"data": pixels, "labels": [3, 9]}, protocol=0))
    images, labels = cifar.read_batch(tmp_path / "b")
    np.testing.assert_array_equal(images, pixels.reshape(2, 3, 32, 32))
    assert labels.tolist() == [3, 9] and labels.dtype == np.int32


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path):
    evil = _RunsCode()
    evil.target = str(tmp_path / "ran")
    (tmp_path / "b").write_bytes(pickle.dumps({b"data": evil, b"labels": []}))
    with pytest.raises(data.DataError, match=r"not a CIFAR-10 python batch.*pathlib.*Path.touch"):
        cifar.read_batch(tmp_path / "b")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("missing", r"does not exist.*cifar-10-python\.tar\.gz from https://www\.cs\.toronto\.edu/~kriz/cifar\.html "
                    r"and extract it"),
        ("empty", r"no CIFAR-10 python batches in .*expected data_batch_1, .*data_batch_5, test_batch and "
                  r"batches\.meta .* holds: nothing\..*download cifar-10-python\.tar\.gz"),
        ("tarball", r"holds cifar-10-python\.tar\.gz: extract it there"),
        ("cifar100", r"look like CIFAR-100's python version"),
        ("no_test_batch", r"lacks test_batch of CIFAR-10's batches.*It holds: batches\.meta, data_batch_1"),
        ("truncated", r"data_batch_3 is not a CIFAR-10 python batch \(a pickled dict\): .*truncated"),
        ("wrong_shape", r"data_batch_2: b'data' must be unsigned bytes of shape \(N, 3072\).*got uint8 of shape "
                        r"\(16, 1024\)"),
        ("bad_label", r"test_batch: labels must be 0\.\.9; label 4 is 10"),
        ("no_labels", r"data_batch_1 has no 'labels' \(its keys: 'data'\)"),
        ("bad_meta", r"batches\.meta: expected a list of 10 b'label_names'"),
    ],
)  # fmt: skip
def test_cifar10_bad_directories_say_what_was_found_and_expected(tmp_path, damage, expected):
    directory = tmp_path / "cifar-10-batches-py"
    if damage == "missing":
        pass
    elif damage == "empty":
        directory.mkdir()
    elif damage == "tarball":
        directory.mkdir()
        (directory / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    elif damage == "cifar100":
        directory.mkdir()
        for name in ("train", "test", "meta"):
            (directory / name).write_bytes(b"")
    else:
        write_cifar10(directory)
        path = directory / {"no_test_batch": "test_batch", "truncated": "data_batch_3", "wrong_shape": "data_batch_2",
                            "bad_label": "test_batch", "no_labels": "data_batch_1", "bad_meta": "batches.meta"}[damage]  # fmt: skip
        if damage == "no_test_batch":
            path.unlink()
        elif damage == "truncated":
            path.write_bytes(path.read_bytes()[:5000])
        elif damage == "wrong_shape":
            path.write_bytes(pickle.dumps({b"data": np.zeros((16, 1024), np.uint8), b"labels": [0] * 16}))
        elif damage == "bad_label":
            path.write_bytes(pickle.dumps({b"data": np.zeros((6, 3072), np.uint8), b"labels": [0, 1, 2, 3, 10, 5]}))
        elif damage == "no_labels":
            path.write_bytes(pickle.dumps({b"data": np.zeros((6, 3072), np.uint8)}))
        else:
            path.write_bytes(pickle.dumps({b"label_names": [b"cat"]}))
    with pytest.raises(data.DataError, match=expected):
        data.load(f"cifar10:{directory}")


def test_train_refuses_a_bad_cifar_directory_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(["--model", "resnet18", "--data", f"cifar10:{tmp_path / 'nowhere'}", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxnets train: error: CIFAR-10 directory ") and "does not exist" in err
    assert "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "resnet18"], "--model resnet18 trains on CIFAR-10's colour images; --data 'digits' holds"),
        (["--model", "resnet18", "--data", "mnist:/x"], "Give --data cifar10:DIR"),
        (["--data", "cifar10:/x"], "which LeNet (1-channel digits) does not take: add --model resnet18"),
        (["--model", "resnet18", "--data", "cifar10:/x", "--batch-size", "1"], "use a batch size of 2 or more"),
        (["--model", "resnet18", "--data", "cifar10"], "names no directory: write 'cifar10:DIR'"),
        (["--model", "mnist_net", "--data", "cifar10:/x"], "holds 3-channel colour images, which --model mnist_net"),
        (["--model", "mnist_net", "--data", "cifar10:/x"], "give --data digits or --data mnist:DIR"),
        (["--model", "mnist_net", "--data", "mnist"], "names no directory: write 'mnist:DIR'"),
    ],
)
def test_train_refuses_a_wrong_model_and_data_pair(tmp_path, capsys, args, expected):
    out = tmp_path / "run"
    try:
        code = train([*args, "--out", str(out)])
    except SystemExit as e:  # argparse's usage error
        code = e.code
    assert code in (1, 2)
    assert expected in capsys.readouterr().err.replace("\n", " ")
    assert not out.exists()


def test_cifar_module_and_data_load_no_jax():
    import subprocess
    import sys

    code = "import sys, jaxnets.training.cifar, jaxnets.cli; print('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# -- a run ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resnet18_run_writes_checkpoints_with_batchnorm_buffers_and_metrics(run):
    run, _ = run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["epochs_completed"] == 2
    assert metrics["model"]["model"] == "resnet18" and metrics["model"]["mean"] == list(cifar.MEAN)
    assert metrics["data"] == {"train": 5 * PER_BATCH, "test": TEST_IMAGES}
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["test_loss"]) for h in metrics["history"])
    assert (run / "curves.png").stat().st_size > 0
    arrays = checkpoint_arrays(run, 2)
    steps = 2 * (5 * PER_BATCH // 16)
    # Train mode in every step: each BatchNorm counted every batch and moved its running statistics.
    tracked = {k: v for k, v in arrays.items() if k.endswith("['num_batches_tracked']")}
    assert len(tracked) == 20 and all(v == steps for v in tracked.values()), tracked
    assert np.abs(arrays["['buffers']['bn1']['running_mean']"]).max() > 0
    assert "['buffers']['layer4']['1']['bn2']['running_var']" in arrays


@pytest.mark.slow
def test_resnet18_test_scores_are_eval_mode_with_the_running_buffers(run, cifar_dir):
    """The history's test loss is the eval-mode forward of the checkpoint (train mode would give another)."""
    directory, _ = cifar_dir
    run, _ = run
    _, test = data.load(f"cifar10:{directory}")
    state, meta = checkpoint.restore(run / "checkpoints", 2)
    model = cifar.build_model(0)
    nnx.replace_by_pure_dict(params := nnx.state(model, nnx.Param), state["params"])
    nnx.replace_by_pure_dict(buffers := nnx.state(model, nnx.Not(nnx.Param)), state["buffers"])
    nnx.update(model, params, buffers)
    x, y = cifar.normalize(jax.device_put(test.images)), jax.device_put(test.labels)
    eval_loss = float(cross_entropy(model.eval()(x), y))
    train_loss = float(cross_entropy(model.train()(x), y))
    logged = meta["history"][-1]["test_loss"]
    # float32 sums in another order: 1e-5 relative; the two modes differ by far more (measured: see the commit).
    assert logged == pytest.approx(eval_loss, rel=1e-5)
    assert abs(train_loss - eval_loss) > 1e-3 * abs(eval_loss)


@pytest.mark.slow
def test_resnet18_resume_is_bit_identical_including_batchnorm_buffers(run, tmp_path, capsys):
    run, args = run
    assert_resume_is_bit_identical(
        run, args, tmp_path, capsys, "Training ResNet-18 on CIFAR-10", "runs/cifar", "['buffers']"
    )


@pytest.mark.slow
def test_evaluate_predict_export_refuse_a_resnet18_run(run, tmp_path, capsys):
    assert_other_commands_refuse(run[0], tmp_path, capsys, "resnet18")


def test_docs_cifar_section_shows_the_two_commands_the_tests_run():
    """The first is the ``run`` fixture's command, the second the resume test's: every command shown runs."""
    commands = doc_commands("Training ResNet-18 on CIFAR-10")
    assert len(commands) == 2 and "--model resnet18 --data cifar10:~/data/cifar-10-batches-py" in commands[0]
    assert "--resume" in commands[1]
