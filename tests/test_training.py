"""jaxnets train / evaluate / predict / export / import, called in-process through ``jaxnets.cli.main``.

In-process rather than in subprocesses, so that JAX's start-up and the
evaluation program's compilation are paid once. One short run (digits, two
epochs) is trained once per module and shared; tests that change files work
on a copy of it.
"""

import contextlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import safetensors.torch
import torch
from PIL import Image

import parity
from jaxnets import cli
from jaxnets.training import checkpoint, data
from jaxnets.training import digits as training
from parity import torch_models

torch.set_num_threads(1)  # torch and XLA share two cores in this process

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIGITS_TEST_SIZE = 359  # data.load("digits"): 20% of each class of 1,797
IDX_ACCURACY_GAP = 0.03  # 8-bit pixels move each value by at most 1/510: a few borderline digits may flip, no more
ACCURACY = re.compile(r"accuracy (\d+\.\d\d)% \((\d+)/(\d+)\)")


def run_cli(*argv) -> int:
    return cli.main([str(a) for a in argv])


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path, with its bytes."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def is_png(path: Path, min_bytes: int = 10_000) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > min_bytes


def printed_accuracy(text: str) -> tuple[str, int, int]:
    """``("88.02", 316, 359)`` from a line such as ``... accuracy 88.02% (316/359) ...``."""
    found = ACCURACY.search(text)
    assert found, f"no accuracy in the output:\n{text}"
    return found[1], int(found[2]), int(found[3])


def as_uint8(images: np.ndarray) -> np.ndarray:
    """Float images ``(N, 32, 32, 1)`` in [0, 1] -> the 8-bit ``(N, 32, 32)`` an image or IDX file holds."""
    return (images[..., 0] * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def digits_test():
    return data.load("digits")[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``jaxnets train --data digits --epochs 2``, once: ``(run dir, exit code, stdout, stderr)``."""
    out = tmp_path_factory.mktemp("trained") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    # The conftest's autouse fixture is per test; this one runs before it, so it turns the cache off itself.
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        mp.setenv("JAXNETS_CACHE_DIR", "")
        code = run_cli("train", "--data", "digits", "--epochs", "2", "--out", out, "--no-progress")
    return out, code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the shared run, for tests that write into it or damage it."""
    assert trained[1] == 0, trained[3]
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


@pytest.fixture
def run_dir(trained):
    """The shared run itself, for tests that only read it (they pass --confusion so nothing lands in it)."""
    assert trained[1] == 0, trained[3]
    return trained[0]


# -- train ---------------------------------------------------------------------------------------


def test_train_writes_metrics_curves_and_a_checkpoint_per_epoch(trained):
    out, code, stdout, stderr = trained
    assert code == 0, stderr
    epoch_lines = [line.split()[:2] for line in stdout.splitlines() if line.startswith("epoch")]
    assert epoch_lines == [["epoch", "1/2"], ["epoch", "2/2"]]
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert metrics["status"] == "complete"
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            assert isinstance(h[key], float) and np.isfinite(h[key]), (key, h)
        assert 0 <= h["train_accuracy"] <= 1 and 0 <= h["test_accuracy"] <= 1
    accuracy = metrics["test_accuracy"]
    assert isinstance(accuracy, float) and 0 <= accuracy <= 1
    assert accuracy == history[-1]["test_accuracy"]
    assert accuracy > 0.5  # two epochs of Adam learn the digits well past chance (measured: 88%)
    assert history[1]["train_loss"] < history[0]["train_loss"]
    final = re.search(r"test accuracy (\d+\.\d\d)% \((\d+)/(\d+)\)", stdout)
    assert final, stdout
    assert final[1] == f"{100 * accuracy:.2f}" and int(final[3]) == DIGITS_TEST_SIZE
    assert int(final[2]) == round(accuracy * DIGITS_TEST_SIZE)
    assert is_png(out / "curves.png")
    assert checkpoint.all_steps(out / "checkpoints") == [1, 2]
    assert checkpoint.read_metadata(out / "checkpoints", 2)["history"] == history


@pytest.mark.parametrize("every, drawn_after", [(1e9, [3]), (0.0, [1, 2, 3])], ids=["short-run", "every-epoch"])
def test_curves_are_drawn_after_the_last_epoch_and_at_most_every_curves_every_seconds(
    tmp_path, monkeypatch, every, drawn_after
):
    # A draw costs about 0.3 s of CPU: a run shorter than CURVES_EVERY draws once, after its last epoch.
    calls = []
    monkeypatch.setattr(
        training, "plot_curves", lambda history, path, title="": calls.append([h["epoch"] for h in history])
    )
    monkeypatch.setattr(training, "CURVES_EVERY", every)
    out = tmp_path / "run"
    assert (
        run_cli("train", "--data", "digits", "--epochs", "3", "--batch-size", "64", "--out", out, "--no-progress") == 0
    )
    assert [drawn[-1] for drawn in calls] == drawn_after
    assert calls[-1] == [1, 2, 3]


@pytest.mark.slow  # three whole training runs (about 11 s)
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, capsys):
    setting = ["--data", "digits", "--batch-size", "64", "--seed", "3", "--no-progress"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run_cli("train", "--out", whole, "--epochs", "3", *setting) == 0
    assert run_cli("train", "--out", split, "--epochs", "2", *setting) == 0
    # Only --epochs: batch size and seed must come from the run (else the resume would be refused as different).
    assert run_cli("train", "--out", split, "--resume", "--epochs", "3", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "after epoch 2 of 3" in out
    assert checkpoint.all_steps(split / "checkpoints") == [1, 2, 3]
    state_whole, meta_whole = checkpoint.restore(whole / "checkpoints", 3)
    state_split, meta_split = checkpoint.restore(split / "checkpoints", 3)
    leaves_whole, tree_whole = jax.tree_util.tree_flatten_with_path(state_whole)
    leaves_split, tree_split = jax.tree_util.tree_flatten_with_path(state_split)
    assert tree_whole == tree_split
    assert {jax.tree_util.keystr(p).split("]")[0] for p, _ in leaves_whole} == {"['opt_state'", "['params'"}
    for (path, a), (_, b) in zip(leaves_whole, leaves_split, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    without_time = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert without_time(meta_split["history"]) == without_time(meta_whole["history"])
    assert meta_split["config"] == meta_whole["config"]
    metrics = json.loads((split / "metrics.json").read_text())
    assert metrics["config"]["batch_size"] == 64 and metrics["config"]["epochs"] == 3
    assert metrics["test_accuracy"] == meta_whole["history"][-1]["test_accuracy"]


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], ["already holds a run", "--resume", "--overwrite", "another --out"]),
        (["--resume", "--overwrite"], ["contradict", "--resume", "--overwrite"]),
        (["--resume", "--lr", "0.5"], ["cannot resume", "lr: 0.001 in the run, 0.5 now", "start a new run"]),
        (
            ["--resume", "--optimizer", "sgd"],
            ["cannot resume", "optimizer: 'adam' in the run, 'sgd' now", "start a new run"],
        ),
    ],
    ids=["existing-run", "resume-and-overwrite", "resume-other-lr", "resume-other-optimizer"],
)
def test_train_refuses_and_leaves_the_run_untouched(run_copy, capsys, flags, expected):
    before = snapshot(run_copy)
    assert run_cli("train", "--out", run_copy, "--epochs", "3", "--no-progress", *flags) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxnets train: error: ")
    assert str(run_copy) in err
    for text in expected:
        assert text in err
    assert snapshot(run_copy) == before


def test_resume_of_an_empty_directory_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("train", "--out", empty, "--resume", "--no-progress") == 1
    err = capsys.readouterr().err
    assert f"nothing to resume in {empty}" in err and "without --resume" in err
    assert list(empty.iterdir()) == []


def test_resume_with_the_defaults_written_out_is_accepted(run_copy, capsys):
    """The run has lr None (Adam's default, 0.001): --lr 0.001 is the same setting, not another one."""
    assert run_cli("train", "--out", run_copy, "--resume", "--lr", "0.001", "--optimizer", "adam", "--no-progress") == 0
    assert "already has 2 epochs" in capsys.readouterr().out
    assert checkpoint.all_steps(run_copy / "checkpoints") == [1, 2]
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["status"] == "complete" and len(metrics["history"]) == 2 and metrics["train_seconds"] > 0


def test_overwrite_replaces_the_run_and_keeps_other_files(run_copy, capsys):
    (run_copy / "notes.txt").write_text("my notes")
    (run_copy / "confusion.png").write_bytes(b"the old model's evaluation")  # as `jaxnets evaluate RUN` leaves it
    assert checkpoint.all_steps(run_copy / "checkpoints") == [1, 2]
    code = run_cli("train", "--out", run_copy, "--overwrite", "--epochs", "1", "--batch-size", "64", "--no-progress")
    assert code == 0, capsys.readouterr().err
    assert checkpoint.all_steps(run_copy / "checkpoints") == [1]
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1] and metrics["config"]["batch_size"] == 64
    assert (run_copy / "notes.txt").read_text() == "my notes"
    assert not (run_copy / "confusion.png").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--data", "mnist:{tmp}/no-such-dir"], "does not exist"),
        (["--batch-size", "5000"], "--batch-size 5000 is larger than the 1438 training images"),
    ],
    ids=["missing-data", "batch-too-large"],
)
def test_overwrite_that_cannot_train_keeps_the_old_run(run_copy, tmp_path, capsys, flags, message):
    before = snapshot(run_copy)
    flags = [f.format(tmp=tmp_path) for f in flags]
    assert run_cli("train", "--out", run_copy, "--overwrite", "--no-progress", *flags) == 1
    assert message in capsys.readouterr().err
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys, bad):
    seed, batch_size = 0, 64
    n_train = len(data.load("digits")[0])
    steps_per_epoch = data.num_batches(n_train, batch_size, drop_last=True)
    key = jax.random.key(seed)
    firsts = {
        e: [int(idx[0]) for idx in data.batches(jax.random.fold_in(key, e), n_train, batch_size, drop_last=True)]
        for e in (1, 2)
    }
    # A batch of epoch 2 whose first image starts no batch of epoch 1, away from the every-10th-step loss check.
    position = next(i for i, k in enumerate(firsts[2]) if i >= 3 and i % 10 != 0 and k not in firsts[1])
    poison = firsts[2][position]
    expected_step = steps_per_epoch + position + 1
    original = training._loss_and_correct

    def poisoned(model, images, labels, idx):
        loss, correct = original(model, images, labels, idx)
        return loss + jnp.where(idx[0] == poison, bad, 0.0), correct

    monkeypatch.setattr(training, "_loss_and_correct", poisoned)
    out = tmp_path / "run"
    setting = ["--seed", str(seed), "--batch-size", str(batch_size), "--epochs", "3", "--no-progress"]
    assert run_cli("train", "--data", "digits", "--out", out, *setting) == 1
    captured = capsys.readouterr()
    assert "epoch   1/3" in captured.out and "epoch   2/3" not in captured.out
    assert f"the loss became {bad} at step {expected_step} (epoch 2, batch {position + 1})" in captured.err
    assert "the last good checkpoint is epoch 1" in captured.err and "Lower --lr" in captured.err
    assert checkpoint.all_steps(out / "checkpoints") == [1]
    state, meta = checkpoint.restore(out / "checkpoints")
    assert meta["epoch"] == 1
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"].startswith("stopped") and f"step {expected_step}" in metrics["status"]
    assert [h["epoch"] for h in metrics["history"]] == [1]


def _poisoned_optimizer(at_step: int, part: str, value: float):
    """``training.build_optimizer`` whose update ``at_step`` (1-based) puts ``value`` into fc3's bias.

    ``part="params"``: into the bias's update, so the weights turn non-finite while the step's loss (computed before
    the update) stays finite. ``part="opt_state"``: into Adam's second moment of the bias (``nu``), which leaves the
    weights finite (an infinite ``nu`` makes the update 0) and only the optimizer state bad.
    """
    original = training.build_optimizer

    def poison(tree, hit, *names):
        def one(path, leaf):
            key = jax.tree_util.keystr(path)
            return jnp.where(hit, value, leaf) if all(n in key for n in names) else leaf

        return jax.tree_util.tree_map_with_path(one, tree)

    def build(config, **kwargs):
        tx = original(config, **kwargs)

        def init(params):
            return tx.init(params), jnp.zeros((), jnp.int32)

        def update(grads, state, params=None):
            inner, count = state
            updates, inner = tx.update(grads, inner, params)
            hit = count + 1 == at_step
            if part == "params":
                updates = poison(updates, hit, "fc3", "bias")
            else:
                inner = poison(inner, hit, "nu", "fc3", "bias")
            return updates, (inner, count + 1)

        return optax.GradientTransformation(init, update)

    return build


@pytest.mark.parametrize(
    "part, value",
    [("params", float("nan")), ("params", float("inf")), ("opt_state", float("inf"))],
    ids=["nan-weights", "inf-weights", "inf-optimizer-state"],
)
def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch, capsys, part, value):
    """The last step of epoch 2 makes one array non-finite, every loss of the epoch finite: no checkpoint 2."""
    batch_size = 64
    steps_per_epoch = data.num_batches(len(data.load("digits")[0]), batch_size, drop_last=True)
    last_of_epoch_2 = 2 * steps_per_epoch
    monkeypatch.setattr(training, "build_optimizer", _poisoned_optimizer(last_of_epoch_2, part, value))
    out = tmp_path / "run"
    setting = ["--batch-size", str(batch_size), "--epochs", "3", "--no-progress"]
    assert run_cli("train", "--data", "digits", "--out", out, *setting) == 1
    captured = capsys.readouterr()
    assert "epoch   1/3" in captured.out and "epoch   2/3" not in captured.out
    err = captured.err
    assert f"after step {last_of_epoch_2} (the end of epoch 2)" in err, err
    first_bad = re.search(r"error: (\S+) holds", err)
    assert first_bad and first_bad[1].startswith(part) and "/fc3/bias" in first_bad[1], err
    kind = "nan" if np.isnan(value) else "inf"
    assert f"({kind})" in err and "the last good checkpoint is epoch 1" in err
    assert checkpoint.all_steps(out / "checkpoints") == [1]
    state, meta = checkpoint.restore(out / "checkpoints")
    assert meta["epoch"] == 1
    assert training.first_non_finite(state) is None
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"].startswith(f"stopped: non-finite {first_bad[1]} after step {last_of_epoch_2}")
    assert [h["epoch"] for h in metrics["history"]] == [1]


def test_first_non_finite_names_the_first_bad_array_in_tree_order():
    state = {"opt_state": (np.ones(2), np.array([np.nan])), "params": {"a": np.ones(3), "b": np.array([1.0, np.inf])}}
    assert training.first_non_finite(state) == "opt_state/1"  # dict keys in sorted order, as jax.tree flattens
    assert training.first_non_finite(state["params"]) == "b"
    assert training.first_non_finite({"count": np.array(3, np.int32), "w": np.zeros(2)}) is None


_KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from jaxnets import _files
from jaxnets.training import digits as training
out = Path({out!r})
history = [dict(epoch=e, train_loss=1.0 / e, test_loss=1.0 / e, train_accuracy=0.5, test_accuracy=0.5) for e in (1, 2)]
training.write_json(out / "metrics.json", {{"history": history[:1]}})
training.plot_curves(history[:1], out / "curves.png")
real_fsync = os.fsync
def slow_fsync(fd):  # the new file is whole in its temporary file, not yet renamed: kill here
    print("writing", flush=True)
    time.sleep(60)
    real_fsync(fd)
_files.os.fsync = slow_fsync
if {which!r} == "metrics":
    training.write_json(out / "metrics.json", {{"history": history}})
else:
    training.plot_curves(history, out / "curves.png")
print("replaced", flush=True)
"""


@pytest.mark.parametrize("which", ["metrics", "curves"])
def test_kill_while_writing_metrics_or_curves_leaves_the_previous_file(tmp_path, which):
    import signal
    import subprocess
    import sys

    name = {"metrics": "metrics.json", "curves": "curves.png"}[which]
    code = _KILLED_WRITER.format(out=str(tmp_path), which=which)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the new file is written into its temporary file
        assert line == "writing\n", proc.communicate(timeout=60)
        before = (tmp_path / name).read_bytes()
        temporary = [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp")]
        assert len(temporary) == 1 and temporary[0].stat().st_size > 0  # the kill lands mid-write
        proc.send_signal(signal.SIGKILL)
    finally:
        stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and "replaced" not in stdout
    assert (tmp_path / name).read_bytes() == before  # the previous file, whole
    if which == "metrics":
        assert [h["epoch"] for h in json.loads(before)["history"]] == [1]
    else:
        assert is_png(tmp_path / name)


# -- evaluate ------------------------------------------------------------------------------------


def test_evaluate_a_run_reproduces_its_test_accuracy_and_draws_the_confusion_matrix(
    run_copy, digits_test, tmp_path, capsys
):
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert run_cli("evaluate", run_copy) == 0
    shown, correct, total = printed_accuracy(capsys.readouterr().out)
    assert shown == f"{100 * metrics['test_accuracy']:.2f}" and total == DIGITS_TEST_SIZE
    assert is_png(run_copy / "confusion.png")
    figure, report = tmp_path / "elsewhere.png", tmp_path / "scores.json"
    assert run_cli("evaluate", run_copy, "--confusion", figure, "--json", report) == 0
    assert f"confusion matrix: {figure}" in capsys.readouterr().out
    assert is_png(figure)
    doc = json.loads(report.read_text())
    matrix = np.array(doc["confusion"])
    assert matrix.shape == (10, 10)
    assert matrix.sum() == DIGITS_TEST_SIZE == doc["total"]
    assert np.trace(matrix) == doc["correct"] == correct
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(digits_test.labels, minlength=10))
    assert doc["accuracy"] == metrics["test_accuracy"] and doc["epoch"] == 2


def test_evaluate_idx_files(run_dir, digits_test, tmp_path, capsys):
    images = data.write_idx(tmp_path / "images-idx3-ubyte.gz", as_uint8(digits_test.images), gzip=True)
    labels = data.write_idx(tmp_path / "labels-idx1-ubyte", digits_test.labels.astype(np.uint8))
    args = ["--images", images, "--labels", labels, "--confusion", tmp_path / "c.png"]
    assert run_cli("evaluate", run_dir, *args) == 0
    shown, _, total = printed_accuracy(capsys.readouterr().out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert total == DIGITS_TEST_SIZE
    assert abs(float(shown) / 100 - metrics["test_accuracy"]) <= IDX_ACCURACY_GAP
    assert is_png(tmp_path / "c.png")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--images", "X"], "--images and --labels go together"),
        (["--labels", "Y"], "--images and --labels go together"),
        (["--images", "X", "--labels", "Y", "--data", "digits"], "either --data or --images/--labels"),
    ],
    ids=["images-alone", "labels-alone", "images-and-data"],
)
def test_evaluate_rejects_bad_combinations(run_dir, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("evaluate", run_dir, *flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# -- predict -------------------------------------------------------------------------------------


def test_predict_image_files(run_dir, digits_test, tmp_path, capsys):
    n = 20
    pixels = as_uint8(digits_test.images[:n])
    paths = []
    for i, image in enumerate(pixels):  # white digit on black, as MNIST
        paths.append(tmp_path / f"digit{i:02d}.png")
        Image.fromarray(image).save(paths[-1])
    assert run_cli("predict", run_dir, *paths, "--json", tmp_path / "p.json") == 0
    lines = capsys.readouterr().out.splitlines()
    parsed = [re.fullmatch(r"(digit\d\d\.png): (\d) \((\d+\.\d)%\)", line) for line in lines]
    assert all(parsed) and len(parsed) == n, lines
    assert [m[1] for m in parsed] == [p.name for p in paths]
    predicted = np.array([int(m[2]) for m in parsed])
    model, _ = training.load_model(run_dir)
    expected = training.logits(model, (pixels / 255.0).astype(np.float32)[..., None]).argmax(-1)
    np.testing.assert_array_equal(predicted, expected)  # the file went in exactly as the pixels it holds
    assert np.mean(predicted == digits_test.labels[:n]) >= 0.8
    doc = json.loads((tmp_path / "p.json").read_text())
    assert [p["label"] for p in doc["predictions"]] == predicted.tolist()
    assert [p["input"] for p in doc["predictions"]] == [p.name for p in paths]


def test_predict_an_idx_file_with_labels(run_dir, digits_test, tmp_path, capsys):
    images = data.write_idx(tmp_path / "t-images-idx3-ubyte", as_uint8(digits_test.images))
    labels = data.write_idx(tmp_path / "t-labels-idx1-ubyte", digits_test.labels.astype(np.uint8))
    figure, report = tmp_path / "confusion.png", tmp_path / "p.json"
    assert run_cli("predict", run_dir, images, "--labels", labels, "--confusion", figure, "--json", report) == 0
    out = capsys.readouterr().out
    assert "t-images-idx3-ubyte[0]: " in out and f"{DIGITS_TEST_SIZE - 20} more" in out
    shown, correct, total = printed_accuracy(out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert total == DIGITS_TEST_SIZE
    assert abs(float(shown) / 100 - metrics["test_accuracy"]) <= IDX_ACCURACY_GAP
    assert is_png(figure)
    doc = json.loads(report.read_text())
    assert len(doc["predictions"]) == DIGITS_TEST_SIZE
    hits = sum(p["label"] == y for p, y in zip(doc["predictions"], digits_test.labels.tolist(), strict=True))
    assert hits == correct == doc["correct"]


# -- export and import ---------------------------------------------------------------------------


def test_export_to_pytorch_and_import_back(run_dir, digits_test, tmp_path, capsys):
    weights = tmp_path / "lenet.safetensors"
    assert run_cli("export", run_dir, "--output", weights) == 0
    net = torch_models.Net()
    net.load_state_dict(safetensors.torch.load_file(weights), strict=True)
    model, _ = training.load_model(run_dir)
    jax_labels = training.logits(model, digits_test.images).argmax(-1)
    with torch.no_grad():  # (N, H, W, C) -> (N, C, H, W)
        torch_labels = net(torch.from_numpy(np.ascontiguousarray(parity.to_nchw(digits_test.images)))).argmax(-1)
    assert len(jax_labels) == DIGITS_TEST_SIZE
    np.testing.assert_array_equal(torch_labels.numpy(), jax_labels)

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli("export", run_dir, "--output", tmp_path / "w.pt")
    assert exit_info.value.code == 2
    assert ".safetensors" in capsys.readouterr().err
    assert not (tmp_path / "w.pt").exists()

    written = weights.read_bytes()
    with pytest.raises(SystemExit) as exit_info:  # an existing file is replaced only with --overwrite
        run_cli("export", run_dir, "--output", weights, "--checkpoint", "1")
    assert exit_info.value.code == 2
    assert f"{weights} already exists; pass --overwrite" in capsys.readouterr().err
    assert weights.read_bytes() == written
    assert run_cli("export", run_dir, "--output", weights, "--overwrite") == 0

    torch.save(net.state_dict(), tmp_path / "net.pt")
    imported = tmp_path / "imported"
    assert run_cli("import", tmp_path / "net.pt", "--out", imported) == 0
    assert run_cli("evaluate", run_dir, "--confusion", tmp_path / "a.png") == 0
    assert run_cli("evaluate", imported) == 0
    first, second = (printed_accuracy(line) for line in capsys.readouterr().out.splitlines() if "accuracy" in line)
    assert first == second

    before = snapshot(imported)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("import", weights, "--out", imported)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{imported} already holds a run" in err and "--overwrite" in err
    assert run_cli("train", "--out", imported, "--resume", "--no-progress") == 1  # no optimizer state to resume
    assert "imported weights" in capsys.readouterr().err
    assert snapshot(imported) == before
    assert run_cli("import", weights, "--out", imported, "--overwrite") == 0
    assert checkpoint.all_steps(imported / "checkpoints") == [0]


# -- damaged files -------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def test_evaluate_a_run_with_a_truncated_checkpoint_names_it(run_copy, capsys):
    step_dir = run_copy / "checkpoints" / "2"
    truncate(step_dir / checkpoint.ARRAYS)
    assert run_cli("evaluate", run_copy) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxnets evaluate: error: ") and f"checkpoint {step_dir} is damaged" in err
    assert "Traceback" not in err
    assert run_cli("evaluate", run_copy, "--checkpoint", "1") == 0  # the other checkpoint still serves


def test_import_overwrite_replaces_a_run_only_once_the_new_one_is_saved(
    run_dir, run_copy, tmp_path, monkeypatch, capsys
):
    weights = tmp_path / "w.safetensors"
    assert run_cli("export", run_dir, "--output", weights) == 0
    old = snapshot(run_copy)

    def full_disk(*args, **kwargs):
        raise checkpoint.CheckpointError("no space left on device")

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", full_disk)
        assert run_cli("import", weights, "--out", run_copy, "--overwrite") == 1
        assert run_cli("import", weights, "--out", tmp_path / "fresh") == 1
    assert snapshot(run_copy) == old  # the run it would have replaced, intact, and no staging left behind
    assert not (tmp_path / "fresh").exists()  # nor the directory it made
    (tmp_path / "notes.txt").write_text("a file, not a directory")
    capsys.readouterr()
    assert run_cli("import", weights, "--out", tmp_path / "notes.txt" / "run") == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxnets import: error: ") and "notes.txt" in err
    assert run_cli("import", weights, "--out", run_copy, "--overwrite") == 0
    assert checkpoint.all_steps(run_copy / "checkpoints") == [0]
    assert not (run_copy / "metrics.json").exists() and [p.name for p in run_copy.iterdir()] == ["checkpoints"]


def test_import_of_a_truncated_safetensors_file_names_it(run_dir, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    assert run_cli("export", run_dir, "--output", weights) == 0
    truncate(weights)
    assert run_cli("import", weights, "--out", tmp_path / "imported") == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxnets import: error: ") and str(weights) in err and "truncated" in err
    assert not (tmp_path / "imported").exists()


def test_evaluate_a_truncated_idx_file_names_it(run_dir, digits_test, tmp_path, capsys):
    images = data.write_idx(tmp_path / "images-idx3-ubyte", as_uint8(digits_test.images))
    labels = data.write_idx(tmp_path / "labels-idx1-ubyte", digits_test.labels.astype(np.uint8))
    truncate(images)
    assert run_cli("evaluate", run_dir, "--images", images, "--labels", labels) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxnets evaluate: error: ") and str(images) in err and "truncated" in err
    assert not (run_dir / "confusion.png").exists()


# -- the command ---------------------------------------------------------------------------------


def test_help_lists_the_training_commands_and_an_unknown_command_exits_2(capsys):
    assert run_cli("--help") == 0
    out = capsys.readouterr().out
    for name in ("train", "evaluate", "predict", "export", "import"):
        assert re.search(rf"^  {name}\s+\S", out, re.MULTILINE), name
    assert run_cli("fit") == 2
    assert "unknown command 'fit'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_with_the_defaults_reaches_the_target_accuracy(tmp_path, capsys):
    """The defaults (Adam, lr 0.001, batch 32, 40 epochs) on digits reach >= 98% test accuracy.

    Measured: 99.16% (356/359); about 4.5 s of training (metrics' train_seconds) and 10 s for the whole
    command in-process on two busy CPU cores. Not asserted: timings are noisy.
    """
    out = tmp_path / "run"
    assert run_cli("train", "--out", out, "--no-progress") == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["data"] == "digits" and metrics["config"]["epochs"] == 40
    assert len(metrics["history"]) == 40
    assert metrics["test_accuracy"] >= 0.98


@pytest.mark.parametrize(
    "command, extra",
    [("evaluate", []), ("predict", ["x.npy"]), ("export", ["--output", "w.safetensors"])],
    ids=["evaluate", "predict", "export"],
)
def test_cli_refuses_a_negative_checkpoint_epoch_before_reading_anything(command, extra, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(command, tmp_path / "no-run", *extra, "--checkpoint", "-1")
    assert exit_info.value.code == 2
    assert "EPOCH must be an integer >= 0 (a checkpoint's epoch); got '-1'" in capsys.readouterr().err


@pytest.mark.slow  # a whole training run in a fresh process (about 10 s)
def test_the_command_skips_the_teardown_yet_loses_no_output(tmp_path):
    import subprocess
    import sys

    # A pipe makes Python buffer stdout: exiting with os._exit before a flush would lose the last lines.
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "jaxnets", "train", "--out", str(out), "--epochs", "2", "--batch-size", "64"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().splitlines()[-1].startswith("test accuracy")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "complete" and checkpoint.all_steps(out / "checkpoints") == [1, 2]
    assert is_png(out / "curves.png")
    refused = subprocess.run(
        [sys.executable, "-m", "jaxnets", "train", "--out", str(out)], capture_output=True, text=True
    )
    assert refused.returncode == 1 and "already holds a run" in refused.stderr  # the exit code survives too
    code = "import jax; from jaxnets import cli; jax.devices(); assert not cli._teardown_needed()"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


@pytest.mark.parametrize(
    "spec, seed",
    [({"model": "lenet", "image_size": 32}, 0), ({"model": "lenet", "image_size": 32}, 7),
     ({"model": "lenet", "kernel_size": 3, "image_size": 28, "in_channels": 3, "num_classes": 4}, 2**40 + 1)],
    ids=["digits-seed-0", "digits-seed-7", "3x3-rgb-big-seed"],
)  # fmt: skip
def test_build_model_compiled_is_bit_identical_to_the_eager_constructor(spec, seed):
    from flax import nnx

    from jaxnets import LeNet

    built = training.build_model(spec, seed=seed)
    eager = LeNet(**{k: v for k, v in spec.items() if k != "model"}, rngs=nnx.Rngs(seed))
    assert training.model_spec(built) == training.model_spec(eager)
    got, want = nnx.to_pure_dict(nnx.state(built)), nnx.to_pure_dict(nnx.state(eager))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes(), path


@pytest.mark.parametrize(
    "config",
    [{"optimizer": name} for name in training.OPTIMIZERS] + [{"optimizer": "sgd", "scheduler": "OneCycleLR"},
     {"optimizer": "adam", "scheduler": "StepLR:step_size=3", "clip_grad_norm": 1.0, "weight_decay": 0.1}],
    ids=lambda config: "-".join(map(str, config.values())),
)  # fmt: skip
def test_train_s_compiled_optimizer_init_is_the_op_by_op_one(config):
    from flax import nnx

    optimizer = training.build_optimizer(training.TrainConfig(**config), steps_per_epoch=5)
    params = nnx.state(training.build_model(), nnx.Param)
    want, got = optimizer.init(params), training._compiled_init(optimizer).init(params)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True):
        assert (a.dtype, a.shape, a.weak_type) == (b.dtype, b.shape, b.weak_type), path
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("seed", [0, 7, 2**31, 2**32 + 3, 2**40 + 1])
def test_run_key_is_jax_random_key(seed, x64):
    with jax.enable_x64(x64):
        got, want = training._run_key(seed), jax.random.key(seed)
        assert got.dtype == want.dtype
        assert np.array_equal(jax.random.key_data(got), jax.random.key_data(want))


@pytest.mark.parametrize("seed, epoch, n", [(0, 1, 1437), (0, 40, 1437), (7, 3, 100), (2**31, 5, 64)])
def test_the_runs_epoch_order_is_data_batches_order(seed, epoch, n):
    from jaxnets.training import data

    key = jax.random.fold_in(jax.random.key(seed), epoch)
    want = np.concatenate(list(data.batches(key, n, 32, drop_last=False)))
    got = data.order(training._run_key(seed), n, epoch=epoch)
    assert got.dtype == np.int32 and np.array_equal(got, want)


def test_teardown_is_needed_for_a_running_thread_but_not_a_cancelled_timer():
    import subprocess
    import sys

    # JAX starts a threading.Timer while it looks for a TPU and cancels it; its thread can outlive the cancel.
    code = (
        "import threading; from jaxnets import cli\n"
        "timer = threading.Timer(60, print); timer.start(); timer.cancel(); cancelled = cli._teardown_needed()\n"
        "stop = threading.Event(); worker = threading.Thread(target=stop.wait); worker.start()\n"
        "running = cli._teardown_needed(); stop.set(); print(cancelled, running)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr
