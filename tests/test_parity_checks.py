"""parity.checks: every row of the matrix passes, broken ports make rows fail, the command line works.

The whole matrix runs once for this module (about a minute on two cores); the
row tests read its results. The property-based cases draw random sizes, seeds
and learning rates and check forward, gradients, VJP and one optimizer step in
float64 at 1e-12.
"""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from budget import examples
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import parity
from jaxnets.optim import lr_scheduler as ls
from parity import _specs, checks, precision, recipes, schedulers
from parity.__main__ import main

torch.set_num_threads(1)  # torch and XLA share two cores in this process

# Fixed examples, no shrinking (each example compiles; shrinking a LeNet failure took minutes): the report
# names the failing example, and its sizes reproduce it.
BOUNDED = settings(
    max_examples=examples(10),
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


def normalised_lr(family: str, lr: float) -> float:
    """SGD keeps ``lr``; Adam, RMSprop and Adagrad get ``lr / 100``.

    They divide by ``sqrt(v) + eps``, which amplifies the rounding of a gradient
    entry near ``eps`` up to ``lr / eps``-fold (see parity.precision): one LeNet
    RMSprop step at lr 0.06 differed by 1.2e-12 in float64 from that alone.
    """
    return lr if family == "sgd" else lr / 100


# The whole matrix (what `python -m parity` runs, about 60 s on 2 cores) is an end-to-end run: its tests run in
# make test-all (CI). make test keeps this file's targeted checks, which run single rows and the wrong-port
# rows (the properties below, the dropped options, the fc1 permutation, the wrong schedules and recipes).
needs_matrix = pytest.mark.slow


@pytest.fixture(scope="module")
def matrix() -> dict[str, checks.Result]:
    """Every row of ``python -m parity`` but the ported models' (tests/test_ports.py runs those), run once."""
    return {row.id: row for row in checks.run(ports=False)}


def assert_rows_pass(rows):
    assert rows, "no rows were produced"
    failed = [r for r in rows if not r.passed]
    assert not failed, "\n".join(r.describe() for r in failed)


# -- the matrix ---------------------------------------------------------------------------------


@needs_matrix
@pytest.mark.parametrize("row_id", checks.row_ids(ports=False))
def test_matrix_row_passes(matrix, row_id):
    row = matrix[row_id]
    assert row.passed, row.describe()


def test_matrix_covers_every_model_check_dtype_and_optimizer_option():
    ids = checks.row_ids()
    assert len(ids) == len(set(ids))
    for model in ("lenet5", "lenet3", "lenet5_lax", "two_layer", "sequential", "dynamic"):
        for check in ("forward", "grad", "vjp"):
            for dtype in ("float32", "float64"):
                assert f"{model}/{check}/{dtype}" in ids
    for config in checks.optimizer_configs():
        for kind in ("step", "trajectory"):
            for dtype in ("float32", "float64"):
                row = f"two_layer/{kind}/{config.name}/{dtype}"
                left_out = kind == "trajectory" and dtype == "float32"
                left_out &= config.family in checks.FLOAT64_ONLY_TRAJECTORIES
                assert (row not in ids) if left_out else (row in ids), row
    assert checks.FLOAT64_ONLY_TRAJECTORIES == ("rprop",)  # chaotic in float32, see its docstring
    # Every optimizer of the matrix has trajectory and update rows (Muon and LBFGS are tested elsewhere).
    families = set(_specs._TORCH_OPTIMIZERS)
    assert families == {
        "sgd", "adam", "adamw", "rmsprop", "adagrad",
        "adadelta", "adamax", "nadam", "radam", "asgd", "rprop", "adafactor",
    }  # fmt: skip
    assert {c.family for c in checks.optimizer_configs()} == families
    assert {c.family for c in checks.update_configs()} == families
    options = {(c.family, k) for c in checks.optimizer_configs() for k, _ in c.options}
    assert options >= {
        ("sgd", "momentum"), ("sgd", "nesterov"), ("sgd", "dampening"), ("sgd", "weight_decay"),
        ("adam", "weight_decay"), ("adam", "amsgrad"), ("adamw", "amsgrad"),
        ("rmsprop", "momentum"), ("rmsprop", "centered"), ("rmsprop", "weight_decay"),
        ("adagrad", "lr_decay"), ("adagrad", "weight_decay"), ("adagrad", "initial_accumulator_value"),
        ("nadam", "decoupled_weight_decay"), ("radam", "decoupled_weight_decay"), ("asgd", "t0"),
    }  # fmt: skip
    update_options = {(c.family, k) for c in checks.update_configs() for k, _ in c.options}
    assert update_options >= {
        ("adam", "maximize"), ("adadelta", "maximize"), ("rprop", "maximize"), ("adadelta", "rho"),
        ("adamax", "betas"), ("adamax", "weight_decay"), ("nadam", "momentum_decay"),
        ("nadam", "decoupled_weight_decay"), ("radam", "decoupled_weight_decay"),
        ("asgd", "lambd"), ("asgd", "alpha"), ("asgd", "t0"), ("rprop", "etas"), ("rprop", "step_sizes"),
        ("adafactor", "beta2_decay"),
    }  # fmt: skip
    assert any(c.options == (("centered", True), ("momentum", 0.9)) for c in checks.optimizer_configs())
    for config in checks.update_configs():
        for dtype in ("float32", "float64"):
            assert f"two_layer/update/{config.name}/{dtype}" in ids
    # The update rows cover every option the step and trajectory rows do.
    assert {(c.family, k) for c in checks.update_configs() for k, _ in c.options} >= options
    for name in ("sgd", "adam"):
        assert f"lenet5/trajectory/{name}/float32" in ids and f"lenet5/trajectory/{name}/float64" in ids
    for stage in ("stage4 sequential_manual", "stage5 sequential_adam", "stage6 two_layer_sgd"):
        assert any(i.endswith(f"trajectory/{stage}/float64") for i in ids)
    assert "dynamic/semantics differ/float64" in ids


@needs_matrix
def test_matrix_float64_rows_are_held_to_1e_12(matrix):
    for row in matrix.values():
        if row.dtype == "float64" and not row.must_differ:
            assert row.tol == precision.F64_RTOL == 1e-12, row.id


@needs_matrix
def test_matrix_float32_step_and_update_rows_have_their_own_bounds(matrix):
    assert precision.F32_STEP_RTOL < precision.F32_NORMALISED_STEP_RTOL < precision.F32_TRAJECTORY_RTOL
    assert precision.F32_UPDATE_RTOL < precision.F32_TRAJECTORY_RTOL
    seen = set()
    for row in matrix.values():
        if row.dtype != "float32" or not row.check.startswith(("step/", "update/")):
            continue
        kind, optimizer = row.check.split("/", 1)
        want = (
            precision.F32_UPDATE_RTOL if kind == "update"
            else precision.F32_STEP_RTOL if optimizer.startswith(("sgd", "asgd"))
            else precision.F32_NORMALISED_STEP_RTOL
        )  # fmt: skip
        assert row.tol == want, row.id
        seen.add((kind, want))
    assert len(seen) == 3


@needs_matrix
def test_matrix_reports_errors_per_torch_parameter_name(matrix):
    assert list(matrix["lenet5/grad/float64"].per_param) == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
        "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias",
    ]  # fmt: skip
    assert list(matrix["sequential/trajectory/stage5 sequential_adam/float64"].per_param) == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    ]
    asgd = [r for r in matrix.values() if r.check.startswith(("update/asgd", "trajectory/asgd"))]
    assert len(asgd) == 4
    for row in asgd:  # ASGD's averaged parameters are compared too
        assert {"ax linear1.weight", "ax linear1.bias", "ax linear2.weight", "ax linear2.bias"} <= set(row.other)
    dynamic = matrix["dynamic/forward/float64"]
    assert {f"output (depth {d})" for d in range(4)} <= set(dynamic.other)


@needs_matrix
def test_matrix_stages_run_the_seeds_500_steps_in_float64(matrix):
    for row_id in [
        "bias_free/trajectory/stage1 numpy/float64",
        "bias_free/trajectory/stage2 manual/float64",
        "bias_free/trajectory/stage3 autograd/float64",
        "sequential/trajectory/stage4 sequential_manual/float64",
        "sequential/trajectory/stage5 sequential_adam/float64",
        "two_layer/trajectory/stage6 two_layer_sgd/float64",
        "dynamic/trajectory/stage7 dynamic_sgd, set_to_none=False/float64",
        "dynamic/trajectory/skip_unused, set_to_none=True/float64",
    ]:
        curves = matrix[row_id].curves
        assert len(curves["torch"]) == len(curves["jax"]) == 500, row_id
        assert curves["torch"][-1] < curves["torch"][0], row_id  # it trained


@needs_matrix
def test_matrix_step_counts_are_the_readmes(matrix):
    """float32 runs stages 2 and 3 for 500 steps, stages 4 to 7 and the optimizers for 40, the update rows 10,
    the param-group + clipping + scheduler recipes 50."""
    counts = {}
    for row in matrix.values():
        if row.dtype == "float32" and row.curves:
            counts.setdefault(len(row.curves["torch"]), set()).add(row.check.split(",")[0])
    assert counts[500] == {"trajectory/stage2 manual", "trajectory/stage3 autograd"}
    assert {"trajectory/stage4 sequential_manual", "trajectory/stage7 dynamic_sgd", "trajectory/adam"} <= counts[40]
    assert counts[recipes.RECIPE_STEPS] == {"trajectory/" + r.name for r in recipes.recipes()}
    assert set(counts) == {500, 40, recipes.RECIPE_STEPS}
    update = matrix["two_layer/update/sgd(momentum=0.9)/float32"]
    assert update.note.startswith(f"{checks.UPDATE_STEPS} steps") and checks.UPDATE_STEPS == 10


TORCH_SCHEDULERS = (
    "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR",
    "SequentialLR", "PolynomialLR", "CosineAnnealingLR", "ChainedScheduler", "CyclicLR", "OneCycleLR",
    "CosineAnnealingWarmRestarts", "ReduceLROnPlateau",
)  # fmt: skip


@needs_matrix
def test_matrix_has_schedule_rows_for_every_torch_scheduler_past_its_end(matrix):
    ids = checks.row_ids()
    assert len(TORCH_SCHEDULERS) == 15
    for name in TORCH_SCHEDULERS:
        for dtype in ("float32", "float64"):
            assert any(i.startswith(f"lr_scheduler/schedule/{name}") and i.endswith(dtype) for i in ids), name
    rows = [r for r in matrix.values() if r.check.startswith("schedule/")]
    assert (
        len(rows)
        == 2 * (len(schedulers.schedule_cases(schedulers.SCHEDULE_EPOCHS)) + len(schedulers.PLATEAU_CASES))
        == 90
    )
    for row in rows:
        if row.dtype == "float64":  # torch's own arithmetic replayed: bit for bit
            assert row.max_abs == 0.0, row.describe()
    steps = {r.check: int(r.note.split("..")[1].split(",")[0]) for r in rows if r.dtype == "float64" and ".." in r.note}
    assert steps["schedule/CosineAnnealingLR"] == schedulers.SCHEDULE_EPOCHS == 200  # T_max is 25
    assert steps["schedule/CosineAnnealingLR-12, steps_per_epoch=7"] == 7 * 200 - 1
    per_batch = "schedule/OneCycleLR(epochs=200, steps_per_epoch=10), per batch"
    assert steps[per_batch] == 2000
    assert "refuses past total_steps" in matrix[f"lr_scheduler/{per_batch}/float64"].other
    assert "momentum" in matrix["lr_scheduler/schedule/CyclicLR-exp_range/float64"].other


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("StepLR", lambda epochs: ls.StepLR(0.1, 31)),  # off by one epoch
        ("OneCycleLR", lambda epochs: ls.OneCycleLR(0.5, total_steps=epochs + 1)),  # refuses a step later
        ("CyclicLR-exp_range", lambda epochs: ls.CyclicLR(0.01, 0.2, 6, mode="exp_range", gamma=0.97)),  # momentum
    ],
)
def test_schedule_row_fails_for_a_wrong_schedule(monkeypatch, name, wrong):
    cases = {c[0]: c for c in schedulers.scheduler_cases(schedulers.SCHEDULE_EPOCHS)}
    monkeypatch.setattr(schedulers, "scheduler_cases", lambda epochs: [(name, cases[name][1], wrong(epochs))])
    (row,) = checks.run_jobs([schedulers.schedule_job("float64", select=lambda i: f"/{name}/" in i)])
    assert not row.passed, row.describe()


@needs_matrix
def test_matrix_has_recipe_rows_whose_clipping_binds_on_some_steps(matrix):
    rows = [r for r in matrix.values() if "/recipe " in r.check]
    assert {(r.model, r.dtype) for r in rows} == {(m, d) for m in ("two_layer", "lenet5") for d in checks.DTYPES}
    for row in rows:
        assert {"losses", "total norms", "lr of group 0", "lr of group 1"} <= set(row.other), row.id
        clipped = int(row.note.split("clipped on ")[1].split(";")[0])
        assert 0 < clipped < recipes.RECIPE_STEPS, row.describe()
        assert len(row.curves["torch"]) == recipes.RECIPE_STEPS == 50
        if row.dtype == "float64":
            assert row.tol == 1e-12 and row.other["lr of group 0"] == (0.0, 0.0)
        else:
            assert row.tol == precision.F32_TRAJECTORY_RTOL


def _sgd_recipe():
    return next(r for r in recipes.recipes() if r.name.startswith("recipe sgd"))


WRONG_RECIPES = {
    # the biases' group lr left out: the schedule then scales the default lr for them
    "bias-lr-dropped": lambda: dataclasses.replace(
        _sgd_recipe(), jax_groups=({"weight_decay": 1e-2}, {"weight_decay": 0.0})
    ),
    # weight decay on the biases too
    "bias-weight_decay-not-zero": lambda: dataclasses.replace(
        _sgd_recipe(), jax_groups=({"weight_decay": 1e-2}, {"weight_decay": 1e-2, "lr": 2e-4})
    ),
    # the scheduler stepped every optimizer step instead of every 5
    "StepLR-per-step": lambda: dataclasses.replace(_sgd_recipe(), schedule=lambda lr: ls.StepLR(lr, 3, 0.5)),
    # clipping that never binds on the jaxnets side (optax.clip_by_global_norm's rule would be another miss)
    "no-clipping": lambda: dataclasses.replace(_sgd_recipe(), max_norm=1e9),
}


@pytest.mark.parametrize("name", list(WRONG_RECIPES))
def test_recipe_row_fails_for_a_wrong_port(monkeypatch, name):
    wrong = WRONG_RECIPES[name]()
    if name == "no-clipping":  # torch still clips at 300: only jaxnets' chain changes
        jax_side = wrong.jax
        wrong = dataclasses.replace(_sgd_recipe())
        monkeypatch.setattr(recipes.Recipe, "jax", lambda self: jax_side())
    monkeypatch.setattr(recipes, "recipes", lambda: [wrong])
    (row,) = checks.run_jobs([recipes.recipe_job("float64")])
    assert not row.passed and np.isfinite(row.max_rel), row.describe()
    assert row.max_rel > 1e3 * row.tol


# -- DynamicNet: the two zero_grad semantics must differ on the shared schedule ------------------


def test_depth_schedule_skips_middle_linear_after_momentum_built_up():
    depths = checks.depth_schedule(seed=0)
    assert depths[0] > 0  # middle_linear gets a gradient, so a momentum buffer
    assert (depths[1:] == 0).sum() >= 50
    assert set(np.unique(depths)) == {0, 1, 2, 3}


@needs_matrix
def test_dynamic_semantics_differ_and_each_port_matches_only_its_own(matrix):
    row = matrix["dynamic/semantics differ/float64"]
    assert row.passed and row.must_differ, row.describe()
    assert row.max_rel > 1e3 * precision.DISTINCT_RTOL  # not a close call
    assert row.per_param["middle_linear.weight (torch)"][1] > precision.DISTINCT_RTOL
    curves = row.curves
    # Each JAX run matches the torch run of its own semantics (the two trajectory rows) ...
    for own in ("dynamic/trajectory/stage7 dynamic_sgd, set_to_none=False/float64",
                "dynamic/trajectory/skip_unused, set_to_none=True/float64"):  # fmt: skip
        assert matrix[own].passed, matrix[own].describe()
    # ... and would fail against the other one.
    for jax_curve, torch_curve in [("jax", "torch, set_to_none=False"), ("jax, plain Trainer", "torch")]:
        assert precision.errors(curves[jax_curve], curves[torch_curve])[1] > 1e3 * precision.F64_RTOL


# -- a check that cannot fail is a defect ---------------------------------------------------------


def load_without_fc1_permutation(model, state_dict):
    """The naive port: transpose fc1 like any linear layer (shapes fit, outputs are wrong)."""
    parity.load_torch_state_dict(model, state_dict)
    model.fc1.kernel[...] = jnp.asarray(np.asarray(state_dict["fc1.weight"]).T, model.fc1.kernel[...].dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_grad_vjp_fail_without_the_fc1_permutation(dtype):
    job = checks.forward_job([checks.lenet(5)], dtype, load=load_without_fc1_permutation)
    rows = checks.run_jobs([job])
    assert [r.check for r in rows] == ["forward", "grad", "vjp"]
    for row in rows:
        assert not row.passed, row.describe()
        assert row.max_rel > 1e3 * row.tol
    assert rows[1].per_param["fc1.weight"][1] > 1e-3  # the gradient of the mis-ported layer is off


WRONG_OPTIONS = {
    "nesterov-dropped": checks.OptimConfig("sgd", 3e-4, (("momentum", 0.9), ("nesterov", True)), (("momentum", 0.9),)),
    "dampening-dropped": checks.OptimConfig("sgd", 3e-4, (("momentum", 0.9), ("dampening", 0.5)), (("momentum", 0.9),)),
    "weight_decay-dropped": checks.OptimConfig("sgd", 3e-4, (("weight_decay", 0.1),), ()),
    "amsgrad-dropped": checks.OptimConfig("adam", 3e-3, (("amsgrad", True),), ()),
    "centered-dropped": checks.OptimConfig("rmsprop", 3e-4, (("centered", True),), ()),
    "lr_decay-dropped": checks.OptimConfig("adagrad", 1e-2, (("lr_decay", 0.1),), ()),
    "adamw-weight_decay-defaulted": checks.OptimConfig("adamw", 3e-3, (("weight_decay", 0.1),), ()),
    "nadam-decoupled_weight_decay-dropped": checks.OptimConfig(
        "nadam", 3e-4, (("weight_decay", 0.1), ("decoupled_weight_decay", True)), (("weight_decay", 0.1),)
    ),
    # t0 changes only ASGD's averaged parameters, so this fails only because the rows compare them.
    "asgd-t0-dropped": checks.OptimConfig("asgd", 1e-4, (("t0", 5),), ()),
}


@pytest.mark.parametrize("config", list(WRONG_OPTIONS.values()), ids=list(WRONG_OPTIONS))
def test_optimizer_trajectory_fails_for_a_wrong_option(config):
    (row,) = checks.run_jobs(
        [checks.optimizer_job([(checks.optimizer_model(), config)], "float64", select=lambda i: "trajectory" in i)]
    )
    assert not row.passed, row.describe()


def dropped_options() -> list[tuple[str, checks.OptimConfig]]:
    """Every update row with one of its options left out on the jaxnets side (momentum stays when Nesterov or
    dampening need it: the row with momentum alone drops it)."""
    out = []
    for config in checks.update_configs():
        names = [k for k, _ in config.options]
        for i, name in enumerate(names):
            if name == "momentum" and {"nesterov", "dampening"} & set(names):
                continue
            rest = config.options[:i] + config.options[i + 1 :]
            out.append(
                (f"{config.name} without {name}", checks.OptimConfig(config.family, config.lr, config.options, rest))
            )
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_update_rows_fail_when_any_option_is_dropped(dtype):
    cases = dropped_options()
    dropped = {(c.family, label.rsplit(" ", 1)[1]) for label, c in cases}
    assert dropped == {(c.family, k) for c in checks.update_configs() for k, _ in c.options}
    assert dropped >= {(c.family, k) for c in checks.optimizer_configs() for k, _ in c.options}
    rows = checks.run_jobs([checks.update_job([c for _, c in cases], dtype)])  # one compiled program
    assert len(rows) == len(cases)
    for (label, _), row in zip(cases, rows, strict=True):
        assert np.isfinite(row.max_rel), f"{label}: {row.describe()}"
        # Not a close call: every dropped option moves the weights at least ten times the bound.
        assert row.max_rel > 10 * row.tol, f"{label}: {row.describe()}"


def test_stage1_row_compares_numpy_with_torch(monkeypatch):
    def run(**patches):
        with monkeypatch.context() as m:
            for name, scale in patches.items():
                loop = getattr(checks.tm, name)
                m.setattr(checks.tm, name, lambda *a, loop=loop, scale=scale, **k: loop(*a, **k) * scale)
            select = lambda i: "stage1" in i or "jax vs numpy" in i  # noqa: E731
            rows = checks.run_jobs([checks.bias_free_trajectory_job("float64", steps=20, select=select)])
        return {r.check: r for r in rows}

    rows = run()
    assert all(r.passed for r in rows.values()) and "torch" in rows["trajectory/stage1 numpy"].note
    rows = run(tensor_manual_loop=1 + 1e-9)  # torch's side of stage 1 is off: the row sees it
    assert not rows["trajectory/stage1 numpy"].passed and rows["trajectory/jax vs numpy"].passed
    rows = run(numpy_loop=1 + 1e-9)  # the seed's NumPy copy is not stage 1's reference any more
    assert rows["trajectory/stage1 numpy"].passed and not rows["trajectory/jax vs numpy"].passed


def test_a_crashing_check_is_a_failed_row():
    def broken_load(model, state_dict):
        raise RuntimeError("no weights today")

    rows = checks.run_jobs([checks.forward_job([checks.two_layer(8, 5, 4, 3)], "float64", load=broken_load)])
    assert [r.passed for r in rows] == [False] * 3
    assert "no weights today" in rows[0].note


# -- property-based: random sizes, seeds and learning rates, float64 at 1e-12 --------------------


def run_rows(job_list):
    return checks.run_jobs([j for j in job_list if j is not None])  # JAX halves in a worker, torch's here


@settings(BOUNDED, max_examples=examples(8))  # each LeNet example compiles two programs for its new shapes
@given(
    kernel_size=st.sampled_from([3, 5]),
    extra=st.integers(0, 18),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    lr=st.floats(1e-4, 1e-1),
    family=st.sampled_from(["sgd", "adam", "rmsprop", "adagrad"]),
)
def test_property_lenet_forward_grad_vjp_and_one_step_in_float64(kernel_size, extra, batch, seed, lr, family):
    spec = checks.lenet(kernel_size, image_size=3 * kernel_size + 1 + extra, batch=batch)
    config = checks.OptimConfig(family, normalised_lr(family, lr))
    step = checks.optimizer_job([(spec, config)], "float64", steps=1, seed=seed, select=lambda i: "/step/" in i)
    assert_rows_pass(run_rows([checks.forward_job([spec], "float64", seed=seed), step]))


@BOUNDED
@given(
    make=st.sampled_from([checks.two_layer, checks.sequential, checks.dynamic]),
    n=st.integers(1, 16),
    d_in=st.integers(1, 64),
    hidden=st.integers(1, 32),
    d_out=st.integers(1, 8),
    seed=st.integers(0, 2**16),
    lr=st.floats(1e-4, 1e-1),
    config=st.sampled_from(checks.optimizer_configs()),
)
def test_property_dense_nets_forward_grad_vjp_and_one_step_in_float64(make, n, d_in, hidden, d_out, seed, lr, config):
    spec = make(n, d_in, hidden, d_out)
    config = checks.OptimConfig(config.family, normalised_lr(config.family, lr), config.options)
    step = checks.optimizer_job([(spec, config)], "float64", steps=1, seed=seed, select=lambda i: "/step/" in i)
    assert_rows_pass(run_rows([checks.forward_job([spec], "float64", seed=seed), step]))


# -- the command line ---------------------------------------------------------------------------


def test_cli_writes_json_and_a_png(tmp_path, capsys):
    out_json, out_png = tmp_path / "parity.json", tmp_path / "curves.png"
    only = ["lenet3/forward/float64", "two_layer/trajectory/adam/float32", "two_layer/trajectory/sgd(momentum=0.9)/"]
    argv = [a for s in only for a in ("--only", s)] + ["--json", str(out_json), "--plot", str(out_png)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "lenet3" in printed and "PASS" in printed and "4 checks: 4 passed, 0 failed" in printed
    doc = json.loads(out_json.read_text())
    assert doc["summary"]["total"] == doc["summary"]["passed"] == 4 and doc["summary"]["failed"] == 0
    assert {"jax", "torch", "python"} <= set(doc["versions"])
    ids = [r["id"] for r in doc["results"]]
    assert "lenet3/forward/float64" in ids and "two_layer/trajectory/adam/float32" in ids
    for r in doc["results"]:
        assert set(r) >= {"model", "check", "dtype", "max_abs", "max_rel", "tol", "passed", "per_param", "other"}
        assert r["passed"] is True and r["max_rel"] <= r["tol"]
    adam = next(r for r in doc["results"] if r["id"] == "two_layer/trajectory/adam/float32")
    assert list(adam["per_param"]) == ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]
    assert set(adam["per_param"]["linear1.weight"]) == {"max_abs", "max_rel"}
    png = out_png.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    import matplotlib.image

    assert matplotlib.image.imread(out_png).ndim == 3


def test_cli_exits_1_and_prints_the_errors_when_a_check_fails(monkeypatch, capsys):
    monkeypatch.setattr(precision, "tolerance", lambda dtype, check: -1.0)  # nothing can pass
    assert main(["--only", "two_layer/forward/float64"]) == 1
    printed = capsys.readouterr().out
    assert "FAIL" in printed and "1 checks: 0 passed, 1 failed" in printed
    assert "array output: max_abs" in printed


def test_cli_help_list_and_bad_only(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    assert "--json FILE" in help_text and "(default: 0)" in help_text and "(default: all rows)" in help_text
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.splitlines() == checks.row_ids()
    with pytest.raises(SystemExit) as exc:
        main(["--only", "no such row"])
    assert exc.value.code == 2
