# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The LeNet tutorial, in PyTorch and in jaxnets
#
# PyTorch's "Neural Networks" tutorial (the LeNet `Net`, its forward and backward pass, `MSELoss`,
# the hand-written SGD update and `torch.optim`), step by step. Each step shows the tutorial's
# PyTorch code (left, or first on a narrow screen) beside its jaxnets counterpart (right), and both outputs.
# The PyTorch code is the tutorial's, updated where today's PyTorch requires it (no `Variable`;
# `torch.arange` gives integers, so the target is made float).
#
# The jaxnets net gets the PyTorch net's weights (`parity.convert.load_torch_state_dict` converts the
# layouts), so both columns compute with the same numbers, and a line after each step prints the
# largest difference between them. This page is a jupytext script (`docs/tutorials/lenet.py`) executed
# at every build of the documentation: every output below comes from that run. `python -m jaxnets.tutorial`
# walks through the same steps on the command line, without PyTorch.

# %%
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from flax import nnx

import jaxnets
from jaxnets.models import format_chain, op_chain
from parity.convert import load_torch_state_dict

torch.manual_seed(0)
torch.set_num_threads(1)  # JAX runs in this process too: two thread pools on few cores slow both down


def largest_difference(t, j):
    """The largest absolute difference between a torch tensor and a JAX array of the same layout."""
    return float(np.max(np.abs(t.detach().numpy() - np.asarray(j))))


# %% [markdown]
# ## Define the network


# %% tags=["torch"]
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # 1 input image channel, 6 output channels, 5x5 square convolution kernel
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        # an affine operation: y = Wx + b
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        # Max pooling over a (2, 2) window
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        # If the size is a square you can only specify a single number
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, self.num_flat_features(x))
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


net = Net()
print(net)

# %% tags=["jax"]
jnet = jaxnets.LeNet(kernel_size=5, rngs=nnx.Rngs(0))
# The torch net's weights, in Flax layouts: HWIO kernels,
# (in, out) linear kernels, fc1's rows in JAX's flatten order.
load_torch_state_dict(jnet, net.state_dict())
print(jaxnets.summary(jnet))

# %% [markdown]
# ## The learnable parameters
#
# Ten arrays in both; the first convolution kernel is OIHW in PyTorch and HWIO in Flax.

# %% tags=["torch"]
params = list(net.parameters())
print(len(params))
print(params[0].size())  # conv1's .weight

# %% tags=["jax"]
graphdef, jparams = nnx.split(jnet, nnx.Param)
print(len(jax.tree.leaves(jparams)))
print(jnet.conv1.kernel.shape)  # conv1's kernel, HWIO

# %% [markdown]
# ## Forward pass on a random 32x32 image
#
# PyTorch's input is channels-first `(N, C, H, W)`, jaxnets' channels-last `(N, H, W, C)`.

# %% tags=["torch"]
input = torch.randn(1, 1, 32, 32)
out = net(input)
print(out)

# %% tags=["jax"]
# (N, C, H, W) -> (N, H, W, C), copied: jnp.asarray could share torch's memory
x = jnp.array(input.numpy().transpose(0, 2, 3, 1))
jout = jnet(x)
print(jout)

# %%
print("largest difference between the outputs:", largest_difference(out, jout))

# %% [markdown]
# ## Backward pass with a random gradient
#
# `out.backward(v)` computes a vector-Jacobian product; in JAX that is `jax.vjp`. JAX keeps no
# `.grad` buffers: gradients are values returned by a function of the parameters.

# %% tags=["torch"]
net.zero_grad()
cotangent = torch.randn(1, 10)
out.backward(cotangent)
print(net.conv1.bias.grad)


# %% tags=["jax"]
def forward(p):
    return nnx.merge(graphdef, p)(x)


_, vjp_fn = jax.vjp(forward, jparams)
(vjp_grads,) = vjp_fn(jnp.array(cotangent.numpy()))
print(vjp_grads["conv1"]["bias"][...])

# %%
print("largest difference:", largest_difference(net.conv1.bias.grad, vjp_grads["conv1"]["bias"][...]))

# %% [markdown]
# ## Loss function

# %% tags=["torch"]
output = net(input)
target = torch.arange(1, 11, dtype=torch.float32).view(1, -1)
criterion = nn.MSELoss()
loss = criterion(output, target)
print(loss)

# %% tags=["jax"]
jtarget = jnp.arange(1, 11, dtype=jnp.float32).reshape(1, -1)


def loss_of(p):
    # jax.jit names the loss in the jaxpr, so op_chain shows "mse_loss"
    return jax.jit(jaxnets.losses.mse_loss)(nnx.merge(graphdef, p)(x), jtarget)


jloss = loss_of(jparams)
print(jloss)

# %%
print("difference:", abs(loss.item() - float(jloss)))

# %% [markdown]
# ## The computation graph
#
# PyTorch records the graph as it runs (`grad_fn`); JAX traces the function into a jaxpr, which
# `jaxnets.models.op_chain` reads in the tutorial's order.

# %% tags=["torch"]
print(loss.grad_fn)  # MSELoss
print(loss.grad_fn.next_functions[0][0])  # Linear (fc3)
print(loss.grad_fn.next_functions[0][0].next_functions[0][0])  # today's graph: fc3's bias, not the ReLU

# %% tags=["jax"]
print(format_chain(op_chain(loss_of, jparams)))

# %% [markdown]
# ## Backprop

# %% tags=["torch"]
net.zero_grad()  # zeroes the gradient buffers of all parameters
print("conv1.bias.grad before backward")
print(net.conv1.bias.grad)
loss.backward()
print("conv1.bias.grad after backward")
print(net.conv1.bias.grad)

# %% tags=["jax"]
# Nothing to zero: jax.grad returns the gradients.
grads = jax.grad(loss_of)(jparams)
print("conv1 bias gradient")
print(grads["conv1"]["bias"][...])

# %%
print("largest difference:", largest_difference(net.conv1.bias.grad, grads["conv1"]["bias"][...]))

# %% [markdown]
# ## Update the weights by hand
#
# `weight = weight - learning_rate * gradient`, then the loss again.

# %% tags=["torch"]
learning_rate = 0.01
for f in net.parameters():
    f.data.sub_(f.grad.data * learning_rate)
print(criterion(net(input), target))

# %% tags=["jax"]
learning_rate = 0.01
jparams = jax.tree.map(lambda p, g: p - learning_rate * g, jparams, grads)
print(loss_of(jparams))

# %% [markdown]
# ## The optimizer loop
#
# `jaxnets.optim.sgd` takes `torch.optim.SGD`'s arguments; `jaxnets.Trainer.step` is one compiled
# forward, backward and update (the torch loop's `zero_grad`, `backward` and `step`). Five steps each,
# printing the loss before each update:

# %% tags=["torch"]
optimizer = optim.SGD(net.parameters(), lr=0.01)
for _ in range(5):
    optimizer.zero_grad()  # zero the gradient buffers
    output = net(input)
    loss = criterion(output, target)
    loss.backward()
    optimizer.step()  # does the update
    print(f"{loss.item():.6f}")

# %% tags=["jax"]
trainer = jaxnets.Trainer(
    nnx.merge(graphdef, jparams),
    jaxnets.optim.sgd(lr=0.01),
    lambda m, x, y: jaxnets.losses.mse_loss(m(x), y),
)
for _ in range(5):
    print(f"{float(trainer.step(x, jtarget)):.6f}")

# %%
trained = nnx.state(trainer.model, nnx.Param)
print(
    "largest difference between the trained conv1 kernels:",
    largest_difference(net.conv1.weight.permute(2, 3, 1, 0), trained["conv1"]["kernel"][...]),
)
