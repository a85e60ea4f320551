"""pytorch/examples ``mnist/main.py``'s ``Net``, ported line for line with :mod:`jaxnets.nn`.

Source: https://github.com/pytorch/examples/blob/main/mnist/main.py (class ``Net``;
trained there with ``F.nll_loss``, ``optim.Adadelta(lr=1.0)`` and
``StepLR(step_size=1, gamma=0.7)``). Torch-mirror family: channels-first input,
torch's names and layouts, so ``Net().state_dict()`` from torch loads as it is.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxnets import nn
from jaxnets.nn import functional as F


class Net(nn.Module):
    """The MNIST example's network: two 3x3 convolutions (32, 64), max-pool, dropout, two linear layers.

    What changed from torch: ``forward`` is ``__call__``, the layers take
    ``rngs`` (weights and dropout masks), ``torch.flatten(x, 1)`` is a reshape.

    Args:
      rngs: draws the weights (torch's default laws) and the dropout masks.

    Call: ``x`` of shape ``(N, 1, 28, 28)`` -> log-probabilities ``(N, 10)``.
    """

    def __init__(self, *, rngs: nnx.Rngs):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1, rngs=rngs)
        self.conv2 = nn.Conv2d(32, 64, 3, 1, rngs=rngs)
        self.dropout1 = nn.Dropout(0.25, rngs=rngs)
        self.dropout2 = nn.Dropout(0.5, rngs=rngs)
        self.fc1 = nn.Linear(9216, 128, rngs=rngs)
        self.fc2 = nn.Linear(128, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(
                f"ports.mnist.Net expects images of shape (batch, 1, 28, 28) (fc1 reads 64 * 12 * 12 = 9216 "
                f"features); got {tuple(x.shape)}. Add the channel axis with x[:, None] if it is missing."
            )
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = x.reshape(x.shape[0], -1)  # torch.flatten(x, 1): (N, 64, 12, 12) -> (N, 9216), C-major as torch
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output
