"""The seeds' PyTorch code as reference models and loops, for parity checks against jaxnets.

Everything here is the tutorials' own code, kept as close to the seed text as
possible (same names, same ops, same statement order); comments mark each
deviation and say why. The deviations have one purpose: let a parity test feed
PyTorch and JAX *identical* data, weights and random choices, and read back
every step's loss instead of a print every 100 steps.

"Neural Networks" tutorial (seeds 000 to 003):

- :class:`Net`: the LeNet ``Net`` (5x5 kernels in seeds 000 to 002, ``kernel_size=3``
  in seed 003). jaxnets counterpart: :class:`jaxnets.LeNet` (NHWC input, HWIO kernels).

"Learning PyTorch with examples" (seed 004, code blocks 1 to 7):

- :func:`numpy_loop` (block 1): ``jaxnets.progression.numpy_manual``.
- :func:`tensor_manual_loop` (block 2): ``jaxnets.progression.jax_manual``.
- :func:`autograd_loop` (block 3): ``jaxnets.progression.jax_autograd``.
- :func:`sequential_manual_loop` (block 4): ``jaxnets.progression.sequential_manual``.
- :func:`optim_loop` with ``Adam`` and :func:`two_layer_sequential` (block 5):
  ``jaxnets.progression.sequential_adam``.
- :func:`optim_loop` with ``SGD`` and :class:`TwoLayerNet` (block 6): ``jaxnets.progression.two_layer_sgd``.
- :func:`optim_loop` with ``SGD(momentum=0.9)``, :class:`DynamicNet` and a ``depths``
  sequence (block 7): ``jaxnets.progression.dynamic_sgd`` with ``depths``.

Models: :func:`two_layer_sequential` (blocks 4 and 5, ``jaxnets.two_layer_sequential``),
:class:`TwoLayerNet` (block 6, ``jaxnets.TwoLayerNet``) and :class:`DynamicNet`
(block 7, ``jaxnets.DynamicNet``). :func:`manual_grads` and :func:`autograd_grads`
return the first step's loss and gradients of blocks 2 and 3, so parity can compare
gradients and not only losses.

Every function copies its array inputs (NumPy, JAX or torch) before use and never
modifies the caller's ``x, y, w1, w2``; the ``model`` and ``optimizer`` arguments are
trained in place, as in the seed.
"""

from __future__ import annotations

import random

import ml_dtypes
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "Net",
    "TwoLayerNet",
    "two_layer_sequential",
    "DynamicNet",
    "numpy_loop",
    "tensor_manual_loop",
    "autograd_loop",
    "manual_grads",
    "autograd_grads",
    "sequential_manual_loop",
    "optim_loop",
]


# -- "Neural Networks" (seeds 000 to 003) -------------------------------------------------------


def _pooled_size(size: int, kernel_size: int) -> int:
    # conv with no padding, then F.max_pool2d(2), which floors odd sizes.
    return (size - kernel_size + 1) // 2


class Net(nn.Module):
    """The tutorial's ``Net``: conv1 -> 6, conv2 -> 16, fc1 -> 120, fc2 -> 84, fc3 -> ``num_classes``.

    The defaults reproduce seeds 000 to 002; ``kernel_size=3`` is seed 003. The seed
    hard-codes ``16 * 5 * 5`` (``16 * 6 * 6`` for 3x3); here the side ``s`` is computed
    from ``kernel_size`` and ``image_size`` the way :func:`jaxnets._lenet.flat_features`
    does (computed independently, so a reference does not trust the code it checks):
    400 for 5x5 on 32x32, 576 for 3x3, 256 for 5x5 on 28x28.

    Args:
      kernel_size: side of both square kernels.
      image_size: side of the square NCHW input images.
      in_channels: input channels (1 in the seed).
      num_classes: outputs of ``fc3`` (10 in the seed).
    """

    def __init__(self, kernel_size: int = 5, image_size: int = 32, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        s = _pooled_size(_pooled_size(image_size, kernel_size), kernel_size)
        if s <= 0:
            raise ValueError(
                f"Net: `image_size={image_size}` is too small for `kernel_size={kernel_size}`: "
                f"two convolutions and 2x2 poolings leave no pixels. Use image_size >= {3 * kernel_size + 1}."
            )
        # 1 input image channel, 6 output channels, 5x5 square convolution
        # kernel
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size)
        self.conv2 = nn.Conv2d(6, 16, kernel_size)
        # an affine operation: y = Wx + b
        self.fc1 = nn.Linear(16 * s * s, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        """Args: x: ``(N, C, H, W)``, channels-first. Returns: ``(N, num_classes)``."""
        # Max pooling over a (2, 2) window
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        # If the size is a square you can only specify a single number
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, self.num_flat_features(x))  # (N, C, H, W) -> (N, C*H*W): torch's flatten order
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x

    def num_flat_features(self, x):
        size = x.size()[1:]  # all dimensions except the batch dimension
        num_features = 1
        for s in size:
            num_features *= s
        return num_features


# -- "Learning PyTorch with examples" (seed 004): models ----------------------------------------


class TwoLayerNet(torch.nn.Module):
    """Block 6: ``linear2(linear1(x).clamp(min=0))``; jaxnets counterpart :class:`jaxnets.TwoLayerNet`."""

    def __init__(self, D_in, H, D_out):
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, H)
        self.linear2 = torch.nn.Linear(H, D_out)

    def forward(self, x):
        h_relu = self.linear1(x).clamp(min=0)
        y_pred = self.linear2(h_relu)
        return y_pred


def two_layer_sequential(D_in, H, D_out) -> torch.nn.Sequential:
    """Blocks 4 and 5: ``Sequential(Linear, ReLU, Linear)``; counterpart :func:`jaxnets.two_layer_sequential`."""
    return torch.nn.Sequential(
        torch.nn.Linear(D_in, H),
        torch.nn.ReLU(),
        torch.nn.Linear(H, D_out),
    )


class DynamicNet(torch.nn.Module):
    """Block 7: ``middle_linear`` reused a random number of times; counterpart :class:`jaxnets.DynamicNet`.

    Deviation: ``forward`` takes an optional ``depth``. With ``depth=None`` it draws
    ``random.randint(0, max_depth)`` from Python's global ``random`` exactly as the
    seed does; a parity test passes the depth instead, so both frameworks see the
    same sequence. ``max_depth`` is the seed's hard-coded 3.
    """

    def __init__(self, D_in, H, D_out, max_depth=3):
        super().__init__()
        self.max_depth = max_depth
        self.input_linear = torch.nn.Linear(D_in, H)
        self.middle_linear = torch.nn.Linear(H, H)
        self.output_linear = torch.nn.Linear(H, D_out)

    def forward(self, x, depth=None):
        if depth is None:
            depth = random.randint(0, self.max_depth)
        # Not in the seed: range() would silently run 0 layers for a negative depth.
        if not 0 <= depth <= self.max_depth:
            raise ValueError(f"DynamicNet: `depth` must be in 0..{self.max_depth}; got {depth!r}.")
        h_relu = self.input_linear(x).clamp(min=0)
        for _ in range(depth):
            h_relu = self.middle_linear(h_relu).clamp(min=0)
        y_pred = self.output_linear(h_relu)
        return y_pred


# -- "Learning PyTorch with examples" (seed 004): the loops -------------------------------------
# Deviations common to every loop: data and weights come from the caller instead of
# randn (so both frameworks can train on identical numbers), copied first so the
# caller's arrays are never modified; the loss of every step is returned instead of
# printed every 100 steps; the seed's `for t in range(500)` becomes `range(steps)`.


def to_numpy(a, dtype=None) -> np.ndarray:
    """A fresh NumPy array holding a copy of ``a`` (NumPy, JAX or torch array): never aliases the caller's buffer.

    A torch bfloat16 tensor becomes an ``ml_dtypes.bfloat16`` array (jax's
    bfloat16, the same bits): NumPy has no bfloat16 of its own. Conjugate and
    negative views are resolved first.

    Raises:
      TypeError or RuntimeError: a tensor with no NumPy form (e.g. sparse).
    """
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        # np.array(tensor, copy=True) warns: torch's __array__ takes no `copy`; .numpy() still shares memory.
        if a.dtype == torch.bfloat16:
            a = a.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            a = a.resolve_conj().resolve_neg().numpy()
    return np.array(a, dtype=dtype, copy=True)


def _tensor(a, dtype: torch.dtype) -> torch.Tensor:
    """A fresh CPU tensor of ``dtype`` holding a copy of ``a``: never aliases the caller's buffer."""
    if isinstance(a, torch.Tensor):
        return a.detach().to(device="cpu", dtype=dtype, copy=True)
    return torch.tensor(to_numpy(a), dtype=dtype)


def _check_steps(steps) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"`steps` must be an int >= 0; got {steps!r}.")


def numpy_loop(x, y, w1, w2, steps: int = 500, lr: float = 1e-6) -> np.ndarray:
    """Block 1: NumPy only, forward and backward by hand, float64.

    Args:
      x: inputs ``(N, D_in)``; y: targets ``(N, D_out)``;
      w1: ``(D_in, H)``; w2: ``(H, D_out)``. Copied and cast to float64.

    Returns:
      ``(steps,)`` float64: the loss before each update.
    """
    _check_steps(steps)
    x, y, w1, w2 = (to_numpy(a, np.float64) for a in (x, y, w1, w2))
    learning_rate = lr
    losses = np.empty(steps)
    for t in range(steps):
        # Forward pass: compute predicted y
        h = x.dot(w1)
        h_relu = np.maximum(h, 0)
        y_pred = h_relu.dot(w2)

        # Compute and print loss
        loss = np.square(y_pred - y).sum()
        losses[t] = loss

        # Backprop to compute gradients of w1 and w2 with respect to loss
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.T.dot(grad_y_pred)
        grad_h_relu = grad_y_pred.dot(w2.T)
        grad_h = grad_h_relu.copy()
        grad_h[h < 0] = 0
        grad_w1 = x.T.dot(grad_h)

        # Update weights
        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
    return losses


def _manual_backward(x, y, w1, w2):
    """Block 2's loop body up to the update: the loss tensor and the hand-written gradients."""
    # Forward pass: compute predicted y
    h = x.mm(w1)
    h_relu = h.clamp(min=0)
    y_pred = h_relu.mm(w2)

    loss = (y_pred - y).pow(2).sum()

    # Backprop to compute gradients of w1 and w2 with respect to loss
    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = x.t().mm(grad_h)
    return loss, grad_w1, grad_w2


def tensor_manual_loop(
    x, y, w1, w2, steps: int = 500, lr: float = 1e-6, dtype: torch.dtype = torch.float64
) -> np.ndarray:
    """Block 2: torch tensors, hand-written backward (``clamp(min=0)``, ``grad_h[h < 0] = 0``).

    Deviation: ``dtype`` defaults to float64 for the sharp parity test; the seed uses
    ``torch.float`` (float32), so pass ``dtype=torch.float32`` to reproduce its prints.

    Args:
      x, y, w1, w2: as in :func:`numpy_loop`; copied into new tensors of ``dtype``.

    Returns:
      ``(steps,)`` float64 NumPy array: ``loss.item()`` before each update.
    """
    _check_steps(steps)
    device = torch.device("cpu")
    x, y, w1, w2 = (_tensor(a, dtype).to(device) for a in (x, y, w1, w2))
    learning_rate = lr
    losses = np.empty(steps)
    for t in range(steps):
        loss, grad_w1, grad_w2 = _manual_backward(x, y, w1, w2)
        losses[t] = loss.item()

        # Update weights using gradient descent
        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
    return losses


def manual_grads(x, y, w1, w2, dtype: torch.dtype = torch.float64):
    """Block 2's first step: the loss and the hand-written gradients, before any update.

    Returns:
      ``(loss, grad_w1, grad_w2)`` as torch tensors of ``dtype``: a scalar,
      ``(D_in, H)`` and ``(H, D_out)`` (the same layout as ``w1`` and ``w2``).
    """
    return _manual_backward(*(_tensor(a, dtype) for a in (x, y, w1, w2)))


def autograd_loop(x, y, w1, w2, steps: int = 500, lr: float = 1e-6, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Block 3: autograd computes the gradients; update by hand under ``no_grad``, then ``grad.zero_()``.

    Deviation: ``dtype`` defaults to float64 (the seed: ``torch.float``), as in
    :func:`tensor_manual_loop`.

    Returns:
      ``(steps,)`` float64 NumPy array: ``loss.item()`` before each update.
    """
    _check_steps(steps)
    x, y = _tensor(x, dtype), _tensor(y, dtype)
    w1, w2 = _tensor(w1, dtype).requires_grad_(True), _tensor(w2, dtype).requires_grad_(True)
    learning_rate = lr
    losses = np.empty(steps)
    for t in range(steps):
        # Forward pass: compute predicted y using operations on Tensors
        y_pred = x.mm(w1).clamp(min=0).mm(w2)

        # Compute and print loss using operations on Tensors.
        loss = (y_pred - y).pow(2).sum()
        losses[t] = loss.item()

        # Use autograd to compute the backward pass.
        loss.backward()

        # Manually update weights using gradient descent. Wrap in torch.no_grad()
        # because weights have requires_grad=True, but we don't need to track this
        # in autograd.
        with torch.no_grad():
            w1 -= learning_rate * w1.grad
            w2 -= learning_rate * w2.grad

            # Manually zero the gradients after updating weights
            w1.grad.zero_()
            w2.grad.zero_()
    return losses


def autograd_grads(x, y, w1, w2, dtype: torch.dtype = torch.float64):
    """Block 3's first step: the loss and the autograd gradients, before any update.

    Returns:
      ``(loss, grad_w1, grad_w2)`` as torch tensors of ``dtype``, as in :func:`manual_grads`.
    """
    x, y = _tensor(x, dtype), _tensor(y, dtype)
    w1, w2 = _tensor(w1, dtype).requires_grad_(True), _tensor(w2, dtype).requires_grad_(True)
    y_pred = x.mm(w1).clamp(min=0).mm(w2)
    loss = (y_pred - y).pow(2).sum()
    loss.backward()
    return loss.detach(), w1.grad, w2.grad


def _param_dtype(model: torch.nn.Module) -> torch.dtype:
    # Not in the seed, whose x and y are created in the default dtype: the data
    # follows the model, so a float64 model trains on float64 data.
    return next(model.parameters()).dtype


def sequential_manual_loop(model: torch.nn.Module, x, y, steps: int = 500, lr: float = 1e-4) -> np.ndarray:
    """Block 4: ``MSELoss(reduction='sum')``, ``model.zero_grad()``, ``param -= lr * param.grad`` by hand.

    Args:
      model: trained in place, e.g. :func:`two_layer_sequential` (any module works).
      x, y: copied into tensors of the model's parameter dtype.

    Returns:
      ``(steps,)`` float64 NumPy array: the loss before each update.
    """
    _check_steps(steps)
    dtype = _param_dtype(model)
    x, y = _tensor(x, dtype), _tensor(y, dtype)
    loss_fn = torch.nn.MSELoss(reduction="sum")
    learning_rate = lr
    losses = np.empty(steps)
    for t in range(steps):
        # Forward pass: compute predicted y by passing x to the model.
        y_pred = model(x)

        # Compute and print loss.
        loss = loss_fn(y_pred, y)
        losses[t] = loss.item()

        # Zero the gradients before running the backward pass.
        model.zero_grad()

        # Backward pass: compute gradient of the loss with respect to all the learnable
        # parameters of the model.
        loss.backward()

        # Update the weights using gradient descent.
        with torch.no_grad():
            for param in model.parameters():
                param -= learning_rate * param.grad
    return losses


def optim_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x,
    y,
    steps: int = 500,
    depths=None,
    set_to_none: bool = True,
) -> np.ndarray:
    """Blocks 5 to 7: forward, ``MSELoss(reduction='sum')``, ``optimizer.zero_grad()``, backward, ``step()``.

    Args:
      model: trained in place: :func:`two_layer_sequential` with ``Adam`` (block 5),
        :class:`TwoLayerNet` with ``SGD`` (block 6), :class:`DynamicNet` with
        ``SGD(momentum=0.9)`` (block 7).
      optimizer: built on ``model.parameters()``.
      x, y: copied into tensors of the model's parameter dtype.
      depths: if given, step ``t`` calls ``model(x, int(depths[t]))`` instead of
        ``model(x)``, so a :class:`DynamicNet` follows a given depth sequence;
        needs at least ``steps`` entries.
      set_to_none: passed to ``optimizer.zero_grad``. It matters for
        :class:`DynamicNet`: after a depth-0 step ``middle_linear`` has no gradient
        with True (torch >= 2.0's default: SGD skips it, momentum included) and a
        zero gradient with False (the seed's torch, where ``zero_grad`` zeroed:
        momentum keeps moving it, as an optax optimizer fed zero gradients does).

    Returns:
      ``(steps,)`` float64 NumPy array: the loss before each update.
    """
    _check_steps(steps)
    if depths is not None and len(depths) < steps:
        raise ValueError(f"`depths` must hold a depth for each of the {steps} steps; got {len(depths)}.")
    dtype = _param_dtype(model)
    x, y = _tensor(x, dtype), _tensor(y, dtype)
    criterion = torch.nn.MSELoss(reduction="sum")
    losses = np.empty(steps)
    for t in range(steps):
        # Forward pass: Compute predicted y by passing x to the model
        y_pred = model(x) if depths is None else model(x, int(depths[t]))

        # Compute and print loss
        loss = criterion(y_pred, y)
        losses[t] = loss.item()

        # Zero gradients, perform a backward pass, and update the weights.
        optimizer.zero_grad(set_to_none=set_to_none)
        loss.backward()
        optimizer.step()
    return losses
