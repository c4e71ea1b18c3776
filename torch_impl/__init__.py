"""PyTorch implementations of the labs, built from the harness's declarations (mirrors ``jax_impl``)."""
