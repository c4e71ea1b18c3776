"""The PyTorch learners and training loops (mirrors ``jax_impl/learners.py``): what ``train``, the probe, the
bench, the ensemble, the data-parallel ranks and the mutation suite all train through.

:class:`ModuleLearner` (autograd on a ``models.MLP``, the declared ``torch.optim`` algorithm called directly) and
:class:`ManualLearner` (hand-written backprop); :func:`make_learner` picks one as ``harness.backend.choose_learner``
says. Executions (resolved by ``harness.backend.resolve_execution``; canonical names only): ``eager`` (one step per
Python iteration), ``compiled`` (the step as one ``torch.compile`` graph, :func:`functional_step`) and
``cuda_graph`` (the step captured once as a CUDA graph and replayed; GPU only). :func:`run_loop` runs the steps and
times them (``harness.backend.Timing``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from harness.backend import BackendError, RunSpec, Timing, choose_learner
from harness.labs import pick
from harness.precision import reduced_policy
from torch_impl import manual, models, precision, runtime


class ModuleLearner:
    """Autograd training of a ``models.MLP``. Its step calls the declared optimizer's own algorithm (the function
    of ``torch.optim`` that ``optimizer.step()`` runs, with the same arguments: :func:`functional_update`)
    directly: the same kernels, bit for bit (tested), without the per-call wrappers of ``zero_grad``/``step``
    (profiler ranges, hooks, grad-mode switches), which are 40% of a tiny net's step."""

    def __init__(self, spec: RunSpec, dtype: torch.dtype, device: torch.device) -> None:
        self.loss = spec.lab.loss
        self.loss_fn = pick(models.LOSSES, self.loss, "loss")
        self.module = models.build(spec.model, dtype, device, spec.seed, spec.params, spec.state)
        self.module.train()
        # The eager loop takes torch's fused Adam kernel; the traced executions its single-tensor form.
        fused = spec.execution in (None, "eager")  # None: the default, eager
        self.params = list(self.module.parameters())
        self.opt = models.make_optimizer(spec.lab.optimizer, self.params, fused=fused)
        self.update = functional_update(self.opt, self.params, traced=False)[0]

    def step(self, x: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        for p in self.params:  # optimizer.zero_grad()
            p.grad = None
        loss = self.loss_fn(self.module(x, masks), y)
        loss.backward()
        with torch.no_grad():  # optimizer.step()
            self.update([p.grad for p in self.params])
        return loss.detach()

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        out = self.module(x)
        self.module.train()
        return out

    def export(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return models.get_params(self.module)


class ManualLearner:
    """Hand-written backprop (``manual.py``) on plain tensors."""

    def __init__(self, spec: RunSpec, dtype: torch.dtype, device: torch.device) -> None:
        self.loss, self.lr, self.eps = spec.lab.loss, spec.lab.optimizer.lr, spec.lab.grad_eps
        self.dtype, self.width = dtype, spec.model.sizes[-1]
        params = spec.params if spec.params is not None else native_manual_params(spec)
        self.params = {k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in params.items()}

    def step(self, x: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        grads, loss = manual.backward(self.params, x, manual.targets(self.loss, y, self.width, self.dtype),
                                      self.loss, self.eps)
        self.params = manual.sgd_update(self.params, grads, self.lr)
        return loss

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        return manual.forward(self.params, x)[1][-1]

    def export(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return runtime.to_numpy(self.params), {}


def make_learner(spec: RunSpec, dtype: torch.dtype, device: torch.device) -> ModuleLearner | ManualLearner:
    """The learner ``spec``'s lab trains with (``harness.backend.choose_learner``), built from ``spec``; under a
    reduced ``spec.precision``, ``precision.PrecisionLearner`` (eager: autocast and GradScaler)."""
    if policy := reduced_policy(spec, "torch"):
        return precision.PrecisionLearner(spec, policy, device)
    return choose_learner(spec, ModuleLearner, ManualLearner)(spec, dtype, device)


def native_manual_params(spec: RunSpec) -> dict[str, np.ndarray]:
    """Native init for the manual labs: the declared scheme drawn with torch's generator."""
    module = models.build(spec.model, runtime.dtype(spec.dtype), torch.device("cpu"), spec.seed)
    return models.get_params(module)[0]


def functional_update(opt: torch.optim.Optimizer, params: list[torch.Tensor],
                       traced: bool = True) -> tuple[Callable, list[torch.Tensor]]:
    """``opt``'s own algorithm (torch.optim's functional form) updating ``params`` in place, with its state in fresh
    tensors initialised as the optimizer does; returns the update and that state. ``traced`` (compiled and CUDA
    graph executions): the single-tensor path, and on a GPU the step counters on the device (``capturable``), so
    the update can be captured in a CUDA graph; else exactly what ``opt.step()`` runs (its own foreach and
    capturable settings)."""
    g = opt.param_groups[0]
    capturable = params[0].device.type == "cuda" if traced else bool(g.get("capturable", False))
    steps = [torch.zeros((), dtype=torch.float32, device=p.device if capturable else "cpu") for p in params]
    common = {"weight_decay": g["weight_decay"], "maximize": g["maximize"],
              "foreach": False if traced else g["foreach"]}
    update = pick(FUNCTIONAL, models.optimizer_name(opt), "optimizer")
    return update(params, g, steps, capturable, common)


def _zeros(params: list[torch.Tensor], wanted: bool = True) -> list[torch.Tensor]:
    return [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params] if wanted else []


def _sgd(params: list, g: dict, steps: list, capturable: bool, common: dict) -> tuple[Callable, list]:
    from torch.optim.sgd import sgd

    buffers: list[torch.Tensor | None] = [None] * len(params)
    return (lambda grads: sgd(params, grads, buffers, fused=g["fused"], momentum=g["momentum"], lr=g["lr"],
                              dampening=g["dampening"], nesterov=g["nesterov"], **common)), []


def _adam(params: list, g: dict, steps: list, capturable: bool, common: dict) -> tuple[Callable, list]:
    from torch.optim.adam import adam

    m, v, vmax = _zeros(params), _zeros(params), _zeros(params, g["amsgrad"])
    return (lambda grads: adam(params, grads, m, v, vmax, steps, capturable=capturable, differentiable=False,
                               fused=bool(g["fused"]), amsgrad=g["amsgrad"], beta1=g["betas"][0],
                               beta2=g["betas"][1], lr=g["lr"], eps=g["eps"], **common)), [*m, *v, *vmax, *steps]


def _rmsprop(params: list, g: dict, steps: list, capturable: bool, common: dict) -> tuple[Callable, list]:
    from torch.optim.rmsprop import rmsprop

    sq, avg, mom = _zeros(params), _zeros(params, g["centered"]), _zeros(params, g["momentum"] > 0)
    return (lambda grads: rmsprop(params, grads, sq, avg, mom, steps, differentiable=False, capturable=capturable,
                                  lr=g["lr"], alpha=g["alpha"], eps=g["eps"], momentum=g["momentum"],
                                  centered=g["centered"], **common)), [*sq, *avg, *mom, *steps]


def _adadelta(params: list, g: dict, steps: list, capturable: bool, common: dict) -> tuple[Callable, list]:
    from torch.optim.adadelta import adadelta

    sq, acc = _zeros(params), _zeros(params)
    return (lambda grads: adadelta(params, grads, sq, acc, steps, capturable=capturable, differentiable=False,
                                   lr=g["lr"], rho=g["rho"], eps=g["eps"], **common)), [*sq, *acc, *steps]


FUNCTIONAL = {"sgd": _sgd, "adadelta": _adadelta, "rmsprop": _rmsprop, "adam": _adam}  # keyed on labs.OPTIMIZERS


def functional_step(learner: ModuleLearner | ManualLearner) -> tuple[Callable, list[torch.Tensor]]:
    """``learner``'s step as one pure-tensor function that ``torch.compile`` captures whole and a CUDA graph can
    replay: the same forward, loss and optimizer algorithm, gradients from ``torch.func``, every update in place
    (the learner's own tensors change). Returns ``step(x, y, masks) -> loss`` and every tensor it mutates."""
    if isinstance(learner, ManualLearner):
        weights = learner.params

        def manual_step(x: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
            grads, loss = manual.backward(weights, x, manual.targets(learner.loss, y, learner.width, learner.dtype),
                                          learner.loss, learner.eps)
            for k, v in manual.sgd_update(weights, grads, learner.lr).items():
                weights[k].copy_(v)
            return loss

        return manual_step, list(weights.values())
    module = learner.module
    names = [n for n, _ in module.named_parameters()]
    params = [p for _, p in module.named_parameters()]
    buffers = dict(module.named_buffers())
    update, opt_state = functional_update(learner.opt, params)

    def loss_of(p: tuple[torch.Tensor, ...], b: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                masks: list[torch.Tensor] | None) -> torch.Tensor:  # batch norm updates ``b`` in place
        out = torch.func.functional_call(module, (dict(zip(names, p)), b), (x, masks))
        return models.loss_fn(learner.loss, out, y)

    grad_and_loss = torch.func.grad_and_value(loss_of)

    def step(x: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        grads, loss = grad_and_loss(tuple(p.detach() for p in params), buffers, x, y, masks)
        with torch.no_grad():
            update(list(grads))
        return loss.detach()

    return step, [*params, *buffers.values(), *opt_state]


def _block(step: Callable, steps: int) -> Callable:
    """``steps`` consecutive calls of ``step``: ``(xs, ys, masks)`` with a leading step axis (``masks``: a list per
    hidden layer, or None) -> the stacked losses."""

    def block(xs: torch.Tensor, ys: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        return torch.stack([step(xs[i], ys[i], None if masks is None else [m[i] for m in masks])
                            for i in range(steps)])

    return block


def compile_step(step: Callable, steps: int = 1, device: torch.device | None = None) -> Callable:
    """``steps`` consecutive calls of ``step`` (see :func:`_block`) as one ``torch.compile`` graph; the first call
    compiles. Inductor's pattern matcher stays off: its post-grad ``addmm`` rewrite turns ``add(p, mm(a, b),
    alpha=-lr)`` into ``addmm(p, a, b)``, dropping ``alpha``, so SGD's ``p.add_(grad, alpha=-lr)`` on a weight
    gradient would climb the loss (seen with torch 2.13). On a CPU the graph's kernels are called from generated
    C++ rather than Python (``cpp_wrapper``): for small steps that wrapper is most of the time."""
    options = {"pattern_matcher": False, "cpp_wrapper": device is None or device.type == "cpu"}
    return torch.compile(_block(step, steps), fullgraph=True, dynamic=False, options=options)


def graph_step(step: Callable, state: list[torch.Tensor], steps: int = 1) -> Callable:
    """``steps`` consecutive calls of ``step`` (see :func:`_block`) captured once as a CUDA graph, at the first
    call. Each call copies its inputs into the graph's static buffers and replays it; the losses it returns are
    overwritten by the next call. Before the capture, two warm-up calls run on a side stream (as CUDA graphs
    require); ``state`` is restored after them, so the training trajectory does not see them."""
    body = _block(step, steps)
    graph: list = []

    def run(xs: torch.Tensor, ys: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        if not graph:
            static = (xs.clone(), ys.clone(), None if masks is None else [m.clone() for m in masks])
            saved = [t.clone() for t in state]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    body(*static)
            torch.cuda.current_stream().wait_stream(side)
            with torch.no_grad():
                for t, s in zip(state, saved):
                    t.copy_(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                out = body(*static)
            graph.extend((g, static, out))
        g, (sx, sy, sm), out = graph
        sx.copy_(xs)
        sy.copy_(ys)
        for m, new in zip(sm or [], masks or []):
            m.copy_(new)
        g.replay()
        return out

    return run


def diverging(step: Callable, learner: ModuleLearner | ManualLearner, dtype: torch.dtype) -> Callable:
    """``step``, except that once the weights stop being finite a step that raises (torch's BCE refuses a NaN
    input) gives a NaN loss, and so does every later step without running: the run diverged there, and the
    harness reports the step, as it does for a NaN loss (which JAX always returns)."""
    diverged = []

    def call(*args: object) -> torch.Tensor:
        if diverged:
            return diverged[0]
        try:
            return step(*args)
        except RuntimeError:
            if all(np.isfinite(v).all() for v in learner.export()[0].values()):
                raise
            diverged.append(torch.tensor(float("nan"), dtype=dtype))
            return diverged[0]

    return call


def step_for(execution: str, learner: ModuleLearner | ManualLearner, device: torch.device) -> Callable:
    """The per-step callable ``(x, y, masks) -> loss`` of a canonical execution mode (see the module docstring)."""
    if execution == "eager":
        return learner.step
    step, state = functional_step(learner)
    if execution == "compiled":
        block = compiled_or_error(compile_step(step, 1, device))
        return lambda x, y, masks: block(x[None], y[None], None if masks is None else [m[None] for m in masks])[0]
    if execution != "cuda_graph" or device.type != "cuda":
        raise BackendError(f"torch cannot run execution {execution!r} on {device.type}")
    graph = graph_step(step, state)
    # the graph's output buffer is overwritten by the next replay: keep a copy
    return lambda x, y, masks: graph(x[None], y[None], None if masks is None else [m[None] for m in masks])[0].clone()


def compiled_or_error(step: Callable) -> Callable:
    """``step``, whose first call compiles; a BackendError naming the cause if torch.compile fails here."""
    state = {"compiled": False}

    def call(*args: object) -> torch.Tensor:
        if state["compiled"]:
            return step(*args)
        try:
            out = step(*args)
        except Exception as exc:  # inductor raises many kinds: no C++ compiler, an unsupported op, ...
            raise BackendError(f"torch.compile is not usable here: {compile_error(exc)}") from None
        state["compiled"] = True
        return out

    return call


def compile_error(exc: BaseException) -> str:
    """A one-line reason from a torch.compile failure."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def run_loop(spec: RunSpec, step: Callable, batch: Callable, evaluate: Callable, sync_fn: Callable[[], None],
             constant: bool = False) -> tuple[torch.Tensor, Timing]:
    """The losses of ``spec.steps`` steps (a device tensor) and their timing: step 0 is timed apart as warm-up, the
    rest is the steady state, with one sync at its end. Between the points where anything else happens (an
    evaluation, a progress report) the loop is as tight as a plain training loop: each step's loss tensor is kept
    in a list and stacked at the end (no per-step host sync or indexed write); ``constant``: every step takes the
    same batch (full-batch labs without masks), fetched once."""
    out: list[torch.Tensor] = []
    append = out.append
    evaluate(0)
    start = time.perf_counter()
    append(step(*batch(0)))
    evaluate(1)
    sync_fn()
    warm = time.perf_counter() - start
    stops = {e for e in spec.eval_steps if 1 < e <= spec.steps} | ({spec.steps} if spec.steps > 1 else set())
    if spec.progress is not None:
        stops |= set(range(1000, spec.steps, 1000))
    done = 1
    for stop in sorted(stops):
        if constant:
            args = batch(0)
            for _ in range(done, stop):
                append(step(*args))
        else:
            for s in range(done, stop):
                append(step(*batch(s)))
        done = stop
        evaluate(done)
        if spec.progress is not None and done % 1000 == 0:
            spec.progress(done, spec.steps)
    sync_fn()
    return torch.stack(out), Timing.measured(warm, time.perf_counter() - start - warm, spec.steps - 1)
