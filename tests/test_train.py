"""Trainer: compiled steps that equal hand-computed updates, compile once and never sync with the host."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tolerances import F64_ATOL, F64_RTOL

import jaxnets
from jaxnets.losses import mse_loss

mse_sum = lambda m, x, y: mse_loss(m(x), y, reduction="sum")


def close64(a, b):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=F64_RTOL, atol=F64_ATOL), a, b)


def data(n=8, d_in=12, d_out=3, dtype=jnp.float32, seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, d_in), dtype), jax.random.normal(ky, (n, d_out), dtype)


def test_trainer_step_equals_a_hand_computed_sgd_step_float64(x64):
    model = jaxnets.TwoLayerNet(12, 6, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x, y = data(dtype=jnp.float64)
    graphdef, p0 = nnx.split(model, nnx.Param)
    loss0, g0 = jax.value_and_grad(lambda p: mse_sum(nnx.merge(graphdef, p), x, y))(p0)
    trainer = jaxnets.Trainer(model, jaxnets.optim.sgd(lr=0.01), mse_sum)
    loss = trainer.step(x, y)
    close64(loss, loss0)  # the loss before the update, like torch's loop
    close64(
        nnx.to_pure_dict(trainer.params),
        jax.tree.map(lambda p, g: p - 0.01 * g, nnx.to_pure_dict(p0), nnx.to_pure_dict(g0)),
    )


def test_trainer_run_equals_repeated_steps_float64(x64):
    make = lambda: jaxnets.TwoLayerNet(12, 6, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    x, y = data(dtype=jnp.float64)
    stepped = jaxnets.Trainer(make(), jaxnets.optim.adam(lr=0.01), mse_sum)
    losses = [stepped.step(x, y) for _ in range(20)]
    scanned = jaxnets.Trainer(make(), jaxnets.optim.adam(lr=0.01), mse_sum)
    close64(scanned.run(20, x, y), jnp.stack(losses))
    close64(nnx.to_pure_dict(scanned.params), nnx.to_pure_dict(stepped.params))
    close64(scanned.opt_state, stepped.opt_state)


def test_trainer_compiles_once_across_many_steps(backend_compiles):
    trainer = jaxnets.Trainer(jaxnets.LeNet(rngs=nnx.Rngs(0)), jaxnets.optim.sgd(lr=0.01, momentum=0.9),
                              lambda m, x, y: jaxnets.losses.cross_entropy(m(x), y))  # fmt: skip
    keys = jax.random.split(jax.random.key(0), 6)
    backend_compiles.clear()
    for k in keys:
        trainer.step(jax.random.normal(k, (4, 32, 32, 1)), jax.random.randint(k, (4,), 0, 10))
    assert trainer.compilations == 1
    assert backend_compiles.count("jit(_step_impl)") == 1


def test_trainer_makes_the_optimizer_state_in_one_program(backend_compiles):
    # Eagerly, Adam's init compiled a program for each shape of its zeros (twelve for LeNet).
    model = jaxnets.LeNet(rngs=nnx.Rngs(0))
    backend_compiles.clear()
    trainer = jaxnets.Trainer(model, jaxnets.optim.adam(lr=0.01), mse_sum)
    assert len(backend_compiles) == 1, backend_compiles
    want = jaxnets.optim.adam(lr=0.01).init(nnx.state(model, nnx.Param))  # eager: the same state
    jax.tree.map(np.testing.assert_array_equal, trainer.opt_state, want)
    assert jax.tree.map(lambda a: (a.dtype, a.shape), trainer.opt_state) == jax.tree.map(
        lambda a: (a.dtype, a.shape), want
    )


def test_trainer_dynamic_net_one_compilation_for_every_depth(backend_compiles):
    net = jaxnets.DynamicNet(12, 8, 3, rngs=nnx.Rngs(0))
    trainer = jaxnets.Trainer(net, jaxnets.optim.sgd(lr=1e-3, momentum=0.9),
                              lambda m, x, y, d: mse_loss(m(x, d), y, reduction="sum"))  # fmt: skip
    x, y = data()
    for depth in [0, 1, 2, 3, 3, 0, 2]:
        trainer.step(x, y, jnp.int32(depth))
    assert trainer.compilations == 1
    assert backend_compiles.count("jit(_step_impl)") == 1


def test_trainer_dynamic_net_depth_drawn_from_a_key_inside_the_compiled_loop():
    net = jaxnets.DynamicNet(12, 8, 3, rngs=nnx.Rngs(0))
    trainer = jaxnets.Trainer(net, jaxnets.optim.sgd(lr=1e-3, momentum=0.9),
                              lambda m, x, y, key: mse_loss(m(x, m.random_depth(key)), y, reduction="sum"))  # fmt: skip
    x, y = data()
    keys = jax.random.split(jax.random.key(0), 30)
    losses = trainer.run(30, x, y, per_step=(keys,))
    assert losses.shape == (30,) and trainer.compilations == 1
    # the same keys give the same depths in plain Python: replay them step by step, eagerly
    graphdef, params = nnx.split(jaxnets.DynamicNet(12, 8, 3, rngs=nnx.Rngs(0)), nnx.Param)
    depths = [int(net.random_depth(k)) for k in keys[:3]]
    tx = jaxnets.optim.sgd(lr=1e-3, momentum=0.9)
    state = tx.init(params)
    for t, d in enumerate(depths):
        loss, g = jax.value_and_grad(lambda p, d=d: mse_loss(nnx.merge(graphdef, p)(x, d), y, reduction="sum"))(params)
        np.testing.assert_allclose(loss, losses[t], rtol=1e-5)
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)


def _host_callbacks(jaxpr) -> list[str]:
    found = []
    for eqn in jaxpr.eqns:
        if "callback" in eqn.primitive.name or eqn.primitive.name == "debug_print":
            found.append(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _host_callbacks(sub)
    return found


@pytest.mark.parametrize("spy", [False, True], ids=["plain", "negative-control-with-debug-print"])
def test_trainer_step_reads_nothing_back_to_the_host(spy):
    # On the CPU a device-to-host transfer guard never fires (host and device share
    # memory), so look for the only way a compiled step can talk to the host: a callback.
    def loss_fn(m, x, y):
        loss = mse_sum(m, x, y)
        if spy:
            jax.debug.print("loss {}", loss)
        return loss

    trainer = jaxnets.Trainer(jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0)), jaxnets.optim.adam(), loss_fn)
    x, y = data()
    jaxpr = jax.make_jaxpr(trainer._step_impl)(trainer._leaves, x, y).jaxpr
    assert bool(_host_callbacks(jaxpr)) == spy
    assert isinstance(trainer.step(x, y), jax.Array)


def test_trainer_leaves_the_callers_model_intact_until_model_is_read():
    model = jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0))
    before = np.asarray(model.linear1.kernel[...])
    trainer = jaxnets.Trainer(model, jaxnets.optim.sgd(lr=0.1), mse_sum)
    x, y = data()
    snapshot = trainer.params
    for _ in range(3):
        trainer.step(x, y)
    np.testing.assert_array_equal(model.linear1.kernel[...], before)  # not donated, not deleted
    np.testing.assert_array_equal(snapshot["linear1"]["kernel"][...], before)  # snapshots survive steps
    assert trainer.model is model
    assert not np.allclose(model.linear1.kernel[...], before)
    trainer.step(x, y)
    assert np.isfinite(np.asarray(model.linear1.kernel[...])).all()  # still readable after more steps


def _buffer(x):
    """Where ``x``'s data lives; for a PRNG key, its key data's buffer (which ``key_data`` returns without a copy)."""
    return (jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x).unsafe_buffer_pointer()


def test_trainer_copies_are_private_and_keep_dtype_weak_type_and_keys():
    from jaxnets._copies import private_copy

    strong, weak, key = jnp.arange(6.0).reshape(2, 3), jnp.asarray(0.5), jax.random.key(3)
    assert not strong.aval.weak_type and weak.aval.weak_type
    for x in (strong, weak, key, jnp.arange(4, dtype=jnp.int32)):
        copy = jax.device_put(private_copy(x))
        assert copy.dtype == x.dtype and copy.shape == x.shape and copy.aval.weak_type == x.aval.weak_type
        assert _buffer(copy) != _buffer(x)
        values = jax.random.key_data if x is key else np.asarray
        assert np.array_equal(np.asarray(values(copy)), np.asarray(values(x)))
    trainer = jaxnets.Trainer(jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0)), jaxnets.optim.adam(lr=0.1), mse_sum)
    x, y = data()
    params, opt_state, _ = trainer._carry(0, 1, 2, host=True)
    trainer.step(x, y)  # donates the live buffers: the host copies must not be them
    assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves((params, opt_state)))
    assert not np.array_equal(params["linear1"]["kernel"], np.asarray(trainer.params["linear1"]["kernel"][...]))


def test_trainer_has_aux_and_evaluate():
    x, y = data()
    trainer = jaxnets.Trainer(
        jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0)), jaxnets.optim.sgd(lr=0.01),
        lambda m, x, y: (mse_sum(m, x, y), m(x)), eval_fn=lambda m, x: m(x), has_aux=True,
    )  # fmt: skip
    loss, out = trainer.step(x, y)
    assert out.shape == (8, 3)
    np.testing.assert_allclose(loss, jnp.sum((out - y) ** 2), rtol=1e-5)
    losses, outs = trainer.run(4, x, y)
    assert losses.shape == (4,) and outs.shape == (4, 8, 3)
    assert trainer.evaluate(x).shape == (8, 3)


def test_trainer_opt_state_round_trips_and_rejects_wrong_structure():
    x, y = data()
    a = jaxnets.Trainer(
        jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0)), jaxnets.optim.sgd(lr=0.01, momentum=0.9), mse_sum
    )
    b = jaxnets.Trainer(
        jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0)), jaxnets.optim.sgd(lr=0.01, momentum=0.9), mse_sum
    )
    for _ in range(3):
        a.step(x, y)
    b.load_model(a.model)
    b.opt_state = a.opt_state
    np.testing.assert_array_equal(a.step(x, y), b.step(x, y))
    np.testing.assert_array_equal(a.params["linear2"]["bias"][...], b.params["linear2"]["bias"][...])
    with pytest.raises(ValueError, match="does not have the structure"):
        b.opt_state = jaxnets.optim.adam().init(b.params)
    with pytest.raises(ValueError, match="does not have the structure"):
        b.load_model(jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0)).linear1)
    with pytest.raises(
        ValueError,
        match=r"\['linear1'\]\['bias'\].* has shape \(7,\) and dtype float32; expected \(6,\) float32",
    ):
        b.load_model(jaxnets.TwoLayerNet(12, 7, 3, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda: jaxnets.Trainer(object(), optax.sgd(0.1), mse_sum), TypeError, "must be an nnx.Module; got object"),
        (lambda: jaxnets.Trainer(jaxnets.TwoLayerNet(2, 2, 2, rngs=nnx.Rngs(0)), "sgd", mse_sum), TypeError,
         "optax.GradientTransformation such as jaxnets.optim.sgd"),
    ],
    ids=["model", "optimizer"],
)  # fmt: skip
def test_trainer_rejects_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_trainer_run_rejects_bad_step_counts_and_per_step_arrays():
    trainer = jaxnets.Trainer(jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.1), mse_sum)
    x, y = data()
    with pytest.raises(ValueError, match="`num_steps` must be a positive int; got 0"):
        trainer.run(0, x, y)
    with pytest.raises(ValueError, match=r"leading axis of num_steps=5; array 0 has shape \(4,\)"):
        trainer.run(5, x, per_step=(jnp.zeros((4,)),))


def _dynamic_trainer(skip_unused):
    net = jaxnets.DynamicNet(12, 8, 3, rngs=nnx.Rngs(0))
    loss_fn = lambda m, x, y, d: mse_loss(m(x, d), y, reduction="sum")
    skip = (lambda m, x, y, d: m.used_params(d)) if skip_unused else None
    return jaxnets.Trainer(net, jaxnets.optim.sgd(lr=1e-3, momentum=0.9, weight_decay=0.1), loss_fn, skip_unused=skip)


def test_trainer_skip_unused_leaves_unused_parameters_and_their_momentum_alone():
    x, y = data()
    skipping, stepping = _dynamic_trainer(True), _dynamic_trainer(False)
    for trainer in (skipping, stepping):
        trainer.step(x, y, jnp.int32(2))
    before = skipping.params["middle_linear"]["kernel"][...]
    momentum = skipping.opt_state[1][0].trace["middle_linear"]["kernel"][...]
    for trainer in (skipping, stepping):
        trainer.step(x, y, jnp.int32(0))  # middle_linear takes no part
    # torch, set_to_none=True: no update, no weight decay, momentum buffer untouched
    np.testing.assert_array_equal(skipping.params["middle_linear"]["kernel"][...], before)
    np.testing.assert_array_equal(skipping.opt_state[1][0].trace["middle_linear"]["kernel"][...], momentum)
    # torch, set_to_none=False: a zero gradient, but momentum and weight decay still move it
    assert not np.allclose(stepping.params["middle_linear"]["kernel"][...], before)
    # the layers that were used are stepped identically either way
    np.testing.assert_array_equal(
        skipping.params["output_linear"]["bias"][...], stepping.params["output_linear"]["bias"][...]
    )
    assert skipping.compilations == 1


def test_trainer_skip_unused_refuses_optimizers_with_a_shared_step_count():
    net = jaxnets.DynamicNet(12, 8, 3, rngs=nnx.Rngs(0))
    trainer = jaxnets.Trainer(net, jaxnets.optim.adam(), lambda m, x, y, d: mse_loss(m(x, d), y),
                              skip_unused=lambda m, x, y, d: m.used_params(d))  # fmt: skip
    x, y = data()
    with pytest.raises(ValueError, match=r"needs optimizer state kept per parameter.*Adam's step count"):
        trainer.step(x, y, jnp.int32(0))
    bad = jaxnets.Trainer(net, jaxnets.optim.sgd(0.1), lambda m, x, y: mse_loss(m(x, 1), y),
                          skip_unused=lambda m, x, y: {"only": jnp.bool_(True)})  # fmt: skip
    with pytest.raises(ValueError, match="must return one boolean per parameter"):
        bad.step(x, y)


# -- microbatches: gradient accumulation inside the step ----------------------------------------


@pytest.mark.parametrize("model", ["two_layer", "lenet"])
def test_trainer_microbatches_step_is_the_full_batch_step_float64(x64, model):
    if model == "lenet":  # the fast path's 64-image chunks: 4 parts of 64 run unchunked, 256 at once in 4 chunks
        make = lambda: jaxnets.LeNet(param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(1), (256, 32, 32, 1), jnp.float64)
        y = jax.random.randint(jax.random.key(2), (256,), 0, 10)
        loss_fn = lambda m, x, y: jaxnets.losses.cross_entropy(m(x), y)
    else:
        make = lambda: jaxnets.TwoLayerNet(12, 6, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        x, y = data(n=12, dtype=jnp.float64)
        loss_fn = lambda m, x, y: mse_loss(m(x), y)  # a mean over the examples
    whole = jaxnets.Trainer(make(), jaxnets.optim.sgd(lr=0.1, momentum=0.9), loss_fn)
    parts = jaxnets.Trainer(make(), jaxnets.optim.sgd(lr=0.1, momentum=0.9), loss_fn, microbatches=4)
    for _ in range(2):
        close64(parts.step(x, y), whole.step(x, y))
    close64(parts.run(3, x, y), whole.run(3, x, y))
    close64(nnx.to_pure_dict(parts.params), nnx.to_pure_dict(whole.params))
    assert not np.allclose(nnx.to_pure_dict(parts.params)["fc3" if model == "lenet" else "linear2"]["bias"], 0)


def test_trainer_microbatches_stack_aux_per_part():
    x, y = data(n=12)
    trainer = jaxnets.Trainer(jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.01),
                              lambda m, x, y: (mse_loss(m(x), y), m(x)), has_aux=True, microbatches=3)  # fmt: skip
    loss, out = trainer.step(x, y)
    assert out.shape == (3, 4, 3)  # (microbatches, part, outputs)
    parts = [mse_loss(o, t) for o, t in zip(out, y.reshape(3, 4, 3), strict=True)]
    np.testing.assert_allclose(loss, jnp.mean(jnp.stack(parts)), rtol=1e-6)
    losses, outs = trainer.run(2, x, y)
    assert losses.shape == (2,) and outs.shape == (2, 3, 4, 3)


def test_trainer_microbatches_rejects_bad_values_and_batches_it_cannot_split():
    net = lambda: jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=f"`microbatches` must be a positive int, or None .*; got {bad!r}"):
            jaxnets.Trainer(net(), optax.sgd(0.1), mse_sum, microbatches=bad)
    with pytest.raises(ValueError, match="cannot be combined with a `mesh`"):
        jaxnets.Trainer(net(), optax.sgd(0.1), mse_sum, microbatches=2, mesh=jaxnets.training.distributed.mesh(1))
    trainer = jaxnets.Trainer(net(), optax.sgd(0.1), mse_sum, microbatches=3)
    before = nnx.to_pure_dict(trainer.params)
    with pytest.raises(ValueError, match=r"into 3 equal parts; argument 0 has shape \(8, 12\)"):
        trainer.step(*data(n=8))
    with pytest.raises(ValueError, match=r"argument 2 has shape \(\)"):
        jaxnets.Trainer(net(), optax.sgd(0.1), lambda m, x, y, s: s * mse_sum(m, x, y), microbatches=3).step(
            *data(n=9), jnp.float32(2.0)
        )
    close64(nnx.to_pure_dict(trainer.params), before)  # a refused step changed nothing
    trainer.step(*data(n=9))  # and the trainer still works


class _Counting(nnx.Module):
    """A linear layer that updates non-parameter state in its forward pass, like BatchNorm's running mean."""

    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 2, rngs=rngs)
        self.count = nnx.BatchStat(jnp.zeros(()))
        self.mean = nnx.BatchStat(jnp.zeros(3))

    def __call__(self, x):
        self.count[...] += 1
        self.mean[...] = 0.5 * self.mean[...] + 0.5 * x.mean(0)
        return self.lin(x)


@pytest.mark.parametrize("microbatches", [1, 2])
def test_trainer_carries_state_the_forward_pass_updates(microbatches):
    # Every forward pass (one per part) counts once and moves the running mean halfway to its batch mean.
    trainer = jaxnets.Trainer(
        _Counting(nnx.Rngs(0)),
        jaxnets.optim.sgd(0.1),
        lambda m, x, y: jnp.mean((m(x) - y) ** 2),
        microbatches=microbatches,
    )
    x, y = jnp.arange(12.0).reshape(4, 3), jnp.zeros((4, 2))
    kernel = np.asarray(trainer.model.lin.kernel[...])
    trainer.step(x, y)
    trainer.run(3, x, y)
    model = trainer.model
    assert float(model.count[...]) == 4 * microbatches
    means = [np.asarray(part.mean(0)) for part in jnp.split(x, microbatches)] * 4
    expected = np.zeros(3)
    for m in means:
        expected = 0.5 * expected + 0.5 * m
    np.testing.assert_allclose(model.mean[...], expected, rtol=1e-6)
    assert not np.allclose(model.lin.kernel[...], kernel)  # and the parameters trained


# -- microbatches=None: the trainer splits by itself where the split is exact ------------------------


def _lenet64():
    return jaxnets.LeNet(param_dtype=jnp.float64, rngs=nnx.Rngs(0))


def _images(n, dtype=jnp.float32):
    kx, ky = jax.random.split(jax.random.key(n))
    return jax.random.normal(kx, (n, 32, 32, 1), dtype), jax.random.randint(ky, (n,), 0, 10)


def test_trainer_splits_a_lenet_batch_of_a_mean_loss_by_itself_float64(x64):
    # LeNet's fast path runs best on 64 images: 128 go in two parts, and the step is still the whole
    # batch's (the chunked whole-batch path and the lax path) to float64 rounding.
    ce = lambda m, x, y: jaxnets.losses.cross_entropy(m(x), y)
    x, y = _images(128, jnp.float64)
    auto = jaxnets.Trainer(_lenet64(), jaxnets.optim.sgd(0.1, momentum=0.9), ce)
    whole = jaxnets.Trainer(_lenet64(), jaxnets.optim.sgd(0.1, momentum=0.9), ce, microbatches=1)
    lax = jaxnets.Trainer(
        jaxnets.LeNet(param_dtype=jnp.float64, impl="lax", rngs=nnx.Rngs(0)), jaxnets.optim.sgd(0.1, momentum=0.9), ce
    )
    assert (auto.parts(x, y), whole.parts(x, y), lax.parts(x, y)) == (2, 1, 1)
    for _ in range(2):
        loss = auto.step(x, y)
        close64(loss, whole.step(x, y))
        close64(loss, lax.step(x, y))
    close64(nnx.to_pure_dict(auto.params), nnx.to_pure_dict(lax.params))
    close64(auto.run(2, x, y), whole.run(2, x, y))
    close64(nnx.to_pure_dict(auto.params), nnx.to_pure_dict(whole.params))
    assert auto.compilations == 2  # one step, one loop: the probe that chose the split compiles nothing


def test_trainer_splits_only_what_it_can_prove_is_a_mean_over_examples():
    ce = jaxnets.losses.cross_entropy
    x, y = _images(256)
    onehot = jax.nn.one_hot(y, 10)
    lenet = lambda impl="fast": jaxnets.LeNet(impl=impl, rngs=nnx.Rngs(0))  # noqa: E731

    def parts(loss_fn, *batch, model=None, **kw):
        return jaxnets.Trainer(model or lenet(), optax.sgd(0.1), loss_fn, **kw).parts(*batch)

    assert parts(lambda m, x, y: ce(m(x), y), x, y) == 4
    assert parts(lambda m, x, y: mse_loss(m(x), y), x, onehot) == 4
    assert parts(lambda m, x, y: ce(m(x), y), x[:200], y[:200]) == 4  # 4 parts of 50
    assert parts(lambda m, x, y: ce(m(x), y), x[:64], y[:64]) == 1  # one part already
    assert parts(lambda m, x, y: ce(m(x), y), x[:97], y[:97]) == 1  # prime: parts of one image
    # Not a mean over the examples of the model's output on the batch: left whole.
    assert parts(lambda m, x, y: ce(m(x), y, reduction="sum"), x, y) == 1
    assert parts(lambda m, x, y: ce(m(2 * x), y), x, y) == 1
    assert parts(lambda m, x, y: ce(m(x), y) + 0.0 * jnp.mean(m(x)), x, y) == 1
    assert parts(lambda m, x, y: ce(m(x) - m(x).mean(0), y), x, y) == 1
    assert parts(lambda m, x, y: ce(m(x), y[::-1]), x, y) == 1
    assert parts(lambda m, x, y: (ce(m(x), y), m(x)), x, y, has_aux=True) == 1  # aux would be stacked per part
    assert parts(lambda m, xs, ys, i: ce(m(xs[i]), ys[i]), x, y, jnp.arange(64)) == 1  # data set and indices
    assert parts(lambda m, x, y: ce(m(x), y), x, y, model=lenet("lax")) == 1  # no part size asked for
    assert parts(lambda m, x, y: ce(m(x), y), x, y, microbatches=1) == 1
    assert parts(lambda m, x, y: ce(m(x), y), x, y, microbatches=8) == 8
    assert parts(lambda m, x, y: ce(m(x), y), x, y, mesh=jaxnets.training.distributed.mesh(1)) == 1
    assert parts(mse_sum, *data(n=256), model=jaxnets.TwoLayerNet(12, 6, 3, rngs=nnx.Rngs(0))) == 1


@pytest.mark.parametrize(
    "batch, part, expected",
    [(256, 64, 4), (128, 64, 2), (200, 64, 4), (100, 64, 2), (64, 64, 1), (1, 64, 1), (97, 64, 1), (65, 64, 1)],
)
def test_split_parts_are_equal_and_at_most_the_part_size(batch, part, expected):
    from jaxnets import _split

    assert _split.parts(batch, part) == expected
