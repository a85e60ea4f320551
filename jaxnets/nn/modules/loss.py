"""torch's loss modules: the same constructor arguments, ``reduction``, buffers and numbers.

Each calls its :mod:`jaxnets.nn.functional` namesake. As in torch, a class
weight given to the constructor is a *buffer* (``weight``, and
``pos_weight`` for ``BCEWithLogitsLoss``), so it appears in ``state_dict``
and is not a trained parameter; ``reduction`` is ``"mean"`` (default),
``"sum"`` or ``"none"``, and the legacy ``size_average`` / ``reduce`` pair
still overrides it (with torch's deprecation warning). These are torch-mirror
layers: class scores are channels-first, ``(N, C)`` or ``(N, C, d1, ...)``.
:mod:`jaxnets.losses` (the tutorial models' losses) is a separate module.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from ..module import Buffer, Module
from .linear import Linear


def _buffer(value) -> Buffer | None:
    return None if value is None else Buffer(jnp.array(value, copy=True))


class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", *, rngs: nnx.Rngs | None = None):
        self.reduction = F._reduction(size_average, reduce, reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class _WeightedLoss(_Loss):
    def __init__(
        self, weight=None, size_average=None, reduce=None, reduction: str = "mean", *, rngs: nnx.Rngs | None = None
    ):
        super().__init__(size_average, reduce, reduction)
        self.weight = _buffer(weight)

    def _weight(self):
        return None if self.weight is None else self.weight[...]


class L1Loss(_Loss):
    """``nn.L1Loss(reduction="mean")``: ``|input - target|``."""

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.l1_loss(input, target, reduction=self.reduction)


class MSELoss(_Loss):
    """``nn.MSELoss(reduction="mean")``: ``(input - target) ** 2``."""

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.mse_loss(input, target, reduction=self.reduction)


class NLLLoss(_WeightedLoss):
    """``nn.NLLLoss(weight=None, ignore_index=-100, reduction="mean")`` of log-probabilities ``(N, C, ...)``."""

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.nll_loss(input, target, self._weight(), ignore_index=self.ignore_index, reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """``nn.CrossEntropyLoss(weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0)``.

    Logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``; target class indices
    (``(N, d1, ...)``, integer) or class probabilities (the input's shape).
    See :func:`jaxnets.nn.functional.cross_entropy` for the weighted mean.
    """

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.cross_entropy(
            input, target, self._weight(), ignore_index=self.ignore_index, reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )  # fmt: skip


class BCELoss(_WeightedLoss):
    """``nn.BCELoss(weight=None, reduction="mean")`` of probabilities; logs clamped at -100 as torch's."""

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.binary_cross_entropy(input, target, self._weight(), reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """``nn.BCEWithLogitsLoss(weight=None, reduction="mean", pos_weight=None)``; both weights are buffers."""

    def __init__(
        self,
        weight=None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        pos_weight=None,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(size_average, reduce, reduction)
        self.weight = _buffer(weight)
        self.pos_weight = _buffer(pos_weight)

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        weight = None if self.weight is None else self.weight[...]
        pos_weight = None if self.pos_weight is None else self.pos_weight[...]
        return F.binary_cross_entropy_with_logits(
            input, target, weight, reduction=self.reduction, pos_weight=pos_weight
        )


class SmoothL1Loss(_Loss):
    """``nn.SmoothL1Loss(reduction="mean", beta=1.0)``."""

    def __init__(
        self,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        beta: float = 1.0,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    """``nn.HuberLoss(reduction="mean", delta=1.0)``."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0, *, rngs: nnx.Rngs | None = None):
        if not isinstance(delta, float | int):
            raise TypeError(f"delta must be a float or int, got: {type(delta)}")
        super().__init__(reduction=reduction)
        self.delta = delta

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class KLDivLoss(_Loss):
    """``nn.KLDivLoss(reduction="mean", log_target=False)``; ``input`` is log-probabilities.

    ``reduction="batchmean"`` gives the KL divergence per sample; torch's
    default ``"mean"`` divides by every element (torch warns about it at each call; this docstring is the warning).
    """

    def __init__(
        self,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        log_target: bool = False,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class PoissonNLLLoss(_Loss):
    """``nn.PoissonNLLLoss(log_input=True, full=False, eps=1e-8, reduction="mean")``."""

    def __init__(
        self,
        log_input: bool = True,
        full: bool = False,
        size_average=None,
        eps: float = 1e-8,
        reduce=None,
        reduction: str = "mean",
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(size_average, reduce, reduction)
        self.log_input, self.full, self.eps = log_input, full, eps

    def __call__(self, log_input: jax.Array, target: jax.Array) -> jax.Array:
        return F.poisson_nll_loss(
            log_input, target, log_input=self.log_input, full=self.full, eps=self.eps, reduction=self.reduction
        )


class GaussianNLLLoss(_Loss):
    """``nn.GaussianNLLLoss(*, full=False, eps=1e-6, reduction="mean")``; called as ``loss(input, target, var)``."""

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean", rngs: nnx.Rngs | None = None):
        super().__init__(None, None, reduction)
        self.full, self.eps = full, eps

    def __call__(self, input: jax.Array, target: jax.Array, var) -> jax.Array:
        return F.gaussian_nll_loss(input, target, var, full=self.full, eps=self.eps, reduction=self.reduction)


class HingeEmbeddingLoss(_Loss):
    """``nn.HingeEmbeddingLoss(margin=1.0, reduction="mean")``; targets 1 or -1."""

    def __init__(
        self,
        margin: float = 1.0,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.hinge_embedding_loss(input, target, margin=self.margin, reduction=self.reduction)


class MultiLabelMarginLoss(_Loss):
    """``nn.MultiLabelMarginLoss(reduction="mean")``; target class indices ended by -1, the input's shape."""

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.multilabel_margin_loss(input, target, reduction=self.reduction)


class SoftMarginLoss(_Loss):
    """``nn.SoftMarginLoss(reduction="mean")``: ``log(1 + exp(-target * input))``."""

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.soft_margin_loss(input, target, reduction=self.reduction)


class MultiLabelSoftMarginLoss(_WeightedLoss):
    """``nn.MultiLabelSoftMarginLoss(weight=None, reduction="mean")``; ``(N, C)`` scores and 0/1 targets."""

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.multilabel_soft_margin_loss(input, target, self._weight(), reduction=self.reduction)


class CosineEmbeddingLoss(_Loss):
    """``nn.CosineEmbeddingLoss(margin=0.0, reduction="mean")``; called as ``loss(input1, input2, target)``."""

    def __init__(
        self,
        margin: float = 0.0,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def __call__(self, input1: jax.Array, input2: jax.Array, target: jax.Array) -> jax.Array:
        return F.cosine_embedding_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


class MarginRankingLoss(_Loss):
    """``nn.MarginRankingLoss(margin=0.0, reduction="mean")``; called as ``loss(input1, input2, target)``."""

    def __init__(
        self,
        margin: float = 0.0,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def __call__(self, input1: jax.Array, input2: jax.Array, target: jax.Array) -> jax.Array:
        return F.margin_ranking_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


class MultiMarginLoss(_WeightedLoss):
    """``nn.MultiMarginLoss(p=1, margin=1.0, weight=None, reduction="mean")``: multi-class hinge."""

    def __init__(
        self,
        p: int = 1,
        margin: float = 1.0,
        weight=None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(weight, size_average, reduce, reduction)
        if p not in (1, 2):
            raise ValueError("only p == 1 and p == 2 supported")
        if weight is not None and jnp.ndim(weight) != 1:
            raise ValueError(
                f"MultiMarginLoss: expected weight to be None or 1D tensor, got {jnp.ndim(weight)}D instead"
            )
        self.p, self.margin = p, margin

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        return F.multi_margin_loss(
            input, target, p=self.p, margin=self.margin, weight=self._weight(), reduction=self.reduction
        )


class TripletMarginLoss(_Loss):
    """``nn.TripletMarginLoss(margin=1.0, p=2.0, eps=1e-6, swap=False, reduction="mean")``."""

    def __init__(
        self,
        margin: float = 1.0,
        p: float = 2.0,
        eps: float = 1e-6,
        swap: bool = False,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        *,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(size_average, reduce, reduction)
        if margin <= 0:
            raise ValueError(f"TripletMarginLoss: expected margin to be greater than 0, got {margin} instead")
        self.margin, self.p, self.eps, self.swap = margin, p, eps, swap

    def __call__(self, anchor: jax.Array, positive: jax.Array, negative: jax.Array) -> jax.Array:
        return F.triplet_margin_loss(
            anchor, positive, negative, margin=self.margin, p=self.p, eps=self.eps, swap=self.swap,
            reduction=self.reduction,
        )  # fmt: skip


class CTCLoss(_Loss):
    """``nn.CTCLoss(blank=0, reduction="mean", zero_infinity=False)``; called as
    ``loss(log_probs (T, N, C), targets, input_lengths, target_lengths)``.

    See :func:`jaxnets.nn.functional.ctc_loss` (torch's CPU algorithm and gradient).
    """

    def __init__(
        self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False, *, rngs: nnx.Rngs | None = None
    ):
        super().__init__(reduction=reduction)
        self.blank, self.zero_infinity = blank, zero_infinity

    def __call__(self, log_probs: jax.Array, targets: jax.Array, input_lengths, target_lengths) -> jax.Array:
        return F.ctc_loss(
            log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction, self.zero_infinity
        )


class LinearCrossEntropyLoss(_WeightedLoss):
    """``nn.LinearCrossEntropyLoss(in_features, num_classes, *, out_features=(), bias=False, reduction="mean",
    weight=None, ignore_index=None, label_smoothing=0.0, options=None)``: a ``linear`` projection to the logits,
    then :class:`CrossEntropyLoss`.

    The projection is a :class:`jaxnets.nn.Linear` child named ``linear``
    (``linear.weight`` ``(num_classes * prod(out_features), in_features)``), so
    the ``state_dict`` is torch's: ``weight`` (the class weights, a buffer),
    then ``linear.weight`` and ``linear.bias``. ``options`` (torch's chunking, a
    memory strategy) and ``device`` are accepted and not used.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device=None,
        dtype=None,
        reduction: str = "mean",
        weight=None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options=None,
        rngs: nnx.Rngs,
    ):
        if weight is not None and tuple(jnp.shape(weight)) != (num_classes,):
            raise ValueError(f"expected weight shape to be {(num_classes,)}, got {tuple(jnp.shape(weight))}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"expected label_smoothing to be in range [0, 1], got {label_smoothing}")
        super().__init__(weight, reduction=reduction)
        self.num_classes, self.out_features = num_classes, tuple(out_features)
        self.ignore_index, self.label_smoothing, self.options = ignore_index, label_smoothing, options
        rows = num_classes * math.prod(self.out_features)
        self.linear = Linear(in_features, rows, bias=bias, dtype=dtype, rngs=rngs)

    def __call__(self, input: jax.Array, target: jax.Array) -> jax.Array:
        in_features = self.linear.in_features
        linear_weight = self.linear.weight[...].reshape((self.num_classes, *self.out_features, in_features))
        bias = self.linear.bias
        linear_bias = None if bias is None else bias[...].reshape((self.num_classes, *self.out_features))
        return F.linear_cross_entropy(
            input, linear_weight, target, linear_bias=linear_bias, weight=self._weight(), reduction=self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"in_features={self.linear.in_features}, num_classes={self.num_classes}, out_features={self.out_features}, "
            f"bias={self.linear.bias is not None}, reduction={self.reduction}, ignore_index={self.ignore_index}, "
            f"label_smoothing={self.label_smoothing}"
        )
