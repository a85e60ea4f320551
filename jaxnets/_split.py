"""When :class:`jaxnets.Trainer` may split a batch into parts by itself: a loss that is a mean over examples.

Gradient accumulation over equal parts gives the whole batch's step exactly
(up to the order of floating-point sums) when the loss is a mean of
per-example terms; for any other loss (a sum, a term that mixes examples, a
model with batch statistics) it gives another step. ``Trainer`` cannot read
that off an arbitrary ``loss_fn``, so it traces the loss once with a record
switched on (:func:`recording`): a model whose examples never meet
(LeNet on its fast path) notes its input and output and the part size it
runs best at (:func:`per_example`), and jaxnets' mean losses note their
arguments and result (:func:`mean_loss`). :func:`part_size` then accepts the
split only when the value ``loss_fn`` returns is such a mean loss of such a
model's output on a batch argument, against a batch argument: the tracers
themselves are compared, so any other arithmetic on the way (a scaled input,
an extra term, another reduction) leaves the batch whole.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

_RECORD: contextvars.ContextVar[list | None] = contextvars.ContextVar("jaxnets_split_record", default=None)


@contextlib.contextmanager
def recording() -> Iterator[list]:
    """Record the calls of :func:`per_example` and :func:`mean_loss` made inside the block."""
    token = _RECORD.set([])
    try:
        yield _RECORD.get()
    finally:
        _RECORD.reset(token)


def per_example(x, out, part: int) -> None:
    """Note that ``out[i]`` depends on ``x[i]`` alone, and that the model runs best on ``part`` examples at a time."""
    record = _RECORD.get()
    if record is not None:
        record.append(("model", x, out, part))


def mean_loss(input, target, out) -> None:
    """Note that ``out`` is the mean over the leading axis of per-example terms of ``input`` and ``target``."""
    record = _RECORD.get()
    if record is not None:
        record.append(("loss", input, target, out))


def part_size(record: list, loss, batch: Sequence) -> int | None:
    """The part size the model asks for when ``loss`` is a mean loss of a per-example model on ``batch``, else None."""
    is_arg = lambda a: any(a is b for b in batch)  # noqa: E731 - identity: the very tracer, nothing computed on it
    for kind, pred, target, out in record:
        if kind != "loss" or out is not loss or not is_arg(target):
            continue
        for kind2, x, model_out, part in record:
            if kind2 == "model" and model_out is pred and is_arg(x):
                return part
    return None


def parts(batch: int, part: int) -> int:
    """Equal parts of at most ``part`` examples to split ``batch`` into: 1 when it fits, or when parts would be tiny.

    The fewest parts that divide the batch evenly; 1 (no split) when the batch
    fits in one part or when an even split needs parts of fewer than half of
    ``part`` examples (a prime batch size, say), which would run slower than the whole.
    """
    if batch <= part:
        return 1
    k = -(-batch // part)
    while batch % k:
        k += 1
    return k if batch // k >= max(part // 2, 1) else 1
