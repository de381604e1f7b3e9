"""jst: lottery tickets that stay juvenile (arXiv 2109.03862) in JAX/Flax."""

__version__ = '0.2.0'
