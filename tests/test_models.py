"""LeNet, TwoLayerNet, the Sequential and DynamicNet: shapes, counts, init, numerics and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tolerances import F32_ATOL, F32_RTOL, F64_ATOL, F64_RTOL, INIT_STD_RTOL

import jaxnets
from jaxnets.functional import clamp_min, relu


def params_of(model):
    return nnx.state(model, nnx.Param)


def np_params(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(params_of(model)))


# -- LeNet ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel_size,image_size,flat",
    [(5, 32, 400), (3, 32, 576), (5, 28, 256)],
    ids=["5x5-32px-files000to002", "3x3-32px-file003", "5x5-28px"],
)
def test_lenet_fc1_input_follows_kernel_and_image_size(kernel_size, image_size, flat):
    net = jaxnets.LeNet(kernel_size=kernel_size, image_size=image_size, rngs=nnx.Rngs(0))
    assert net.fc1.kernel.shape == (flat, 120)
    assert net(jnp.zeros((3, image_size, image_size, 1))).shape == (3, 10)


def test_lenet_has_the_tutorials_ten_parameter_arrays_and_shapes():
    net = jaxnets.LeNet(rngs=nnx.Rngs(0))
    shapes = {
        "/".join(map(str, path)): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params_of(net)))[0]
        for path in [[p.key for p in path]]
    }
    assert shapes == {
        "conv1/kernel": (5, 5, 1, 6), "conv1/bias": (6,),
        "conv2/kernel": (5, 5, 6, 16), "conv2/bias": (16,),
        "fc1/kernel": (400, 120), "fc1/bias": (120,),
        "fc2/kernel": (120, 84), "fc2/bias": (84,),
        "fc3/kernel": (84, 10), "fc3/bias": (10,),
    }  # fmt: skip
    # torch: sum(p.numel() for p in Net().parameters()) == 61706
    assert sum(int(np.prod(s)) for s in shapes.values()) == 61706


def test_lenet_takes_a_single_image_and_other_class_counts():
    net = jaxnets.LeNet(num_classes=7, in_channels=3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    assert net(x[0]).shape == (7,)
    np.testing.assert_allclose(net(x[0]), net(x)[0], rtol=F32_RTOL, atol=F32_ATOL)


def _np_conv_valid(x, k, b):
    # x (N, H, W, C), k (kh, kw, C, O): out[n, i, j, o] = sum x[n, i+a, j+b, c] k[a, b, c, o]
    kh, kw = k.shape[:2]
    patches = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    return np.einsum("nijcab,abco->nijo", patches, k) + b


def _np_pool2(x):
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _np_lenet(p, x):
    r = lambda v: np.maximum(v, 0)
    x = _np_pool2(r(_np_conv_valid(x, p["conv1"]["kernel"], p["conv1"]["bias"])))
    x = _np_pool2(r(_np_conv_valid(x, p["conv2"]["kernel"], p["conv2"]["bias"])))
    x = x.reshape(x.shape[0], -1)
    x = r(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    x = r(x @ p["fc2"]["kernel"] + p["fc2"]["bias"])
    return x @ p["fc3"]["kernel"] + p["fc3"]["bias"]


@pytest.mark.parametrize("kernel_size", [5, 3])
def test_lenet_forward_matches_a_numpy_reference_in_float64(x64, kernel_size):
    net = jaxnets.LeNet(kernel_size=kernel_size, param_dtype=jnp.float64, rngs=nnx.Rngs(3))
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 1))
    np.testing.assert_allclose(net(jax.device_put(x)), _np_lenet(np_params(net), x), rtol=F64_RTOL, atol=F64_ATOL)


@pytest.mark.parametrize("impl", ["fast", "lax"])
def test_lenet_gradients_keep_the_parameters_dtype_for_float64_images(x64, impl):
    # float32 weights and float64 images compute in float64 (as nnx.Conv promotes); every gradient must come
    # back float32, or an optimizer's state changes dtype after one step and the train step compiles again.
    model = jaxnets.LeNet(impl=impl, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    x = jnp.ones((12, 32, 32, 1), jnp.float64)  # 12 images: the fast path's fused conv1 and conv2
    # Dtypes are fixed when the program is traced: traced only (the eager run compiled 100 programs, 3 s).
    logits = jax.eval_shape(lambda p: nnx.merge(graphdef, p)(x), params)
    grads = jax.eval_shape(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x))), params)
    assert logits.dtype == jnp.float64
    dtypes = {jax.tree_util.keystr(k): str(g.dtype) for k, g in jax.tree_util.tree_flatten_with_path(grads)[0]}
    assert set(dtypes.values()) == {"float32"}, dtypes


@pytest.mark.parametrize(
    "shape,dtype,message",
    [
        ((8, 1, 32, 32), jnp.float32, r"got \(8, 1, 32, 32\), which looks channels-first: use x.transpose\(0, 2, 3, 1\)"),
        ((1, 32, 32), jnp.float32, r"looks channels-first: use x.transpose\(1, 2, 0\)"),
        ((8, 28, 28, 1), jnp.float32, r"built for 32x32 images \(image_size=32\); got 28x28.*jnp.pad\(x, \(\(0, 0\), \(2, 2\), \(2, 2\), \(0, 0\)\)\).*LeNet\(image_size=28"),
        ((8, 40, 40, 1), jnp.float32, r"got 40x40.*resize it to 32x32"),
        ((32, 32), jnp.float32, r"got rank 2 with shape \(32, 32\)"),
        ((2, 2, 32, 32, 1), jnp.float32, r"got rank 5"),
        ((8, 32, 32, 3), jnp.float32, r"in_channels=1; got 3 channels.*LeNet\(in_channels=3\)"),
        ((8, 32, 32, 1), jnp.uint8, r"floating-point images; got dtype uint8.*astype\(jnp.float32\) / 255"),
        ((8, 32, 32, 1), jnp.int32, r"got dtype int32"),
    ],
    ids=["channels-first", "channels-first-single", "28x28", "40x40", "rank2", "rank5", "rgb", "uint8", "int32"],
)  # fmt: skip
def test_lenet_rejects_bad_input_with_a_clear_error(shape, dtype, message):
    net = jaxnets.LeNet(rngs=nnx.Rngs(0))
    error = TypeError if jnp.issubdtype(dtype, jnp.integer) else ValueError
    with pytest.raises(error, match=message):
        net(jnp.zeros(shape, dtype))
    with pytest.raises(error, match=message):  # at trace time, inside jit as well
        jax.jit(lambda x: net(x))(jnp.zeros(shape, dtype))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(image_size=12), r"`image_size=12` is too small for `kernel_size=5`.*image_size >= 16"),
        (dict(kernel_size=0), r"`kernel_size` must be a positive int; got 0"),
        (dict(num_classes=2.5), r"`num_classes` must be a positive int; got 2.5"),
    ],
)
def test_lenet_rejects_bad_construction_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        jaxnets.LeNet(**kwargs, rngs=nnx.Rngs(0))


# -- initialisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,fan_in",
    [("fc1/kernel", 400), ("conv2/kernel", 150), ("fc2/kernel", 120), ("fc1/bias", 400)],
)
def test_init_follows_pytorchs_uniform_bound(path, fan_in):
    # torch: kaiming_uniform_(a=sqrt(5)) and bias U(+-1/sqrt(fan_in)) both give bound 1/sqrt(fan_in)
    bound = 1 / np.sqrt(fan_in)
    layer, name = path.split("/")
    values, seed = [], 0
    while sum(v.size for v in values) < 10_000:  # pool seeds for the smaller arrays
        values.append(np_params(jaxnets.LeNet(rngs=nnx.Rngs(seed)))[layer][name].ravel())
        seed += 1
    v = np.concatenate(values)
    assert np.abs(v).max() <= bound
    assert np.abs(v).max() > 0.98 * bound  # the bound is reached, not a narrower one
    np.testing.assert_allclose(v.std(), bound / np.sqrt(3), rtol=INIT_STD_RTOL)
    assert abs(v.mean()) < 4 * bound / np.sqrt(3 * v.size)


def test_init_flax_initialisers_stay_selectable():
    net = jaxnets.TwoLayerNet(
        10, 20, 3, kernel_init=nnx.initializers.lecun_normal(), bias_init=nnx.initializers.ones,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    np.testing.assert_array_equal(net.linear1.bias[...], np.ones(20))
    assert np.abs(net.linear1.kernel[...]).max() > 1 / np.sqrt(10)  # normal, not bounded uniform


def test_init_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (np_params(jaxnets.LeNet(rngs=nnx.Rngs(s))) for s in (0, 0, 1))
    np.testing.assert_array_equal(a["fc1"]["kernel"], b["fc1"]["kernel"])
    assert not np.allclose(a["fc1"]["kernel"], c["fc1"]["kernel"])


# -- the two-layer nets --------------------------------------------------------------------------


def test_two_layer_net_and_sequential_compute_the_same_function_from_the_same_init():
    net = jaxnets.TwoLayerNet(1000, 100, 10, rngs=nnx.Rngs(0))
    seq = jaxnets.two_layer_sequential(1000, 100, 10, rngs=nnx.Rngs(0))
    assert [type(seq[i]).__name__ for i in range(len(seq))] == ["Linear", "PjitFunction", "Linear"] or (
        isinstance(seq[0], nnx.Linear) and seq[1] is jax.nn.relu and isinstance(seq[2], nnx.Linear)
    )
    x = jax.random.normal(jax.random.key(0), (64, 1000))
    np.testing.assert_allclose(net(x), seq(x), rtol=F32_RTOL, atol=F32_ATOL)
    assert net(x).shape == (64, 10) and net(x[0]).shape == (10,)
    paths = {
        tuple(p.key for p in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params_of(seq)))[0]
    }
    assert paths == {
        ("layers", 0, "kernel"),
        ("layers", 0, "bias"),
        ("layers", 2, "kernel"),
        ("layers", 2, "bias"),
    }


def test_two_layer_net_matches_numpy_in_float64(x64):
    net = jaxnets.TwoLayerNet(30, 20, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    p = np_params(net)
    x = np.random.default_rng(0).standard_normal((7, 30))
    want = (
        np.maximum(x @ p["linear1"]["kernel"] + p["linear1"]["bias"], 0) @ p["linear2"]["kernel"] + p["linear2"]["bias"]
    )
    np.testing.assert_allclose(net(jax.device_put(x)), want, rtol=F64_RTOL, atol=F64_ATOL)


@pytest.mark.parametrize(
    "make", [
        lambda: jaxnets.TwoLayerNet(1000, 100, 10, rngs=nnx.Rngs(0)),
        lambda: jaxnets.two_layer_sequential(1000, 100, 10, rngs=nnx.Rngs(0)),
        lambda: (lambda net: lambda x: net(x, 1))(jaxnets.DynamicNet(1000, 100, 10, rngs=nnx.Rngs(0))),
    ], ids=["TwoLayerNet", "Sequential", "DynamicNet"],
)  # fmt: skip
def test_fully_connected_models_reject_wrong_feature_count_and_dtype(make):
    model = make()
    with pytest.raises(ValueError, match=r"in_features=1000; got input of shape \(64, 784\).*in_features=784"):
        model(jnp.zeros((64, 784)))
    with pytest.raises(TypeError, match=r"floating-point input; got dtype int32"):
        model(jnp.zeros((64, 1000), jnp.int32))
    with pytest.raises(ValueError, match=r"got a scalar"):
        model(jnp.float32(1.0))


# -- DynamicNet ----------------------------------------------------------------------------------


def _dynamic_reference(p, x, depth):
    h = np.maximum(x @ p["input_linear"]["kernel"] + p["input_linear"]["bias"], 0)
    for _ in range(depth):
        h = np.maximum(h @ p["middle_linear"]["kernel"] + p["middle_linear"]["bias"], 0)
    return h @ p["output_linear"]["kernel"] + p["output_linear"]["bias"]


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_dynamic_net_int_and_traced_depth_match_numpy_float64(x64, depth):
    net = jaxnets.DynamicNet(20, 16, 4, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = np.random.default_rng(depth).standard_normal((5, 20))
    want = _dynamic_reference(np_params(net), x, depth)
    np.testing.assert_allclose(net(jax.device_put(x), depth), want, rtol=F64_RTOL, atol=F64_ATOL)
    graphdef, state = nnx.split(net)
    traced = jax.jit(lambda s, x, d: nnx.merge(graphdef, s)(x, d))
    np.testing.assert_allclose(traced(state, x, jnp.int32(depth)), want, rtol=F64_RTOL, atol=F64_ATOL)


def test_dynamic_net_traced_depth_gradients_equal_int_depth_gradients_and_one_compilation():
    net = jaxnets.DynamicNet(20, 16, 4, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(net, nnx.Param)
    x = jax.random.normal(jax.random.key(0), (5, 20))
    traces = []

    def loss(p, d):
        return jnp.sum(nnx.merge(graphdef, p)(x, d) ** 2)

    @jax.jit
    def traced_grad(p, d):
        traces.append(d)
        return jax.grad(loss)(p, d)

    for depth in [0, 3, 1, 2, 0]:
        got, want = traced_grad(params, jnp.int32(depth)), jax.grad(loss)(params, depth)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, want)
        middle = np.asarray(got["middle_linear"]["kernel"][...])
        assert (np.abs(middle).max() == 0) == (depth == 0)  # unused weights get zero gradient
    assert len(traces) == 1


def test_dynamic_net_random_depth_covers_zero_to_max_depth():
    net = jaxnets.DynamicNet(4, 4, 2, max_depth=3, rngs=nnx.Rngs(0))
    depths = jax.vmap(net.random_depth)(jax.random.split(jax.random.key(0), 2000))
    assert depths.dtype == jnp.int32
    with jax.enable_x64(True):
        assert net.random_depth(jax.random.key(0)).dtype == jnp.int32  # as documented, not int64
    counts = np.bincount(np.asarray(depths), minlength=4)
    assert len(counts) == 4 and counts.min() > 400  # about 500 each


@pytest.mark.parametrize(
    "depth,error,message",
    [
        (4, ValueError, r"`depth` must be in 0..3 \(max_depth=3\); got 4.*DynamicNet\(max_depth=4\)"),
        (-1, ValueError, r"got -1"),
        (True, TypeError, r"got the bool True"),
        (1.5, TypeError, r"must be an int in 0..3 or an integer scalar array; got 1.5"),
        (jnp.array([1, 2]), TypeError, r"integer scalar array"),
    ],
    ids=["too-deep", "negative", "bool", "float", "vector"],
)
def test_dynamic_net_rejects_bad_depth(depth, error, message):
    net = jaxnets.DynamicNet(4, 4, 2, rngs=nnx.Rngs(0))
    with pytest.raises(error, match=message):
        net(jnp.zeros((1, 4)), depth)


def test_dynamic_net_rejects_a_traced_float_depth():
    net = jaxnets.DynamicNet(4, 4, 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"traced `depth` must be an integer scalar; got shape \(\) and dtype float32"):
        jax.jit(lambda d: net(jnp.zeros((1, 4)), d))(jnp.float32(1))


# -- activations ---------------------------------------------------------------------------------


def test_clamp_min_has_torchs_gradient_of_one_at_zero_and_relu_zero():
    x = jnp.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(jax.grad(lambda x: clamp_min(x).sum())(x), [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(jax.grad(lambda x: relu(x).sum())(x), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(clamp_min(x), relu(x))


def test_summary_reads_like_print_net():
    text = jaxnets.summary(jaxnets.LeNet(rngs=nnx.Rngs(0)))
    assert "(conv1): Conv(1 -> 6, kernel_size=(5, 5), strides=(1, 1), padding=VALID)" in text
    assert "(fc1): Linear(400 -> 120)" in text and "kernel (400, 120)" in text
    assert text.endswith("10 parameter arrays, 61,706 values")
    seq = jaxnets.summary(jaxnets.two_layer_sequential(3, 4, 2, rngs=nnx.Rngs(0)))
    assert "(0): Linear(3 -> 4)" in seq and "(1): relu()" in seq and "(2): Linear(4 -> 2)" in seq
    # The shapes line up in one column, at least two spaces after the longest description (#16: the conv lines
    # printed "padding=VALID)kernel (5, 5, 1, 6)").
    # The bias shapes too, in their own column after the longest kernel shape (they followed each kernel shape
    # directly, so LeNet's conv and fc lines put them in three different columns).
    for block in (text, seq):
        rows = [line for line in block.splitlines() if "kernel (" in line]
        for column in ("kernel (", "bias ("):
            assert len({line.index(column) for line in rows}) == 1, (column, block)
            assert all(line[: line.index(column)].endswith("  ") for line in rows), (column, block)
        assert all(line == line.rstrip() for line in block.splitlines()), block
    assert "padding=VALID)   kernel (5, 5, 1, 6)   bias (6,)" in text  # conv1: one space more than conv2
    assert "padding=VALID)  kernel (5, 5, 6, 16)  bias (16,)" in text
