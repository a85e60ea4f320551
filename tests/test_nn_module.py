"""jaxnets.nn.Module: torch's state_dict keys and order, loading, modes, containers and Dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from tolerances import F32_ATOL, F32_RTOL

from jaxnets import nn


def _pair():
    """The same small network in torch and in jaxnets.nn, with containers nested two deep."""
    t = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3),
        torch.nn.BatchNorm2d(3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Sequential(torch.nn.Linear(3 * 4 * 4, 5), torch.nn.Dropout(0.5), torch.nn.Linear(5, 2, bias=False)),
    )
    rngs = nnx.Rngs(0)
    j = nn.Sequential(
        nn.Conv2d(1, 3, 3, rngs=rngs),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Sequential(
            nn.Linear(3 * 4 * 4, 5, rngs=rngs), nn.Dropout(0.5, rngs=rngs), nn.Linear(5, 2, False, rngs=rngs)
        ),
    )
    return t, j


def _numpy_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def test_state_dict_has_torchs_keys_shapes_and_order():
    t, j = _pair()
    want = [(k, tuple(v.shape)) for k, v in t.state_dict().items()]
    assert [(k, tuple(v.shape)) for k, v in j.state_dict().items()] == want
    assert [k for k, _ in j.named_parameters()] == [k for k, _ in t.named_parameters()]
    assert [k for k, _ in j.named_buffers()] == [k for k, _ in t.named_buffers()]
    assert [k for k, _ in j.named_modules()] == [k for k, _ in t.named_modules()]


def test_loaded_state_dict_gives_torchs_outputs_in_both_modes():
    t, j = _pair()
    state = _numpy_state(t)
    j.load_state_dict(state)
    x = np.random.default_rng(0).normal(size=(4, 1, 6, 6)).astype(np.float32)
    t.eval()
    j.eval()
    np.testing.assert_allclose(j(jax.device_put(x)), t(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert not j[0].training and not j[4][1].training
    # Train mode: BatchNorm uses batch statistics and moves its buffers; dropout draws masks, so compare up to it.
    t[4][1].p = j[4][1].p = 0.0
    t.train()
    j.train()
    np.testing.assert_allclose(j(jax.device_put(x)), t(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    for key, value in t.state_dict().items():
        # float32 buffers: a running mean is a batch mean near zero, whose rounding depends on the summation
        # order (it differed by 4.7e-10 under XLA's AVX2 kernels), so the float32 bounds, absolute part included.
        np.testing.assert_allclose(j.state_dict()[key], value.numpy(), rtol=F32_RTOL, atol=F32_ATOL, err_msg=key)


def test_load_state_dict_copies_and_casts():
    _, j = _pair()
    state = {k: np.asarray(v, np.float64) if v.dtype.kind == "f" else np.asarray(v) for k, v in j.state_dict().items()}
    before = state["0.weight"].copy()
    j.load_state_dict(state)
    state["0.weight"] += 1.0  # the source changes after loading: the module must not see it
    np.testing.assert_array_equal(j.state_dict()["0.weight"], before.astype(np.float32))
    assert j.state_dict()["0.weight"].dtype == jnp.float32


def test_load_state_dict_refuses_bad_keys_and_shapes_and_writes_nothing():
    t, j = _pair()
    before = {k: np.asarray(v) for k, v in j.state_dict().items()}
    state = _numpy_state(t)
    bad = dict(state)
    del bad["1.running_var"]
    bad["extra.weight"] = np.zeros(1)
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "extra.weight"') as info:
        j.load_state_dict(bad)
    assert 'Missing key(s) in state_dict: "1.running_var"' in str(info.value)
    shaped = dict(state)
    shaped["4.0.weight"] = np.zeros((5, 47), np.float32)
    with pytest.raises(RuntimeError, match=r"size mismatch for 4.0.weight: copying a param with shape \(5, 47\)"):
        j.load_state_dict(shaped)
    for key, value in j.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=f"{key} was written by a refused load")
    result = j.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["1.running_var"] and result.unexpected_keys == ["extra.weight"]


def test_modes_are_static_and_jit_follows_them():
    _, j = _pair()
    x = jnp.ones((2, 1, 6, 6))

    @nnx.jit
    def forward(model, x):
        return model(x)

    train_out = forward(j, x)
    j.eval()
    eval_out = forward(j, x)
    assert not np.allclose(train_out, eval_out)  # batch statistics and dropout against running statistics
    np.testing.assert_array_equal(forward(j, x), eval_out)  # eval mode is deterministic
    with pytest.raises(ValueError, match="train\\(mode\\) takes a bool"):
        j.train("eval")


def test_dropout_scales_like_torch_and_needs_keys_only_in_training():
    x = jnp.ones((1000,))
    drop = nn.Dropout(0.25, rngs=nnx.Rngs(1))
    y = drop(x)
    kept = np.asarray(y) != 0
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.75)
    assert 0.7 < kept.mean() < 0.8
    assert not np.array_equal(drop(x), y)  # a new mask per call
    np.testing.assert_array_equal(nn.Dropout(1.0)(x), 0)
    np.testing.assert_array_equal(nn.Dropout(0.5).eval()(x), x)
    with pytest.raises(ValueError, match="needs random keys"):
        nn.Dropout(0.5)(x)
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


def test_containers_index_iterate_and_refuse_non_modules():
    seq = nn.Sequential(nn.ReLU(), nn.Tanh(), nn.Sigmoid())
    assert len(seq) == 3 and isinstance(seq[-1], nn.Sigmoid) and isinstance(seq[1:][0], nn.Tanh)
    assert [type(m).__name__ for m in seq] == ["ReLU", "Tanh", "Sigmoid"]
    with pytest.raises(IndexError, match="index 3 is out of range"):
        seq[3]
    layers = nn.ModuleList([nn.Linear(2, 2, rngs=nnx.Rngs(0)) for _ in range(2)])
    layers.append(nn.ReLU())
    assert list(layers.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    blocks = nn.ModuleDict({"encoder": nn.Linear(2, 3, rngs=nnx.Rngs(0)), "act": nn.GELU()})
    assert list(blocks) == ["encoder", "act"] and "act" in blocks
    assert list(blocks.state_dict()) == ["encoder.weight", "encoder.bias"]
    with pytest.raises(TypeError, match="holds modules; got function"):
        nn.Sequential(lambda x: x)
    with pytest.raises(KeyError, match="attribute 'train' already exists"):
        nn.ModuleDict({"train": nn.ReLU()})


def test_layers_refuse_wrong_rank_and_channels_with_torchs_message():
    conv = nn.Conv2d(3, 4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d"):
        conv(jnp.ones((2, 2, 3, 8, 8)))
    with pytest.raises(ValueError, match="to have 3 channels, but got 2 channels instead"):
        conv(jnp.ones((1, 2, 8, 8)))
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        nn.BatchNorm2d(3)(jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv1d(3, 4, 3, groups=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="last dimension 4"):
        nn.Linear(4, 2, rngs=nnx.Rngs(0))(jnp.ones((2, 3)))


def test_transformer_encoder_computes_padded_positions_where_torchs_fast_path_returns_zero():
    torch.manual_seed(0)
    encoder = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True), 2).eval()
    port = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True, rngs=nnx.Rngs(0)), 2)
    port.eval().load_state_dict({k: v.numpy() for k, v in encoder.state_dict().items()})
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad(), pytest.warns(UserWarning, match="nested tensors is in prototype stage"):
        want = encoder(x, src_key_padding_mask=mask).numpy()
    have = np.asarray(port(jax.device_put(x.numpy()), src_key_padding_mask=jax.device_put(mask.numpy())))
    np.testing.assert_array_equal(want[1, 3:], 0)  # torch's nested-tensor fast path
    assert np.all(np.abs(have[1, 3:]) > 0)
    np.testing.assert_allclose(have[0], want[0], atol=1e-5)
    np.testing.assert_allclose(have[1, :3], want[1, :3], atol=1e-5)


@pytest.mark.parametrize("batch_first", [False, True])
def test_self_attention_one_packed_projection_matches_torch(x64, batch_first):
    """MultiheadAttention(x, x, x) projects once with in_proj_weight (torch's _in_projection_packed) and
    splits after; output and in_proj_weight's gradient against torch's, in float64."""
    import jax

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first).double()
    port = nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=jnp.float64, rngs=nnx.Rngs(0))
    port.load_state_dict({k: v.numpy() for k, v in mha.state_dict().items()})
    x = torch.randn((2, 5, 8) if batch_first else (5, 2, 8), dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    out = mha(x, x, x, key_padding_mask=mask, need_weights=False)[0]
    out.square().sum().backward()
    graph, params, rest = nnx.split(port, nnx.Param, ...)

    def loss(params, x):
        return jnp.sum(jnp.square(nnx.merge(graph, params, rest)(x, x, x, key_padding_mask=mask.numpy())[0]))

    value, (grads, dx) = jax.value_and_grad(loss, argnums=(0, 1))(params, jax.device_put(x.detach().numpy()))
    np.testing.assert_allclose(value, out.square().sum().item(), rtol=1e-12)
    np.testing.assert_allclose(grads["in_proj_weight"][...], mha.in_proj_weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, x.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_order_survives_split_merge_jit_and_eval_shape():
    """torch's registration order (weight before bias, "2" before "10", a tied weight under its first name)
    after the module is rebuilt by nnx, which lists attributes by name."""
    from jaxnets import ports

    def build():
        return ports.RNNModel("LSTM", 10, 4, 4, 2, tie_weights=True, rngs=nnx.Rngs(0))

    models = {"built": build(), "seq": nn.Sequential(*[nn.Linear(2, 2, rngs=nnx.Rngs(0)) for _ in range(11)])}
    for name in list(models):
        graph, state = nnx.split(models[name])
        models[f"{name}-merged"] = nnx.merge(graph, state)
        models[f"{name}-jit"] = nnx.jit(lambda m: m)(models[name])
    models["built-eval_shape"] = nnx.eval_shape(build)
    for name, model in models.items():
        params = [n for n, _ in model.named_parameters()]
        if name.endswith("eval_shape"):  # abstract arrays: no state_dict values to read
            assert params[:2] == ["encoder.weight", "rnn.weight_ih_l0"] and params[-1] == "decoder.bias"
            continue
        keys = list(model.state_dict())
        if name.startswith("seq"):
            assert keys[:4] == ["0.weight", "0.bias", "1.weight", "1.bias"] and keys[-2:] == ["10.weight", "10.bias"]
        else:
            assert keys[:2] == ["encoder.weight", "rnn.weight_ih_l0"] and keys[-2:] == [
                "decoder.weight",
                "decoder.bias",
            ]
            assert params[0] == "encoder.weight" and "decoder.weight" not in params  # tied: listed once, first name


def test_to_casts_every_floating_parameter_and_buffer_in_one_program(x64, backend_compiles):
    model = nn.Sequential(nn.Linear(3, 5, rngs=nnx.Rngs(0)), nn.BatchNorm1d(5), nn.Linear(5, 2, rngs=nnx.Rngs(1)))
    before = {k: np.asarray(v) for k, v in model.state_dict().items()}
    backend_compiles.clear()
    model.to(jnp.float64)  # four shapes of floating arrays: one program, not one per shape
    assert backend_compiles == ["jit(_cast)"], backend_compiles
    after = model.state_dict()
    for key, value in before.items():
        want = value.dtype if value.dtype.kind != "f" else np.float64  # num_batches_tracked stays an integer
        assert after[key].dtype == want, key
        np.testing.assert_array_equal(np.asarray(after[key]), value.astype(want), err_msg=key)
