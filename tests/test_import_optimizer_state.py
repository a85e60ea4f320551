"""`jaxnets import WEIGHTS.pt --optimizer-state OPT.pt`: a run started in torch resumes in `jaxnets train`.

torch trains the tutorial Net K steps with Adam and saves both state_dicts; the
import must give exactly torch's moments (float32, bit for bit, in jaxnets'
layouts) and step count, and `jaxnets train --resume` must continue that count
(one more epoch: K + steps per epoch, not a fresh Adam's steps per epoch).
"""

import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

import parity
from jaxnets import checkpoint, cli, data, training
from parity import torch_models as tm

torch.set_num_threads(1)
K = 5
REPO = Path(__file__).resolve().parents[1]


def _torch_run(tmp_path, make_opt):
    torch.manual_seed(0)
    net = tm.Net()
    opt = make_opt(net.parameters())
    x, y = torch.randn(16, 1, 32, 32), torch.randint(0, 10, (16,))
    for _ in range(K):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    return net, opt


def _opt_state(run: Path, config: training.TrainConfig, step=None):
    model = training.build_model({"model": "lenet", "image_size": 32})
    from flax import nnx

    like = {
        "params": nnx.to_pure_dict(nnx.state(model, nnx.Param)),
        "opt_state": training.build_optimizer(config, steps_per_epoch=1).init(nnx.state(model, nnx.Param)),
    }
    state, meta = checkpoint.restore(run / training.CHECKPOINTS, step, like=jax.tree.map(np.asarray, like))
    return state["opt_state"], meta


def test_a_torch_adam_run_resumes_in_jaxnets_train_with_its_optimizer_state(tmp_path, capsys):
    net, opt = _torch_run(tmp_path, lambda p: torch.optim.Adam(p, lr=2e-3))
    run = tmp_path / "run"
    rc = cli.main(["import", str(tmp_path / "net.pt"), "--optimizer-state", str(tmp_path / "opt.pt"),
                   "--out", str(run), "--optimizer", "adam", "--lr", "2e-3", "--epochs", "1"])  # fmt: skip
    assert rc == 0
    config = training.TrainConfig(optimizer="adam", lr=2e-3, epochs=1)
    imported, meta = _opt_state(run, config)
    assert meta["config"] == config.to_json() and meta["epoch"] == 0
    adam = imported[0]
    assert int(adam.count) == K
    torch_state = opt.state_dict()["state"]
    names = [n for n, _ in net.named_parameters()]
    for field, key in (("mu", "exp_avg"), ("nu", "exp_avg_sq")):
        ours = parity.to_torch_state_dict(getattr(adam, field))  # back in torch's layout: an exact copy
        for i, name in enumerate(names):
            theirs = torch_state[i][key]
            assert ours[name].dtype == theirs.dtype == torch.float32
            assert torch.equal(ours[name], theirs), (field, name)

    capsys.readouterr()
    assert cli.main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    steps_per_epoch = data.num_batches(len(data.load("digits")[0]), config.batch_size, drop_last=True)
    resumed, meta = _opt_state(run, config)
    assert meta["epoch"] == 1
    assert int(resumed[0].count) == K + steps_per_epoch  # continued, not reset to a fresh Adam's count


def test_optimizer_state_of_other_hyperparameters_or_settings_is_refused(tmp_path, capsys):
    _torch_run(tmp_path, lambda p: torch.optim.AdamW(p, lr=2e-3))
    base = ["import", str(tmp_path / "net.pt"), "--out", str(tmp_path / "run")]
    state = ["--optimizer-state", str(tmp_path / "opt.pt")]
    cases = {
        # torch's AdamW state read as jaxnets train's adam: its decoupled weight decay and lr differ
        ("--optimizer", "adam"): r"decoupled_weight_decay True in the file, False here",
        ("--optimizer", "adamw"): r"lr 0.002 in the file, 0.001 here",
        ("--optimizer", "sgd", "--lr", "2e-3"): r"weight_decay 0.01 in the file, 0 here",
        ("--optimizer", "adafactor"): r"converts the state of sgd, adam, .* not adafactor",
    }
    for flags, message in cases.items():
        with pytest.raises(SystemExit):
            cli.main([*base, *state, *flags])
        err = capsys.readouterr().err
        assert re.search(message, err), (flags, err)
        assert not (tmp_path / "run").exists()  # nothing written
    with pytest.raises(SystemExit):
        cli.main([*base, "--lr", "2e-3"])
    assert "--lr describes the run of --optimizer-state" in capsys.readouterr().err
    assert cli.main([*base, *state, "--optimizer", "adamw", "--lr", "2e-3"]) == 0


def test_optimizer_state_conversion_leaves_torch_out():
    code = (
        "import sys, jaxnets.interop.optim_state, jaxnets.training; assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", list(training.TORCH_OPTIMIZERS))
def test_every_offered_optimizers_state_is_imported_exactly(tmp_path, name):
    """Each optimizer jaxnets train offers (less adafactor), at its jaxnets train settings: torch's state, exactly.

    Checked by parity's other direction: the imported state written into a fresh torch
    optimizer gives back every tensor torch saved, bit for bit (optax keeps no step count
    for RMSprop and Adadelta, and torch's does not enter their update).
    """
    factory, options, lr = training.OPTIMIZERS[name]
    torch_cls = getattr(torch.optim, training.TORCH_OPTIMIZERS[name])
    net, opt = _torch_run(tmp_path, lambda p: torch_cls(p, lr=lr, **options))
    run = tmp_path / "run"
    assert cli.main(["import", str(tmp_path / "net.pt"), "--optimizer-state", str(tmp_path / "opt.pt"),
                     "--out", str(run), "--optimizer", name]) == 0  # fmt: skip
    imported, _ = _opt_state(run, training.TrainConfig(optimizer=name))
    fresh = torch_cls(net.parameters(), lr=lr, **options)
    parity.load_optimizer_state_into_torch(imported, fresh, net)
    saved, back = opt.state_dict()["state"], fresh.state_dict()["state"]
    assert saved.keys() == back.keys()
    for i in saved:
        keys = set(saved[i]) - ({"step"} if name in ("rmsprop", "adadelta") else set())
        assert keys <= set(back[i]), (i, keys, set(back[i]))
        for key in keys:
            assert torch.equal(torch.as_tensor(back[i][key]), torch.as_tensor(saved[i][key])), (i, key)
