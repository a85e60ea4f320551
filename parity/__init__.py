"""parity: prove that jaxnets computes what the PyTorch tutorials compute, and port weights between them.

- :func:`load_torch_state_dict` / :func:`to_torch_state_dict`: weights (and
  gradients, and any state shaped like the parameters) in both directions,
  through one layout table (:mod:`jaxnets.torch_layout`; ``from parity.layout import ...`` re-exports it).
- :func:`optimizer_state_from_torch` / :func:`load_optimizer_state_into_torch`:
  SGD momentum, Adam moments and step counts, so a run continues across frameworks.
- :mod:`parity.torch_models`: the seeds' PyTorch code as reference models.
- :mod:`parity.precision`: the tolerances of every check, defined once.

``python -m parity`` runs the whole check matrix. This package imports torch;
``jaxnets`` never does.
"""

from .convert import StateDictMismatch as StateDictMismatch
from .convert import load_torch_state_dict as load_torch_state_dict
from .convert import state_from_torch as state_from_torch
from .convert import to_torch_state_dict as to_torch_state_dict
from .layout import Entry as Entry
from .layout import layout as layout
from .layout import to_nchw as to_nchw
from .layout import to_nhwc as to_nhwc
from .optim_state import load_optimizer_state_into_torch as load_optimizer_state_into_torch
from .optim_state import optimizer_state_from_torch as optimizer_state_from_torch
