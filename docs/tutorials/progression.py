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
# # Learning PyTorch with examples: the seven stages, in PyTorch and in JAX
#
# The tutorial fits random data `x (64, 1000) -> y (64, 10)` with a two-layer ReLU network seven
# ways, from NumPy with a hand-written backward pass up to a network of random depth. Each stage shows
# the tutorial's PyTorch code (left, or first on a narrow screen) beside its JAX / jaxnets counterpart
# (right). Both train on the same data and start from the same weights (the PyTorch model's weights are
# copied into the jaxnets model with `parity.convert.load_torch_state_dict`), and both print the loss
# every 100 steps, as the tutorial does.
#
# This page is a jupytext script (`docs/tutorials/progression.py`) executed at every build of the
# documentation: every output below comes from that run. The stages are also the functions of
# `jaxnets.progression` (`python -m jaxnets.progression` runs them); the last cell checks that this
# page's JAX code computes what those functions compute.

# %%
import random

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import jaxnets
from jaxnets import progression
from parity.convert import load_torch_state_dict

torch.manual_seed(0)
torch.set_num_threads(1)  # JAX runs in this process too: two thread pools on few cores slow both down

N, D_in, H, D_out = 64, 1000, 100, 10
data = progression.make_data(seed=0)  # standard-normal x, y, w1, w2 (float64), like the tutorial's randn


def every_100(losses):
    for t in range(99, len(losses), 100):
        print(t, float(losses[t]))


# %% [markdown]
# ## 1. NumPy, forward and backward by hand
#
# Both columns are NumPy here (float64): on the right, `jaxnets.progression.numpy_manual` runs the same
# code.

# %% tags=["torch"]
x, y = data.x, data.y
w1, w2 = data.w1.copy(), data.w2.copy()

learning_rate = 1e-6
for t in range(500):
    h = x.dot(w1)
    h_relu = np.maximum(h, 0)
    y_pred = h_relu.dot(w2)

    loss = np.square(y_pred - y).sum()
    if t % 100 == 99:
        print(t, loss)

    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h_relu.T.dot(grad_y_pred)
    grad_h = grad_y_pred.dot(w2.T)
    grad_h[h < 0] = 0
    grad_w1 = x.T.dot(grad_h)

    w1 -= learning_rate * grad_w1
    w2 -= learning_rate * grad_w2

# %% tags=["jax"]
every_100(progression.numpy_manual(500, data=data))

# %% [markdown]
# ## 2. Tensors, backward by hand
#
# PyTorch tensors replace NumPy arrays; in JAX, `jax.numpy` does, and `jax.jit` with `lax.scan`
# compiles all 500 steps into one program. JAX arrays are immutable, so `grad_h[h < 0] = 0`
# becomes `jnp.where`.

# %% tags=["torch"]
dtype = torch.float
x = torch.tensor(data.x, dtype=dtype)
y = torch.tensor(data.y, dtype=dtype)
w1 = torch.tensor(data.w1, dtype=dtype)
w2 = torch.tensor(data.w2, dtype=dtype)

learning_rate = 1e-6
for t in range(500):
    h = x.mm(w1)
    h_relu = h.clamp(min=0)
    y_pred = h_relu.mm(w2)

    loss = (y_pred - y).pow(2).sum().item()
    if t % 100 == 99:
        print(t, loss)

    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = x.t().mm(grad_h)

    w1 -= learning_rate * grad_w1
    w2 -= learning_rate * grad_w2

# %% tags=["jax"]
xj, yj = jnp.asarray(data.x, jnp.float32), jnp.asarray(data.y, jnp.float32)
w = (jnp.asarray(data.w1, jnp.float32), jnp.asarray(data.w2, jnp.float32))
learning_rate = 1e-6


def manual_step(w, _):
    w1, w2 = w
    h = xj @ w1
    h_relu = jnp.maximum(h, 0)
    y_pred = h_relu @ w2
    loss = jnp.sum((y_pred - yj) ** 2)

    grad_y_pred = 2.0 * (y_pred - yj)
    grad_w2 = h_relu.T @ grad_y_pred
    grad_h = jnp.where(h < 0, 0, grad_y_pred @ w2.T)
    grad_w1 = xj.T @ grad_h
    return (w1 - learning_rate * grad_w1, w2 - learning_rate * grad_w2), loss


_, manual_losses = jax.jit(lambda w: jax.lax.scan(manual_step, w, length=500))(w)
every_100(manual_losses)

# %% [markdown]
# ## 3. Autograd
#
# `loss.backward()` computes the gradients PyTorch records; `jax.value_and_grad` turns the loss
# function into one that returns the loss and its gradients.

# %% tags=["torch"]
x = torch.tensor(data.x, dtype=dtype)
y = torch.tensor(data.y, dtype=dtype)
w1 = torch.tensor(data.w1, dtype=dtype, requires_grad=True)
w2 = torch.tensor(data.w2, dtype=dtype, requires_grad=True)

learning_rate = 1e-6
for t in range(500):
    y_pred = x.mm(w1).clamp(min=0).mm(w2)

    loss = (y_pred - y).pow(2).sum()
    if t % 100 == 99:
        print(t, loss.item())

    loss.backward()

    with torch.no_grad():
        w1 -= learning_rate * w1.grad
        w2 -= learning_rate * w2.grad

        w1.grad.zero_()
        w2.grad.zero_()


# %% tags=["jax"]
def bias_free_loss(w):
    w1, w2 = w
    y_pred = jnp.maximum(xj @ w1, 0) @ w2
    return jnp.sum((y_pred - yj) ** 2)


def autograd_step(w, _):
    loss, grads = jax.value_and_grad(bias_free_loss)(w)
    return jax.tree.map(lambda p, g: p - learning_rate * g, w, grads), loss


_, autograd_losses = jax.jit(lambda w: jax.lax.scan(autograd_step, w, length=500))(w)
every_100(autograd_losses)

# %% [markdown]
# ## 4. The nn package: `Sequential`, `MSELoss(reduction='sum')`, update by hand
#
# `jaxnets.two_layer_sequential` is `Sequential(Linear, ReLU, Linear)` with the same child names
# (`0`, `1`, `2`) and PyTorch's initialisation; here it gets the PyTorch model's weights.

# %% tags=["torch"]
model = torch.nn.Sequential(
    torch.nn.Linear(D_in, H),
    torch.nn.ReLU(),
    torch.nn.Linear(H, D_out),
)
torch_weights_4 = {k: v.clone() for k, v in model.state_dict().items()}
loss_fn = torch.nn.MSELoss(reduction="sum")

learning_rate = 1e-4
for t in range(500):
    y_pred = model(x)

    loss = loss_fn(y_pred, y)
    if t % 100 == 99:
        print(t, loss.item())

    model.zero_grad()
    loss.backward()

    with torch.no_grad():
        for param in model.parameters():
            param -= learning_rate * param.grad

# %% tags=["jax"]
jmodel = jaxnets.two_layer_sequential(D_in, H, D_out, rngs=nnx.Rngs(0))
load_torch_state_dict(jmodel, torch_weights_4)
graphdef, params = nnx.split(jmodel, nnx.Param)
learning_rate = 1e-4


def sequential_step(params, _):
    def loss_of(p):
        return jaxnets.losses.mse_loss(nnx.merge(graphdef, p)(xj), yj, reduction="sum")

    loss, grads = jax.value_and_grad(loss_of)(params)
    return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads), loss


_, sequential_losses = jax.jit(lambda p: jax.lax.scan(sequential_step, p, length=500))(params)
every_100(sequential_losses)

# %% [markdown]
# ## 5. The optim package: Adam
#
# `jaxnets.optim.adam` takes `torch.optim.Adam`'s arguments and is an optax optimizer;
# `jaxnets.Trainer.run` runs the 500 steps (forward, backward, update) as one compiled loop.

# %% tags=["torch"]
model = torch.nn.Sequential(
    torch.nn.Linear(D_in, H),
    torch.nn.ReLU(),
    torch.nn.Linear(H, D_out),
)
torch_weights_5 = {k: v.clone() for k, v in model.state_dict().items()}
loss_fn = torch.nn.MSELoss(reduction="sum")

learning_rate = 1e-4
optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
for t in range(500):
    y_pred = model(x)

    loss = loss_fn(y_pred, y)
    if t % 100 == 99:
        print(t, loss.item())

    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

# %% tags=["jax"]
jmodel = jaxnets.two_layer_sequential(D_in, H, D_out, rngs=nnx.Rngs(0))
load_torch_state_dict(jmodel, torch_weights_5)


def sum_mse(model, x, y):
    return jaxnets.losses.mse_loss(model(x), y, reduction="sum")


trainer = jaxnets.Trainer(jmodel, jaxnets.optim.adam(lr=1e-4), sum_mse)
adam_losses = trainer.run(500, xj, yj)
every_100(adam_losses)


# %% [markdown]
# ## 6. A custom `nn.Module`
#
# `jaxnets.TwoLayerNet` is the tutorial's `TwoLayerNet` as a Flax NNX module, with the same
# attribute names (`linear1`, `linear2`) and `clamp(min=0)`'s gradient.


# %% tags=["torch"]
class TwoLayerNet(torch.nn.Module):
    def __init__(self, D_in, H, D_out):
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, H)
        self.linear2 = torch.nn.Linear(H, D_out)

    def forward(self, x):
        h_relu = self.linear1(x).clamp(min=0)
        y_pred = self.linear2(h_relu)
        return y_pred


model = TwoLayerNet(D_in, H, D_out)
torch_weights_6 = {k: v.clone() for k, v in model.state_dict().items()}

criterion = torch.nn.MSELoss(reduction="sum")
optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
for t in range(500):
    y_pred = model(x)

    loss = criterion(y_pred, y)
    if t % 100 == 99:
        print(t, loss.item())

    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

# %% tags=["jax"]
jmodel = jaxnets.TwoLayerNet(D_in, H, D_out, rngs=nnx.Rngs(0))
load_torch_state_dict(jmodel, torch_weights_6)

trainer = jaxnets.Trainer(jmodel, jaxnets.optim.sgd(lr=1e-4), sum_mse)
two_layer_losses = trainer.run(500, xj, yj)
every_100(two_layer_losses)

# %% [markdown]
# ## 7. Control flow and weight sharing: `DynamicNet`
#
# The tutorial draws a depth of 0 to 3 with `random.randint` inside `forward` and reuses
# `middle_linear` that many times. To give both frameworks the same depths, the depths are drawn
# once here and passed in (the one change to the tutorial's code). `jaxnets.DynamicNet` takes the
# depth as an argument (`net.random_depth(key)` draws it inside a compiled step), so the 500 steps
# with their different depths are still one compiled loop. Of the seven stages this one is the most
# sensitive to float32 rounding, so its two columns drift apart the most (see the last section).


# %% tags=["torch"]
class DynamicNet(torch.nn.Module):
    def __init__(self, D_in, H, D_out):
        super().__init__()
        self.input_linear = torch.nn.Linear(D_in, H)
        self.middle_linear = torch.nn.Linear(H, H)
        self.output_linear = torch.nn.Linear(H, D_out)

    def forward(self, x, depth):  # the tutorial: range(random.randint(0, 3))
        h_relu = self.input_linear(x).clamp(min=0)
        for _ in range(depth):
            h_relu = self.middle_linear(h_relu).clamp(min=0)
        y_pred = self.output_linear(h_relu)
        return y_pred


random.seed(0)
depths = [random.randint(0, 3) for _ in range(500)]

model = DynamicNet(D_in, H, D_out)
torch_weights_7 = {k: v.clone() for k, v in model.state_dict().items()}

criterion = torch.nn.MSELoss(reduction="sum")
optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
for t in range(500):
    y_pred = model(x, depths[t])

    loss = criterion(y_pred, y)
    if t % 100 == 99:
        print(t, loss.item())

    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

# %% tags=["jax"]
jmodel = jaxnets.DynamicNet(D_in, H, D_out, rngs=nnx.Rngs(0))
load_torch_state_dict(jmodel, torch_weights_7)


def dynamic_loss(model, x, y, depth):
    return jaxnets.losses.mse_loss(model(x, depth), y, reduction="sum")


trainer = jaxnets.Trainer(jmodel, jaxnets.optim.sgd(lr=1e-4, momentum=0.9), dynamic_loss)
dynamic_losses = trainer.run(500, xj, yj, per_step=(jnp.asarray(depths),))
every_100(dynamic_losses)

# %% [markdown]
# ## This page's JAX code and `jaxnets.progression`
#
# The same stages as functions of `jaxnets.progression`, on the same data (and, for stages 4 to 7, the
# same starting weights and depths). The columns above agree closely at first and drift apart later,
# most in stage 7: two float32 programs that sum in different orders round differently, and training
# amplifies those differences (a ReLU unit that flips on a rounding difference changes the path; momentum
# and the changing depth make stage 7 the most sensitive). So the check below holds the first 40 steps
# to a relative 1e-4 and prints the largest difference over all 500. The sharp comparison with PyTorch,
# where rounding cannot hide a difference, is the parity suite's (`python -m parity`): stages 4 to 7
# from identical weights, 500 steps in float64.

# %%
checks = {
    "2 jax_manual": (manual_losses, progression.jax_manual(500, data=data)),
    "3 jax_autograd": (autograd_losses, progression.jax_autograd(500, data=data)),
}
for name, weights, ours, fn in [
    ("4 sequential_manual", torch_weights_4, sequential_losses, progression.sequential_manual),
    ("5 sequential_adam", torch_weights_5, adam_losses, progression.sequential_adam),
]:
    m = jaxnets.two_layer_sequential(D_in, H, D_out, rngs=nnx.Rngs(0))
    load_torch_state_dict(m, weights)
    checks[name] = (ours, fn(500, data=data, model=m))
m = jaxnets.TwoLayerNet(D_in, H, D_out, rngs=nnx.Rngs(0))
load_torch_state_dict(m, torch_weights_6)
checks["6 two_layer_sgd"] = (two_layer_losses, progression.two_layer_sgd(500, data=data, model=m))
m = jaxnets.DynamicNet(D_in, H, D_out, rngs=nnx.Rngs(0))
load_torch_state_dict(m, torch_weights_7)
checks["7 dynamic_sgd"] = (dynamic_losses, progression.dynamic_sgd(500, data=data, model=m, depths=depths))

for name, (ours, theirs) in checks.items():
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    relative = np.abs(ours - theirs) / np.abs(theirs)
    print(
        f"stage {name}: largest relative difference {relative[:40].max():.1e} over the first 40 steps, "
        f"{relative.max():.1e} over 500"
    )
    np.testing.assert_allclose(ours[:40], theirs[:40], rtol=1e-4)
