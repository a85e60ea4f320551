"""jaxnets train --model dcgan: upstream's image preparation against Pillow and torch, the settings refused, a run.

The step itself is ``parity.ports``' ``dcgan`` trajectory (upstream's loop in torch against
:func:`jaxnets.training.dcgan.gan_step`, tests/test_ports.py). Nothing can be downloaded here: the ``run`` fixture
writes a few of scikit-learn's digits as an MNIST IDX directory and runs docs/training.md's command on it,
shortened to 2 epochs of 2 steps at batch 4 (a DCGAN step at 64x64 is the expensive part).
"""

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_training_cifar import write_cifar10
from training_cli import (
    assert_other_commands_refuse,
    assert_resume_is_bit_identical,
    checkpoint_arrays,
    doc_commands,
    run_doc_command,
    train,
)

from jaxnets import cli
from jaxnets.training import checkpoint, data, dcgan
from jaxnets.training import digits as training

TITLE = "Training pytorch/examples' DCGAN"
TRAIN_IMAGES, BATCH = 8, 4  # 2 steps an epoch
TINY = ["--epochs", "2", "--batch-size", str(BATCH)]  # appended to the docs' command: argparse keeps the last value


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """The first TRAIN_IMAGES digits (and as many test images) as MNIST's four IDX files: 28x28 bytes."""
    directory = tmp_path_factory.mktemp("mnist") / "mnist"
    directory.mkdir()
    train_set, _ = data.load("digits")
    pixels = np.rint(train_set.images[:TRAIN_IMAGES, 2:30, 2:30, 0] * 255).astype(np.uint8)
    for prefix in ("train", "t10k"):
        data.write_idx(directory / f"{prefix}-images-idx3-ubyte", pixels)
        data.write_idx(directory / f"{prefix}-labels-idx1-ubyte", train_set.labels[:TRAIN_IMAGES].astype(np.uint8))
    return directory


@pytest.fixture(scope="module")
def run(mnist_dir, tmp_path_factory):
    """The docs' command on the IDX directory, run in this process: (run dir, its arguments)."""
    out = tmp_path_factory.mktemp("runs") / "dcgan"
    return out, run_doc_command(TITLE, "dcgan", {"--data digits": f"--data mnist:{mnist_dir}", "runs/dcgan": str(out)},
                                TINY)  # fmt: skip


# -- the images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3), (8, 1), (64, 3), (100, 1), (7, 3)])
def test_resize_like_pil_is_pillows_bilinear_byte_for_byte(size, channels):
    """torchvision's ``Resize(64)`` on a square PIL image is ``resize((64, 64), BILINEAR)``: MNIST's 28 and
    CIFAR-10's 32 grow; a shrinking size (antialiased in Pillow) and an unchanged one are checked too."""
    pixels = np.random.default_rng(size).integers(0, 256, (3, channels, size, size), dtype=np.uint8)
    pixels[0] = 255  # saturated: the rounding must not overflow a byte
    got = dcgan.resize_like_pil(pixels, 64, chunk=2)
    for image, resized in zip(pixels, got, strict=True):
        mode_image = Image.fromarray(image[0] if channels == 1 else image.transpose(1, 2, 0))
        expected = np.asarray(mode_image.resize((64, 64), Image.BILINEAR))
        expected = expected[None] if channels == 1 else expected.transpose(2, 0, 1)
        np.testing.assert_array_equal(resized, expected)


def test_to_input_is_totensor_then_normalize_half_in_float32():
    """The byte -> input table is torchvision's ``ToTensor()`` (``/ 255``) then ``Normalize(0.5, 0.5)`` exactly."""
    t = torch.arange(256, dtype=torch.uint8).to(torch.float32).div(255)
    expected = t.sub(torch.tensor([0.5])).div(torch.tensor([0.5]))
    np.testing.assert_array_equal(dcgan.TO_INPUT, expected.numpy())
    assert dcgan.TO_INPUT.dtype == np.float32 and dcgan.TO_INPUT[0] == -1 and dcgan.TO_INPUT[255] == 1


def test_prepare_resizes_each_data_sets_bytes(tmp_path):
    images = dcgan.prepare("digits")
    train_set, _ = data.load("digits")
    assert images.shape == (len(train_set), 1, 64, 64) and images.dtype == np.uint8
    content = np.rint(train_set.images[:5, None, 2:30, 2:30, 0] * 255).astype(np.uint8)  # the 28x28 digit, in bytes
    np.testing.assert_array_equal(images[:5], dcgan.resize_like_pil(content))
    written = write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=2, test=1)
    colour = dcgan.prepare(f"cifar10:{tmp_path / 'cifar-10-batches-py'}")
    assert colour.shape == (10, 3, 64, 64)
    np.testing.assert_array_equal(colour[:2], dcgan.resize_like_pil(written["data_batch_1"][0].reshape(2, 3, 32, 32)))


def test_image_grid_is_save_images_normalised_picture():
    images = np.linspace(-0.5, 0.75, 10 * 64 * 64, dtype=np.float32).reshape(10, 1, 64, 64)
    grid = dcgan.image_grid(images)
    assert grid.shape == (2 + 2 * 66, 2 + 8 * 66, 3) and grid.dtype == np.uint8  # 8 a row, 2-pixel black padding
    assert (grid[:2] == 0).all() and (grid[:, :2] == 0).all() and (grid[68:, 2 + 2 * 66 :] == 0).all()
    assert grid[2, 2].tolist() == [0, 0, 0] and grid[68 + 63, 68 + 63].tolist() == [255, 255, 255]  # min, max
    np.testing.assert_array_equal(grid[2 + 66 : 2 + 66 + 64, 2:66, 0], grid[2 + 66 : 2 + 66 + 64, 2:66, 2])


# -- settings -------------------------------------------------------------------------------------


def test_dcgan_defaults_are_upstreams():
    config = training.TrainConfig(model="dcgan")
    assert (config.optimizer, config.lr, config.epochs, config.batch_size) == (None, 2e-4, 25, 64)
    assert config.data == "digits" and "dcgan" in training.MODELS


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--optimizer", "sgd"], "--optimizer sgd would change that. Leave them out (--lr, --epochs and --batch-size"),
        (["--weight-decay", "0.1"], "Adam with betas (0.5, 0.999) on the discriminator, then on the generator"),
        (["--scheduler", "steplr:step_size=1"], "--scheduler steplr:step_size=1 would change that"),
        (["--clip-grad-norm", "1"], "--clip-grad-norm 1.0 would change that"),
        (["--data", "wikitext2:/x"], "--model dcgan takes images"),
        (["--devices", "2"], "--model dcgan trains on one device (upstream's --ngpu 1); got --devices 2"),
        (["--data", "mnist"], "names no directory: write 'mnist:DIR'"),
    ],
)
def test_train_refuses_what_upstreams_dcgan_does_not_do_and_writes_nothing(tmp_path, capsys, args, expected):
    out = tmp_path / "run"
    try:
        code = train(["--model", "dcgan", *args, "--out", str(out)])
    except SystemExit as e:  # argparse's usage error
        code = e.code
    assert code in (1, 2)
    assert expected in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def test_train_help_names_dcgan(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "dcgan (pytorch/examples' DCGAN, on digits, MNIST or CIFAR-10)" in " ".join(capsys.readouterr().out.split())


def test_docs_dcgan_section_shows_the_two_commands_the_tests_run():
    """The first is the ``run`` fixture's command, the second the resume test's: every command shown runs."""
    commands = doc_commands(TITLE)
    assert len(commands) == 2 and shlex.split(commands[0]) == [
        "jaxnets", "train", "--model", "dcgan", "--data", "digits", "--out", "runs/dcgan"]  # fmt: skip
    assert shlex.split(commands[1]) == ["jaxnets", "train", "--out", "runs/dcgan", "--resume"]


# -- a run ----------------------------------------------------------------------------------------


@pytest.mark.slow  # 2 epochs of 2 steps (and a resumed run), as the other models' run tests
def test_dcgan_run_writes_both_networks_samples_and_upstreams_losses(run):
    run, _ = run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["epochs_completed"] == 2
    assert metrics["model"]["model"] == "dcgan" and metrics["model"]["nc"] == 1
    assert metrics["data"] == {"train": TRAIN_IMAGES}
    for h in metrics["history"]:
        assert set(h) == {"epoch", "loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2", "lr", "seconds"}
        assert h["lr"] == 2e-4 and all(0 < h[k] < 1 for k in ("D_x", "D_G_z1", "D_G_z2"))
        assert np.isfinite(h["loss_D"]) and np.isfinite(h["loss_G"])
    for epoch in (1, 2):  # G(fixed_noise), batch 4: one row of 4
        with Image.open(run / "samples" / f"epoch_{epoch:03d}.png") as picture:
            assert picture.size == (2 + 4 * 66, 2 + 66)
    assert (run / "curves.png").stat().st_size > 0
    arrays = checkpoint_arrays(run, 2)
    steps = 2 * TRAIN_IMAGES // BATCH
    tracked = {k: int(v) for k, v in arrays.items() if k.endswith("['num_batches_tracked']")}
    # Train mode in every forward: D runs three a step (real, fake, fake after its update), G one.
    assert {k: v for k, v in tracked.items() if "discriminator" in k} == {
        f"['discriminator']['buffers']['main']['{i}']['num_batches_tracked']": 3 * steps for i in (3, 6, 9)}  # fmt: skip
    assert {k: v for k, v in tracked.items() if "generator" in k} == {
        f"['generator']['buffers']['main']['{i}']['num_batches_tracked']": steps for i in (1, 4, 7, 10)}  # fmt: skip
    assert arrays["['key']"].dtype == np.uint32 and arrays["['key']"].shape == (2,)
    assert arrays["['opt_state']['generator'][0]['count']"] == steps  # Adam's step count, each network's own
    assert training.first_non_finite(checkpoint.restore(run / "checkpoints", 2)[0]) is None


@pytest.mark.slow
def test_dcgan_resume_is_bit_identical_including_the_noise_key_and_buffers(run, tmp_path, capsys):
    run, args = run
    assert_resume_is_bit_identical(run, args, tmp_path, capsys, TITLE, "runs/dcgan", "['key']")


@pytest.mark.slow
def test_evaluate_predict_export_refuse_a_dcgan_run(run, tmp_path, capsys):
    assert_other_commands_refuse(run[0], tmp_path, capsys, "dcgan")


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_no_bad_checkpoint(run, tmp_path, capsys,
                                                                                    monkeypatch):  # fmt: skip
    """NaN input pixels make the first step's losses NaN: the run stops there, marked stopped, nothing saved."""
    _, args = run
    monkeypatch.setattr(dcgan, "TO_INPUT", np.full(256, np.nan, np.float32))
    out = tmp_path / "nan"
    assert train([*args, "--out", str(out), "--epochs", "1"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Loss_D nan, Loss_G nan at step 1 (epoch 1, batch 1); training stopped and no checkpoint was written" in err
    assert json.loads((out / "metrics.json").read_text())["status"] == "stopped: non-finite loss at step 1"
    assert checkpoint.latest_step(Path(out) / "checkpoints") is None


@pytest.mark.slow
def test_a_non_finite_weight_stops_the_run_naming_the_array(run, tmp_path, capsys, monkeypatch):
    """An inf in the generator's first weight after epoch 1 (the losses finite): stopped, that array named."""
    _, args = run
    run_state = dcgan._run_state

    def poisoned(carry):
        state = run_state(carry)
        layers = state["generator"]["params"]["main"]  # Sequential's children: int keys (or str, once restored)
        layers[0 if 0 in layers else "0"]["weight"].flat[0] = np.inf
        return state

    monkeypatch.setattr(dcgan, "_run_state", poisoned)
    out = tmp_path / "inf"
    assert train([*args, "--out", str(out), "--epochs", "1"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "generator/params/main/0/weight holds 1 of 819200 values non-finite (inf) after step 2 (the end of epoch 1)" \
        in err, err  # fmt: skip
    assert checkpoint.latest_step(Path(out) / "checkpoints") is None
