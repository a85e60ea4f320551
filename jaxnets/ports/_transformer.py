"""A ``nn.TransformerEncoder`` sequence classifier, ported line for line with :mod:`jaxnets.nn`.

Its torch original is ``parity.reference_models.TransformerClassifier``: the
embedding (scaled by ``sqrt(d_model)``) and ``PositionalEncoding`` of
pytorch/examples ``word_language_model/model.py``
(https://github.com/pytorch/examples/blob/main/word_language_model/model.py),
``nn.TransformerEncoder`` over ``nn.TransformerEncoderLayer`` (seq-first, as
upstream), a mean over the positions that ``src_key_padding_mask`` keeps, and a
``Linear`` classifier. Torch-mirror family: torch's names, layouts and masks
(a boolean mask is True where a position is padding).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxnets import nn


class PositionalEncoding(nn.Module):
    """Upstream's sinusoidal ``PositionalEncoding``: the buffer ``pe`` ``(max_len, 1, d_model)``, then dropout.

    ``pe`` is computed as upstream does, in float32 (``torch.arange(...).float()``),
    so a float64 model holds the same numbers as torch's after ``.double()``.
    """

    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000, *, rngs: nnx.Rngs | None = None):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout, rngs=rngs)
        position = np.arange(0, max_len, dtype=np.float32)[:, None]
        div_term = np.exp(np.arange(0, d_model, 2).astype(np.float32) * np.float32(-math.log(10000.0) / d_model))
        pe = np.zeros((max_len, d_model), np.float32)
        pe[:, 0::2] = np.sin(position * div_term)
        pe[:, 1::2] = np.cos(position * div_term)
        self.pe = nn.Buffer(jnp.asarray(pe[:, None, :]))  # pe.unsqueeze(0).transpose(0, 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.pe[...][: x.shape[0], :]
        return self.dropout(x)


class TransformerClassifier(nn.Module):
    """Embedding + positional encoding + ``nn.TransformerEncoder`` + masked mean over positions + ``Linear``.

    Args:
      ntoken: vocabulary size.
      d_model: the encoder's ``d_model``.
      nhead: the encoder's ``nhead``.
      d_hid: the encoder's ``dim_feedforward``.
      nlayers: the encoder's ``num_layers``.
      nclass: number of classes.
      dropout: of the positional encoding and of every encoder layer.
      max_len: longest sequence (rows of ``pe``).
      rngs: draws the weights and the dropout masks.

    Call: ``src`` ``(seq_len, batch)`` integer tokens, ``src_key_padding_mask``
    ``(batch, seq_len)`` booleans (True = padding) or None -> logits ``(batch, nclass)``.
    """

    def __init__(self, ntoken, d_model, nhead, d_hid, nlayers, nclass, dropout=0.1, max_len=5000, *, rngs: nnx.Rngs):
        super().__init__()
        self.embedding = nn.Embedding(ntoken, d_model, rngs=rngs)
        self.pos_encoder = PositionalEncoding(d_model, dropout, max_len, rngs=rngs)
        encoder_layer = nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout, rngs=rngs)
        self.transformer_encoder = nn.TransformerEncoder(encoder_layer, nlayers, enable_nested_tensor=False)
        self.classifier = nn.Linear(d_model, nclass, rngs=rngs)
        self.d_model = d_model

    def __call__(self, src: jax.Array, src_key_padding_mask: jax.Array | None = None) -> jax.Array:
        if src.ndim != 2:
            raise ValueError(
                f"TransformerClassifier expects tokens of shape (seq_len, batch); got {tuple(src.shape)}. "
                "Batch-first tokens: pass src.T."
            )
        x = self.embedding(src) * math.sqrt(self.d_model)
        x = self.pos_encoder(x)
        x = self.transformer_encoder(x, src_key_padding_mask=src_key_padding_mask)  # (S, N, E)
        if src_key_padding_mask is None:
            pooled = x.mean(axis=0)
        else:
            keep = (~src_key_padding_mask).T[..., None].astype(x.dtype)  # (N, S) -> (S, N, 1)
            pooled = (x * keep).sum(axis=0) / keep.sum(axis=0)
        return self.classifier(pooled)
