"""jaxnets.training.inference: the forward pass of many batches in one compiled loop, and training.logits built on it."""

import jax
import numpy as np
import pytest
from flax import nnx
from tolerances import F32_ATOL, F32_RTOL

import jaxnets
from jaxnets.training import digits as training
from jaxnets.training import inference


def _images(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 32, 32, 1)).astype(np.float32)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: jaxnets.LeNet(rngs=nnx.Rngs(0)), (32, 32, 1)),
        (lambda: jaxnets.LeNet(impl="lax", rngs=nnx.Rngs(0)), (32, 32, 1)),
        (lambda: jaxnets.TwoLayerNet(12, 7, 3, rngs=nnx.Rngs(0)), (12,)),
    ],
    ids=["lenet", "lenet-lax", "two-layer"],
)
def test_apply_batches_equals_one_forward_per_batch(make, shape):
    model = make()
    xs = jax.random.normal(jax.random.key(1), (5, 3, *shape))
    out = inference.apply_batches(model, xs)
    assert out.shape[:2] == (5, 3)
    for k in range(5):
        np.testing.assert_allclose(out[k], model(xs[k]), atol=F32_ATOL, rtol=F32_RTOL)


def test_forward_batches_compiles_once_per_shape_and_structure():
    model = jaxnets.LeNet(rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    run = inference.forward_batches(graphdef)
    assert inference.forward_batches(nnx.split(jaxnets.LeNet(rngs=nnx.Rngs(1)))[0]) is run  # same structure
    xs = jax.device_put(_images(8).reshape(2, 4, 32, 32, 1))
    run(state, xs)
    size = run._cache_size()
    run(state, xs + 1.0)
    inference.apply_batches(model, xs)
    assert run._cache_size() == size
    run(state, xs[:1])  # another number of batches: another program
    assert run._cache_size() == size + 1


@pytest.mark.parametrize("bad", [np.float32(1.0), np.zeros((3,), np.float32), np.zeros((0, 2, 32, 32, 1), np.float32)])
def test_apply_batches_rejects_an_unstacked_or_empty_input(bad):
    with pytest.raises(ValueError, match=r"apply_batches: `xs` must stack at least one batch.*x\[None\]"):
        inference.apply_batches(jaxnets.LeNet(rngs=nnx.Rngs(0)), bad)


@pytest.mark.parametrize("n", [0, 7, 30, 31, 95], ids=lambda n: f"{n}-images")
def test_logits_in_groups_of_padded_batches_equal_one_forward(monkeypatch, n):
    # batch 10, 2 batches per compiled loop: 95 images make 5 loops, the last one batch padded to 10.
    monkeypatch.setattr(training, "EVAL_GROUP", 2)
    model = jaxnets.LeNet(rngs=nnx.Rngs(0))
    images = _images(n)
    out = training.logits(model, images, batch_size=10)
    assert out.shape == (n, 10)
    if n:
        np.testing.assert_allclose(out, model(jax.device_put(images)), atol=F32_ATOL, rtol=F32_RTOL)
