"""pytorch/examples' word language model on WikiText-2: what ``jaxnets train --model word_lm`` trains.

The data are WikiText-2's three text files, ``train.txt``, ``valid.txt`` and
``test.txt`` (the folder ``word_language_model/data/wikitext-2`` of a clone of
pytorch/examples holds them, see :data:`WIKITEXT_URL`), read as the example's
``data.Corpus`` reads them: each file line by line as UTF-8, each line split at
whitespace with ``<eos>`` appended, every new word given the next id in the
order met over train, valid, then test (WikiText-2: 33,278 words;
2,088,628 / 217,646 / 245,569 tokens). :func:`batchify` cuts a token stream
into ``batch_size`` columns, as the example's ``batchify``.

The model is the example's ``RNNModel`` as ported
(:class:`jaxnets.ports.RNNModel`): an LSTM of 2 layers, 200 embedding and
hidden units, dropout 0.2 and tied weights (the example's ``--tied``, which the
commands of its README use; it needs ``emsize == nhid``, which its defaults
are). The loop is the example's ``train()`` and ``evaluate()``:

- an epoch walks the columns in windows of :data:`BPTT` rows in order (no
  shuffle), each window's targets the next rows; the last window is shorter
  when the rows do not divide evenly. The hidden state starts at zero each
  epoch and is carried from window to window, cut from the gradient
  (``repackage_hidden``). Here the short last window is padded to
  :data:`BPTT` rows and its padding masked out of the loss, so that every step
  has one shape and compiles once; the LSTM runs forward in time, so the
  padding changes no output that is scored, and the loss is the mean over
  the real tokens, as the example's ``NLLLoss``.
- the update is the example's own (``OWN_UPDATE`` in
  :mod:`jaxnets.training.digits`): ``clip_grad_norm_`` then
  ``p -= lr * grad`` (:func:`jaxnets.optim.sgd`, no momentum); after each
  epoch, the lr is divided by 4 unless the validation loss is the best so far
  (:class:`jaxnets.optim.lr_scheduler.ReduceLROnPlateau` with ``factor=0.25``,
  ``patience=0``, no threshold: the example's ``lr /= 4.0``).
- validation and test run in eval mode (no dropout) on columns of
  :data:`EVAL_BATCH`, and score the mean negative log-likelihood per token and
  its exponential, the perplexity. The example tests once, at the end, the
  model of the best validation loss; here every epoch scores both sets, and
  ``metrics.json`` names the best epoch (``best_epoch``) with its test
  perplexity: the example's final figure.
"""

from __future__ import annotations

import functools
import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .. import optim
from ..optim.lr_scheduler import ReduceLROnPlateau
from ..ports import RNNModel
from . import digits
from .data import DataError
from .trainer import Trainer

WIKITEXT_URL = "https://github.com/pytorch/examples/tree/main/word_language_model/data/wikitext-2"
"""Where WikiText-2's three files come from: pytorch/examples ships them beside the example."""

FILES = ("train.txt", "valid.txt", "test.txt")
EOS = "<eos>"
"""The word the example appends to every line."""

BPTT = 35
"""Rows (time steps) per training window, the example's ``--bptt``."""
EVAL_BATCH = 10
"""Columns of the validation and test streams, the example's ``eval_batch_size``."""
EMSIZE = 200
"""Embedding and hidden units (``--emsize``, ``--nhid``: equal, as tied weights need)."""
NLAYERS = 2
DROPOUT = 0.2

_HOW_TO_GET = (
    f"WikiText-2 is in pytorch/examples ({WIKITEXT_URL}): git clone https://github.com/pytorch/examples and pass "
    "--data wikitext2:examples/word_language_model/data/wikitext-2"
)


@dataclass(frozen=True)
class Corpus:
    """WikiText-2 as token ids: the three streams and the vocabulary (``words[i]`` is id ``i``)."""

    words: tuple[str, ...]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def corpus(directory: str | os.PathLike) -> Corpus:
    """The three files of ``directory`` as the example's ``data.Corpus`` reads them.

    Raises:
      DataError: no such folder, a missing file (the message lists what the
        folder holds and how to get the data), or a file that is not UTF-8
        text.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        state = "is not a directory" if directory.exists() else "does not exist"
        raise DataError(f"WikiText-2 directory {directory} {state}. {_HOW_TO_GET}.")
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        held = sorted(p.name for p in directory.iterdir())
        raise DataError(
            f"{directory} lacks {', '.join(missing)} of WikiText-2's {', '.join(FILES)}; it holds "
            f"{', '.join(held[:20]) or 'nothing'}{' and more' if len(held) > 20 else ''}. {_HOW_TO_GET}."
        )
    ids: dict[str, int] = {}
    streams = [_tokenize(directory / name, ids) for name in FILES]
    return Corpus(tuple(ids), *streams)


def _tokenize(path: Path, ids: dict[str, int]) -> np.ndarray:
    """``path``'s tokens as int32 ids, new words added to ``ids`` (the example's ``Corpus.tokenize``)."""
    raw = path.read_bytes()
    try:
        # Decoded whole, so that an error names the byte's place in the file; then read as a text-mode open()
        # reads, line by line with universal newlines (\r\n and \r end lines too).
        lines = io.StringIO(raw.decode("utf8"), newline=None)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path} is not UTF-8 text (byte {e.start:,}, line {line:,}: {e.reason}); WikiText-2's files are. "
            f"{_HOW_TO_GET}."
        ) from None
    tokens = [ids.setdefault(word, len(ids)) for line in lines for word in [*line.split(), EOS]]
    return np.asarray(tokens, np.int32)


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """The stream cut into ``batch_size`` columns, ``(len(ids) // batch_size, batch_size)``: column ``j`` holds
    the ``j``-th equal part of the stream, the tokens that do not fill a row dropped (the example's ``batchify``)."""
    rows = len(ids) // batch_size
    return np.ascontiguousarray(ids[: rows * batch_size].reshape(batch_size, rows).T)


def windows(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, mask, starts)``: ``columns`` padded with zero rows to ``len(starts) * BPTT + 1`` rows, 1.0 for
    each real row and 0.0 for padding, and the first row of every window (the example's ``range(0,
    len(source) - 1, bptt)``)."""
    n = len(columns)
    starts = np.arange(0, n - 1, BPTT, dtype=np.int32)
    padded = len(starts) * BPTT + 1
    rows = np.concatenate([columns, np.zeros((padded - n, columns.shape[1]), columns.dtype)])
    mask = (np.arange(padded) < n).astype(np.float32)
    return rows, mask, starts


# -- the model and its step ----------------------------------------------------


class Hidden(nnx.Variable):
    """A state of the LSTM (``h`` or ``c``) after the last training window: model state, not a parameter."""


class LanguageModel(nnx.Module):
    """The example's tied 2-layer LSTM ``RNNModel`` over ``num_words`` words (``rnn``), with the hidden state its
    loop carries between a training epoch's windows of ``batch_size`` columns (``h``, ``c``); weights and dropout
    keys from ``nnx.Rngs(seed)``."""

    def __init__(self, num_words: int, batch_size: int, seed: int):
        self.rnn = RNNModel("LSTM", num_words, EMSIZE, EMSIZE, NLAYERS, DROPOUT, tie_weights=True,
                            rngs=nnx.Rngs(seed))  # fmt: skip
        h, c = self.rnn.init_hidden(batch_size)
        self.h, self.c = Hidden(h), Hidden(c)


def model_spec(model) -> dict:
    """The JSON description of a run's language model."""
    return {"model": "word_lm", "rnn_type": "LSTM", "ntoken": int(model.rnn.ntoken), "ninp": EMSIZE,
            "nhid": EMSIZE, "nlayers": NLAYERS, "dropout": DROPOUT, "tie_weights": True, "bptt": BPTT}  # fmt: skip


def _scores(log_probs, targets, weights):
    """Summed negative log-likelihood, number of correct next words and number of tokens over the real rows:
    ``log_probs`` ``(rows * columns, words)``, ``targets`` and ``weights`` per row."""
    flat = targets.reshape(-1)
    w = jnp.repeat(weights, targets.shape[1]).astype(log_probs.dtype)
    nll = -jnp.take_along_axis(log_probs, flat[:, None], axis=1)[:, 0]
    correct = jnp.sum(jnp.where(w > 0, jnp.argmax(log_probs, axis=1) == flat, False))
    return jnp.sum(w * nll), correct, jnp.sum(w)


def _slices(rows, mask, start):
    """The window of rows from ``start``: its input rows, its target rows (the next ones) and their mask."""
    take = functools.partial(jax.lax.dynamic_slice_in_dim, slice_size=BPTT)
    return take(rows, start), take(rows, start + 1), take(mask, start + 1)


def _train_step(model, rows, mask, start):
    """One window in train mode: the mean loss over its real tokens and its number of correct next words; the
    hidden state carried on (zero at the epoch's first window, cut from the gradient as ``repackage_hidden``)."""
    model.rnn.train()
    start = start[0]
    data, targets, weights = _slices(rows, mask, start)
    hidden = tuple(jnp.where(start == 0, 0, jax.lax.stop_gradient(v[...])) for v in (model.h, model.c))
    log_probs, (model.h[...], model.c[...]) = model.rnn(data, hidden)
    nll, correct, tokens = _scores(log_probs, targets, weights)
    return nll / tokens, correct


def _evaluate(model, *streams):
    """Each ``(rows, mask)`` stream of ``streams`` in eval mode, window after window from a zero hidden state:
    its summed negative log-likelihood, number of correct next words and number of tokens."""
    model.rnn.eval()
    out = []
    for rows, mask in zip(streams[::2], streams[1::2], strict=True):

        def window(hidden, start, rows=rows, mask=mask):
            data, targets, weights = _slices(rows, mask, start)
            log_probs, hidden = model.rnn(data, hidden)
            return hidden, _scores(log_probs, targets, weights)

        starts = jnp.arange((rows.shape[0] - 1) // BPTT, dtype=jnp.int32) * BPTT
        _, sums = jax.lax.scan(window, model.rnn.init_hidden(rows.shape[1]), starts)
        out.extend(jnp.sum(s) for s in sums)
    return tuple(out)


# -- training ------------------------------------------------------------------


def _training_data(config):
    """The corpus of ``config.data``, its training tokens in ``config.batch_size`` columns, and the validation and
    test sets' windows; refused when any is too short."""
    directory = config.data.partition(":")[2].strip()
    if not directory:
        raise DataError(f"--data {config.data!r} names no directory: write wikitext2:DIR. {_HOW_TO_GET}.")
    text = corpus(directory)
    train_cols = batchify(text.train, config.batch_size)
    if len(train_cols) < 2:
        raise digits.TrainingError(
            f"train.txt's {len(text.train):,} tokens make {len(train_cols)} row(s) of --batch-size "
            f"{config.batch_size} columns; a window needs 2 rows at least (a word and the next). Use a smaller "
            "--batch-size or a longer train.txt."
        )
    held_out = {}
    for name, ids in (("valid", text.valid), ("test", text.test)):
        if len(ids) < 2 * EVAL_BATCH:
            raise digits.TrainingError(
                f"{name}.txt holds {len(ids)} tokens; it is scored in {EVAL_BATCH} columns of 2 rows at least, so "
                f"it needs {2 * EVAL_BATCH} tokens or more."
            )
        held_out[name] = windows(batchify(ids, EVAL_BATCH))
    return text, train_cols, held_out


def train(config, out: Path, *, resume: bool, overwrite: bool, progress, log, devices) -> dict:
    """:func:`jaxnets.training.digits.train` for ``config.model == "word_lm"``: same arguments, same run
    directory, checkpoints, resume and faults; the history holds losses, perplexities and next-word accuracies
    of train, valid and test, and the lr."""
    if devices not in (None, 1):
        raise digits.TrainingError(
            f"--model word_lm trains on one device (its hidden state runs through the epoch in order); got "
            f"--devices {devices}. Leave --devices out."
        )
    primary = jax.process_index() == 0
    if not primary:
        log, progress = (lambda line: None), False
    text, train_cols, held_out = digits._open_run(out, lambda: _training_data(config), resume=resume,
                                                  overwrite=overwrite, primary=primary)  # fmt: skip
    rows, mask, starts = windows(train_cols)
    train_tokens = (len(train_cols) - 1) * config.batch_size
    order = starts.reshape(-1, 1)  # one window a step, in order: its first row
    model = LanguageModel(len(text.words), config.batch_size, config.seed)
    plateau = ReduceLROnPlateau(config.learning_rate, factor=0.25, patience=0, threshold=0, threshold_mode="abs",
                                eps=0)  # fmt: skip
    tx = optax.chain(optim.clip_grad_norm(config.clip_grad_norm), plateau.wrap(optim.sgd))
    trainer = Trainer(model, digits._compiled_init(tx), _train_step, eval_fn=_evaluate, has_aux=True)
    history: list[dict] = []
    start_epoch = 0
    if resume:
        history, start_epoch = digits._resume(trainer, model, config, out, log)
    rows, mask = trainer.replicate((rows, mask))
    scored = trainer.replicate(held_out["valid"][:2] + held_out["test"][:2])
    spec = model_spec(model)
    metrics = {"config": config.to_json(), "model": spec, "data": {name: len(getattr(text, name)) for name in
               ("train", "valid", "test")} | {"words": len(text.words)}, "devices": 1,
               "processes": jax.process_count(), "status": "running"}  # fmt: skip
    elapsed = sum(h["seconds"] for h in history)
    drawn = time.perf_counter()
    plot = functools.partial(digits.plot_curves, title=f"word LM (LSTM) on {config.data}, SGD", held_out="valid")
    with digits._Writer() as writer:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            lr = float(plateau.get_last_lr(trainer.opt_state[1]))
            desc = f"epoch {epoch}/{config.epochs}"
            step_losses, hits, scores = digits._train_epoch(trainer, rows, mask, order, None, desc, progress, scored)
            writer.check()
            scores = [float(v) for v in scores]
            entry = {"epoch": epoch, "train_loss": float(step_losses.mean()),
                     "train_accuracy": int(hits.sum()) / train_tokens}  # fmt: skip
            for name, (nll, correct, tokens) in zip(("valid", "test"), (scores[:3], scores[3:]), strict=True):
                entry |= {f"{name}_loss": nll / tokens, f"{name}_accuracy": correct / tokens}
            for name in ("train", "valid", "test"):
                entry[f"{name}_ppl"] = _perplexity(entry[f"{name}_loss"])
            # The example's `lr /= 4.0` unless the validation loss is the best so far, before the state is checked
            # and saved: its best validation loss is infinite until the first epoch's.
            opt_state = trainer.opt_state
            trainer.opt_state = (opt_state[0], plateau.step(opt_state[1], entry["valid_loss"]))
            stop = functools.partial(digits._stop, writer, out, metrics, history, primary)
            state = digits._epoch_state(digits._run_state(trainer), step_losses, epoch, stop, f"Lower --lr (now "
                                        f"{lr:g}) or --clip-grad-norm (now {config.clip_grad_norm:g})")  # fmt: skip
            seconds = time.perf_counter() - t0
            elapsed += seconds
            history.append(entry | {"lr": lr, "seconds": seconds})
            metrics |= {"history": list(history), "epochs_completed": epoch, "train_seconds": elapsed} | _best(history)
            if primary:
                meta = {"config": config.to_json(), "model": spec}
                drawn = digits._submit_epoch(writer, out, state, meta, metrics, config.epochs, drawn, plot)
            log(
                f"epoch {epoch:>3}/{config.epochs}  loss {entry['train_loss']:.2f}  ppl {entry['train_ppl']:8.2f}  "
                f"valid ppl {entry['valid_ppl']:8.2f}  test ppl {entry['test_ppl']:8.2f}  lr {lr:g}  ({seconds:.1f} s)"
            )
    digits._complete(out, metrics, history, elapsed, primary, **_best(history))
    if "best_epoch" in metrics:
        log(
            f"test perplexity {metrics['test_ppl']:.2f} with the weights of epoch {metrics['best_epoch']}, the best "
            f"validation perplexity ({metrics['valid_ppl']:.2f}), after {history[-1]['epoch']} epochs, "
            f"{elapsed:.1f} s of training; run in {out}"
        )
    return metrics


def _best(history: list[dict]) -> dict:
    """The epoch of the lowest validation loss (the first of equal ones, as the example keeps the first model saved)
    with its validation and test perplexities: the example's final figures; nothing before the first epoch."""
    if not history:
        return {}
    best = min(history, key=lambda h: h["valid_loss"])
    return {"best_epoch": best["epoch"], "valid_ppl": best["valid_ppl"], "test_ppl": best["test_ppl"]}


def _perplexity(loss: float) -> float:
    """``exp(loss)``, inf past float's range (a diverged run's loss)."""
    return math.exp(loss) if loss < 700 else math.inf
