"""``nn.Embedding`` and ``nn.EmbeddingBag``: torch's init, ``padding_idx``, ``max_norm`` and gradients.

torch-mirror layers: ``weight`` is ``(num_embeddings, embedding_dim)``, drawn
from N(0, 1) with the ``padding_idx`` row zeroed, and the ``padding_idx`` row
gets no gradient. ``max_norm`` rescales the rows a forward pass refers to and
writes them into ``weight``, as torch's in-place renormalisation does: inside
a jitted or differentiated function, read the new values from the module's
state afterwards (``nnx.state`` / ``nnx.update``), as for BatchNorm's buffers.
``sparse=True`` is accepted and recorded; the gradients are dense arrays
(JAX has no sparse gradient here), equal to torch's densified ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from .. import init
from ..module import Module


def _initial_weight(cls: str, num_embeddings, embedding_dim, padding_idx, _weight, dtype, rngs):
    if _weight is not None:
        _weight = jnp.array(_weight, dtype=dtype, copy=True)
        if tuple(_weight.shape) != (num_embeddings, embedding_dim):
            raise ValueError(
                f"{cls}: Shape of weight does not match num_embeddings and embedding_dim: got _weight of shape "
                f"{tuple(_weight.shape)}, expected ({num_embeddings}, {embedding_dim})."
            )
        return _weight
    if rngs is None:
        raise ValueError(f"{cls} draws its weight from N(0, 1): pass rngs=nnx.Rngs(seed), or _weight=an array.")
    weight = init.normal(rngs.params(), (num_embeddings, embedding_dim), dtype or jnp.float32)
    return weight if padding_idx is None else weight.at[padding_idx].set(0)


class Embedding(Module):
    """``nn.Embedding(num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0, ...)``.

    Input: integer indices of any shape; output: ``input.shape + (embedding_dim,)``.
    ``_freeze=True`` (``from_pretrained``'s default) stops the gradient to
    ``weight``, which stays an ``nnx.Param`` so the ``state_dict`` and the
    parameter order are torch's; torch leaves its ``.grad`` as ``None``, here
    it is zeros.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight=None,
        _freeze: bool = False,
        *,
        dtype=None,
        rngs: nnx.Rngs | None = None,
    ):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = F._padding_index(padding_idx, num_embeddings)
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse, self.freeze = scale_grad_by_freq, sparse, _freeze
        self.weight = nnx.Param(
            _initial_weight("Embedding", num_embeddings, embedding_dim, self.padding_idx, _weight, dtype, rngs)
        )

    @classmethod
    def from_pretrained(
        cls,
        embeddings,
        freeze: bool = True,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
    ) -> Embedding:
        """``nn.Embedding.from_pretrained``: a copy of the 2-D ``embeddings`` as weight, frozen by default."""
        if jnp.ndim(embeddings) != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional; got {jnp.shape(embeddings)}.")
        rows, cols = jnp.shape(embeddings)
        return cls(
            rows, cols, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse, _weight=embeddings,
            _freeze=freeze, dtype=jnp.asarray(embeddings).dtype,
        )  # fmt: skip

    def __call__(self, input: jax.Array) -> jax.Array:
        weight = self.weight[...]
        if self.freeze:
            weight = jax.lax.stop_gradient(weight)
        if self.max_norm is not None:
            F._check_indices(input, self.num_embeddings, "Embedding")
            renormed = F.embedding_renorm(weight, input, self.max_norm, self.norm_type)
            self.weight[...] = renormed  # torch renormalises the referenced rows in place
            weight = weight + jax.lax.stop_gradient(renormed - weight)
        return F.embedding(input, weight, self.padding_idx, None, self.norm_type, self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            s += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        if self.sparse:
            s += ", sparse=True"
        return s


class EmbeddingBag(Module):
    """``nn.EmbeddingBag(num_embeddings, embedding_dim, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
    mode="mean", sparse=False, _weight=None, include_last_offset=False, padding_idx=None)``.

    Call with ``input`` ``(B, N)``, or 1-D ``input`` and ``offsets``, and
    optionally ``per_sample_weights`` (mode ``"sum"``); returns ``(B, embedding_dim)``.
    See :func:`jaxnets.nn.functional.embedding_bag`.
    """

    freeze: bool = False  # from_pretrained(freeze=True) stops the gradient to weight

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        _weight=None,
        include_last_offset: bool = False,
        padding_idx: int | None = None,
        *,
        dtype=None,
        rngs: nnx.Rngs | None = None,
    ):
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"EmbeddingBag: mode has to be one of sum, mean or max; got {mode!r}.")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.max_norm, self.norm_type, self.scale_grad_by_freq = max_norm, norm_type, scale_grad_by_freq
        self.padding_idx = F._padding_index(padding_idx, num_embeddings, "padding_idx")
        self.mode, self.sparse, self.include_last_offset = mode, sparse, include_last_offset
        self.weight = nnx.Param(
            _initial_weight("EmbeddingBag", num_embeddings, embedding_dim, self.padding_idx, _weight, dtype, rngs)
        )

    @classmethod
    def from_pretrained(
        cls,
        embeddings,
        freeze: bool = True,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        include_last_offset: bool = False,
        padding_idx: int | None = None,
    ) -> EmbeddingBag:
        """``nn.EmbeddingBag.from_pretrained``: a copy of ``embeddings`` as weight, frozen by default."""
        if jnp.ndim(embeddings) != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional; got {jnp.shape(embeddings)}.")
        rows, cols = jnp.shape(embeddings)
        bag = cls(
            rows, cols, max_norm, norm_type, scale_grad_by_freq, mode, sparse, embeddings, include_last_offset,
            padding_idx, dtype=jnp.asarray(embeddings).dtype,
        )  # fmt: skip
        bag.freeze = freeze
        return bag

    def __call__(
        self, input: jax.Array, offsets: jax.Array | None = None, per_sample_weights: jax.Array | None = None
    ) -> jax.Array:
        weight = self.weight[...]
        if self.freeze:
            weight = jax.lax.stop_gradient(weight)
        if self.max_norm is not None:
            F._check_indices(input, self.num_embeddings, "EmbeddingBag")
            renormed = F.embedding_renorm(weight, input, self.max_norm, self.norm_type)
            self.weight[...] = renormed
            weight = weight + jax.lax.stop_gradient(renormed - weight)
        return F.embedding_bag(
            input, weight, offsets, None, self.norm_type, self.scale_grad_by_freq, self.mode, self.sparse,
            per_sample_weights, self.include_last_offset, self.padding_idx,
        )  # fmt: skip

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            s += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        s += f", mode={self.mode!r}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s
