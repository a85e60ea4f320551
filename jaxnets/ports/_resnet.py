"""torchvision's ResNet-18 (``torchvision.models.resnet18``), ported line for line with :mod:`jaxnets.nn`.

Source: torchvision 0.28.0, ``torchvision/models/resnet.py``
(https://github.com/pytorch/vision/blob/main/torchvision/models/resnet.py):
``conv3x3``, ``conv1x1``, ``BasicBlock``, ``ResNet`` and ``resnet18``, with
torchvision's initialisation (Kaiming-normal ``fan_out`` convolutions,
BatchNorm weight 1 and bias 0, ``zero_init_residual``). Not ported:
``Bottleneck`` (ResNet-50 and up), pretrained ``weights`` (nothing can be
downloaded; load a torchvision ``state_dict`` instead) and the dilation option
(BasicBlock refuses it upstream too). Torch-mirror family: NCHW input,
torchvision's ``state_dict`` keys (``layer2.0.downsample.0.weight``...).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxnets import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1, *, rngs) -> nn.Conv2d:
    """3x3 convolution with padding"""
    return nn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
        rngs=rngs,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, *, rngs) -> nn.Conv2d:
    """1x1 convolution"""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False, rngs=rngs)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: two 3x3 conv + BatchNorm, ReLU, and the shortcut (``downsample`` when given)."""

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer=None,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock only supports groups=1 and base_width=64; got {groups}, {base_width}")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        # Both self.conv1 and self.downsample layers downsample the input when stride != 1
        self.conv1 = conv3x3(inplanes, planes, stride, rngs=rngs)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, rngs=rngs)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


def _kaiming_normal_fan_out_relu(key: jax.Array, shape, dtype) -> jax.Array:
    """``nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")``: N(0, 2 / (out_channels * kh * kw))."""
    fan_out = shape[0] * math.prod(shape[2:])
    return nn.init.normal(key, shape, dtype, std=math.sqrt(2.0) / math.sqrt(fan_out))


class ResNet(nn.Module):
    """torchvision's ``ResNet`` for ``BasicBlock``: conv 7x7/2, max-pool, four stages, average pool, ``fc``.

    What changed from torchvision: ``rngs`` (weights drawn from JAX keys with
    torchvision's laws), ``forward`` is ``__call__``, ``torch.flatten(x, 1)`` a
    reshape, no ``_log_api_usage_once``; only ``BasicBlock`` is accepted.

    Args:
      block: :class:`BasicBlock`.
      layers: blocks per stage (``[2, 2, 2, 2]`` for ResNet-18).
      num_classes: as torchvision.
      zero_init_residual: as torchvision.
      groups: as torchvision.
      width_per_group: as torchvision.
      replace_stride_with_dilation: as torchvision.
      norm_layer: as torchvision.
      rngs: draws the weights.

    Call: ``x`` ``(N, 3, H, W)`` -> logits ``(N, num_classes)``; any ``H, W``
    from 32 up (the average pool is adaptive). In train mode BatchNorm needs
    more than one value per channel: at 32x32, ``layer4`` is 1x1, so ``N >= 2``.
    """

    def __init__(
        self,
        block: type[BasicBlock],
        layers: list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: list[bool] | None = None,
        norm_layer=None,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__()
        if block is not BasicBlock:
            raise ValueError(f"ports.ResNet ports torchvision's BasicBlock only (ResNet-18/34); got {block!r}.")
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer

        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            # each element in the tuple indicates if we should replace
            # the 2x2 stride with a dilated convolution instead
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                f"replace_stride_with_dilation should be None or a 3-element tuple, got {replace_stride_with_dilation}"
            )
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False, rngs=rngs)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], rngs=rngs)
        self.layer2 = self._make_layer(
            block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0], rngs=rngs
        )
        self.layer3 = self._make_layer(
            block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1], rngs=rngs
        )
        self.layer4 = self._make_layer(
            block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2], rngs=rngs
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes, rngs=rngs)

        for _, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                w = m.weight[...]
                m.weight[...] = _kaiming_normal_fan_out_relu(rngs.params(), w.shape, w.dtype)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                m.weight[...] = jnp.ones_like(m.weight[...])
                m.bias[...] = jnp.zeros_like(m.bias[...])

        # Zero-initialize the last BN in each residual branch,
        # so that the residual branch starts with zeros, and each residual block behaves like an identity.
        # This improves the model by 0.2~0.3% according to https://arxiv.org/abs/1706.02677
        if zero_init_residual:
            for _, m in self.named_modules():
                if isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    m.bn2.weight[...] = jnp.zeros_like(m.bn2.weight[...])

    def _make_layer(
        self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False, *, rngs
    ) -> nn.Sequential:
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride, rngs=rngs),
                norm_layer(planes * block.expansion),
            )

        layers = []
        layers.append(
            block(
                self.inplanes,
                planes,
                stride,
                downsample,
                self.groups,
                self.base_width,
                previous_dilation,
                norm_layer,
                rngs=rngs,
            )
        )
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    groups=self.groups,
                    base_width=self.base_width,
                    dilation=self.dilation,
                    norm_layer=norm_layer,
                    rngs=rngs,
                )
            )

        return nn.Sequential(*layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"ResNet expects channels-first images of shape (batch, 3, H, W); got {tuple(x.shape)}. "
                "Channels-last images: use x.transpose(0, 3, 1, 2)."
            )
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = x.reshape(x.shape[0], -1)  # torch.flatten(x, 1)
        x = self.fc(x)

        return x


def resnet18(*, num_classes: int = 1000, zero_init_residual: bool = False, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """``torchvision.models.resnet18(weights=None, **kwargs)``: ``ResNet(BasicBlock, [2, 2, 2, 2])``."""
    return ResNet(
        BasicBlock, [2, 2, 2, 2], num_classes=num_classes, zero_init_residual=zero_init_residual, rngs=rngs, **kwargs
    )
