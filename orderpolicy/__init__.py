"""orderpolicy: learned unmasking orders for masked diffusion language models.

Importing the package has no side effects; submodules load torch, torchrl and
transformers only when imported.
"""

__version__ = "0.1.0"
