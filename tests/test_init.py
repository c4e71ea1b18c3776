"""The harness's initial weights: torch's generator ported bit for bit, layouts, the one-ulp nudge."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from harness.labs import LABS, get_lab
from harness.weights import TorchGenerator, init_params, init_state, nudge
from torch_impl.models import build, get_params


def test_generator_port_matches_torch_uniform():
    torch.manual_seed(123)
    expected = torch.empty(1000).uniform_(-0.3, 0.7).numpy()
    np.testing.assert_array_equal(TorchGenerator(123).uniform(1000, -0.3, 0.7), expected)


@pytest.mark.parametrize("lab", ["xor_perceptron", "xor_mlp", "xor_wide_deep", "mnist_relu_xavier",
                                 "mnist_deep_xavier", "mnist_batchnorm"])
def test_shared_float32_weights_equal_torch_native_init(lab):
    model = get_lab(lab).model
    native, _ = get_params(build(model, torch.float32, torch.device("cpu"), 777))
    shared = init_params(model, 777)
    assert native.keys() == shared.keys()
    for key in native:
        np.testing.assert_array_equal(native[key], shared[key], err_msg=key)


@pytest.mark.parametrize("scheme", ["torch_default", "xavier_uniform", "he_uniform"])
def test_shared_float64_weights_within_one_ulp_of_the_bound_of_torch(scheme):
    model = dataclasses.replace(get_lab("mnist_relu_xavier").model, init=scheme)
    native, _ = get_params(build(model, torch.float64, torch.device("cpu"), 777))
    shared = init_params(model, 777, "float64")
    for key in native:
        ulp = np.spacing(np.abs(native[key]).max())  # one ulp of the draw's bound: x * span + low rounds once
        assert np.all(np.abs(native[key] - shared[key]) <= ulp), key
    # the XOR nets are small enough to be bit-exact in float64 too
    xor = get_lab("xor_wide_deep").model
    native, _ = get_params(build(xor, torch.float64, torch.device("cpu"), 777))
    for key, value in init_params(xor, 777, "float64").items():
        np.testing.assert_array_equal(native[key], value)


def test_every_lab_has_weights_in_the_documented_layout():
    for lab in LABS.values():
        params = init_params(lab.model, lab.seed)
        for i, (fan_in, fan_out) in enumerate(zip(lab.model.sizes[:-1], lab.model.sizes[1:])):
            assert params[f"dense{i}/kernel"].shape == (fan_in, fan_out)
            assert params[f"dense{i}/bias"].shape == (fan_out,)
        assert set(init_state(lab.model)) == ({f"bn{i}/{s}" for i in range(lab.model.depth - 1)
                                               for s in ("mean", "var")} if lab.model.batchnorm else set())


def test_nudge_moves_every_weight_by_one_ulp():
    params = init_params(get_lab("xor_mlp").model, 777, "float64")
    moved = nudge(params)
    for key in params:
        np.testing.assert_array_equal(moved[key], np.nextafter(params[key], np.inf))
        assert moved[key].dtype == params[key].dtype
