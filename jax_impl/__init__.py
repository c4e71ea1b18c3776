"""JAX/Flax/Optax implementations of the labs, built from the harness's declarations (mirrors ``torch_impl``)."""
