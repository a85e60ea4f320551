"""parity.check_init tells the same initial law from a different one."""

import math

import pytest
import torch

import jaxnets
import parity
from jaxnets import nn
from parity import torch_models as tm


@pytest.mark.parametrize(
    "torch_cls, jax_cls, args",
    [
        (torch.nn.Linear, nn.Linear, (20, 30)),
        (torch.nn.Conv2d, nn.Conv2d, (3, 8, 3)),
        (torch.nn.Conv1d, nn.Conv1d, (4, 6, 5)),
        (torch.nn.Bilinear, nn.Bilinear, (5, 6, 7)),
        (torch.nn.BatchNorm2d, nn.BatchNorm2d, (6,)),
        (torch.nn.LayerNorm, nn.LayerNorm, (12,)),
        (torch.nn.PReLU, nn.PReLU, (3,)),
    ],
)
def test_jaxnets_nn_layers_draw_torchs_initial_laws(torch_cls, jax_cls, args):
    report = parity.check_init(torch_cls, jax_cls, *args)
    assert report.passed, str(report)
    assert [r.name for r in report.rows] == list(torch_cls(*args).state_dict())


def test_flax_lenet_compares_in_torchs_names():
    report = parity.check_init(tm.Net, lambda rngs: jaxnets.LeNet(rngs=rngs), draws=2)
    assert report.passed, str(report)
    assert [r.name for r in report.rows][:2] == ["conv1.weight", "conv1.bias"]


class _WideLinear(nn.Linear):
    """A port with the classic mistake: the bound sqrt(3) times too wide (kaiming_uniform with a=0 gain 1)."""

    def __init__(self, *args, rngs, **kwargs):
        super().__init__(*args, rngs=rngs, **kwargs)
        self.weight[...] = self.weight[...] * math.sqrt(3)


def test_a_wrong_bound_is_caught():
    report = parity.check_init(torch.nn.Linear, _WideLinear, 20, 30)
    assert not report.passed
    failed = [r.name for r in report.rows if not r.passed]
    assert failed == ["weight"]
    assert "DIFFERENT LAW" in str(report)


def test_a_wrong_constant_is_caught_and_names_must_match():
    class OnesBias(nn.LayerNorm):
        def __init__(self, *args, rngs, **kwargs):
            super().__init__(*args, **kwargs)
            self.bias[...] = self.bias[...] + 1

    report = parity.check_init(torch.nn.LayerNorm, OnesBias, 8)
    assert [r.name for r in report.rows if not r.passed] == ["bias"]
    with pytest.raises(ValueError, match="the names must be the same"):
        parity.check_init(torch.nn.Linear, lambda *a, rngs: nn.Linear(*a, bias=False, rngs=rngs), 4, 3)
    with pytest.raises(ValueError, match="draws must be >= 1"):
        parity.check_init(torch.nn.Linear, nn.Linear, 4, 3, draws=0)
