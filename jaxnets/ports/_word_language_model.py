"""pytorch/examples ``word_language_model/model.py``'s ``RNNModel``, ported line for line with :mod:`jaxnets.nn`.

Source: https://github.com/pytorch/examples/blob/main/word_language_model/model.py
(``RNNModel``: Embedding, an LSTM/GRU/RNN with dropout between layers, Linear,
optionally tied weights). Torch-mirror family: torch's names and layouts;
sequences are ``(seq_len, batch)`` as upstream (``batch_first=False``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxnets import nn
from jaxnets.nn import functional as F
from jaxnets.nn import init


class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder (upstream's docstring).

    Tied weights are one ``nnx.Param`` assigned to both layers
    (``self.decoder.weight = self.encoder.weight``, upstream's own line): the
    embedding and the decoder read the same array, its gradient is the sum of
    both uses, an optimizer updates it once, and ``state_dict()`` lists it under
    ``encoder.weight`` and ``decoder.weight`` as torch does, while
    ``named_parameters()`` lists it once (torch's order).

    What changed from torch: ``rngs`` (weights, dropout masks); the init draws
    come from JAX keys (same laws: ``U(-0.1, 0.1)`` for the embedding and
    decoder, zero decoder bias); ``forward`` is ``__call__``.

    Args:
      rnn_type: ``'LSTM'``, ``'GRU'``, ``'RNN_TANH'`` or ``'RNN_RELU'``.
      ntoken: vocabulary size, as upstream.
      ninp: embedding size, as upstream.
      nhid: hidden units per layer, as upstream.
      nlayers: recurrent layers, as upstream.
      dropout: as upstream.
      tie_weights: share the decoder's weight with the encoder's, as upstream.
      rngs: draws the weights and the dropout masks.

    Call: ``input`` ``(seq_len, batch)`` integer tokens and ``hidden`` (from
    :meth:`init_hidden`) -> ``(log-probabilities (seq_len * batch, ntoken), hidden)``.
    """

    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False, *, rngs: nnx.Rngs):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout, rngs=rngs)
        self.encoder = nn.Embedding(ntoken, ninp, rngs=rngs)
        if rnn_type in ["LSTM", "GRU"]:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout, rngs=rngs)
        else:
            try:
                nonlinearity = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[rnn_type]
            except KeyError as e:
                raise ValueError(
                    f"An invalid option for `rnn_type` was supplied: {rnn_type!r}; "
                    "options are ['LSTM', 'GRU', 'RNN_TANH' or 'RNN_RELU']"
                ) from e
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout, rngs=rngs)
        self.decoder = nn.Linear(nhid, ntoken, rngs=rngs)

        # Optionally tie weights as in:
        # "Using the Output Embedding to Improve Language Models" (Press & Wolf 2016)
        # and "Tying Word Vectors and Word Classifiers" (Inan et al. 2016)
        if tie_weights:
            if nhid != ninp:
                raise ValueError(
                    f"When using the tied flag, nhid must be equal to emsize; got nhid={nhid}, ninp={ninp}"
                )
            self.decoder.weight = self.encoder.weight  # one Param, two owners: a real tie

        self.init_weights(rngs=rngs)

        self.rnn_type = rnn_type
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self, *, rngs: nnx.Rngs) -> None:
        """Upstream's init: encoder and decoder weights ``U(-0.1, 0.1)``, decoder bias 0 (a tie keeps the last)."""
        initrange = 0.1
        w = self.encoder.weight[...]
        self.encoder.weight[...] = init.uniform(rngs.params(), w.shape, initrange, w.dtype)
        self.decoder.bias[...] = jnp.zeros_like(self.decoder.bias[...])
        w = self.decoder.weight[...]
        self.decoder.weight[...] = init.uniform(rngs.params(), w.shape, initrange, w.dtype)

    def __call__(self, input: jax.Array, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.reshape(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int):
        """Zeros in the parameters' dtype: ``(h, c)`` for an LSTM, ``h`` otherwise, each ``(nlayers, bsz, nhid)``."""
        dtype = self.encoder.weight[...].dtype
        if self.rnn_type == "LSTM":
            return (jnp.zeros((self.nlayers, bsz, self.nhid), dtype), jnp.zeros((self.nlayers, bsz, self.nhid), dtype))
        return jnp.zeros((self.nlayers, bsz, self.nhid), dtype)
