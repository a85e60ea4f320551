"""jaxnets train's --optimizer, --weight-decay, --scheduler and --clip-grad-norm, in-process through the CLI.

Runs are tiny (digits, batch 512: 2 steps per epoch) so that the file adds a few seconds to ``make test``.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxnets import cli, optim
from jaxnets.training import checkpoint
from jaxnets.training import digits as training

torch.set_num_threads(1)  # torch and XLA share two cores in this process

TINY = ["--data", "digits", "--batch-size", "512", "--seed", "1", "--no-progress"]
STEPS_PER_EPOCH = 2  # 1,437 training digits // 512


def run_cli(*argv) -> int:
    return cli.main([str(a) for a in argv])


def torch_lrs(make_scheduler, lr: float, steps: int) -> list[float]:
    """torch's ``get_last_lr()[0]`` after 0, 1, ..., ``steps`` calls of ``scheduler.step()``."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, momentum=0.9)
    scheduler = make_scheduler(opt)
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(steps):
        opt.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


@pytest.mark.slow  # three whole training runs (about 11 s)
def test_resume_continues_the_schedule_where_it_stopped(tmp_path, capsys):
    """A run with a scheduler, clipping and weight decay, stopped after 2 epochs and resumed: the schedule's step
    count lives in the optimizer state, which the checkpoint holds, so epoch 3 trains with torch's StepLR lr of
    epoch 3 and every count in the state is 3 epochs' steps (a restarted schedule would say 1 epoch's).

    test_training's resume test shows a resumed optimizer state ends bit-identical to an uninterrupted run.
    """
    out = tmp_path / "run"
    setting = ["--optimizer", "sgd", "--lr", "0.05", "--scheduler", "steplr:step_size=1,gamma=0.5",
               "--clip-grad-norm", "1.0", "--weight-decay", "1e-3", *TINY]  # fmt: skip
    assert run_cli("train", "--out", out, "--epochs", "2", *setting) == 0
    assert run_cli("train", "--out", out, "--resume", "--epochs", "3", "--no-progress") == 0
    printed = capsys.readouterr().out
    assert "after epoch 2 of 3" in printed and "lr 0.0125" in printed
    state, meta = checkpoint.restore(out / "checkpoints", 3)
    counts = [int(v) for p, v in jax.tree_util.tree_leaves_with_path(state) if "count" in jax.tree_util.keystr(p)]
    assert counts and set(counts) == {3 * STEPS_PER_EPOCH}
    expected = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5), 0.05, 2)
    assert [h["lr"] for h in meta["history"]] == expected == [0.05, 0.025, 0.0125]
    assert all(np.isfinite(h["train_loss"]) for h in meta["history"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["scheduler"] == "StepLR:gamma=0.5,step_size=1"
    assert metrics["config"]["clip_grad_norm"] == 1.0 and metrics["config"]["weight_decay"] == 1e-3


@pytest.mark.slow  # whole training runs (about 5 s)
def test_onecyclelr_steps_per_batch_and_a_longer_resume_is_refused(tmp_path, capsys):
    """OneCycleLR steps after every batch, over the whole run (torch's lrs); it spans the run, so a resume with more
    epochs would change every lr already used, and is refused, the run untouched."""
    out = tmp_path / "run"
    assert run_cli("train", "--out", out, "--epochs", "3", "--optimizer", "adam", "--lr", "0.01",
                   "--scheduler", "onecyclelr:pct_start=0.5", *TINY) == 0  # fmt: skip
    history = json.loads((out / "metrics.json").read_text())["history"]
    total = 3 * STEPS_PER_EPOCH
    expected = torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.01, total, pct_start=0.5), 0.01, total - 1)
    assert [h["lr"] for h in history] == expected[::STEPS_PER_EPOCH]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert run_cli("train", "--out", out, "--resume", "--epochs", "4", "--no-progress") == 1
    assert "OneCycleLR spans the run's 3 epochs" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", list(training.OPTIMIZERS))
def test_every_offered_optimizer_is_torchs_with_the_given_weight_decay(name):
    """The transformation ``jaxnets train`` builds is jaxnets.optim's optimizer of that name, with its options."""
    factory, options, lr = training.OPTIMIZERS[name]
    wd = None if name == "rprop" else 0.25
    config = training.TrainConfig(optimizer=name, weight_decay=wd, clip_grad_norm=0.5)
    params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([0.5])}
    grads = {"w": jnp.array([0.3, 0.1, -0.2]), "b": jnp.array([2.0])}
    tx = training.build_optimizer(config, steps_per_epoch=STEPS_PER_EPOCH)
    reference = optim.clip_grad_norm(0.5)
    clipped, _ = reference.update(grads, reference.init(params))
    expected_tx = factory(lr, **options, **({} if wd is None else {"weight_decay": wd}))
    state, expected_state = tx.init(params), expected_tx.init(params)
    for _ in range(2):
        got, state = tx.update(grads, state, params)
        want, expected_state = expected_tx.update(clipped, expected_state, params)
        for k in params:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=0, err_msg=f"{name} {k}")
    assert float(optim.total_norm(state)) == pytest.approx(float(jnp.sqrt(0.09 + 0.01 + 0.04 + 4.0)), rel=1e-6)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--optimizer", "lbfgs"], ["'lbfgs' is not offered", "closure", "Choose one of sgd", "adafactor"]),
        (["--optimizer", "muon"], ["'muon' is not offered", "2-D", "param_groups"]),
        (["--optimizer", "adamm"], ["'adamm' is not offered", "Choose one of sgd, adam, adamw"]),
        (["--scheduler", "steplr"], ["StepLR needs step_size", "steplr:step_size=VALUE"]),
        (["--scheduler", "steplr:step_size=0"], ["`step_size` got 0", "integer >= 1"]),
        (["--scheduler", "steplr:gama=0.5"], ["StepLR has no argument 'gama'", "lr, step_size, gamma"]),
        (["--scheduler", "steplr:step_size"], ["'step_size' is not ARG=VALUE"]),
        (["--scheduler", "lambdalr"], ["unknown scheduler 'lambdalr'", "Python functions", "OneCycleLR"]),
        (["--scheduler", "cosineannealinglr:T_max=4,steps_per_epoch=3"], ["steps_per_epoch is set by jaxnets"]),
        (["--scheduler", "onecyclelr", "--optimizer", "nadam"], ["cycles the momentum", "cycle_momentum=False"]),
        (["--weight-decay", "0.1", "--optimizer", "rprop"], ["rprop has no weight decay"]),
        (["--clip-grad-norm", "-1"], ["clip_grad_norm must be a number >= 0; got -1.0"]),
        (["--optimizer", "sgd", "--weight-decay", "-0.5"], ["weight_decay must be a number >= 0"]),
    ],
    ids=lambda v: "-".join(v).replace("--", "") if isinstance(v, list) and v[0].startswith("--") else None,
)
def test_bad_optimizer_settings_are_refused_before_anything_is_written(flags, message, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        run_cli("train", "--out", out, *flags, *TINY)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for part in message:
        assert part in err, err
    assert not out.exists()
