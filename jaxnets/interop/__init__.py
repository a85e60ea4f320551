"""PyTorch's formats, without torch.

- :mod:`jaxnets.interop.torch_layout`: the one table of layout rules between a jaxnets model and torch's
  ``state_dict`` (OIHW to HWIO, ``(out, in)`` to ``(in, out)``, the flatten-order permutation), which
  serves weights, gradients and optimizer state alike;
- :mod:`jaxnets.interop.exchange`: weight files shared with PyTorch (``.safetensors`` both ways, ``.pt``
  state_dicts in);
- ``_pt_format``: the reader of ``torch.save``'s files behind ``exchange``, a restricted unpickler.

Nothing is imported here: ``import jaxnets.interop.torch_layout`` loads only what it needs.
"""
