"""jaxnets train --model mnist_net: pytorch/examples' MNIST network on digits or MNIST, its input, a real run.

Nothing can be downloaded here: the ``run`` fixture writes scikit-learn's digits (the loader's 28x28 content) as
an MNIST IDX directory and runs docs/training.md's command on it, shortened to 2 epochs, in this process.
"""

import json
import shlex
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from training_cli import (
    assert_other_commands_refuse,
    assert_resume_is_bit_identical,
    checkpoint_arrays,
    doc_commands,
    run_doc_command,
)

from jaxnets import cli
from jaxnets.nn.functional import nll_loss
from jaxnets.training import checkpoint, data, mnist_net
from jaxnets.training import digits as training

TRAIN_IMAGES = 640  # of digits' 1,438: 20 steps an epoch at batch 32
TINY = ["--epochs", "2", "--batch-size", "32"]  # appended to the docs' command: argparse keeps the last value


def _idx_digits(directory: Path) -> Path:
    """digits' train (first TRAIN_IMAGES) and test sets as MNIST's four IDX files: 28x28 unsigned bytes."""
    train, test = data.load("digits")
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, ds, n in (("train", train, TRAIN_IMAGES), ("t10k", test, len(test))):
        pixels = (ds.images[:n, 2:30, 2:30, 0] * 255).round().astype(np.uint8)
        data.write_idx(directory / f"{prefix}-images-idx3-ubyte", pixels)
        data.write_idx(directory / f"{prefix}-labels-idx1-ubyte", ds.labels[:n].astype(np.uint8))
    return directory


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return _idx_digits(tmp_path_factory.mktemp("mnist") / "mnist")


@pytest.fixture(scope="module")
def run(mnist_dir, tmp_path_factory):
    """The docs' command on the IDX directory, 2 epochs of 20 steps, run in this process: (run dir, its arguments)."""
    out = tmp_path_factory.mktemp("runs") / "mnist_net"
    replace = {"~/data/mnist": str(mnist_dir), "runs/mnist_net": str(out)}
    return out, run_doc_command("Training pytorch/examples' MNIST network", "mnist_net", replace, TINY)


# -- the input and the model ----------------------------------------------------------------------


def test_to_input_recovers_mnist_pixels_normalised_as_torchvision(tmp_path, monkeypatch):
    """An MNIST IDX image, padded to 32x32 by the loader, comes back as ``ToTensor()`` then ``Normalize`` of it."""
    pixels = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    pixels[0] = 255  # the border must be cropped off exactly: no white pixel of the digit lost, no black one added
    loaded = data.idx_images(data.write_idx(tmp_path / "images-idx3-ubyte", pixels))
    assert loaded.shape == (5, 32, 32, 1) and not loaded[:, :2].any() and not loaded[:, 30:].any()
    # torchvision: ToTensor() is uint8 / 255 in float32, (1, 28, 28); Normalize((0.1307,), (0.3081,)) sub then div.
    t = torch.from_numpy(pixels).unsqueeze(1).to(torch.float32).div(255)
    expected = t.sub(torch.tensor([0.1307]).view(1, -1, 1, 1)).div(torch.tensor([0.3081]).view(1, -1, 1, 1))
    for to_input in (mnist_net.to_input, jax.jit(mnist_net.to_input)):
        got = np.asarray(to_input(jnp.asarray(loaded)))
        assert got.shape == (5, 1, 28, 28) and got.dtype == np.float32
        # XLA divides by the constant std as a product with its float32 reciprocal: within one rounding of torch.
        np.testing.assert_allclose(got, expected.numpy(), rtol=2.4e-7, atol=0)
    with monkeypatch.context() as mp:  # the crop and layout alone: exactly ToTensor()'s pixels
        mp.setattr(mnist_net, "MEAN", 0.0)
        mp.setattr(mnist_net, "STD", 1.0)
        np.testing.assert_array_equal(np.asarray(mnist_net.to_input(jnp.asarray(loaded))), t.numpy())


def test_step_is_nll_loss_in_train_mode_and_eval_is_its_sum_in_eval_mode():
    train, _ = data.load("digits")
    images, labels = jnp.asarray(train.images[:8]), jnp.asarray(train.labels[:8])
    model = mnist_net.build_model(0)
    spec = mnist_net.model_spec(model)
    assert spec["model"] == "mnist_net" and (spec["mean"], spec["std"]) == (0.1307, 0.3081)
    eval_out = nnx.jit(lambda m, x: m.eval()(mnist_net.to_input(x)))(model, images)
    assert eval_out.shape == (8, 10)
    np.testing.assert_allclose(np.exp(np.asarray(eval_out)).sum(-1), 1, rtol=1e-5)  # log-probabilities
    step, evaluate = training._mode_fns(mnist_net.to_input, mnist_net.nll_loss)  # what train() runs
    loss, correct = nnx.jit(step)(model, images, labels, jnp.arange(8))
    assert model.training  # the step set train mode: dropout on, so the loss is not the eval-mode one
    assert float(loss) != pytest.approx(float(nll_loss(eval_out, labels)), rel=1e-3)
    assert 0 <= int(correct) <= 8
    batches = (images.reshape(2, 4, 32, 32, 1), labels.reshape(2, 4), jnp.ones((2, 4)))
    total, hits = nnx.jit(evaluate)(model, *batches)
    assert not model.training
    np.testing.assert_allclose(float(total), float(nll_loss(eval_out, labels, reduction="sum")), rtol=1e-5)
    assert int(hits) == int(jnp.sum(jnp.argmax(eval_out, -1) == labels))


def test_mnist_net_takes_digits_and_mnist():
    for spec in ("digits", "mnist:/anywhere"):
        assert training.TrainConfig(model="mnist_net", data=spec).model == "mnist_net"
    assert "mnist_net" in training.MODELS


def test_train_help_names_mnist_net(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "mnist_net (pytorch/examples' MNIST network, on digits or MNIST)" in " ".join(
        capsys.readouterr().out.split()
    )


def test_docs_mnist_net_section_shows_the_two_commands_the_tests_run():
    """The first is the ``run`` fixture's command, the second the resume test's: every command shown runs."""
    commands = doc_commands("Training pytorch/examples' MNIST network")
    assert len(commands) == 2 and "--model mnist_net --data mnist:~/data/mnist" in commands[0]
    assert "--optimizer adadelta --scheduler steplr:step_size=1,gamma=0.7" in commands[0]
    assert shlex.split(commands[1]) == ["jaxnets", "train", "--out", "runs/mnist_net", "--resume"]


# -- a run ----------------------------------------------------------------------------------------


@pytest.mark.slow  # a 2-epoch run (and a resumed one), as the ResNet-18 run tests
def test_mnist_net_run_learns_and_writes_checkpoints_with_its_dropout_key(run, mnist_dir):
    run, _ = run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["epochs_completed"] == 2
    assert metrics["model"]["model"] == "mnist_net" and metrics["config"]["model"] == "mnist_net"
    assert metrics["data"] == {"train": TRAIN_IMAGES, "test": 359}
    history = metrics["history"]
    assert [h["lr"] for h in history] == [1.0, pytest.approx(0.7)]  # StepLR(step_size=1, gamma=0.7)
    assert history[1]["test_accuracy"] > 0.6, history  # chance is 0.1
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert (run / "curves.png").stat().st_size > 0
    arrays = checkpoint_arrays(run, 2)
    key = arrays["['buffers']['dropout1']['rngs']['default']['key']"]
    count = arrays["['buffers']['dropout1']['rngs']['default']['count']"]
    assert key.dtype == np.uint32 and key.shape == (2,)  # jax.random.key_data of the model's key
    assert count == 8 + 2 * 2 * (TRAIN_IMAGES // 32)  # 8 weight draws, then two dropout masks a step
    assert training.first_non_finite(checkpoint.restore(run / "checkpoints", 2)[0]) is None


@pytest.mark.slow  # a 2-epoch run (and a resumed one), as the ResNet-18 run tests
def test_mnist_net_resume_is_bit_identical_including_the_dropout_key(run, tmp_path, capsys):
    run, args = run
    assert_resume_is_bit_identical(
        run, args, tmp_path, capsys, "Training pytorch/examples' MNIST network", "runs/mnist_net", "['rngs']"
    )


@pytest.mark.slow  # a 2-epoch run (and a resumed one), as the ResNet-18 run tests
def test_resumed_model_state_holds_a_key_of_the_models_prng(run):
    """The checkpoint's words wrapped back are the key a model of the run's seed advances: same impl, same data."""
    run, _ = run
    state, _ = checkpoint.restore(run / "checkpoints", 2)
    model = mnist_net.build_model(0)
    buffers = training._keys_like(state["buffers"], model)
    training._set_params(model, buffers, nnx.Not(nnx.Param))
    key = model.dropout1.rngs.default.key[...]
    assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0))
    np.testing.assert_array_equal(jax.random.key_data(key), state["buffers"]["dropout1"]["rngs"]["default"]["key"])


@pytest.mark.slow  # a 2-epoch run (and a resumed one), as the ResNet-18 run tests
def test_evaluate_predict_export_refuse_a_mnist_net_run(run, tmp_path, capsys):
    assert_other_commands_refuse(run[0], tmp_path, capsys, "mnist_net")
