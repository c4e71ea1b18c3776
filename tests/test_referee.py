"""The numpy referee (harness/referee/) agrees with torch in float64 from shared weights, batches and masks: per
step on the losses, on every evaluation, the final parameters, the batch-norm running statistics and the
companion model; its traced gradients are torch.autograd's."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from harness import backend as backends
from harness.backend import BackendError, TrainResult
from harness.labs import ACTIVATIONS, LABS, LOSSES, OPTIMIZERS, Lab, Model
from harness.referee import backend as referee
from harness.referee import losses, model, optim
from harness.run.runner import Prepared, RunOptions, prepare

torch = pytest.importorskip("torch")

TOL = 1e-10
# Steps per lab: every XOR lab whole, except xor_wide_deep, whose break-out from the ln 2 plateau (~step 5680)
# magnifies rounding chaotically in every pair of implementations (torch, JAX and this referee part there alike).
XOR_STEPS = {"xor_wide_deep": 5000}
MNIST_STEPS = 30
WIDE_STEPS = 10  # the 512-wide nets
# A dense bias feeding batch norm has no gradient (the batch mean removes it): its gradient is rounding noise
# (~1e-17) that Adam scales up to steps of ~lr * 1e-9, differently in every implementation; the running means
# (and so the evaluations) carry that noise. Measured: <= 4e-10 after 50 steps in every pair (torch, JAX, referee).
BN_NOISE_ATOL = 1e-8


def options(lab: Lab, **kw: object) -> RunOptions:
    steps = XOR_STEPS.get(lab.name) if lab.task != "mnist" else (
        WIDE_STEPS if max(lab.model.sizes[1:-1], default=0) >= 512 else MNIST_STEPS)
    return RunOptions(dtype="float64", weights="shared", mask_mode="shared", steps=steps, **kw)


@functools.cache
def prepared(name: str) -> Prepared:
    return prepare(LABS[name], options(LABS[name]))


def specs(name: str) -> list:
    p = prepared(name)
    return [p.spec] + ([p.companion] if p.companion is not None else [])


def noise_tensors(m: Model) -> set[str]:
    """Tensors (and state) that are rounding noise in every implementation when ``m`` has batch norm."""
    hidden = range(m.depth - 1) if m.batchnorm else ()
    return {f"dense{i}/bias" for i in hidden} | {f"bn{i}/mean" for i in hidden}


def assert_close(a: np.ndarray, b: np.ndarray, scale: float, what: str, atol: float = 0.0) -> None:
    diff = float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))
    assert diff <= TOL * scale + atol, f"{what}: max abs diff {diff:.3g} (scale {scale:.3g})"


def assert_same_run(ref: TrainResult, other: TrainResult, spec: object) -> None:
    """Every figure of a run within TOL of ``other``'s, relative to its scale."""
    rel = np.abs(ref.losses - other.losses) / np.abs(other.losses)
    assert rel.max() <= TOL, f"loss: rel {rel.max():.3g} at step {int(rel.argmax())}"
    noise = noise_tensors(spec.model)
    atol = BN_NOISE_ATOL if noise else 0.0
    assert set(ref.outputs) == set(other.outputs)
    for done, sets in other.outputs.items():
        for name, out in sets.items():
            assert_close(ref.outputs[done][name], out, np.abs(out).max(), f"outputs {name} after {done}", atol)
    for kind, start, got, want in (("params", spec.params, ref.params, other.params),
                                   ("state", spec.state or {}, ref.state, other.state)):
        assert set(got) == set(want), kind
        for k, v in want.items():  # scale: the tensor's size at the start or the end (XOR weights can reach ~0)
            scale = max(np.abs(v).max(), np.abs(start.get(k, v)).max())
            assert_close(got[k], v, scale, f"{kind} {k}", BN_NOISE_ATOL if k in noise else 0.0)


@functools.cache
def torch_run(name: str, index: int) -> TrainResult:
    return backends.load("torch").train(specs(name)[index])


@pytest.mark.parametrize("name", list(LABS))
def test_referee_matches_torch_float64(name):
    for index, spec in enumerate(specs(name)):  # the companion model too
        ref = referee.train(spec)
        assert ref.losses.dtype == np.float64 and len(ref.losses) == spec.steps
        assert_same_run(ref, torch_run(name, index), spec)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_matches_torch(optimizer):
    # rmsprop at lr 0.01 oscillates near step 40 here, magnifying rounding ~30x a step in every pair (torch-JAX too)
    lr = {"sgd": 1.0, "adadelta": 1.0, "rmsprop": 0.001, "adam": 0.01}[optimizer]
    lab = LABS["xor_wide_deep"]
    p = prepare(lab, dataclasses.replace(options(lab), steps=300,
                                         overrides={"optimizer_name": optimizer, "lr": lr}))
    assert p.spec.lab.optimizer.name == optimizer
    assert_same_run(referee.train(p.spec), backends.load("torch").train(p.spec), p.spec)


def test_the_agreement_check_has_teeth():
    """An lr one part in 1e6 off, or batch-norm momentum 0.11, fails the comparison above."""
    spec = prepared("xor_mlp").spec
    lab = spec.lab.with_options(lr=spec.lab.optimizer.lr * (1 - 1e-6))
    with pytest.raises(AssertionError, match="loss"):
        assert_same_run(referee.train(dataclasses.replace(spec, lab=lab, steps=200)),
                        backends.load("torch").train(dataclasses.replace(spec, steps=200)), spec)
    spec = dataclasses.replace(prepared("mnist_batchnorm").spec, steps=2)
    bad = dataclasses.replace(spec, model=dataclasses.replace(spec.model, bn_momentum=0.11))
    with pytest.raises(AssertionError, match="state bn0/"):
        assert_same_run(referee.train(bad), backends.load("torch").train(spec), spec)


# --- trace: the referee's gradients at each step are torch.autograd's (manual labs: torch_impl.manual's) ------

def torch_step(spec: object, params: dict, state: dict, s: int) -> tuple[float, dict, dict]:
    """Loss, gradients (shared layout) and batch-norm state after the forward pass of step ``s`` in torch."""
    from torch_impl import manual, models

    x, y, masks = referee.batch(spec, s)
    x, y = torch.as_tensor(x), torch.as_tensor(y if y.dtype == np.float64 else y.astype(np.int64))
    masks = None if masks is None else [torch.as_tensor(m) for m in masks]
    if spec.lab.manual:
        tensors = {k: torch.as_tensor(v) for k, v in params.items()}
        target = manual.targets(spec.lab.loss, y, spec.model.sizes[-1], torch.float64)
        grads, loss = manual.backward(tensors, x, target, spec.lab.loss, spec.lab.grad_eps)
        return float(loss), {k: g.numpy() for k, g in grads.items()}, {}
    module = models.build(spec.model, torch.float64, torch.device("cpu"), spec.seed, params, state)
    module.train()
    loss = models.loss_fn(spec.lab.loss, module(x, masks), y)
    loss.backward()
    grads = {}
    for i, layer in enumerate(module.dense):
        grads[f"dense{i}/kernel"], grads[f"dense{i}/bias"] = layer.weight.grad.numpy().T, layer.bias.grad.numpy()
    for i, bn in enumerate(module.bn):
        grads[f"bn{i}/scale"], grads[f"bn{i}/bias"] = bn.weight.grad.numpy(), bn.bias.grad.numpy()
    return float(loss.detach()), grads, models.get_params(module)[1]


@pytest.mark.parametrize("name", ["gates", "xor_mlp", "xor_backprop_manual", "mnist_backprop_manual",
                                  "mnist_batchnorm", "mnist_dropout", "mnist_selu"])
def test_trace_gradients_are_torch_autograd(name):
    """At every traced step, from the referee's own weights before it: loss, gradients and state after the
    forward pass are torch's; the weights and state after it are those of torch trained that many steps."""
    spec = dataclasses.replace(prepared(name).spec, steps=3)
    records = referee.trace(spec, 3)
    assert len(records) == 3
    noise = noise_tensors(spec.model)
    params, state = spec.params, spec.state or {}
    for s, rec in enumerate(records):
        loss, grads, torch_state = torch_step(spec, params, state, s)
        assert rec["loss"] == pytest.approx(loss, rel=TOL)
        assert set(rec["grads"]) == set(grads) == set(params)
        for k, g in grads.items():  # a gradient that is rounding noise (bias before batch norm) is ~1e-17
            assert_close(rec["grads"][k], g, np.abs(g).max(), f"step {s} grad {k}", atol=1e-14)
            np.testing.assert_array_equal(rec["updates"][k], rec["params"][k] - params[k])
        trained = backends.load("torch").train(dataclasses.replace(spec, steps=s + 1))
        for kind, want in (("params", trained.params), ("state", torch_state), ("state", trained.state)):
            for k, v in want.items():
                assert_close(rec[kind][k], v, np.abs(v).max(), f"step {s} {kind} {k}",
                             BN_NOISE_ATOL if k in noise else 0.0)
        params, state = rec["params"], rec["state"]


# --- the contract and the dispatch tables ------------------------------------------------------------------

def test_referee_is_a_registered_backend():
    entry = backends.info("numpy")
    assert entry.float64_only and entry.module == "harness.referee.backend"
    assert backends.load("numpy") is referee and isinstance(referee, backends.Backend)
    assert "numpy" not in backends.names(include_referees=False)
    assert referee.available_devices() == ["cpu"] and set(referee.versions()) == {"numpy"}
    assert set(referee.modes("cpu")) <= set(entry.executions)
    assert referee.matmul_timer("cpu", 32)() > 0
    assert referee.device_info("cpu")["dtype"] == "float64"
    spec = prepared("xor_mlp").spec
    stepper = referee.make_stepper(dataclasses.replace(spec, steps=5), entry.executions[0])
    stepper.run(3)
    stepper.sync()
    assert stepper.loss() == pytest.approx(torch_run("xor_mlp", 0).losses[2], rel=TOL)


def test_referee_blas_threads_are_settable():
    pytest.importorskip("threadpoolctl")
    before = referee.thread_count()
    try:
        assert referee.configure_threads(1)["threads"] == referee.thread_count() == 1
    finally:
        referee.configure_threads(before)
    assert referee.thread_count() == before


def test_referee_computes_in_float64_from_float32_weights():
    lab = LABS["xor_mlp"]
    p32 = prepare(lab, dataclasses.replace(options(lab), dtype="float32", steps=50))
    p64 = prepared("xor_mlp")
    widened = dataclasses.replace(p64.spec, params={k: v.astype(np.float32).astype(np.float64)
                                                    for k, v in p32.spec.params.items()}, steps=50)
    ref = referee.train(p32.spec)
    assert ref.params["dense0/kernel"].dtype == np.float64
    np.testing.assert_array_equal(ref.losses, referee.train(widened).losses)


def test_referee_refuses_what_it_cannot_match():
    spec = prepared("mnist_dropout").spec
    with pytest.raises(BackendError, match="shared weights"):
        referee.train(dataclasses.replace(spec, params=None))
    with pytest.raises(BackendError, match="needs shared dropout masks"):
        referee.train(dataclasses.replace(spec, masks=None))
    with pytest.raises(BackendError, match="cpu"):
        referee.train(dataclasses.replace(spec, device="gpu"))
    with pytest.raises(BackendError, match="execution"):
        referee.train(dataclasses.replace(spec, execution="compiled"))


def test_dispatch_tables_cover_the_declared_names():
    assert set(model.ACTIVATION_FNS) == set(ACTIVATIONS)
    assert set(losses.LOSS_FNS) == set(LOSSES)
    assert set(optim.OPTIMIZER_CLASSES) == set(OPTIMIZERS)
    for fn, bad in ((model.activation, "gelu"), (lambda n: losses.loss_and_direction(n, None, None), "hinge"),
                    (lambda n: optim.make(dataclasses.replace(LABS["xor_mlp"].optimizer, name=n)), "lbfgs")):
        with pytest.raises(ValueError, match="unknown"):
            fn(bad)


def test_losses_match_torch_at_the_edges():
    """bce's -100 log clamp and its gradient's 1e-12 floor on saturated outputs; cross-entropy on large logits."""
    import torch.nn.functional as F

    p = torch.tensor([[0.0, 1.0, 1 - 1e-14, 1e-14, 0.3, 0.5]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    F.binary_cross_entropy(p, y, reduction="none").mean(0).sum().backward()
    loss, grad = losses.bce(p.detach().numpy(), y.numpy(), 0.0)
    assert loss == pytest.approx(float(F.binary_cross_entropy(p.detach(), y, reduction="none").sum()), rel=1e-15)
    np.testing.assert_allclose(grad, p.grad.numpy(), rtol=1e-15)
    z = torch.tensor([[300.0, -2.0, 5.0], [0.1, 0.2, -700.0]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 2])
    ce = F.cross_entropy(z, labels)
    ce.backward()
    loss, grad = losses.cross_entropy(z.detach().numpy(), labels.numpy(), 0.0)
    assert loss == pytest.approx(float(ce.detach()), rel=1e-15)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_derivatives(name):
    """f' against a central difference, on both sides of 0."""
    f, df = model.activation(name)
    z = np.array([-3.0, -0.7, -1e-3, 2e-3, 0.4, 2.5])
    numeric = (f(z + 1e-6) - f(z - 1e-6)) / 2e-6
    np.testing.assert_allclose(df(z, f(z)), numeric, rtol=1e-7)
