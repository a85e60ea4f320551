"""The tutorials' models, idiomatic Flax NNX: channels-last inputs, Flax layouts, PyTorch's attribute names.

- :class:`LeNet` (``_lenet``), the "Neural Networks" tutorial's net, with its fast convolution path
  (``_fastconv``: batch-last chunks, fused conv, ReLU and max-pool);
- :class:`TwoLayerNet`, :func:`two_layer_sequential` and :class:`Sequential` (``_two_layer``) and
  :class:`DynamicNet` (``_dynamic``), the models of "Learning PyTorch with examples";
- :func:`torch_kernel_init` and :func:`torch_bias_init` (``_init``): torch's default initialisation;
- :func:`summary` (``_summary``), a ``print(net)``, and :func:`op_chain` / :func:`format_chain`
  (``_graph``), the op chain that PyTorch's tutorial walks through ``loss.grad_fn``.

The layers that mirror ``torch.nn`` one to one are the other family: :mod:`jaxnets.nn`.
"""

from ._dynamic import DynamicNet as DynamicNet
from ._graph import format_chain as format_chain
from ._graph import op_chain as op_chain
from ._init import torch_bias_init as torch_bias_init
from ._init import torch_kernel_init as torch_kernel_init
from ._lenet import LeNet as LeNet
from ._summary import summary as summary
from ._two_layer import Sequential as Sequential
from ._two_layer import TwoLayerNet as TwoLayerNet
from ._two_layer import two_layer_sequential as two_layer_sequential
