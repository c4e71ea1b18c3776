"""What the MLP labs can vary, checked against the formulas and across the two frameworks:

* every initialisation scheme, drawn natively by torch, natively by Flax and by the harness (shared mode): mean,
  variance and tail mass of a large draw against the scheme's formula (so that a truncated normal, say, cannot
  pass for a normal);
* every optimizer: the same name is the same algorithm, step for step, in torch and Optax (float64);
* dropout: active in training only, with the documented mask semantics;
* batch norm: batch statistics in training, running statistics (torch's conventions) in evaluation.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from harness.labs import ACTIVATIONS, INITS, MANUAL_LOSSES, MODULE_LOSSES, OPTIMIZERS, LabError, Model, Optimizer
from harness.weights import init_params
from jax_impl import manual as jmanual
from jax_impl import models as jm
from jax_impl.train import x64
from torch_impl import manual as tmanual
from torch_impl import models as tm
from torch_impl import train as ttrain

FAN_IN, FAN_OUT = 784, 512  # 401,408 draws per kernel
TAIL = math.erfc(2 / math.sqrt(2))  # P(|z| > 2) of a standard normal, 0.0455


def expected(scheme: str, fan_in: int, fan_out: int) -> dict:
    """The scheme's formula (LABS.md), written out independently of harness.weights: the variance of the
    weights, the bound of a uniform draw, and the mass beyond twice the (untruncated) standard deviation."""
    if scheme == "normal":
        return {"var": 1.0, "std": 1.0, "tail": TAIL}
    if scheme == "torch_default":  # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        a = 1 / math.sqrt(fan_in)
        return {"var": a * a / 3, "bound": a}
    if scheme == "xavier_uniform":
        a = math.sqrt(6 / (fan_in + fan_out))
        return {"var": a * a / 3, "bound": a}
    if scheme == "xavier_normal":  # a plain normal, as torch's (JAX's glorot_normal would be truncated)
        std = math.sqrt(2 / (fan_in + fan_out))
        return {"var": std * std, "std": std, "tail": TAIL}
    if scheme == "he_uniform":
        a = math.sqrt(6 / fan_in)
        return {"var": a * a / 3, "bound": a}
    if scheme == "he_normal":
        std = math.sqrt(2 / fan_in)
        return {"var": std * std, "std": std, "tail": TAIL}
    if scheme == "flax_default":  # lecun_normal: truncated at 2 std, rescaled to variance 1/fan_in
        std = math.sqrt(1 / fan_in) / 0.87962566103423978
        return {"var": 1 / fan_in, "std": std, "tail": 0.0}
    raise AssertionError(scheme)


def draw(source: str, model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    if source == "harness":
        return init_params(model, seed)
    if source == "torch":
        return tm.get_params(tm.build(model, torch.float32, torch.device("cpu"), seed))[0]
    return jm.get_params(jm.build(model, jnp.float32, seed))[0]


def check_moments(w: np.ndarray, want: dict, what: str) -> None:
    w = w.astype(np.float64).ravel()
    n, var = w.size, want["var"]
    m4 = 1.8 * var * var if "bound" in want else 3.0 * var * var  # uniform / normal (an upper bound if truncated)
    assert abs(w.mean()) < 5 * math.sqrt(var / n), (what, w.mean())
    assert abs(w.var() - var) < 5 * math.sqrt((m4 - var * var) / n), (what, w.var(), var)
    if "bound" in want:
        a = want["bound"]
        assert np.abs(w).max() <= a * (1 + 1e-6), what
        assert np.abs(w).max() > a * (1 - 1e-3), what  # the whole interval is used
    if "tail" in want:
        tail = np.mean(np.abs(w) > 2 * want["std"])
        assert abs(tail - want["tail"]) < 5 * math.sqrt(TAIL * (1 - TAIL) / n) + 1e-12, (what, tail, want["tail"])


@pytest.mark.parametrize("source", ["harness", "torch", "jax"])
@pytest.mark.parametrize("scheme", INITS)
def test_weight_init_matches_formula(scheme, source):
    model = Model((FAN_IN, FAN_OUT), "relu", "logits", init=scheme)
    params = draw(source, model)
    check_moments(params["dense0/kernel"], expected(scheme, FAN_IN, FAN_OUT), f"{source} {scheme}")


@pytest.mark.parametrize("source", ["harness", "torch", "jax"])
def test_bias_init_matches_formula(source):
    wide = Model((4, 200_000), init="torch_default")  # torch's default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    check_moments(draw(source, wide)["dense0/bias"], {"var": 1 / 12, "bound": 0.5}, f"{source} default bias")
    normal = Model((4, 200_000), init="normal", bias_init="normal")  # mnist_backprop_manual: N(0, 1)
    check_moments(draw(source, normal)["dense0/bias"], expected("normal", 4, 200_000), f"{source} N(0,1) bias")
    flax = Model((4, 1000), init="flax_default")  # Flax's default bias is zero
    assert not draw(source, flax)["dense0/bias"].any()


def test_same_scheme_differs_only_in_the_draw():
    """Native draws of one scheme in the two frameworks are different numbers from one distribution; the
    harness's shared draw is what makes them equal."""
    model = Model((FAN_IN, FAN_OUT), "relu", "logits", init="he_normal")
    t, j = draw("torch", model)["dense0/kernel"], draw("jax", model)["dense0/kernel"]
    assert not np.allclose(t, j)
    assert abs(t.std() - j.std()) < 5 * t.std() * math.sqrt(2 / t.size)


# ------------------------------------------------------------------------------------------------ optimizers

SETTINGS = {  # the optimizer's own defaults, and a setting off them
    "sgd": [Optimizer("sgd", lr=0.1), Optimizer("sgd", lr=1.0)],
    "adam": [Optimizer("adam", lr=0.001), Optimizer("adam", lr=0.01, betas=(0.8, 0.99), eps=1e-6)],
    "rmsprop": [Optimizer("rmsprop", lr=0.01), Optimizer("rmsprop", lr=0.001, alpha=0.9, eps=1e-6)],
    "adadelta": [Optimizer("adadelta", lr=1.0), Optimizer("adadelta", lr=0.5, rho=0.95, eps=1e-5)],
}


def _grads(steps: int, shape: tuple[int, ...], scale: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((steps, *shape)) * scale


def torch_trajectory(opt: Optimizer, w0: np.ndarray, grads: np.ndarray, fused: bool = False) -> np.ndarray:
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    o = tm.make_optimizer(opt, [p], fused=fused)
    out = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        o.step()
        out.append(p.detach().numpy().copy())
    return np.stack(out)


def optax_trajectory(tx: optax.GradientTransformation, w0: np.ndarray, grads: np.ndarray) -> np.ndarray:
    def run(w: jax.Array, gs: jax.Array) -> jax.Array:
        def step(carry: tuple, g: jax.Array) -> tuple:
            w, state = carry
            updates, state = tx.update(g, state, w)
            w = optax.apply_updates(w, updates)
            return (w, state), w

        return jax.lax.scan(step, (w, tx.init(w)), gs)[1]

    with x64(True):
        return np.asarray(jax.jit(run)(jnp.asarray(w0, jnp.float64), jnp.asarray(grads, jnp.float64)))


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("scale", [1.0, 1e-7])  # tiny gradients make eps (and where it sits) matter
def test_optimizer_is_the_same_algorithm_in_both(name, scale):
    w0 = np.random.default_rng(1).standard_normal((7, 5))
    grads = _grads(60, w0.shape, scale)
    for opt in SETTINGS[name]:
        j = optax_trajectory(jm.make_optimizer(opt), w0, grads)
        for fused in (False, True):  # the training loop's Adam is torch's fused kernel
            t = torch_trajectory(opt, w0, grads, fused)
            moved = np.abs(t - w0).max()
            assert moved > 0
            np.testing.assert_allclose(j - w0, t - w0, rtol=1e-10, atol=1e-12 * moved, err_msg=f"{opt} {fused}")


def test_dispatch_tables_cover_the_declared_names_and_refuse_others():
    """Every backend dispatch table is keyed on exactly the names labs.py declares; an unknown name raises (it
    used to fall through to Adadelta)."""
    for table, names in ((tm.OPTIMIZERS, OPTIMIZERS), (jm.OPTIMIZERS, OPTIMIZERS), (ttrain._FUNCTIONAL, OPTIMIZERS),
                         (tm.ACTIVATIONS, ACTIVATIONS), (jm.ACTIVATIONS, ACTIVATIONS), (tm.LOSSES, MODULE_LOSSES),
                         (jm.LOSSES, MODULE_LOSSES), (tmanual.LOSSES, MANUAL_LOSSES), (jmanual.LOSSES, MANUAL_LOSSES)):
        assert set(table) == set(names)
    assert set(tm.DRAWS) == set(jm.INITIALIZERS)
    p = [torch.nn.Parameter(torch.zeros(1))]
    for make in (lambda o: tm.make_optimizer(o, p), jm.make_optimizer):
        with pytest.raises(LabError, match="unknown optimizer 'nadam'"):
            make(Optimizer("nadam"))
    with pytest.raises(LabError, match="unknown loss 'hinge'"):
        tm.loss_fn("hinge", torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(LabError, match="unknown activation 'swish'"):
        tm.MLP(dataclasses.replace(Model((2, 2, 1)), activation="swish"))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_torch_functional_update_is_the_optimizers_own(name):
    """The traced executions' update (torch.optim's functional form) follows the optimizer step for step."""
    w0 = np.random.default_rng(2).standard_normal((7, 5))
    grads = _grads(30, w0.shape, 1.0)
    for opt in SETTINGS[name]:
        p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
        update, _ = ttrain._functional_update(tm.make_optimizer(opt, [p]), [p.data])
        out = []
        for g in grads:
            update([torch.tensor(g, dtype=torch.float64)])
            out.append(p.detach().numpy().copy())
        np.testing.assert_allclose(np.stack(out), torch_trajectory(opt, w0, grads), rtol=1e-12, atol=1e-14)


def test_the_match_is_not_trivially_loose():
    """Optax's own rmsprop default (eps inside the square root) and an Adam without torch's eps differ from
    torch's at the test's tolerance: the comparison above can tell algorithms apart."""
    w0 = np.random.default_rng(1).standard_normal((7, 5))
    grads = _grads(60, w0.shape, 1e-7)
    t = torch_trajectory(Optimizer("rmsprop", lr=0.01), w0, grads)
    j = optax_trajectory(optax.rmsprop(0.01, decay=0.99, eps=1e-8), w0, grads)
    assert not np.allclose(j - w0, t - w0, rtol=1e-3)
    t = torch_trajectory(Optimizer("adam", lr=0.001), w0, grads)
    j = optax_trajectory(optax.adam(0.001, eps=0.0, eps_root=1e-8), w0, grads)
    assert not np.allclose(j - w0, t - w0, rtol=1e-3)


def test_optimizer_defaults_are_torchs():
    p = [torch.nn.Parameter(torch.zeros(1))]
    for name, cls in (("adam", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop),
                      ("adadelta", torch.optim.Adadelta)):
        defaults = cls(p).defaults
        opt = Optimizer(name)
        assert opt.epsilon == defaults["eps"], name
        if name == "adam":
            assert opt.betas == tuple(defaults["betas"])
        if name == "rmsprop":
            assert opt.alpha == defaults["alpha"]
        if name == "adadelta":
            assert opt.rho == defaults["rho"]
        built = tm.make_optimizer(opt, p).defaults
        assert built["eps"] == defaults["eps"] and built.get("momentum", 0) == defaults.get("momentum", 0)


# ------------------------------------------------------------------------------------------------ dropout

WIDTH, BATCH, RATE = 500, 100, 0.3


def _identity_net() -> tuple[Model, dict[str, np.ndarray]]:
    """WIDTH -> WIDTH -> WIDTH, identity kernels, zero biases: on inputs of ones the output is the hidden layer's
    dropout factor (0 or 1 / (1 - p)) unit by unit."""
    model = Model((WIDTH, WIDTH, WIDTH), "relu", "logits", dropout=RATE)
    eye = np.eye(WIDTH, dtype=np.float32)
    zero = np.zeros(WIDTH, np.float32)
    return model, {"dense0/kernel": eye, "dense0/bias": zero, "dense1/kernel": eye, "dense1/bias": zero}


def _check_dropped(out: np.ndarray) -> None:
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / (1 - RATE), rtol=1e-6)
    n = out.size
    assert abs((~kept).mean() - RATE) < 5 * math.sqrt(RATE * (1 - RATE) / n)


def test_torch_dropout_is_active_in_training_only():
    model, params = _identity_net()
    net = tm.build(model, torch.float32, torch.device("cpu"), 0, params)
    x = torch.ones(BATCH, WIDTH)
    net.train()
    a, b = net(x).detach().numpy(), net(x).detach().numpy()
    _check_dropped(a)
    assert (a != b).any()  # a fresh draw every call
    mask = np.random.default_rng(0).random((BATCH, WIDTH)) >= RATE
    given = net(x, [torch.tensor(mask, dtype=torch.float32)]).detach().numpy()
    np.testing.assert_allclose(given, mask / (1 - RATE), rtol=1e-6)
    net.eval()
    np.testing.assert_array_equal(net(x).detach().numpy(), np.ones((BATCH, WIDTH)))


def test_jax_dropout_is_active_in_training_only():
    model, params = _identity_net()
    net = jm.build(model, jnp.float32, 0, params)
    x = jnp.ones((BATCH, WIDTH))
    masks = jm.dropout_masks(jax.random.key(0), RATE, BATCH, model.sizes[1:-1], jnp.float32)
    _check_dropped(np.asarray(net(x, masks, train=True)))
    other = jm.dropout_masks(jax.random.key(1), RATE, BATCH, model.sizes[1:-1], jnp.float32)
    assert (np.asarray(other[0]) != np.asarray(masks[0])).any()
    mask = np.random.default_rng(0).random((BATCH, WIDTH)) >= RATE
    np.testing.assert_allclose(np.asarray(net(x, [jnp.asarray(mask, jnp.float32)], train=True)),
                               mask / (1 - RATE), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(net(x, masks, train=False)), np.ones((BATCH, WIDTH)))


def test_shared_masks_give_both_frameworks_the_same_training_outputs():
    model = Model((20, 30, 30, 4), "relu", "logits", init="xavier_uniform", dropout=RATE)
    params = init_params(model, 3)
    x = np.random.default_rng(2).random((8, 20)).astype(np.float32)
    masks = [(np.random.default_rng(5 + i).random((8, 30)) >= RATE).astype(np.float32) for i in range(2)]
    t_net = tm.build(model, torch.float32, torch.device("cpu"), 0, params)
    t_net.train()
    t = t_net(torch.tensor(x), [torch.tensor(m) for m in masks]).detach().numpy()
    j = np.asarray(jm.build(model, jnp.float32, 0, params)(jnp.asarray(x), [jnp.asarray(m) for m in masks],
                                                          train=True))
    np.testing.assert_allclose(t, j, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ batch norm


def _bn_reference(x: np.ndarray, steps: int, momentum: float = 0.1, eps: float = 1e-5) -> dict:
    """Batch norm of the first layer's pre-activations by the formulas: training normalises with the batch mean
    and biased variance; running = (1 - m) running + m batch, with the unbiased variance."""
    mean, var = np.zeros(x.shape[1]), np.ones(x.shape[1])
    n = x.shape[0]
    for _ in range(steps):
        mean = (1 - momentum) * mean + momentum * x.mean(0)
        var = (1 - momentum) * var + momentum * x.var(0) * n / (n - 1)
    return {"train": (x - x.mean(0)) / np.sqrt(x.var(0) + eps), "eval": (x - mean) / np.sqrt(var + eps),
            "mean": mean, "var": var}


def test_batch_norm_train_and_eval_semantics_in_both():
    model = Model((6, 5, 3), "relu", "logits", batchnorm=True)
    params = init_params(model, 0, "float64")
    params["dense1/kernel"] = np.eye(5, 3)  # pass the first three normalised units through
    params["dense1/bias"] = np.zeros(3)
    x = np.random.default_rng(0).standard_normal((16, 6)) * 3 + 1
    pre = x @ params["dense0/kernel"] + params["dense0/bias"]
    ref = _bn_reference(pre, steps=3)
    relu = lambda a: np.maximum(a, 0)  # noqa: E731

    t_net = tm.build(model, torch.float64, torch.device("cpu"), 0, params)
    t_net.train()
    for _ in range(3):
        t_train = t_net(torch.tensor(x)).detach().numpy()
    t_net.eval()
    t_eval = t_net(torch.tensor(x)).detach().numpy()
    t_state = tm.get_params(t_net)[1]

    with x64(True):
        j_net = jm.build(model, jnp.float64, 0, params)
        for _ in range(3):
            j_train = np.asarray(j_net(jnp.asarray(x), train=True))
        j_eval = np.asarray(j_net(jnp.asarray(x), train=False))
        j_state = jm.get_params(j_net)[1]
        j_rows = np.asarray(j_net(jnp.asarray(x[:4]), train=False))

    for name, train, evals, state in (("torch", t_train, t_eval, t_state), ("jax", j_train, j_eval, j_state)):
        np.testing.assert_allclose(train, relu(ref["train"])[:, :3], rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(evals, relu(ref["eval"])[:, :3], rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(state["bn0/mean"], ref["mean"], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(state["bn0/var"], ref["var"], rtol=1e-12, err_msg=name)
    # evaluation is row by row: a row's output does not depend on the rest of the batch
    np.testing.assert_allclose(j_rows, j_eval[:4], rtol=1e-12)
    t_net.eval()
    np.testing.assert_allclose(t_net(torch.tensor(x[:4])).detach().numpy(), t_eval[:4], rtol=1e-12)
    assert not np.allclose(t_train, t_eval)


def test_flax_momentum_convention_is_translated():
    """torch's momentum 0.1 is the weight of the new batch; the JAX BatchNorm follows it (Flax's own would
    weigh the old value by its momentum)."""
    model = dataclasses.replace(Model((4, 3, 2), batchnorm=True), bn_momentum=0.25)
    params = init_params(model, 0, "float64")
    x = np.random.default_rng(1).standard_normal((10, 4))
    pre = x @ params["dense0/kernel"] + params["dense0/bias"]
    ref = _bn_reference(pre, steps=1, momentum=0.25)
    with x64(True):
        net = jm.build(model, jnp.float64, 0, params)
        net(jnp.asarray(x), train=True)
        state = jm.get_params(net)[1]
    np.testing.assert_allclose(state["bn0/mean"], ref["mean"], rtol=1e-12)
    np.testing.assert_allclose(state["bn0/var"], ref["var"], rtol=1e-12)
