"""parity.compare names the first layer where a port diverges, forward or backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxnets
import parity
from jaxnets import nn
from parity import torch_models as tm
from parity.compare import compare

torch.set_num_threads(1)  # torch and XLA share two cores in this process


def _torch_mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8),
        torch.nn.BatchNorm1d(8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 3),
    )


def _jax_mlp(tanh=None):
    rngs = nnx.Rngs(0)
    return nn.Sequential(
        nn.Linear(6, 8, rngs=rngs),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 8, rngs=rngs),
        tanh or nn.Tanh(),
        nn.Linear(8, 3, rngs=rngs),
    )


X = np.random.default_rng(1).normal(size=(5, 6))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_faithful_port_agrees_at_every_layer(mode):
    report = compare(_torch_mlp(), _jax_mlp(), X, mode=mode)
    assert report.passed, str(report)
    assert [r.name for r in report.rows] == ["0", "1", "2", "3", "4", "5", ""]
    assert all(r.output is not None and r.output_grad is not None for r in report.rows)
    assert set(report.rows[0].param_grads) == {"weight", "bias"}
    if mode == "train":
        assert set(report.buffers) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert "all layers agree" in str(report)


def test_names_the_layer_whose_forward_differs():
    report = compare(_torch_mlp(), _jax_mlp(tanh=nn.Hardtanh()), X)
    assert report.first_divergence[0] == "4"
    assert "its output differs" in report.first_divergence[1]
    assert report.rows[3].output <= report.tol  # the layer before still agrees
    assert "FIRST DIVERGENCE: 4" in str(report)


class _WrongBackwardTanh(nn.Tanh):
    """tanh with a gradient off by 1%: the forward pass agrees, the backward pass does not."""

    def __call__(self, input):
        @jax.custom_vjp
        def f(x):
            return jnp.tanh(x)

        f.defvjp(lambda x: (jnp.tanh(x), x), lambda x, g: (g * (1 - jnp.tanh(x) ** 2) * 1.01,))
        return f(input)


def test_names_the_layer_whose_backward_differs():
    report = compare(_torch_mlp(), _jax_mlp(tanh=_WrongBackwardTanh()), X)
    assert all(r.output <= report.tol for r in report.rows)
    assert report.first_divergence == ("4", "it passes back a wrong gradient (its backward pass)")
    # Layers after it receive the right gradient; layers before it a wrong one.
    assert report.rows[5].output_grad <= report.tol and report.rows[3].output_grad > report.tol


def test_flax_models_compare_through_the_layout_table():
    report = compare(
        tm.Net(),
        jaxnets.LeNet(impl="lax", rngs=nnx.Rngs(0)),
        np.random.default_rng(0).normal(size=(2, 1, 32, 32)),
        jax_inputs=[parity.to_nhwc(np.random.default_rng(0).normal(size=(2, 1, 32, 32)))],
    )
    assert report.passed, str(report)
    names = [r.name for r in report.rows]
    assert {"conv1", "conv2", "fc1", "fc2", "fc3"} <= set(names)
    conv1 = report.rows[names.index("conv1")]
    assert conv1.output is not None and set(conv1.param_grads) == {"weight", "bias"}


def test_refuses_dropout_in_train_mode_and_bad_arguments():
    model = torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.Dropout(0.5))
    port = nn.Sequential(nn.Linear(6, 3, rngs=nnx.Rngs(0)), nn.Dropout(0.5, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="cannot match dropout masks in train mode.*active dropout in: 1"):
        compare(model, port, X, mode="train")
    assert compare(model, port, X, mode="eval").passed
    with pytest.raises(ValueError, match="mode must be 'eval' or 'train'; got 'test'"):
        compare(model, port, X, mode="test")
    with pytest.raises(ValueError, match="dtype must be 'float64' or 'float32'"):
        compare(model, port, X, dtype="bfloat16")


def test_leaves_both_models_unchanged():
    t, j = _torch_mlp(), _jax_mlp()
    t_before = {k: v.clone() for k, v in t.state_dict().items()}
    j_before = {k: np.asarray(v) for k, v in j.state_dict().items()}
    compare(t, j, X, mode="train")
    for k, v in t.state_dict().items():
        assert torch.equal(v, t_before[k]), k
    for k, v in j.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), j_before[k], err_msg=k)
        assert v.dtype == j_before[k].dtype


def test_parity_compare_is_the_function_whatever_the_import_order():
    import parity.compare  # noqa: F401 - binds the submodule, which must not shadow the function

    assert parity.compare is compare


FACTORY = """
import numpy as np
import torch
from flax import nnx
from jaxnets import nn

def make(wrong=False):
    torch.manual_seed(0)
    t = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.GELU(), torch.nn.Linear(5, 2))
    j = nn.Sequential(nn.Linear(4, 5, rngs=nnx.Rngs(0)), nn.GELU("tanh" if wrong else "none"),
                      nn.Linear(5, 2, rngs=nnx.Rngs(0)))
    return {"torch": t, "jax": j, "inputs": [np.random.default_rng(0).normal(size=(3, 4))]}

def wrong():
    return make(wrong=True)

def not_a_dict():
    return 3
"""


def test_command_line_prints_the_table_and_exits_by_the_verdict(tmp_path, capsys):
    from parity.__main__ import main

    path = tmp_path / "port.py"
    path.write_text(FACTORY)
    assert main(["compare", f"{path}:make"]) == 0
    assert "all layers agree" in capsys.readouterr().out
    assert main(["compare", f"{path}:wrong", "--dtype", "float32"]) == 1
    out = capsys.readouterr().out
    assert "FIRST DIVERGENCE: 1: its output differs" in out and "float32" in out
    for spec, message in [
        (f"{path}:not_a_dict", "must return a dict with keys torch, jax and inputs; got int"),
        (f"{path}:missing", "has no attribute 'missing'"),
        ("no_colon", "expected MODULE:FACTORY"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", spec])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
