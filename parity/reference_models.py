"""The torch originals of :mod:`jaxnets.ports`, copied from their upstream sources.

Each class is the upstream code as published (names, statement order, init);
comments mark every deviation and say why.

- :class:`MnistNet`: ``Net`` of pytorch/examples ``mnist/main.py``.
- :class:`Generator`, :class:`Discriminator`, :func:`weights_init`: pytorch/examples
  ``dcgan/main.py``. Deviation: upstream reads ``nz``, ``ngf``, ``ndf``, ``nc``
  from argparse globals; here they are constructor arguments with upstream's
  defaults (100, 64, 64, 3), so tests can build small ones.
- :class:`RNNModel`, :class:`PositionalEncoding`: pytorch/examples
  ``word_language_model/model.py``, unchanged.
- :class:`TransformerClassifier`: no upstream file; written here from
  ``PositionalEncoding`` above, ``nn.TransformerEncoder`` and a masked mean pool.
- :class:`ResNet`, :class:`BasicBlock`, :func:`resnet18`: torchvision 0.28.0
  ``models/resnet.py`` (BasicBlock only; no ``_log_api_usage_once``, no
  pretrained weights). :func:`torchvision_resnet` loads torchvision's own
  module where it can, and the tests compare the two.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import math
import os
import subprocess
import sys
import types
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BasicBlock",
    "Discriminator",
    "Generator",
    "MnistNet",
    "PositionalEncoding",
    "RNNModel",
    "ResNet",
    "TransformerClassifier",
    "resnet18",
    "torchvision_resnet",
    "weights_init",
]


# --- pytorch/examples mnist/main.py ------------------------------------------------------------------------------
# --8<-- [start:mnist]  (docs/ports.md shows this section)


class MnistNet(nn.Module):
    """pytorch/examples ``mnist/main.py``'s ``Net`` (renamed: ``Net`` is LeNet in :mod:`parity.torch_models`)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


# --8<-- [end:mnist]


# --- pytorch/examples dcgan/main.py -------------------------------------------------------------------------------
# --8<-- [start:dcgan]  (docs/ports.md shows this section)


# custom weights initialization called on netG and netD
def weights_init(m):
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        torch.nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        torch.nn.init.normal_(m.weight, 1.0, 0.02)
        torch.nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, ngpu=1, nz=100, ngf=64, nc=3):  # deviation: nz, ngf, nc were argparse globals
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            # input is Z, going into a convolution
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            # state size. (ngf*8) x 4 x 4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            # state size. (ngf*4) x 8 x 8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 16 x 16
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 32 x 32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
            # state size. (nc) x 64 x 64
        )

    def forward(self, input):
        if input.is_cuda and self.ngpu > 1:
            output = nn.parallel.data_parallel(self.main, input, range(self.ngpu))
        else:
            output = self.main(input)
        return output


class Discriminator(nn.Module):
    def __init__(self, ngpu=1, ndf=64, nc=3):  # deviation: ndf, nc were argparse globals
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            # input is (nc) x 64 x 64
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 32 x 32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*2) x 16 x 16
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*4) x 8 x 8
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*8) x 4 x 4
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, input):
        if input.is_cuda and self.ngpu > 1:
            output = nn.parallel.data_parallel(self.main, input, range(self.ngpu))
        else:
            output = self.main(input)

        return output.view(-1, 1).squeeze(1)


# --8<-- [end:dcgan]


# --- pytorch/examples word_language_model/model.py ----------------------------------------------------------------
# --8<-- [start:word_language_model]  (docs/ports.md shows this section)


class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder."""

    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ["LSTM", "GRU"]:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        else:
            try:
                nonlinearity = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[rnn_type]
            except KeyError as e:
                raise ValueError(
                    """An invalid option for `--model` was supplied,
                                 options are ['LSTM', 'GRU', 'RNN_TANH' or 'RNN_RELU']"""
                ) from e
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)

        # Optionally tie weights as in:
        # "Using the Output Embedding to Improve Language Models" (Press & Wolf 2016)
        # https://arxiv.org/abs/1608.05859
        # and
        # "Tying Word Vectors and Word Classifiers: A Loss Framework for Language Modeling" (Inan et al. 2016)
        # https://arxiv.org/abs/1611.01462
        if tie_weights:
            if nhid != ninp:
                raise ValueError("When using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight

        self.init_weights()

        self.rnn_type = rnn_type
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))
        else:
            return weight.new_zeros(self.nlayers, bsz, self.nhid)


class PositionalEncoding(nn.Module):
    r"""Inject some information about the relative or absolute position of the tokens in the sequence.

    (upstream's docstring, shortened) ``pe`` ``(max_len, 1, d_model)``; input and output ``(S, N, E)``.
    """

    def __init__(self, d_model, dropout=0.1, max_len=5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)

        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        pe = pe.unsqueeze(0).transpose(0, 1)
        self.register_buffer("pe", pe)

    def forward(self, x):
        x = x + self.pe[: x.size(0), :]
        return self.dropout(x)


# --8<-- [end:word_language_model]


# --- a nn.TransformerEncoder classifier (written here) ------------------------------------------------------------
# --8<-- [start:transformer]  (docs/ports.md shows this section)


class TransformerClassifier(nn.Module):
    """Embedding * sqrt(d_model) + PositionalEncoding + nn.TransformerEncoder + masked mean + Linear.

    ``src`` ``(S, N)`` tokens; ``src_key_padding_mask`` ``(N, S)``, True at padding.
    ``enable_nested_tensor=False``: the nested-tensor fast path would leave the
    padded positions at 0 in eval mode (they are not pooled, but the layer-by-layer
    comparison reads them).
    """

    def __init__(self, ntoken, d_model, nhead, d_hid, nlayers, nclass, dropout=0.1, max_len=5000):
        super().__init__()
        self.embedding = nn.Embedding(ntoken, d_model)
        self.pos_encoder = PositionalEncoding(d_model, dropout, max_len)
        encoder_layer = nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout)
        self.transformer_encoder = nn.TransformerEncoder(encoder_layer, nlayers, enable_nested_tensor=False)
        self.classifier = nn.Linear(d_model, nclass)
        self.d_model = d_model

    def forward(self, src, src_key_padding_mask=None):
        x = self.embedding(src) * math.sqrt(self.d_model)
        x = self.pos_encoder(x)
        x = self.transformer_encoder(x, src_key_padding_mask=src_key_padding_mask)
        if src_key_padding_mask is None:
            pooled = x.mean(dim=0)
        else:
            keep = (~src_key_padding_mask).T.unsqueeze(-1).to(x.dtype)
            pooled = (x * keep).sum(dim=0) / keep.sum(dim=0)
        return self.classifier(pooled)


# --8<-- [end:transformer]


# --- torchvision 0.28.0 models/resnet.py (BasicBlock, ResNet, resnet18) --------------------------------------------
# --8<-- [start:resnet]  (docs/ports.md shows this section)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
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
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution"""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
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
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        # Both self.conv1 and self.downsample layers downsample the input when stride != 1
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
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


class ResNet(nn.Module):
    def __init__(
        self,
        block,
        layers: list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: list[bool] | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        # deviation: no _log_api_usage_once(self) (torchvision's telemetry hook)
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
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

        # Zero-initialize the last BN in each residual branch,
        # so that the residual branch starts with zeros, and each residual block behaves like an identity.
        # This improves the model by 0.2~0.3% according to https://arxiv.org/abs/1706.02677
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    nn.init.constant_(m.bn2.weight, 0)  # type: ignore[arg-type]

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )

        layers = []
        layers.append(
            block(
                self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation, norm_layer
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
                )
            )

        return nn.Sequential(*layers)

    def _forward_impl(self, x: Tensor) -> Tensor:
        # See note [TorchScript super()]
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)

        return x

    def forward(self, x: Tensor) -> Tensor:
        return self._forward_impl(x)


def resnet18(**kwargs) -> ResNet:
    """``torchvision.models.resnet18(weights=None, **kwargs)``."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


# --8<-- [end:resnet]


# --- torchvision's own resnet module, without its compiled ops -----------------------------------------------------

TORCHVISION_ENV = "JAXNETS_TORCHVISION"
TORCHVISION_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "jaxnets", "torchvision")
TORCHVISION_VERSION = "0.28.0"
"""The torchvision whose ``models/resnet.py`` the ResNet above copies, and which pairs with torch 2.13."""
TORCHVISION_FETCH = (
    f"python -m pip download torchvision=={TORCHVISION_VERSION} --no-deps -d {TORCHVISION_CACHE} "
    f"(or set {TORCHVISION_ENV} to a torchvision wheel or package folder)"
)


def fetch_torchvision() -> str:
    """Download torchvision's wheel (7.7 MB, no dependencies, nothing installed) into ``TORCHVISION_CACHE``,
    unless it is there already; the wheel's path. ``make test-all`` calls this before the tests."""
    pattern = os.path.join(TORCHVISION_CACHE, f"torchvision-{TORCHVISION_VERSION}-*.whl")
    if not glob.glob(pattern):
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        subprocess.run([*command, f"torchvision=={TORCHVISION_VERSION}", "-d", TORCHVISION_CACHE], check=True)
    return sorted(glob.glob(pattern))[0]


def _torchvision_location() -> str | None:
    """Where torchvision's sources are: a package folder, or ``WHEEL/torchvision`` inside a wheel (a zip)."""
    given = os.environ.get(TORCHVISION_ENV)
    candidates = [given] if given else []
    spec = importlib.util.find_spec("torchvision") if "torchvision" not in sys.modules else None
    if spec is not None and spec.submodule_search_locations:
        candidates.append(list(spec.submodule_search_locations)[0])
    candidates += sorted(glob.glob(os.path.join(TORCHVISION_CACHE, "torchvision-*.whl")))
    for path in candidates:
        if path.endswith(".whl") and os.path.isfile(path):
            return os.path.join(path, "torchvision")
        if os.path.isfile(os.path.join(path, "models", "resnet.py")):
            return path
        if os.path.isfile(os.path.join(path, "torchvision", "models", "resnet.py")):
            return os.path.join(path, "torchvision")
    return None


def torchvision_resnet() -> types.ModuleType | None:
    """torchvision's own ``torchvision.models.resnet`` module, or None when no torchvision sources are found.

    If ``import torchvision`` works, its module. Otherwise (the registry's
    torchvision 0.28.0 is a CUDA build whose ``_C.so`` fails to register its ops
    beside torch's CPU build: ``operator torchvision::nms does not exist``), the
    same file is imported from torchvision's sources (an installed package, the
    wheel named by ``$JAXNETS_TORCHVISION``, or a wheel in
    ``~/.cache/jaxnets/torchvision``, read in place through zipimport) with
    ``torchvision``, ``torchvision.models`` and ``torchvision.transforms`` as
    empty namespace packages, so their ``__init__``s (which load ``_C.so``) never
    run. ``resnet.py`` then imports only pure-Python helpers
    (``torchvision.utils``, ``models._api``, ``models._meta``, ``models._utils``);
    the one stub is ``transforms._presets.ImageClassification``, which only the
    pretrained weights' metadata names. The model code runs unchanged.
    """
    try:
        return importlib.import_module("torchvision.models.resnet")
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    root = _torchvision_location()
    if root is None:
        return None

    def package(name: str, path: str) -> None:
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module

    package("torchvision", root)
    package("torchvision.models", os.path.join(root, "models"))
    package("torchvision.transforms", os.path.join(root, "transforms"))
    presets = types.ModuleType("torchvision.transforms._presets")
    presets.ImageClassification = type("ImageClassification", (), {})  # named by the pretrained weights only
    sys.modules[presets.__name__] = presets
    return importlib.import_module("torchvision.models.resnet")
