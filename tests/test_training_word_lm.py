"""jaxnets train --model word_lm: pytorch/examples' word language model on WikiText-2-shaped text files.

Nothing can be downloaded here: the tests write a small corpus in WikiText-2's layout (three UTF-8 text files of a
made-up language whose next word is partly predictable) and run docs/training.md's command on it. The loop itself
is checked against pytorch/examples' ``word_language_model/main.py`` written out in torch, in float64.
"""

import json
import math
import shlex

import numpy as np
import pytest
import torch
from training_cli import (
    assert_other_commands_refuse,
    assert_resume_is_bit_identical,
    checkpoint_arrays,
    doc_commands,
    run_doc_command,
)

from jaxnets import cli
from jaxnets.training import digits as training
from jaxnets.training import word_lm
from jaxnets.training.data import DataError
from parity import reference_models as ref
from parity._specs import x64
from parity.ports import torch_model, torch_state

SECTION = "Training pytorch/examples' word language model"
TINY = ["--epochs", "2", "--batch-size", "10"]  # appended to the docs' command: argparse keeps the last value


def _sentences(rng, lines: int) -> str:
    """Lines of a small language (subject, verb, object, full stops), with blank lines, tabs and a CRLF."""
    subjects, verbs, objects = ["the cat", "a dog", "my friend"], ["sees", "likes", "finds"], ["the ball", "a tree"]
    out = []
    for i in range(lines):
        n = int(rng.integers(1, 4))
        out.append(" " + " . ".join(f"{subjects[rng.integers(3)]} {verbs[rng.integers(3)]}\t{objects[rng.integers(2)]}"
                                    for _ in range(n)) + " . ")  # fmt: skip
        if i % 7 == 0:
            out.append(" ")  # a blank line: one <eos>, as in WikiText-2
    return "\r\n".join(out[:3]) + "\n" + "\n".join(out[3:]) + "\n"


def write_corpus(directory, lines=(120, 30, 30), seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in zip(word_lm.FILES, lines, strict=True):
        (directory / name).write_text(_sentences(rng, n), encoding="utf8", newline="")
    return directory


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("wikitext") / "wikitext-2", (1000, 60, 60))


@pytest.fixture(scope="module")
def run(text_dir, tmp_path_factory):
    """The docs' command on the small corpus, 2 epochs at 10 columns, in this process: (run dir, its arguments)."""
    out = tmp_path_factory.mktemp("runs") / "word_lm"
    replace = {"~/src/examples/word_language_model/data/wikitext-2": str(text_dir), "runs/word_lm": str(out)}
    return out, run_doc_command(SECTION, "word_lm", replace, TINY)


# -- the data, as the example's data.Corpus and batchify -------------------------------------------


class UpstreamCorpus:
    """pytorch/examples ``word_language_model/data.py``'s ``Dictionary`` and ``Corpus``, as written there."""

    def __init__(self, path):
        self.word2idx, self.idx2word = {}, []
        self.train, self.valid, self.test = (self.tokenize(path / name) for name in word_lm.FILES)

    def tokenize(self, path):
        with open(path, encoding="utf8") as f:
            for line in f:
                for word in line.split() + ["<eos>"]:
                    if word not in self.word2idx:
                        self.idx2word.append(word)
                        self.word2idx[word] = len(self.idx2word) - 1
        with open(path, encoding="utf8") as f:
            idss = [torch.tensor([self.word2idx[w] for w in line.split() + ["<eos>"]]).type(torch.int64) for line in f]
        return torch.cat(idss)


def upstream_batchify(data, bsz):
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()


def test_corpus_is_the_examples_tokens_and_vocabulary(tmp_path):
    d = write_corpus(tmp_path / "w")
    (d / "valid.txt").write_text("caf\u00e9 na\u00efve\u00a0words\u3000here\n\nand unknown ones\n", encoding="utf8")
    ours, theirs = word_lm.corpus(d), UpstreamCorpus(d)
    assert list(ours.words) == theirs.idx2word and "caf\u00e9" in ours.words and "\u00a0" not in "".join(ours.words)
    for name in ("train", "valid", "test"):
        got, expected = getattr(ours, name), getattr(theirs, name).numpy()
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected, err_msg=name)
        for bsz in (1, 3, 10):
            np.testing.assert_array_equal(word_lm.batchify(got, bsz), upstream_batchify(getattr(theirs, name), bsz))


def test_windows_are_the_examples_get_batch_padded_and_masked():
    columns = np.arange(80, dtype=np.int32).reshape(40, 2)  # 40 rows: windows of 35 rows, then of 4 (39 - 35)
    rows, mask, starts = word_lm.windows(columns)
    assert starts.tolist() == [0, 35] and rows.shape == (71, 2) and mask.shape == (71,)
    np.testing.assert_array_equal(rows[:40], columns)
    assert not rows[40:].any() and mask[:40].all() and not mask[40:].any()
    # get_batch(source, 35): data rows 35..38, targets rows 36..39: the real rows of the padded window.
    data, targets, weights = (np.asarray(a) for a in word_lm._slices(rows, mask, 35))
    np.testing.assert_array_equal(data[:4], columns[35:39])
    np.testing.assert_array_equal(targets[:4], columns[36:40])
    assert weights.tolist() == [1.0] * 4 + [0.0] * 31


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("missing", "does not exist"),
        ("no-test", "lacks test.txt of WikiText-2's train.txt, valid.txt, test.txt; it holds train.txt, valid.txt"),
        ("latin-1", "valid.txt is not UTF-8 text (byte 8, line 2: invalid continuation byte)"),
    ],
)
def test_corpus_bad_directories_say_what_was_found_and_how_to_get_it(tmp_path, damage, expected):
    d = write_corpus(tmp_path / "w")
    if damage == "missing":
        d = tmp_path / "nowhere"
    elif damage == "no-test":
        (d / "test.txt").unlink()
    else:
        (d / "valid.txt").write_bytes(b"x\nab caf\xe9\n")
    with pytest.raises(DataError) as e:
        word_lm.corpus(d)
    assert expected in str(e.value) and "git clone https://github.com/pytorch/examples" in str(e.value)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--data", "digits"], "--model word_lm trains on text: give --data wikitext2:DIR"),
        (["--model", "lenet", "--data", "wikitext2:DIR"], "is text, which only --model word_lm"),
        (["--optimizer", "adam"], "trains with word_language_model/main.py's own update: plain SGD"),
        (["--scheduler", "steplr:step_size=1"], "--scheduler steplr:step_size=1 would change that"),
        (["--clip-grad-norm", "-1"], "clip_grad_norm must be a number >= 0"),
    ],
)
def test_train_refuses_what_the_word_lm_does_not_take_and_writes_nothing(tmp_path, capsys, args, expected):
    out = tmp_path / "run"
    base = ["--model", "word_lm", "--data", f"wikitext2:{tmp_path}"]
    with pytest.raises(SystemExit):
        cli.main(["train", "--out", str(out), *base, *args])
    assert expected in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


@pytest.mark.parametrize(
    "lines, args, expected",
    [
        ((120, 30, 30), ["--data", "wikitext2:"], "names no directory: write wikitext2:DIR"),
        ((120, 30, 30), ["--batch-size", "100000"], "make 0 row(s) of --batch-size 100000 columns"),
        ((120, 1, 30), [], "valid.txt holds"),
        ((120, 30, 30), ["--devices", "2"], "--model word_lm trains on one device"),
    ],
)
def test_train_refuses_data_too_small_and_writes_nothing(tmp_path, capsys, lines, args, expected):
    d = write_corpus(tmp_path / "w", lines)
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--model", "word_lm", "--data", f"wikitext2:{d}", *args]) == 1
    assert expected in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def test_word_lm_defaults_are_the_examples():
    config = training.TrainConfig(model="word_lm", data="wikitext2:DIR")
    assert (config.lr, config.clip_grad_norm, config.batch_size, config.epochs) == (20.0, 0.25, 20, 40)
    assert config.optimizer is None and config.learning_rate == 20.0
    assert training.TrainConfig().optimizer == "adam"  # the other models keep theirs


def test_docs_word_lm_section_shows_the_two_commands_the_tests_run():
    """The first is the ``run`` fixture's command, the second the resume test's: every command shown runs."""
    commands = doc_commands(SECTION)
    assert len(commands) == 2 and "--model word_lm --data wikitext2:" in commands[0]
    assert shlex.split(commands[1]) == ["jaxnets", "train", "--out", "runs/word_lm", "--resume"]


# -- the loop, against the example's main.py in torch -----------------------------------------------


def upstream_main(corpus_dir, model, epochs, batch_size, lr=20.0, clip=0.25, bptt=35, eval_batch_size=10):
    """pytorch/examples ``word_language_model/main.py``'s loop (no --use-optimizer): per epoch the mean train loss,
    the validation and test losses, and the lr used; and the final state_dict."""
    corpus = UpstreamCorpus(corpus_dir)
    train_data = upstream_batchify(corpus.train, batch_size)
    val_data = upstream_batchify(corpus.valid, eval_batch_size)
    test_data = upstream_batchify(corpus.test, eval_batch_size)
    criterion = torch.nn.NLLLoss()

    def get_batch(source, i):
        seq_len = min(bptt, len(source) - 1 - i)
        return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].view(-1)

    def evaluate(data_source):
        model.eval()
        total_loss, hidden = 0.0, model.init_hidden(eval_batch_size)
        with torch.no_grad():
            for i in range(0, data_source.size(0) - 1, bptt):
                data, targets = get_batch(data_source, i)
                output, hidden = model(data, hidden)
                total_loss += len(data) * criterion(output, targets).item()
        return total_loss / (len(data_source) - 1)

    history, best_val_loss = [], None
    for _ in range(epochs):
        model.train()
        hidden, losses = model.init_hidden(batch_size), []
        for i in range(0, train_data.size(0) - 1, bptt):
            data, targets = get_batch(train_data, i)
            model.zero_grad()
            hidden = tuple(h.detach() for h in hidden)
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            losses.append(loss.item())
        val_loss = evaluate(val_data)
        history.append({"train_loss": float(np.mean(losses)), "valid_loss": val_loss,
                        "test_loss": evaluate(test_data), "lr": lr})  # fmt: skip
        if not best_val_loss or val_loss < best_val_loss:
            best_val_loss = val_loss
        else:
            lr /= 4.0
    return history, torch_state(model)


def test_the_run_is_the_examples_main_py_in_float64(tmp_path, monkeypatch):
    """The whole command (dropout off: torch's and JAX's masks differ) from torch's weights, in float64: the
    examples' losses every epoch, the annealed lr and the final weights, to 1e-10. At the example's lr 20 the
    validation loss rises after the first epoch here, so the lr is divided by 4 there."""
    text = write_corpus(tmp_path / "w", (60, 20, 20))
    build = lambda: ref.RNNModel("LSTM", len(word_lm.corpus(text).words), 200, 200, 2, 0.0, True)  # noqa: E731
    state = torch_state(torch_model(build, 0))
    history, final = upstream_main(text, torch_model(build, 0), epochs=4, batch_size=4)
    assert len({h["lr"] for h in history}) > 1, "the lr was never annealed: the test would not check it"

    class FromTorch(word_lm.LanguageModel):
        def __init__(self, num_words, batch_size, seed):
            super().__init__(num_words, batch_size, seed)
            self.rnn = self.rnn.double()
            self.rnn.load_state_dict(state)
            h, c = self.rnn.init_hidden(batch_size)
            self.h, self.c = word_lm.Hidden(h), word_lm.Hidden(c)

    monkeypatch.setattr(word_lm, "DROPOUT", 0.0)
    monkeypatch.setattr(word_lm, "LanguageModel", FromTorch)
    config = training.TrainConfig(model="word_lm", data=f"wikitext2:{text}", epochs=4, batch_size=4)
    with x64("float64"):
        metrics = training.train(config, tmp_path / "run", progress=False, log=lambda line: None)
    for epoch, (ours, theirs) in enumerate(zip(metrics["history"], history, strict=True), 1):
        assert ours["lr"] == theirs["lr"], epoch
        for key in ("train_loss", "valid_loss", "test_loss"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-10), (epoch, key)
    arrays = checkpoint_arrays(tmp_path / "run", 4)
    keys = {name: "['params']['rnn']" + "".join(f"['{part}']" for part in name.split(".")) for name in final}
    tied = [name for name in ("encoder.weight", "decoder.weight") if keys[name] in arrays]
    assert len(tied) == 1  # one parameter in the checkpoint, under one of its two names; torch's two are equal
    for name, value in final.items():
        got = arrays[keys[tied[0] if name in ("encoder.weight", "decoder.weight") else name]]
        np.testing.assert_allclose(got, value, rtol=1e-10, atol=1e-12, err_msg=name)


# -- a real run ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_word_lm_run_learns_and_writes_metrics_checkpoints_and_curves(run, text_dir):
    out, _ = run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["model"]["model"] == "word_lm"
    assert metrics["epochs_completed"] == 2 and metrics["train_seconds"] > 0
    assert metrics["model"]["tie_weights"] and metrics["data"]["words"] == len(word_lm.corpus(text_dir).words)
    first, last = metrics["history"]
    assert last["valid_ppl"] < first["valid_ppl"] < metrics["data"]["words"]  # better than guessing, and learning
    assert metrics["test_ppl"] == min(metrics["history"], key=lambda h: h["valid_loss"])["test_ppl"]
    for h in metrics["history"]:
        assert h["train_ppl"] == pytest.approx(math.exp(h["train_loss"]))
    arrays = checkpoint_arrays(out, 2)
    assert any("['buffers']['h']" in k for k in arrays) and any("lr" in k for k in arrays)
    assert (out / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_word_lm_resume_is_bit_identical(run, tmp_path, capsys):
    out, args = run
    assert_resume_is_bit_identical(out, [a for a in args if a not in ("--out", str(out))], tmp_path, capsys,
                                   SECTION, "runs/word_lm", "['h']")  # fmt: skip


@pytest.mark.slow
def test_evaluate_predict_export_refuse_a_word_lm_run(run, tmp_path, capsys):
    assert_other_commands_refuse(run[0], tmp_path, capsys, "word_lm")
