"""pytorch/examples ``dcgan/main.py``: ``Generator``, ``Discriminator`` and ``weights_init``, ported with jaxnets.nn.

Source: https://github.com/pytorch/examples/blob/main/dcgan/main.py. Upstream
reads ``nz``, ``ngf``, ``ndf`` and ``nc`` from module globals set by argparse
(defaults 100, 64, 64, 3); here they are constructor arguments with the same
defaults. Its ``ngpu``/``data_parallel`` branch (CUDA only) is dropped: on one
device ``forward`` is ``self.main(input)``. Torch-mirror family: the
``state_dict`` keys are torch's (``main.0.weight``, ``main.1.running_mean``...).
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxnets import nn


def weights_init(model: nn.Module, *, rngs: nnx.Rngs) -> None:
    """``netG.apply(weights_init)``: conv weights ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02), bias 0.

    As upstream, a module is picked by its class name (``'Conv'`` or
    ``'BatchNorm'`` in it), so ConvTranspose2d counts as a convolution.
    """
    for _, m in model.named_modules():
        classname = type(m).__name__
        if classname.find("Conv") != -1:
            w = m.weight[...]
            m.weight[...] = nn.init.normal(rngs.params(), w.shape, w.dtype, std=0.02)
        elif classname.find("BatchNorm") != -1:
            w = m.weight[...]
            m.weight[...] = nn.init.normal(rngs.params(), w.shape, w.dtype, std=0.02, mean=1.0)
            b = m.bias[...]
            m.bias[...] = nn.init.constant(b.shape, 0.0, b.dtype)


class Generator(nn.Module):
    """DCGAN's generator: ``(N, nz, 1, 1)`` noise -> ``(N, nc, 64, 64)`` images in (-1, 1).

    Four ConvTranspose2d + BatchNorm2d + ReLU stages and a last ConvTranspose2d + Tanh,
    in one ``nn.Sequential`` named ``main`` as upstream. ``weights_init`` is not
    applied by the constructor (upstream calls ``netG.apply(weights_init)`` after
    building it); call :func:`weights_init` for the same laws.
    """

    def __init__(self, ngpu: int = 1, nz: int = 100, ngf: int = 64, nc: int = 3, *, rngs: nnx.Rngs):
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            # input is Z, going into a convolution
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False, rngs=rngs),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            # state size. (ngf*8) x 4 x 4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False, rngs=rngs),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            # state size. (ngf*4) x 8 x 8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False, rngs=rngs),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 16 x 16
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False, rngs=rngs),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 32 x 32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False, rngs=rngs),
            nn.Tanh(),
            # state size. (nc) x 64 x 64
        )

    def __call__(self, input: jax.Array) -> jax.Array:
        output = self.main(input)
        return output


class Discriminator(nn.Module):
    """DCGAN's discriminator: ``(N, nc, 64, 64)`` images -> ``(N,)`` probabilities of being real.

    Conv2d + LeakyReLU(0.2), three Conv2d + BatchNorm2d + LeakyReLU(0.2) stages and
    a last Conv2d + Sigmoid, in ``main``; ``output.view(-1, 1).squeeze(1)`` as upstream.
    """

    def __init__(self, ngpu: int = 1, ndf: int = 64, nc: int = 3, *, rngs: nnx.Rngs):
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            # input is (nc) x 64 x 64
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False, rngs=rngs),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 32 x 32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False, rngs=rngs),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*2) x 16 x 16
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False, rngs=rngs),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*4) x 8 x 8
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False, rngs=rngs),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*8) x 4 x 4
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False, rngs=rngs),
            nn.Sigmoid(),
        )

    def __call__(self, input: jax.Array) -> jax.Array:
        if input.ndim != 4 or input.shape[-2:] != (64, 64):
            raise ValueError(
                f"ports.dcgan.Discriminator expects images of shape (batch, nc, 64, 64) (four stride-2 convolutions "
                f"then a 4x4 one); got {tuple(input.shape)}. Resize the images to 64x64 as upstream's transforms do."
            )
        output = self.main(input)
        return output.reshape(-1, 1).squeeze(1)
