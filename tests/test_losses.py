"""jaxnets.losses against NumPy transcriptions of torch.nn.functional's formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import F64_ATOL, F64_RTOL

from jaxnets.losses import cross_entropy, mse_loss

REDUCTIONS = ["mean", "sum", "none"]


def _reduce(loss, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": np.asarray}[reduction](loss)


def _log_softmax(logits):
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("input_shape", "target_shape"),
    [((4, 3), (4, 3)), ((1, 10), (10,)), ((4, 3), (1, 3)), ((5,), ()), ((), ())],
    ids=["same-shape", "tutorial-(10,)-target", "row-target", "scalar-target", "scalars"],
)
def test_mse_loss_matches_numpy(x64, input_shape, target_shape, reduction):
    rng = np.random.default_rng(0)
    x = rng.normal(size=input_shape)
    target = rng.normal(size=target_shape)
    expected = _reduce((x - target) ** 2, reduction)
    actual = mse_loss(jax.device_put(x), jax.device_put(target), reduction=reduction)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=F64_RTOL, atol=F64_ATOL)


def test_mse_loss_broadcasts_the_tutorials_target_over_the_batch_axis():
    # The tutorial's net(input) is (1, 10) and its target torch.randn(10).
    output = jnp.arange(10.0).reshape(1, 10)
    target = jnp.ones(10)
    assert mse_loss(output, target, reduction="none").shape == (1, 10)
    assert float(mse_loss(output, target)) == pytest.approx(np.mean((np.arange(10.0) - 1) ** 2))


def test_mse_loss_runs_under_jit():
    loss = jax.jit(mse_loss, static_argnames="reduction")(jnp.ones((1, 10)), jnp.zeros(10), reduction="sum")
    assert float(loss) == 10.0


@pytest.mark.parametrize(
    ("input_shape", "target_shape", "message"),
    [
        (
            (1, 10),
            (3,),
            r"`input` of shape \(1, 10\) and `target` of shape \(3,\); expected `target` of shape",
        ),
        ((10,), (1, 10), r"`input` of shape \(10,\) and `target` of shape \(1, 10\)"),
        ((4, 3), (3, 4), r"Reshape the target, e.g. target.reshape\(\(4, 3\)\)"),
    ],
    ids=["incompatible", "target-would-enlarge-input", "transposed"],
)
def test_mse_loss_rejects_target_that_does_not_broadcast_to_input(input_shape, target_shape, message):
    with pytest.raises(ValueError, match=message):
        mse_loss(jnp.zeros(input_shape), jnp.zeros(target_shape))


def test_mse_loss_rejects_unknown_reduction():
    with pytest.raises(ValueError, match=r"mse_loss got reduction='avg'; expected one of 'mean', 'sum' or 'none'"):
        mse_loss(jnp.zeros(3), jnp.zeros(3), reduction="avg")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("logits_shape", [(6, 5), (5,)], ids=["batch", "single-example"])
def test_cross_entropy_with_class_indices_matches_numpy(x64, logits_shape, reduction):
    rng = np.random.default_rng(1)
    # Large logits: a log_softmax that does not subtract the max would overflow.
    logits = rng.normal(size=logits_shape) * 300
    labels = rng.integers(0, 5, size=logits_shape[:-1])
    log_probs = _log_softmax(logits)
    expected = _reduce(-np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0], reduction)
    actual = cross_entropy(jax.device_put(logits), jax.device_put(labels), reduction=reduction)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=F64_RTOL, atol=F64_ATOL)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("logits_shape", [(6, 5), (5,)], ids=["batch", "single-example"])
def test_cross_entropy_with_class_probabilities_matches_numpy(x64, logits_shape, reduction):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=logits_shape)
    probabilities = rng.dirichlet(np.ones(logits_shape[-1]), size=logits_shape[:-1])
    expected = _reduce(-np.sum(probabilities * _log_softmax(logits), axis=-1), reduction)
    actual = cross_entropy(jax.device_put(logits), jax.device_put(probabilities), reduction=reduction)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=F64_RTOL, atol=F64_ATOL)


def test_cross_entropy_turns_out_of_range_labels_into_nan_under_jit():
    loss = jax.jit(cross_entropy, static_argnames="reduction")(
        jnp.zeros((4, 3)), jnp.array([0, 3, -1, -100]), reduction="none"
    )
    assert float(loss[0]) == pytest.approx(np.log(3))
    assert np.isnan(np.asarray(loss[1:])).all()


@pytest.mark.parametrize(
    ("logits", "labels", "error", "message"),
    [
        (
            jnp.zeros((2, 3, 4)),
            jnp.zeros((2, 3), jnp.int32),
            ValueError,
            r"`logits` of shape \(N, C\) or \(C,\); got shape \(2, 3, 4\)\. .*logits.reshape\(-1, C\)",
        ),
        (
            jnp.zeros((2, 3)),
            jnp.zeros((3,), jnp.int32),
            ValueError,
            r"integer `labels` of shape \(3,\) for `logits` of shape \(2, 3\); expected .* shape \(2,\)",
        ),
        (
            jnp.zeros((2, 3)),
            jnp.zeros((2,), jnp.float32),
            ValueError,
            r"float `labels` of shape \(2,\) for `logits` of shape \(2, 3\); .*labels.astype\(jnp.int32\)",
        ),
        (
            jnp.zeros((2, 3)),
            jnp.zeros((2,), jnp.bool_),
            TypeError,
            r"integer class indices or floating class probabilities as `labels`; got dtype bool",
        ),
        (
            jnp.zeros((2, 3), jnp.int32),
            jnp.zeros((2,), jnp.int32),
            TypeError,
            r"expects floating-point `logits`; got dtype int32",
        ),
    ],
    ids=[
        "3d-logits",
        "integer-labels-wrong-shape",
        "float-labels-wrong-shape",
        "bool-labels",
        "integer-logits",
    ],
)
def test_cross_entropy_rejects_labels_that_do_not_fit_the_logits(logits, labels, error, message):
    with pytest.raises(error, match=message):
        cross_entropy(logits, labels)


def test_cross_entropy_rejects_unknown_reduction():
    with pytest.raises(ValueError, match=r"cross_entropy got reduction='batchmean'; expected one of"):
        cross_entropy(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), reduction="batchmean")
