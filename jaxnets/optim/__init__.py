"""Optimizers that take the same steps as ``torch.optim``, as optax transformations.

Each function has the argument names and defaults of its ``torch.optim``
counterpart (torch 2.13, single-tensor algorithm, ``maximize`` included) and
returns an ``optax.GradientTransformation``. Where an optax alias already
computes torch's update it is returned, configured to match; where none does
(SGD dampening, AMSGrad, Adagrad, NAdam, RAdam, ASGD, Rprop, Adafactor, Muon) a small transform
with torch-named state fills the gap. ``lr`` may be a number or an optax
schedule ``count -> lr`` (torch's lr of step ``t``, from 1, at ``count = t - 1``).
``lbfgs`` is the exception: torch's step calls
the loss many times (its closure), so it returns an :class:`LBFGS` whose
``step(params, state, value_and_grad_fn)`` does the same.
``SparseAdam`` is not ported: JAX has no sparse gradients, so its lazy update
cannot be matched. ``param_groups`` gives torch's parameter groups and
``clip_grad_norm``/``clip_grad_value`` torch's gradient clipping. Use them like any optax optimizer::

    optimizer = jaxnets.optim.sgd(lr=0.01, momentum=0.9)  # torch.optim.SGD(net.parameters(), ...)
    opt_state = optimizer.init(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)

or pass them to ``flax.nnx.Optimizer(model, optimizer, wrt=nnx.Param)``.
Hyperparameters are Python or NumPy numbers. They are validated, choose the chain
and are converted to Python floats (which JAX keeps weakly typed, so float32 and
bfloat16 params keep their dtype) when the optimizer is built; they cannot be
traced values, so ``optax.inject_hyperparams`` does not apply.
"""

from . import lr_scheduler as lr_scheduler
from ._adadelta import adadelta as adadelta
from ._adafactor import TorchAdafactorState as TorchAdafactorState
from ._adafactor import adafactor as adafactor
from ._adafactor import scale_by_torch_adafactor as scale_by_torch_adafactor
from ._adagrad import TorchAdagradState as TorchAdagradState
from ._adagrad import adagrad as adagrad
from ._adagrad import scale_by_torch_adagrad as scale_by_torch_adagrad
from ._adam import TorchAmsgradState as TorchAmsgradState
from ._adam import adam as adam
from ._adam import adamw as adamw
from ._adam import scale_by_torch_amsgrad as scale_by_torch_amsgrad
from ._adamax import adamax as adamax
from ._asgd import TorchASGDState as TorchASGDState
from ._asgd import asgd as asgd
from ._asgd import asgd_averaged_params as asgd_averaged_params
from ._asgd import scale_by_torch_asgd as scale_by_torch_asgd
from ._clip import ClipGradNormState as ClipGradNormState
from ._clip import clip_grad_norm as clip_grad_norm
from ._clip import clip_grad_value as clip_grad_value
from ._clip import get_total_norm as get_total_norm
from ._clip import total_norm as total_norm
from ._groups import param_groups as param_groups
from ._lbfgs import LBFGS as LBFGS
from ._lbfgs import LBFGSState as LBFGSState
from ._lbfgs import lbfgs as lbfgs
from ._muon import TorchMuonState as TorchMuonState
from ._muon import muon as muon
from ._muon import zeropower_via_newtonschulz as zeropower_via_newtonschulz
from ._nadam import TorchNAdamState as TorchNAdamState
from ._nadam import nadam as nadam
from ._nadam import scale_by_torch_nadam as scale_by_torch_nadam
from ._radam import TorchRAdamState as TorchRAdamState
from ._radam import radam as radam
from ._radam import scale_by_torch_radam as scale_by_torch_radam
from ._rmsprop import rmsprop as rmsprop
from ._rprop import TorchRpropState as TorchRpropState
from ._rprop import rprop as rprop
from ._rprop import scale_by_torch_rprop as scale_by_torch_rprop
from ._sgd import DampenedTraceState as DampenedTraceState
from ._sgd import dampened_trace as dampened_trace
from ._sgd import sgd as sgd

__all__ = [
    "ClipGradNormState",
    "clip_grad_norm",
    "clip_grad_value",
    "get_total_norm",
    "lr_scheduler",
    "param_groups",
    "total_norm",
    "DampenedTraceState",
    "TorchAdagradState",
    "TorchAmsgradState",
    "adagrad",
    "adam",
    "adamw",
    "dampened_trace",
    "rmsprop",
    "scale_by_torch_adagrad",
    "scale_by_torch_amsgrad",
    "sgd",
    "TorchASGDState",
    "TorchNAdamState",
    "TorchRAdamState",
    "TorchRpropState",
    "adadelta",
    "adafactor",
    "LBFGS",
    "LBFGSState",
    "lbfgs",
    "TorchMuonState",
    "muon",
    "zeropower_via_newtonschulz",
    "TorchAdafactorState",
    "scale_by_torch_adafactor",
    "adamax",
    "asgd",
    "asgd_averaged_params",
    "nadam",
    "radam",
    "rprop",
    "scale_by_torch_asgd",
    "scale_by_torch_nadam",
    "scale_by_torch_radam",
    "scale_by_torch_rprop",
]
