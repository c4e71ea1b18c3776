"""Reference harness for the Deep Learning Zero To All (season 2) DNN labs, in PyTorch and JAX."""

__version__ = "0.1.0"
