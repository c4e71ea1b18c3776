"""Every lab, declared once and framework-neutral.

A declaration holds everything both implementations build from: the model, its initialisation, the loss, the
optimizer and its settings, the schedule, the seed, the log interval and the numbers the course printed
(``../shared/LABS.md``, course repository commit 0e11245). Neither ``torch_impl`` nor ``jax_impl`` repeats any
of these values.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from harness.errors import LabError
from harness.references import Breakout, CorrectSeries, EpochTable, FinalMetric, LossSeries, Reference

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "selu")
INITS = (
    "torch_default", "normal", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "flax_default",
)
BIAS_INITS = ("torch_default", "zeros", "normal")
OPTIMIZERS = ("sgd", "adadelta", "rmsprop", "adam")
MODULE_LOSSES = ("bce", "cross_entropy")  # on a framework module's output, gradients by autodiff
MANUAL_LOSSES = ("manual_bce", "manual_squared")  # the lectures' hand-written backpropagation
LOSSES = MODULE_LOSSES + MANUAL_LOSSES
TASKS = ("xor", "gates", "mnist")
T = TypeVar("T")


@dataclass(frozen=True)
class Model:
    """A multi-layer perceptron: Linear layers of ``sizes``, each hidden one followed by
    [batch norm], activation, [dropout]; the output is passed through ``output`` ("sigmoid" or "logits")."""

    sizes: tuple[int, ...]
    activation: str = "sigmoid"
    output: str = "sigmoid"
    init: str = "torch_default"
    bias_init: str = "torch_default"
    dropout: float = 0.0
    batchnorm: bool = False
    bn_momentum: float = 0.1  # torch convention: running = (1 - m) * running + m * batch
    bn_eps: float = 1e-5

    @property
    def depth(self) -> int:
        """Number of Linear layers."""
        return len(self.sizes) - 1


@dataclass(frozen=True)
class Optimizer:
    """Optimizer name and settings; the defaults are torch's, matched on the JAX side."""

    name: str = "sgd"
    lr: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)  # adam
    eps: float | None = None  # None: the optimizer's torch default (adam/rmsprop 1e-8, adadelta 1e-6)
    rho: float = 0.9  # adadelta
    alpha: float = 0.99  # rmsprop smoothing constant

    @property
    def epsilon(self) -> float:
        """``eps``, or torch's default for this optimizer when unset."""
        return self.eps if self.eps is not None else {"adadelta": 1e-6}.get(self.name, 1e-8)


@dataclass(frozen=True)
class Pretrain:
    """Greedy layer-wise pre-training of every hidden layer (lecture Lab-09-2's history): a binary RBM
    (Bernoulli visible and hidden units) per hidden layer, trained by contrastive divergence CD-``k`` with plain
    SGD on the CD statistics, each on the previous one's hidden probabilities (the first on the pixels); its
    kernel and hidden bias then initialise that Linear layer. One CD step on a batch v0: p0 = sigmoid(v0 W + c),
    h = (u < p0) with uniforms u from the harness; ``k`` times v = sigmoid(h W^T + b) (probabilities),
    p = sigmoid(v W + c), h = (u' < p) between them; W += lr (v0^T p0 - v^T p) / n, b += lr mean(v0 - v),
    c += lr mean(p0 - p). Reconstruction error: mean of (v0 - v1)^2 before the step's update."""

    k: int = 1
    lr: float = 0.1
    epochs: int = 1  # over the training set, per RBM
    batch_size: int = 100
    init_std: float = 0.01  # kernels N(0, init_std); both biases start at zero


@dataclass(frozen=True)
class Lab:
    """One lab: what to build, how to train it and what the course printed."""

    name: str
    title: str
    notebook: str
    task: str
    model: Model
    loss: str
    optimizer: Optimizer
    seed: int = 777
    steps: int | None = None  # full-batch labs: number of update steps
    epochs: int | None = None  # minibatch labs
    batch_size: int | None = None
    log_every: int = 100
    manual: bool = False  # gradients written by hand
    grad_eps: float = 0.0  # manual_bce: d_P = (P - Y) / (P (1 - P) + grad_eps), as the lecture writes it
    companion: Model | None = None  # a second model trained on the same batches (mnist_batchnorm)
    model_labels: tuple[str, str] = ("model", "companion")  # names of the two in per-epoch results
    eval_every_epoch: bool = False
    reference: Reference = field(default_factory=Reference)  # what the course printed (typed records)
    reference_raw_pixels: bool = False  # the course computed its accuracy on raw 0..255 test pixels
    notes: str = ""
    pretrain: Pretrain | None = None  # RBM pre-training of the hidden layers before training (mnist_rbm_pretrain)

    def total_steps(self, train_size: int | None = None) -> int:
        """Update steps of a full run (minibatch labs need the training-set size)."""
        if self.steps is not None:
            return self.steps
        if train_size is None or self.batch_size is None or self.epochs is None:
            raise LabError(f"{self.name}: the number of steps needs the training-set size")
        return self.epochs * (train_size // self.batch_size)

    def with_options(self, **options: Any) -> Lab:
        """A copy with overrides; model/optimizer fields may be given flat (``lr=0.1``, ``activation='relu'``)."""
        model_fields = {f.name for f in dataclasses.fields(Model)}
        opt_fields = {f.name for f in dataclasses.fields(Optimizer)}
        lab_fields = {f.name for f in dataclasses.fields(Lab)}
        m, o, top = {}, {}, {}
        for key, value in options.items():
            if value is None:
                continue
            if key == "optimizer_name":
                o["name"] = value
            elif key in model_fields:
                m[key] = value
            elif key in opt_fields:
                o[key] = value
            elif key in lab_fields:
                top[key] = value
            else:
                raise LabError(f"unknown option {key!r}")
        lab = dataclasses.replace(
            self, model=dataclasses.replace(self.model, **m), optimizer=dataclasses.replace(self.optimizer, **o),
            **top,
        )
        if self.companion is not None and m:
            shared = {k: v for k, v in m.items() if k not in ("batchnorm", "sizes")}
            lab = dataclasses.replace(lab, companion=dataclasses.replace(self.companion, **shared))
        validate(lab)
        return lab


def pick(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]`` for the name-keyed dispatch of the backends (activations, inits, losses, optimizers); a
    LabError naming the choices for a name the table lacks, so a new name one side forgets fails loudly."""
    try:
        return table[name]
    except KeyError:
        raise LabError(f"unknown {what} {name!r}; choose from {', '.join(table)}") from None


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise LabError(f"unknown {what} {value!r}; choose from {', '.join(allowed)}")


def validate(lab: Lab) -> None:
    """Raise LabError for a declaration with values the implementations do not know."""
    for model in (lab.model, lab.companion):
        if model is None:
            continue
        _choice("activation", model.activation, ACTIVATIONS)
        _choice("init", model.init, INITS)
        _choice("bias init", model.bias_init, BIAS_INITS)
        if not 0.0 <= model.dropout < 1.0:
            raise LabError(f"dropout must be in [0, 1), got {model.dropout}")
    _choice("optimizer", lab.optimizer.name, OPTIMIZERS)
    _choice("loss", lab.loss, LOSSES)
    _choice("task", lab.task, TASKS)
    if not (isinstance(lab.optimizer.lr, (int, float)) and 0 < lab.optimizer.lr < math.inf):
        raise LabError(f"learning rate must be positive and finite, got {lab.optimizer.lr}")
    for name in ("steps", "epochs", "batch_size", "log_every"):
        value = getattr(lab, name)
        if value is not None and value < 1:
            raise LabError(f"{name.replace('_', '-')} must be at least 1, got {value}")
    if lab.pretrain is not None:
        _check_pretrain(lab)


def _check_pretrain(lab: Lab) -> None:
    pre = lab.pretrain
    if lab.task != "mnist" or lab.manual or lab.companion is not None or lab.model.batchnorm or lab.model.depth < 2:
        raise LabError("RBM pre-training needs an MNIST network with hidden layers, without batch norm, companion or "
                       "hand-written gradients")
    for name in ("k", "epochs", "batch_size"):
        if getattr(pre, name) < 1:
            raise LabError(f"pre-training {name} must be at least 1, got {getattr(pre, name)}")
    for name in ("lr", "init_std"):
        if not 0 < getattr(pre, name) < math.inf:
            raise LabError(f"pre-training {name} must be positive and finite, got {getattr(pre, name)}")


_XOR_SGD = Optimizer("sgd", lr=1.0)
_ADAM = Optimizer("adam", lr=0.001)
_MNIST = dict(task="mnist", loss="cross_entropy", optimizer=_ADAM, epochs=15, batch_size=100, log_every=1,
              reference_raw_pixels=True)


def _xor(name: str, title: str, notebook: str, sizes: tuple[int, ...], records: tuple, **kw: Any) -> Lab:
    return Lab(
        name=name, title=title, notebook=notebook, task="xor", model=Model(sizes), loss="bce",
        optimizer=_XOR_SGD, steps=10001, reference=Reference(records), **kw,
    )


def _course(cost_first: float, cost_last: float, accuracy: float, **kw: Any) -> Reference:
    """An MNIST notebook's printout: the mean training cost of epochs 1 and 15, and the test accuracy (on raw
    0..255 pixels, as those notebooks computed it)."""
    return Reference((FinalMetric("epoch_cost", "train", cost_first, epoch=1),
                      FinalMetric("epoch_cost", "train", cost_last, epoch=15),
                      FinalMetric("accuracy", "test", accuracy, epoch=15, raw_pixels=True)), **kw)


LABS: dict[str, Lab] = {}


def _register(*labs: Lab) -> None:
    for lab in labs:
        validate(lab)
        LABS[lab.name] = lab


_register(
    Lab(
        name="gates", title="Perceptron on AND, OR and XOR", notebook="lecture Lab-08-1", task="gates",
        model=Model((2, 3)), loss="bce", optimizer=_XOR_SGD, steps=10001,
        reference=Reference((FinalMetric("accuracy", "train", {"AND": 1.0, "OR": 1.0,
                                                                "XOR": "not learned (0.5 or 0.75)"}),)),
        notes="Three independent perceptrons (one output column per gate); the loss is the sum of the three "
        "per-gate mean BCEs, so each column gets exactly the gradient of its own perceptron.",
    ),
    _xor(
        "xor_perceptron", "XOR with a single-layer perceptron", "lab-08_1_xor", (2, 1),
        (LossSeries({0: 0.7273974418640137, **{s: 0.6931471824645996 for s in range(200, 10001, 100)}}, 1e-4),
         FinalMetric("accuracy", "train", 0.5)),
    ),
    _xor(
        "xor_mlp", "XOR with a 2-2-1 sigmoid network", "lab-08_2_xor_nn", (2, 2, 1),
        (LossSeries({0: 0.7434073090553284, 2100: 0.6561676263809204, 2200: 0.4311096668243408,
                     10000: 0.0012345188297331333}, 1e-4),
         FinalMetric("accuracy", "train", 1.0)),
    ),
    _xor(
        "xor_wide_deep", "XOR with a wide and deep sigmoid network", "lab-08_3_xor_nn_wide_deep",
        (2, 10, 10, 10, 1),
        (LossSeries({0: 0.6948983669281006, 5000: 0.6820821762084961, 5300: 0.041401054710149765,
                     10000: 0.0001565046259202063}, 0.02, Breakout(5300, 0.1, 100)),
         FinalMetric("accuracy", "train", 1.0)),
        notes="float32 rounding differs between PyTorch 1.0 and today's; the steep break-out from the ln 2 "
        "plateau magnifies it, so the course's numbers are matched within 2% and the break-out within 100 steps.",
    ),
    Lab(
        name="xor_backprop_manual", title="XOR 2-2-1 with hand-written backpropagation",
        notebook="lecture Lab-08-2", task="xor", model=Model((2, 2, 1)), loss="manual_bce",
        optimizer=_XOR_SGD, steps=10001, manual=True, grad_eps=1e-7,
        notes="The lecture allocates its weights uninitialised (torch.Tensor(2, 2)), so its output is not "
        "reproducible; this harness draws them with torch's default Linear init from seed 777.",
    ),
    Lab(
        name="mnist_backprop_manual", title="MNIST 784-30-10 sigmoid network with hand-written backpropagation",
        notebook="lab-08_4_mnist_back_prop", task="mnist",
        model=Model((784, 30, 10), init="normal", bias_init="normal"), loss="manual_squared",
        optimizer=Optimizer("sgd", lr=0.5), steps=10000, batch_size=10, log_every=1000, manual=True,
        reference_raw_pixels=True,
        reference=Reference((CorrectSeries({1000 * (i + 1): c for i, c in enumerate(
            (736, 862, 860, 881, 874, 890, 904, 923, 916, 920))}, raw_pixels=True),)),
    ),
    Lab(
        name="mnist_softmax", title="MNIST softmax regression", notebook="lab-09_1_mnist_softmax",
        model=Model((784, 10), output="logits", init="normal"),
        reference=_course(4.848181248, 0.396514893, 0.8944), **_MNIST,
    ),
    Lab(
        name="mnist_relu_normal", title="MNIST 784-256-256-10 ReLU network, N(0,1) weights",
        notebook="lab-09_2_mnist_nn", model=Model((784, 256, 256, 10), "relu", "logits", init="normal"),
        reference=_course(129.325607300, 0.751341939, 0.9423), **_MNIST,
    ),
    Lab(
        name="mnist_relu_xavier", title="MNIST 784-256-256-10 ReLU network, Xavier uniform weights",
        notebook="lab-09_3_mnist_nn_xavier",
        model=Model((784, 256, 256, 10), "relu", "logits", init="xavier_uniform"),
        reference=_course(0.249897048, 0.006201488, 0.9805), **_MNIST,
    ),
    Lab(
        name="mnist_deep_xavier", title="MNIST five-layer 512-wide ReLU network, Xavier uniform (as intended)",
        notebook="lab-09_4_mnist_nn_deep",
        model=Model((784, 512, 512, 512, 512, 10), "relu", "logits", init="xavier_uniform"),
        reference=_course(0.283860594, 0.008151450, 0.9819, published_variant="mnist_deep_xavier_published"),
        **_MNIST,
        notes="The course's numbers come from the notebook as it ran, whose Sequential used only the first three "
        "Linear layers: that network is mnist_deep_xavier_published; this one is the five layers it declares.",
    ),
    Lab(
        name="mnist_deep_xavier_published", title="MNIST deep Xavier network as the notebook ran it",
        notebook="lab-09_4_mnist_nn_deep",
        model=Model((784, 512, 512, 512), "relu", "logits", init="xavier_uniform"),
        reference=_course(0.283860594, 0.008151450, 0.9819), **_MNIST,
        notes="The notebook's Sequential uses only its first three Linear layers, so the network ends in 512 "
        "logits (cross-entropy over 512 classes, of which only 0..9 ever occur).",
    ),
    Lab(
        name="mnist_dropout", title="MNIST five-layer 512-wide ReLU network with dropout 0.3",
        notebook="lab-09_5_mnist_nn_dropout",
        model=Model((784, 512, 512, 512, 512, 10), "relu", "logits", init="xavier_uniform", dropout=0.3),
        reference=_course(0.309925616, 0.044633854, 0.9772), **_MNIST,
    ),
    Lab(
        name="mnist_batchnorm", title="MNIST 784-32-32-10 with batch norm, beside the same net without",
        notebook="lab-09_6_mnist_batchnorm",
        model=Model((784, 32, 32, 10), "relu", "logits", batchnorm=True),
        companion=Model((784, 32, 32, 10), "relu", "logits"),
        seed=1, task="mnist", loss="cross_entropy", optimizer=Optimizer("adam", lr=0.01), epochs=10,
        batch_size=32, log_every=1, eval_every_epoch=True, model_labels=("bn", "plain"),
        reference=Reference((EpochTable(10, {
            "bn": {"train_loss": 0.04630, "train_acc": 0.99, "valid_loss": 0.09259, "valid_acc": 0.97},
            "plain": {"train_loss": 0.09960, "train_acc": 0.97, "valid_loss": 0.16750, "valid_acc": 0.96}},
            first_ahead_every_epoch=True),)),
        notes="The course draws the plain model's weights after the batch-norm model's from one generator; here "
        "both start from the same Linear weights (drawn from the seed), so batch norm is the only difference.",
    ),
    Lab(
        name="mnist_selu", title="MNIST five-layer 512-wide SELU network (work in progress in the course)",
        notebook="lab-09_7_mnist_nn_selu",
        model=Model((784, 512, 512, 512, 512, 10), "selu", "logits", init="xavier_uniform"),
        reference=_course(0.314744234, 0.054599971, 0.8196), **_MNIST,
        notes="The course's 0.8196 comes from evaluating on raw 0..255 pixels.",
    ),
)


_register(
    Lab(
        name="mnist_rbm_pretrain", title="MNIST 784-256-256-10 ReLU network, hidden layers pre-trained by stacked RBMs",
        notebook="lecture Lab-09-2", model=Model((784, 256, 256, 10), "relu", "logits", init="xavier_uniform"),
        pretrain=Pretrain(k=1, lr=0.1, epochs=1, batch_size=100, init_std=0.01),
        **{**_MNIST, "reference_raw_pixels": False},
        notes="The lecture's history of initialisation: two binary RBMs trained greedily by CD-1 (784-256 on the "
        "pixels, then 256-256 on the first one's hidden probabilities; one epoch each, lr 0.1), their kernels and "
        "hidden biases initialising the two hidden layers, then fine-tuning as mnist_relu_xavier trains (the "
        "output layer Xavier uniform). The course ran no such notebook, so there is no printed reference.",
    ),
)


def get_lab(name: str) -> Lab:
    """The lab called ``name``; a LabError that suggests the nearest names otherwise."""
    try:
        return LABS[name]
    except KeyError:
        close = difflib.get_close_matches(name, LABS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f"; known labs: {', '.join(LABS)}"
        raise LabError(f"unknown lab {name!r}{hint}") from None


# Lab groups, accepted wherever a list of labs is (``--labs xor,mnist_softmax``).
GROUPS: dict[str, tuple[str, ...]] = {
    "xor": tuple(n for n, lab in LABS.items() if lab.task in ("xor", "gates")),
    "mnist": tuple(n for n, lab in LABS.items() if lab.task == "mnist"),
    "all": tuple(LABS),
}


def lab_names(text: str) -> tuple[str, ...]:
    """Comma-separated lab names and group names (``xor``, ``mnist``, ``all``), in order, without repeats; a
    LabError for an unknown name or an empty list."""
    names: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        for name in GROUPS.get(item, (item,)):
            get_lab(name)
            names.append(name)
    if not names:
        raise LabError("no lab chosen")
    return tuple(dict.fromkeys(names))
