"""pytorch/examples' MNIST network: what ``jaxnets train --model mnist_net`` trains, on digits or MNIST.

The model is ``Net`` of pytorch/examples ``mnist/main.py`` as ported
(:class:`jaxnets.ports._mnist.Net`), unchanged: two 3x3 convolutions (32 and
64 channels), a max-pool, dropout 0.25, a linear layer of 128, dropout 0.5,
a linear layer of 10 and ``log_softmax``. It takes channels-first
``(N, 1, 28, 28)`` images and returns log-probabilities; the example trains
it with ``F.nll_loss`` of them, as the step here does.

The data are the ones LeNet trains on (``digits`` or ``mnist:DIR``): float32
``(N, 32, 32, 1)`` images in [0, 1], channels-last, the digit in the central
28x28 with a 2-pixel black border (:func:`jaxnets.training.data.fit`).
:func:`to_input` makes them the example's input inside the compiled step:
the border cropped off (an MNIST image comes back exactly as its 28x28
pixels / 255), the channel axis moved first, and each pixel normalised as
torchvision's ``Normalize((0.1307,), (0.3081,))`` after ``ToTensor()`` in
the example: ``(x - MEAN) / STD`` with MNIST's fixed training-set mean and
standard deviation, whatever the data.

Training steps run the model in train mode (its two dropouts draw masks from
the ``nnx.Rngs`` the model holds, whose key and count are model state that
each step advances and each checkpoint keeps); the test evaluation runs it in
eval mode (no dropout), as ``model.train()`` / ``model.eval()`` around the
example's loops.
"""

from __future__ import annotations

MEAN = 0.1307
"""MNIST's training-set pixel mean in [0, 1] (pytorch/examples ``mnist/main.py``'s ``Normalize``; fixed)."""
STD = 0.3081
"""MNIST's training-set pixel standard deviation in [0, 1] (the same ``Normalize``; fixed)."""


def to_input(images):
    """The data loader's ``(N, 32, 32, 1)`` images in [0, 1] -> the example's normalised ``(N, 1, 28, 28)``.

    Crops the 2-pixel border the loader adds around a 28x28 digit, moves the channel axis first and applies
    ``(x - MEAN) / STD`` (torchvision's ``Normalize((0.1307,), (0.3081,))``).
    """
    import jax.numpy as jnp

    x = jnp.transpose(images[:, 2:30, 2:30, :], (0, 3, 1, 2))  # (N, 28, 28, 1) -> (N, 1, 28, 28)
    return (x - jnp.asarray(MEAN, x.dtype)) / jnp.asarray(STD, x.dtype)


def model_spec(model) -> dict:
    """The JSON description of a run's MNIST network, with the input it expects."""
    return {
        "model": "mnist_net",
        "num_classes": int(model.fc2.out_features),
        "input": "float32 (N, 32, 32, 1) in [0, 1], cropped to (N, 1, 28, 28) and normalised in the model's step "
        "as (x - mean) / std",
        "mean": MEAN,
        "std": STD,
    }


def build_model(seed: int):
    """pytorch/examples' MNIST ``Net``, ported, with weights and dropout keys from ``nnx.Rngs(seed)``; train mode."""
    from flax import nnx

    from ..ports._mnist import Net

    return Net(rngs=nnx.Rngs(seed))


def nll_loss(log_probs, labels, reduction="mean"):
    """The run's loss, the example's ``F.nll_loss`` of the log-probabilities (imported here: no JAX at import)."""
    from ..nn import functional

    return functional.nll_loss(log_probs, labels, reduction=reduction)
