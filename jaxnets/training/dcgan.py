"""pytorch/examples' DCGAN: what ``jaxnets train --model dcgan`` trains, on digits, MNIST or CIFAR-10.

The networks are ``Generator`` and ``Discriminator`` of ``dcgan/main.py`` as
ported (:mod:`jaxnets.ports._dcgan`), with upstream's sizes (``nz`` 100,
``ngf`` 64, ``ndf`` 64, 64x64 images) and its ``weights_init`` applied
after each constructor, as ``netG.apply(weights_init)``. Every random number
comes from one stream, ``nnx.Rngs(seed)``, in upstream's order: the
generator's weights, then the discriminator's, then ``fixed_noise``; then one
key for the batch order (epoch ``e``'s is ``jax.random.permutation`` of
``fold_in(key, e)``, :func:`jaxnets.data.order`) and one for the noise, which
each step splits (``key, sub = split(key)``; ``sub`` draws the step's
``(batch, 100, 1, 1)`` standard normal noise). The noise key is run state:
each checkpoint keeps its two uint32 words (``key``), and ``--resume`` wraps
them back.

Images (:func:`prepare`): upstream's ``transforms.Resize(64)`` on PIL images
(bilinear), ``ToTensor()``, ``Normalize(0.5, 0.5)``. The data sets' 8-bit
pixels are resized once, in NumPy, exactly as Pillow's bilinear ``resize``
computes on an 8-bit image (:func:`resize_like_pil`: its filter
coefficients in 22-bit fixed point, a horizontal pass rounded to 8 bits, then
a vertical one), and kept as uint8 ``(N, C, 64, 64)``; each step maps its
batch's bytes through :data:`TO_INPUT`, the 256 values
``(v / 255 - 0.5) / 0.5`` computed in float32 as torch's ``ToTensor`` and
``Normalize`` compute them, so the network sees upstream's pixels in [-1, 1]
bit for bit, and the data set takes a quarter of the memory of floats.
MNIST's 28x28 pixels and CIFAR-10's 32x32 (from :func:`jaxnets.data.load`,
which divides them by 255; multiplied back and rounded, they are the files'
bytes) are resized as torchvision resizes them. The digits set has no file
pixels: the loader's 32x32 images in [0, 1] (an 8x8 digit upscaled to 28x28
in a 2-pixel black border) are cropped to their 28x28 content and rounded to
bytes, ``round(255 x)``, as if they were MNIST images, and resized like them.
Only the training split is used, as upstream (its data set is the training
set; there is no test set in a GAN's loop).

A step is upstream's (:func:`gan_step`): the discriminator on the real batch
(BCE against 1) and on the generator's output with its gradient stopped
(``fake.detach()``, BCE against 0), their gradients summed, Adam's step on the
discriminator; then the generator's loss, BCE of the *updated*
discriminator's output on the same fake images against 1, back through the
one generator forward (``jax.vjp``, as torch's graph kept from that forward),
Adam's step on the generator. Both networks run in train mode: BatchNorm
normalises with the batch's statistics and moves its running buffers on every
forward, so per step the discriminator's advance three times (real, fake,
fake again) and the generator's once, as torch's do. Each step is one compiled
call (:func:`_step` says why not a ``lax.scan`` over the epoch).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .. import optim
from .._files import atomic_write
from ..nn.functional import binary_cross_entropy
from . import charts, data
from . import digits as common

NZ, NGF, NDF = 100, 64, 64
"""Upstream's ``--nz`` (noise size), ``--ngf`` and ``--ndf`` (the networks' widths)."""
IMAGE_SIZE = 64
"""Upstream's ``--imageSize``; the ported architecture is for 64x64 images."""
BETAS = (0.5, 0.999)
"""Adam's betas for both networks: upstream's ``(opt.beta1, 0.999)`` with ``--beta1 0.5``."""
SAMPLES = "samples"
"""The run's folder of generated images: ``samples/epoch_001.png`` ... (upstream's ``fake_samples_epoch_%03d.png``)."""
PRECISION_BITS = 32 - 8 - 2
"""Pillow's fixed-point precision for 8-bit resampling (``Resample.c``)."""

# torchvision's ToTensor() (uint8 -> float32 / 255) then Normalize((0.5,), (0.5,)) (sub, then div), per byte value.
TO_INPUT = (np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
"""The network's input for each byte value, ``(v / 255 - 0.5) / 0.5`` in float32: [-1, 1]."""

HISTORY_KEYS = ("loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2")
"""Upstream's printed values (``errD``, ``errG``, ``D_x``, ``D_G_z1``, ``D_G_z2``); the history holds epoch means."""


# -- images, resized as torchvision's Resize on PIL images --------------------------------------------


def _pil_bilinear(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` int64 weights of Pillow's bilinear resample of 8-bit images, in 22-bit fixed point.

    Pillow's ``precompute_coeffs``: output pixel ``x``'s centre is ``(x + 0.5) * scale`` in input
    coordinates, the triangle filter widened by ``max(scale, 1)`` (antialiasing when shrinking), its taps from
    ``int(centre - support + 0.5)`` to ``int(centre + support + 0.5)`` clipped to the image, normalised to sum
    to 1; then ``normalize_coeffs_8bpc`` rounds each to ``round_half_away(w * 2**22)``.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    weights = np.zeros((n_out, n_in), np.int64)
    for x in range(n_out):
        centre = (x + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)  # C's (int) truncates toward zero
        hi = min(int(centre + support + 0.5), n_in)
        taps = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((taps - centre + 0.5) / filterscale))
        if w.sum() != 0.0:
            w = w / w.sum()
        scaled = w * (1 << PRECISION_BITS)
        weights[x, lo:hi] = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64)
    return weights


def _resample(pixels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One of Pillow's passes along the last axis: ``clip8((2**21 + sum pixel * w) >> 22)``, as uint8."""
    # float64 products and sums of bytes and 22-bit weights stay below 2**53: exact, and BLAS-fast.
    sums = (pixels.astype(np.float64) @ weights.T.astype(np.float64)).astype(np.int64)
    return np.clip((sums + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS, 0, 255).astype(np.uint8)


def resize_like_pil(pixels: np.ndarray, size: int = IMAGE_SIZE, *, chunk: int = 4096) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` images -> ``(N, C, size, size)``, as ``PIL.Image.resize((size, size), BILINEAR)``.

    torchvision's ``Resize(size)`` on a square PIL image is that call. Pillow resizes in two passes, the
    width first into an 8-bit image, then the height; a pass whose size does not change is skipped. The
    result equals Pillow's byte for byte (tests/test_training_dcgan.py compares them).

    Args:
      pixels: uint8 ``(N, C, H, W)``, channels-first (each channel resampled alike, as Pillow's ``L`` and ``RGB``).
      size: the output side.
      chunk: images per NumPy product (bounds the temporary float64 arrays).
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 4:
        raise ValueError(
            f"resize_like_pil takes uint8 images of shape (N, C, H, W); got {pixels.dtype} of shape {pixels.shape}."
        )
    n, c, h, w = pixels.shape
    across, down = _pil_bilinear(w, size), _pil_bilinear(h, size)
    out = np.empty((n, c, size, size), np.uint8)
    for start in range(0, n, chunk):
        x = pixels[start : start + chunk]
        if w != size:
            x = _resample(x, across)  # (n, C, H, W) -> (n, C, H, size)
        if h != size:
            x = _resample(x.swapaxes(2, 3), down).swapaxes(2, 3)  # (n, C, H, size) -> (n, C, size, size)
        out[start : start + chunk] = x
    return out


def prepare(spec: str) -> np.ndarray:
    """The training images of ``--data spec`` as the networks' uint8 input bytes ``(N, C, 64, 64)`` (see above).

    ``C`` is 1 for ``digits`` and ``mnist:DIR``, 3 for ``cifar10:DIR``; :data:`TO_INPUT` maps the bytes to [-1, 1].
    """
    train, _ = data.load(spec)
    images = train.images
    if images.shape[1] == 3:  # CIFAR-10: (N, 3, 32, 32), the bytes / 255
        pixels = np.rint(images * np.float32(255)).astype(np.uint8)
    else:  # digits or MNIST: (N, 32, 32, 1), a 28x28 image in a 2-pixel border -> (N, 1, 28, 28)
        pixels = np.rint(images[:, None, 2:30, 2:30, 0] * np.float32(255)).astype(np.uint8)
    return resize_like_pil(pixels, IMAGE_SIZE)


def image_grid(images: np.ndarray, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """``torchvision.utils.save_image(images, path, normalize=True)``'s picture: uint8 ``(H, W, 3)``.

    As ``make_grid``: one channel repeated to three; every pixel scaled by the whole batch's min and max to
    [0, 1] (``(x - min) / max(max - min, 1e-5)`` in float32); ``nrow`` images per row in cells of
    ``padding`` black pixels; then ``save_image``'s ``x * 255 + 0.5`` clamped to [0, 255] and truncated.
    """
    x = np.asarray(images, np.float32)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    low, high = float(x.min()), float(x.max())
    x = (np.clip(x, low, high) - np.float32(low)) / np.float32(max(high - low, 1e-5))
    n, c, h, w = x.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.zeros((c, rows * (h + padding) + padding, cols * (w + padding) + padding), np.float32)
    for i in range(n):
        top, left = (i // cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding
        grid[:, top : top + h, left : left + w] = x[i]
    return np.clip(grid * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def save_grid(images: np.ndarray, path: Path) -> None:
    """:func:`image_grid` of ``images`` as a PNG at ``path``, written atomically."""
    from PIL import Image

    picture = Image.fromarray(image_grid(images))
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def plot_losses(history: list[dict], path: Path, title: str = "") -> None:
    """Loss_D and Loss_G per epoch (the epoch's mean), as a PNG (:mod:`jaxnets.training.charts`)."""
    epochs = [h["epoch"] for h in history]
    series = [
        charts.Series("Loss_D", epochs, [h["loss_D"] for h in history], "o"),
        charts.Series("Loss_G", epochs, [h["loss_G"] for h in history], "s"),
    ]
    panel = charts.Panel(title, "epoch", "BCE (epoch mean)", series)
    charts.save_chart([panel], path, size=(600, 400))


# -- the networks and the step --------------------------------------------------------------------------


def build(seed: int, channels: int):
    """``(generator, discriminator, fixed_noise, order_key, noise_key)`` drawn from ``nnx.Rngs(seed)`` in that order.

    The networks are upstream's with ``weights_init`` applied, in train mode (as after construction in torch).
    """
    from ..ports._dcgan import Discriminator, Generator, weights_init

    rngs = nnx.Rngs(seed)
    generator = Generator(1, NZ, NGF, channels, rngs=rngs)
    weights_init(generator, rngs=rngs)
    discriminator = Discriminator(1, NDF, channels, rngs=rngs)
    weights_init(discriminator, rngs=rngs)
    return generator, discriminator, rngs(), rngs(), rngs()


def model_spec(channels: int) -> dict:
    """The JSON description of a run's two networks and the input the discriminator takes."""
    return {
        "model": "dcgan",
        "nz": NZ,
        "ngf": NGF,
        "ndf": NDF,
        "nc": channels,
        "image_size": IMAGE_SIZE,
        "input": f"float32 (N, {channels}, 64, 64) in [-1, 1]: Resize(64) as PIL's bilinear, ToTensor(), "
        "Normalize(0.5, 0.5)",
    }


def _merge(graphdef, params, buffers):
    # Fresh Variables for the buffers, made in this trace: NNX refuses to mutate (BatchNorm's running statistics)
    # a Variable made outside a jax.grad or jax.vjp from inside it (as the Trainer's loss_of).
    return nnx.merge(graphdef, params, jax.tree.map(lambda v: v, buffers))


def _buffers(model):
    return nnx.state(model, nnx.Not(nnx.Param))


def gan_step(graphs, tx, state, real, noise):
    """One iteration of upstream's loop on ``real`` images ``(B, C, 64, 64)`` in [-1, 1] and ``(B, nz, 1, 1)`` noise.

    ``parity.ports``' ``dcgan`` trajectory runs this against upstream's loop in torch (float64).

    Args:
      graphs: the generator's and discriminator's ``nnx.GraphDef``.
      tx: the optax transformation of both networks (Adam, each its own state).
      state: ``(g_params, g_buffers, d_params, d_buffers, g_opt_state, d_opt_state)``.

    Returns:
      The new state and ``(errD, errG, D_x, D_G_z1, D_G_z2)`` stacked, as upstream prints them.
    """
    g_graph, d_graph = graphs
    g_params, g_buffers, d_params, d_buffers, g_opt, d_opt = state
    ones, zeros = jnp.ones(real.shape[0], real.dtype), jnp.zeros(real.shape[0], real.dtype)

    def generate(g_params):
        generator = _merge(g_graph, g_params, g_buffers)
        return generator(noise), _buffers(generator)

    # The one generator forward of upstream's iteration; its vjp is torch's graph, kept for errG.backward().
    fake, pullback, g_buffers = jax.vjp(generate, g_params, has_aux=True)

    def d_loss(d_params):
        netD = _merge(d_graph, d_params, d_buffers)
        out_real = netD(real)
        out_fake = netD(jax.lax.stop_gradient(fake))  # fake.detach()
        err_real, err_fake = binary_cross_entropy(out_real, ones), binary_cross_entropy(out_fake, zeros)
        return err_real + err_fake, (out_real.mean(), out_fake.mean(), _buffers(netD))

    (err_d, (d_x, d_g_z1, d_buffers)), grads = jax.value_and_grad(d_loss, has_aux=True)(d_params)
    updates, d_opt = tx.update(grads, d_opt, d_params)
    d_params = optax.apply_updates(d_params, updates)

    def g_loss(fake):  # through the updated discriminator, as upstream's netD(fake) after optimizerD.step()
        netD = _merge(d_graph, d_params, d_buffers)
        out = netD(fake)
        return binary_cross_entropy(out, ones), (out.mean(), _buffers(netD))

    (err_g, (d_g_z2, d_buffers)), d_fake = jax.value_and_grad(g_loss, has_aux=True)(fake)
    (grads,) = pullback(d_fake)
    updates, g_opt = tx.update(grads, g_opt, g_params)
    g_params = optax.apply_updates(g_params, updates)
    state = (g_params, g_buffers, d_params, d_buffers, g_opt, d_opt)
    return state, jnp.stack([err_d, err_g, d_x, d_g_z1, d_g_z2])


def _step(graphs, tx, carry, images, order, t):
    """Step ``t`` of an epoch: :func:`gan_step` on ``images[order[t]]`` mapped by :data:`TO_INPUT`, and the noise of
    the carry's key (``key, sub = split(key)``, ``normal(sub, (B, nz, 1, 1))``).

    One compiled call a step, not a ``lax.scan`` over the epoch's steps as the other models run: inside XLA:CPU's
    loop the same step took 8.5 s against 0.31 s alone (batch 4, 2 cores, the test suite's XLA flags,
    2026-12-07), the convolutions there being XLA's slow ones; a dispatch costs far less than a step.
    """
    *state, key = carry
    key, sub = jax.random.split(key)
    real = jnp.asarray(TO_INPUT)[images[order[t]]]  # (B, C, 64, 64) bytes -> floats in [-1, 1]
    noise = jax.random.normal(sub, (order.shape[1], NZ, 1, 1), real.dtype)
    state, stats = gan_step(graphs, tx, tuple(state), real, noise)
    return (*state, key), stats


def _sample(g_graph, g_params, g_buffers, noise):
    """``netG(fixed_noise)`` in train mode, as upstream's (batch statistics); the running buffers left as they were."""
    return _merge(g_graph, g_params, g_buffers)(noise)


# -- a run ------------------------------------------------------------------------------------------------


def _host(tree):
    return jax.tree.map(lambda x: np.array(jax.random.key_data(x)) if common._is_key(x) else np.array(x), tree)


def _run_state(carry) -> dict:
    """A checkpoint's arrays as NumPy copies: both networks' parameters and buffers, both Adam states, the key."""
    g_params, g_buffers, d_params, d_buffers, g_opt, d_opt, key = carry
    return _host({
        "generator": {"params": nnx.to_pure_dict(g_params), "buffers": nnx.to_pure_dict(g_buffers)},
        "discriminator": {"params": nnx.to_pure_dict(d_params), "buffers": nnx.to_pure_dict(d_buffers)},
        "opt_state": {"generator": g_opt, "discriminator": d_opt},
        "key": key,
    })  # fmt: skip


def _restored_carry(state: dict, carry):
    """``carry`` with every array replaced by the checkpoint's (restored ``like`` the carry's, so shapes match), the
    key's words wrapped back as a key of the carry's PRNG."""
    g_params, g_buffers, d_params, d_buffers, *_, key = carry
    parts = []
    for net, params, buffers in (("generator", g_params, g_buffers), ("discriminator", d_params, d_buffers)):
        for kind, current in (("params", params), ("buffers", buffers)):
            nnx.replace_by_pure_dict(current, jax.tree.map(jnp.asarray, state[net][kind]))
            parts.append(current)
    opt = jax.tree.map(jnp.asarray, state["opt_state"])
    key = jax.random.wrap_key_data(jnp.asarray(state["key"]), impl=jax.random.key_impl(key))
    return (parts[0], parts[1], parts[2], parts[3], opt["generator"], opt["discriminator"], key)


def _training_data(config) -> tuple[np.ndarray, int]:
    """The training images of ``config.data`` as the networks' bytes (:func:`prepare`), and the steps of an epoch."""
    images = prepare(config.data)
    return images, common._steps_per_epoch(len(images), config.batch_size)


def train(
    config,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    devices: int | None = None,
) -> dict:
    """Train upstream's DCGAN for ``config`` (a ``TrainConfig`` of ``model="dcgan"``) into the run directory ``out``.

    Writes, per epoch, a checkpoint (both networks' parameters and buffers, both optimizer states, the noise
    key), ``metrics.json`` (per-epoch history of the epoch's mean ``loss_D``, ``loss_G``, ``D_x``, ``D_G_z1``,
    ``D_G_z2``, the lr and seconds; ``status``), ``samples/epoch_NNN.png`` (``G(fixed_noise)``) and
    ``curves.png``, on a background thread while the next epoch trains, as
    :func:`jaxnets.training.digits.train` (whose arguments these are).

    Raises:
      TrainingError: as :func:`jaxnets.training.digits.train`; also more than one device or process (the DCGAN
        trains on one device, as upstream's ``--ngpu 1``).
    """
    out = Path(out)
    if devices not in (None, 1) or jax.process_count() > 1:
        raise common.TrainingError(
            f"--model dcgan trains on one device (upstream's --ngpu 1); got --devices {devices} in "
            f"{jax.process_count()} process(es). Leave --devices out (or give 1) and run one process."
        )
    images, steps_per_epoch = common._open_run(out, lambda: _training_data(config), resume=resume,
                                               overwrite=overwrite)  # fmt: skip
    channels = images.shape[1]
    generator, discriminator, fixed_noise, order_key, noise_key = build(config.seed, channels)
    fixed_noise = jax.random.normal(fixed_noise, (config.batch_size, NZ, 1, 1), jnp.float32)
    tx = optim.adam(config.learning_rate, betas=BETAS)
    g_graph, g_params, g_buffers = nnx.split(generator, nnx.Param, ...)
    d_graph, d_params, d_buffers = nnx.split(discriminator, nnx.Param, ...)
    carry = (g_params, g_buffers, d_params, d_buffers, tx.init(g_params), tx.init(d_params), noise_key)
    spec = model_spec(channels)
    history: list[dict] = []
    start_epoch = 0
    if resume:
        state, history, start_epoch = common._resume_state(out, config, _run_state(carry), log)
        carry = _restored_carry(state, carry)
    carry = jax.device_put(carry)
    images_on_device = jax.device_put(images)
    run_step = jax.jit(functools.partial(_step, (g_graph, d_graph), tx), donate_argnums=0)
    sample = jax.jit(functools.partial(_sample, g_graph))
    metrics = {"config": config.to_json(), "model": spec, "data": {"train": len(images)}, "devices": 1,
               "processes": 1, "status": "running"}  # fmt: skip
    elapsed = sum(h["seconds"] for h in history)
    drawn = time.perf_counter()
    title = f"DCGAN on {config.data}, Adam lr {config.learning_rate:g} betas {BETAS}"
    (out / SAMPLES).mkdir(exist_ok=True)
    with common._Writer() as writer:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            order = data.order(order_key, len(images), epoch=epoch)[: steps_per_epoch * config.batch_size]
            order = jax.device_put(order.reshape(steps_per_epoch, config.batch_size))
            bar = common._Progress(steps_per_epoch, f"epoch {epoch}/{config.epochs}", progress)
            outputs = []
            try:
                for t in range(steps_per_epoch):
                    carry, stats = run_step(carry, images_on_device, order, np.int32(t))
                    outputs.append(stats)
                    if t:  # dispatched asynchronously: show the previous step's Loss_D while this one runs
                        bar.update(float(outputs[-2][0]))
                samples = sample(carry[0], carry[1], fixed_noise)
                bar.update(float(outputs[-1][0]))
            finally:
                bar.close()
            stats = np.stack([np.asarray(s) for s in outputs])  # (steps, 5): errD, errG, D_x, D_G_z1, D_G_z2
            writer.check()
            stop = functools.partial(common._stop, writer, out, metrics, history, True)
            lower = f"Lower --lr (now {config.learning_rate:g})"
            state = common._epoch_state(_run_state(carry), {"Loss_D": stats[:, 0], "Loss_G": stats[:, 1]},
                                        epoch, stop, f"{lower} or try another --seed", lower)  # fmt: skip
            samples = np.asarray(samples)
            seconds = time.perf_counter() - t0
            elapsed += seconds
            means = stats.mean(axis=0)
            history.append({"epoch": epoch, **{k: float(v) for k, v in zip(HISTORY_KEYS, means, strict=True)},
                            "lr": config.learning_rate, "seconds": seconds})  # fmt: skip
            metrics |= {"history": list(history), "epochs_completed": epoch, "train_seconds": elapsed}
            meta = {"config": config.to_json(), "model": spec}
            drawn = common._submit_epoch(writer, out, state, meta, metrics, config.epochs, drawn,
                                         lambda history, path: plot_losses(history, path, title))  # fmt: skip
            writer.submit(save_grid, samples, out / SAMPLES / f"epoch_{epoch:03d}.png")
            h = history[-1]
            log(
                f"[{epoch}/{config.epochs}] Loss_D: {h['loss_D']:.4f} Loss_G: {h['loss_G']:.4f} D(x): {h['D_x']:.4f} "
                f"D(G(z)): {h['D_G_z1']:.4f} / {h['D_G_z2']:.4f}  (epoch means, {seconds:.1f} s)"
            )
    common._complete(out, metrics, history, elapsed, True)
    log(f"{len(history)} epochs, {elapsed:.1f} s of training; samples in {out / SAMPLES}, run in {out}")
    return metrics
