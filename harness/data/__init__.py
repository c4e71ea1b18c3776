"""Data: the MNIST sources (the bundled subset, TFDS, IDX files), their validation, the XOR and gate tables, the
batch order and data fingerprints."""
