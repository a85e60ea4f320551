"""``nn.MultiheadAttention`` and the ``nn.Transformer`` family, with torch's masks and packed weights.

Masks mean what they mean in torch: in ``MultiheadAttention`` and the
Transformer layers a boolean ``attn_mask`` or ``key_padding_mask`` is True
where attention is *not* allowed (Flax's masks are True where it is), and a
float mask is added to the attention scores. (``F.scaled_dot_product_attention``
is torch's exception: there a boolean mask is True where attention *is*
allowed, and :func:`jaxnets.nn.functional.scaled_dot_product_attention` keeps
that too.) The query, key and value projections are one packed
``in_proj_weight`` ``(3 E, E)`` unless ``kdim``/``vdim`` differ from ``E``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from .. import functional as F
from .. import init
from ..module import Module
from .container import ModuleList
from .dropout import Dropout
from .linear import Linear
from .normalization import LayerNorm


def _xavier_uniform(key, shape, dtype, fan_in, fan_out):
    return init.uniform(key, shape, math.sqrt(6.0 / (fan_in + fan_out)), dtype)


def _as_float_mask(mask, dtype):
    """torch's ``_canonical_mask``: a boolean mask (True = blocked) as 0 / -inf; a float mask as it is."""
    if mask is None:
        return None
    if mask.dtype == jnp.bool_:
        return jnp.where(mask, -jnp.inf, 0.0).astype(dtype)
    return mask.astype(dtype)


class MultiheadAttention(Module):
    """``nn.MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, ...)``.

    Also ``add_zero_attn=False, kdim=None, vdim=None, batch_first=False``.
    ``__call__(query, key, value, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False)`` returns
    ``(attn_output, attn_weights or None)``, as torch does.

    Self-attention (``query``, ``key`` and ``value`` the same array, as the
    Transformer layers pass it) projects once with the packed
    ``in_proj_weight``, a ``(3 E, E)`` product split after, as torch's
    ``_in_projection_packed`` does; other calls project with its three slices.
    The Transformer benchmark's train step (one process, old and new code
    alternating, 30-40 rounds of 5 steps, three runs; min / median) went from
    60.0 / 68.5, 57.7 / 64.6 and 56.3 / 62.0 ms to 57.8 / 66.4, 57.7 / 63.8 and
    55.9 / 60.9 ms.

    Inside, the projections are batch-first (a seq-first input is swapped
    once): the heads' transposes to ``(bsz, h, len, d)`` and ``(bsz, h, d, len)``
    then move rows within each sequence's block instead of gathering a
    sequence's rows from ``bsz`` apart (in the step's profile the two slowest
    went from 0.85-1.16 to 0.37-0.41 ms). The step (30 rounds of 5, two runs;
    min / p25 / median): 56.2 / 58.2 / 59.7 and 55.5 / 59.2 / 61.6 ms seq-first,
    54.8 / 56.7 / 58.1 and 55.2 / 58.0 / 59.5 ms batch-first.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        *,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"MultiheadAttention: embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and "
                f"num_heads={num_heads} instead"
            )
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} must be divisible by num_heads {num_heads}.")
        dtype = dtype or jnp.float32
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, float(dropout)
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.batch_first, self.add_zero_attn = batch_first, add_zero_attn
        self.head_dim = embed_dim // num_heads
        self.rngs = rngs
        e = embed_dim
        if self.kdim == e and self.vdim == e:
            self.in_proj_weight = nnx.Param(_xavier_uniform(rngs.params(), (3 * e, e), dtype, e, 3 * e))
        else:
            self.q_proj_weight = nnx.Param(_xavier_uniform(rngs.params(), (e, e), dtype, e, e))
            self.k_proj_weight = nnx.Param(_xavier_uniform(rngs.params(), (e, self.kdim), dtype, self.kdim, e))
            self.v_proj_weight = nnx.Param(_xavier_uniform(rngs.params(), (e, self.vdim), dtype, self.vdim, e))
        self.in_proj_bias = nnx.Param(init.constant((3 * e,), 0.0, dtype)) if bias else None
        if add_bias_kv:
            std = math.sqrt(2.0 / (1 + e))  # xavier_normal_ on a (1, 1, E) tensor: fan_in = 1, fan_out = E
            self.bias_k = nnx.Param(init.normal(rngs.params(), (1, 1, e), dtype, std))
            self.bias_v = nnx.Param(init.normal(rngs.params(), (1, 1, e), dtype, std))
        else:
            self.bias_k = self.bias_v = None
        self.out_proj = Linear(e, e, bias=bias, dtype=dtype, rngs=rngs)
        if bias:
            self.out_proj.bias[...] = init.constant((e,), 0.0, dtype)  # torch zeroes it in _reset_parameters

    def __call__(
        self,
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        key_padding_mask: jax.Array | None = None,
        need_weights: bool = True,
        attn_mask: jax.Array | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ):
        if query.ndim not in (2, 3):
            raise ValueError(
                f"MultiheadAttention: query should be unbatched 2D or batched 3D tensor but received "
                f"{query.ndim}-D query tensor"
            )
        if is_causal and attn_mask is None:
            raise ValueError("MultiheadAttention: Need attn_mask if specifying the is_causal hint.")
        batched = query.ndim == 3
        same_input = query is key and key is value  # before the reshapes below make three arrays of one
        # Batch-first inside: XLA's batched products want the heads as (bsz, h, len, d) (or (bsz, h, d, len)),
        # and from batch-first projections that is a transpose within each sequence's block of rows.
        if batched and not self.batch_first:
            if same_input:
                query = key = value = jnp.swapaxes(query, 0, 1)
            else:
                query, key, value = (jnp.swapaxes(t, 0, 1) for t in (query, key, value))
        if not batched:
            query, key, value = query[None], key[None], value[None]
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask[None]
        bsz, tgt_len, e = query.shape
        if e != self.embed_dim:
            raise ValueError(f"MultiheadAttention: was expecting embedding dimension of {self.embed_dim}, but got {e}")
        h, d = self.num_heads, self.head_dim
        dtype = query.dtype
        packed = getattr(self, "in_proj_weight", None) is not None
        bias = None if self.in_proj_bias is None else self.in_proj_bias[...]
        if packed and same_input:
            # Self-attention, as torch's _in_projection_packed: one (3 E, E) projection, split after.
            q, k, v = jnp.split(F.linear(query, self.in_proj_weight[...], bias), 3, axis=-1)
        else:
            if packed:
                w_q, w_k, w_v = jnp.split(self.in_proj_weight[...], 3)
            else:
                w_q, w_k, w_v = self.q_proj_weight[...], self.k_proj_weight[...], self.v_proj_weight[...]
            b_q, b_k, b_v = (None,) * 3 if bias is None else jnp.split(bias, 3)
            q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

        if key_padding_mask is not None and key_padding_mask.dtype != jnp.bool_:
            key_padding_mask = key_padding_mask.astype(dtype)
        attn_mask = _as_float_mask(attn_mask, dtype)
        if attn_mask is not None:
            src_len = key.shape[1]
            if attn_mask.ndim == 2:
                if attn_mask.shape != (tgt_len, src_len):
                    raise ValueError(
                        f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be {(tgt_len, src_len)}."
                    )
                attn_mask = attn_mask[None]
            elif attn_mask.ndim == 3:
                if attn_mask.shape != (bsz * h, tgt_len, src_len):
                    raise ValueError(
                        f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be "
                        f"{(bsz * h, tgt_len, src_len)}."
                    )
            else:
                raise ValueError(f"attn_mask's dimension {attn_mask.ndim} is not supported")
        # The key and value gain positions (bias_k/v, add_zero_attn's zeros) at the end: the masks are padded with 0
        # (False for a boolean key_padding_mask), attention allowed.
        extra = []
        if self.bias_k is not None:
            extra.append((self.bias_k[...], self.bias_v[...]))
        if self.add_zero_attn:
            extra.append((jnp.zeros((1, 1, e), k.dtype), jnp.zeros((1, 1, e), v.dtype)))
        for bk, bv in extra:
            k = jnp.concatenate([k, jnp.broadcast_to(bk, (bsz, 1, e))], axis=1)
            v = jnp.concatenate([v, jnp.broadcast_to(bv, (bsz, 1, e))], axis=1)
            attn_mask = None if attn_mask is None else jnp.pad(attn_mask, [(0, 0), (0, 0), (0, 1)])
            key_padding_mask = None if key_padding_mask is None else jnp.pad(key_padding_mask, [(0, 0), (0, 1)])
        src_len = k.shape[1]
        if attn_mask is not None:
            attn_mask = attn_mask[0] if attn_mask.shape[0] == 1 else attn_mask.reshape(bsz, h, tgt_len, src_len)
        if key_padding_mask is not None and key_padding_mask.shape != (bsz, src_len):
            raise ValueError(f"expecting key_padding_mask shape of {(bsz, src_len)}, but got {key_padding_mask.shape}")
        # The heads as (bsz, h, tgt_len, src_len) scores straight from the (bsz, len, h, d) projections.
        q, k, v = q.reshape(bsz, tgt_len, h, d), k.reshape(bsz, src_len, h, d), v.reshape(bsz, src_len, h, d)
        scores = jnp.einsum("blhd,bshd->bhls", q * math.sqrt(1.0 / d), k)
        padding = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        if padding is not None and (attn_mask is not None or padding.dtype != jnp.bool_):
            attn_mask = (
                _as_float_mask(padding, dtype) if attn_mask is None else attn_mask + _as_float_mask(padding, dtype)
            )
            padding = None
        if attn_mask is not None:
            scores = scores + attn_mask
        if padding is not None:
            # torch adds the boolean mask as -inf / 0. scores - inf where padded is the same sum, bit for bit
            # but for -0 + 0 = +0, which the softmax cannot see; as a select, XLA fuses the (bsz, 1, 1, src_len)
            # mask into the softmax instead of adding a materialised (bsz * h, tgt_len, src_len) copy in the dot.
            scores = jnp.where(padding, scores - jnp.inf, scores)
        weights = jax.nn.softmax(scores, axis=-1)
        if self.training and self.dropout > 0:
            # (bsz, h, L, S) has the flat indices of torch's (bsz * h, L, S): the same mask.
            weights = F.dropout(weights, self.dropout, True, key=self.rngs.dropout())
        out = jnp.einsum("bhls,bshd->blhd", weights, v).reshape(bsz * tgt_len, e)
        out = self.out_proj(out).reshape(bsz, tgt_len, e)
        if batched and not self.batch_first:
            out = jnp.swapaxes(out, 0, 1)
        if not batched:
            out = out[0]
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(axis=1)
        if not batched:
            weights = weights[0]
        return out, weights


def _activation(activation) -> Callable:
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    if callable(activation):
        return activation
    raise ValueError(f"activation should be relu/gelu or a callable, not {activation!r}")


class TransformerEncoderLayer(Module):
    """``nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=relu, ...)``.

    Also ``layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation="relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, rngs=rngs)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout, rngs=rngs)
        self.dropout2 = Dropout(dropout, rngs=rngs)
        self.activation = _activation(activation)

    def __call__(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(
            x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False, is_causal=is_causal
        )[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerDecoderLayer(Module):
    """``nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=relu, ...)``.

    Also ``layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation="relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, rngs=rngs)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw)
        self.multihead_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw
        )
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout, rngs=rngs)
        self.dropout2 = Dropout(dropout, rngs=rngs)
        self.dropout3 = Dropout(dropout, rngs=rngs)
        self.activation = _activation(activation)

    def __call__(
        self,
        tgt,
        memory,
        tgt_mask=None,
        memory_mask=None,
        tgt_key_padding_mask=None,
        memory_key_padding_mask=None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ):
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(
            x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False, is_causal=is_causal
        )[0]
        return self.dropout1(x)

    def _mha_block(self, x, mem, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(
            x, mem, mem, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False, is_causal=is_causal
        )[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))


def _clone(module: Module) -> Module:
    """``nnx.clone`` with the attributes in the original's order: torch's parameter and state_dict order.

    ``nnx.clone`` rebuilds a module from its graph, whose attributes come back
    sorted by name (``linear1`` before ``self_attn``); torch's deep copies keep
    the registration order, which optimizer state_dicts index by.
    """
    copy = nnx.clone(module)

    def reorder(original, clone):
        attrs = vars(clone)
        order = [k for k in vars(original) if k in attrs] + [k for k in attrs if k not in vars(original)]
        items = [(k, attrs[k]) for k in order]
        attrs.clear()
        attrs.update(items)
        for k, value in items:
            if isinstance(value, nnx.Module):
                reorder(getattr(original, k), value)

    reorder(module, copy)
    return copy


class TransformerEncoder(Module):
    """``nn.TransformerEncoder(encoder_layer, num_layers, norm=None)``: ``num_layers`` copies of the layer.

    The copies start with the same weights, as torch's ``_get_clones`` (deep
    copies) gives. torch's nested-tensor fast path (``enable_nested_tensor``) is
    a speed-up that changes nothing but the padded positions' outputs, which it
    leaves at 0: this mirror computes them, see docs/torch-mirror-layers.md.
    """

    def __init__(
        self,
        encoder_layer: Module,
        num_layers: int,
        norm: Module | None = None,
        enable_nested_tensor: bool = True,
        mask_check: bool = True,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        self.layers = ModuleList([_clone(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor, self.mask_check = enable_nested_tensor, mask_check

    def __call__(self, src, mask=None, src_key_padding_mask=None, is_causal: bool | None = None):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(Module):
    """``nn.TransformerDecoder(decoder_layer, num_layers, norm=None)``: ``num_layers`` copies of the layer."""

    def __init__(
        self, decoder_layer: Module, num_layers: int, norm: Module | None = None, *, rngs: nnx.Rngs | None = None
    ):
        self.layers = ModuleList([_clone(decoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def __call__(
        self,
        tgt,
        memory,
        tgt_mask=None,
        memory_mask=None,
        tgt_key_padding_mask=None,
        memory_key_padding_mask=None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ):
        x = tgt
        for layer in self.layers:
            x = layer(
                x,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=bool(tgt_is_causal),
                memory_is_causal=memory_is_causal,
            )
        return x if self.norm is None else self.norm(x)


class Transformer(Module):
    """``nn.Transformer(d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, ...)``.

    Also ``dim_feedforward=2048, dropout=0.1, activation=relu, custom_encoder=None,
    custom_decoder=None, layer_norm_eps=1e-5, batch_first=False, norm_first=False,
    bias=True``. Every weight of two or more dimensions is re-drawn with
    ``xavier_uniform_``, as torch's ``_reset_parameters`` does.
    """

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation="relu",
        custom_encoder: Module | None = None,
        custom_decoder: Module | None = None,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        layer_kw = dict(
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation=activation,
            layer_norm_eps=layer_norm_eps,
            batch_first=batch_first,
            norm_first=norm_first,
            bias=bias,
            dtype=dtype,
            rngs=rngs,
        )
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            layer = TransformerEncoderLayer(d_model, nhead, **layer_kw)
            self.encoder = TransformerEncoder(
                layer, num_encoder_layers, LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
            )
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            layer = TransformerDecoderLayer(d_model, nhead, **layer_kw)
            self.decoder = TransformerDecoder(
                layer, num_decoder_layers, LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
            )
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first
        for _, param in self.named_parameters():
            value = param[...]
            if value.ndim > 1:
                fan_in = value.shape[1] * math.prod(value.shape[2:])
                fan_out = value.shape[0] * math.prod(value.shape[2:])
                param[...] = _xavier_uniform(rngs.params(), value.shape, value.dtype, fan_in, fan_out)

    def __call__(
        self,
        src,
        tgt,
        src_mask=None,
        tgt_mask=None,
        memory_mask=None,
        src_key_padding_mask=None,
        tgt_key_padding_mask=None,
        memory_key_padding_mask=None,
        src_is_causal: bool | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ):
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(
            tgt,
            memory,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal,
        )
