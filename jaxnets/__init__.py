"""jaxnets: PyTorch's tutorial networks in JAX, Flax NNX and optax.

Models are channels-last and keep PyTorch's attribute names, so weights map one
to one (the ``parity`` package converts layouts and proves equality).
"""

from . import functional as functional
from . import losses as losses
from . import optim as optim
from ._dynamic import DynamicNet as DynamicNet
from ._init import torch_bias_init as torch_bias_init
from ._init import torch_kernel_init as torch_kernel_init
from ._lenet import LeNet as LeNet
from ._two_layer import Sequential as Sequential
from ._two_layer import TwoLayerNet as TwoLayerNet
from ._two_layer import two_layer_sequential as two_layer_sequential
from .summary import summary as summary
from .train import Trainer as Trainer

__version__ = "0.1.0"
