"""The PyTorch tutorials, run in JAX (the executed notebooks of the documentation show them beside torch's code).

- :mod:`jaxnets.tutorials.lenet`: the "Neural Networks" tutorial (LeNet), ``jaxnets tutorial`` or
  ``python -m jaxnets.tutorials.lenet``;
- :mod:`jaxnets.tutorials.progression`: the seven stages of "Learning PyTorch with examples", from NumPy
  to a dynamic graph, ``jaxnets progression`` or ``python -m jaxnets.tutorials.progression``.
"""
