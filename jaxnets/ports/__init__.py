"""Real PyTorch models ported line for line with :mod:`jaxnets.nn` (torch-mirror family).

Each loads its torch original's ``state_dict`` as it is (strict, no transposes)
and is proven equal to it by rows of ``python -m parity`` (``parity/ports.py``:
outputs, parameter and input gradients in train and eval mode, float64 and
float32, and a 20-step float64 optimizer trajectory) and by
``tests/test_ports.py`` (layer by layer with ``parity.compare``).

- :class:`MnistNet` (``Net`` of pytorch/examples ``mnist/main.py``);
- :class:`Generator`, :class:`Discriminator`, :func:`dcgan_weights_init` (pytorch/examples ``dcgan/main.py``);
- :class:`RNNModel` (pytorch/examples ``word_language_model/model.py``, tied weights);
- :class:`TransformerClassifier` with :class:`PositionalEncoding` (``nn.TransformerEncoder`` classifier);
- :func:`resnet18`, :class:`ResNet`, :class:`BasicBlock` (torchvision ``models/resnet.py``).
"""

from ._dcgan import Discriminator as Discriminator
from ._dcgan import Generator as Generator
from ._dcgan import weights_init as dcgan_weights_init
from ._mnist import Net as MnistNet
from ._resnet import BasicBlock as BasicBlock
from ._resnet import ResNet as ResNet
from ._resnet import resnet18 as resnet18
from ._transformer import PositionalEncoding as PositionalEncoding
from ._transformer import TransformerClassifier as TransformerClassifier
from ._word_language_model import RNNModel as RNNModel

__all__ = [
    "BasicBlock",
    "Discriminator",
    "Generator",
    "MnistNet",
    "PositionalEncoding",
    "RNNModel",
    "ResNet",
    "TransformerClassifier",
    "dcgan_weights_init",
    "resnet18",
]
