"""The report's presentation without training: the course's figures beside ours of the same kind, the metric
keys, the HTML (Markdown rendering, tables in scrolling boxes, figure sizes) and the plots with any
number of registered backends."""

from __future__ import annotations

import io

import numpy as np
import pytest

from harness import backend
from harness.report import course, job_sections, plots, render
from harness.report.doc import Doc, png_size

# ----------------------------------------------------------------------------------------------- records


def _run(fw: str, steps: int, loss0: float = 0.7, **extra: object) -> dict:
    losses = list(np.linspace(loss0, 0.1, steps))
    return {"framework": fw, "status": "ok", "steps": list(range(steps)), "loss": losses, "execution": "fused",
            "timing": {"steps_per_s": 1000.0 if fw == "torch" else 3000.0}, **extra}


def _xor(steps: int) -> dict:
    runs = {fw: _run(fw, steps, final={"train_loss": 0.1, "train_accuracy": 1.0}) for fw in ("torch", "jax")}
    return {"lab": "xor_mlp", "title": "XOR", "task": "xor", "status": "ok", "runs": runs,
            "reference": {"loss": {"0": 0.7434, "2100": 0.6562, "10000": 0.0012345}, "accuracy": 1.0}}


def _mnist_bn(epochs: int) -> dict:
    rows = [{"epoch": e + 1, "bn": {"train_loss": 0.3 - e / 100, "train_acc": 0.9, "valid_loss": 0.31 - e / 100,
                                    "valid_acc": 0.91},
             "plain": {"train_loss": 0.4, "train_acc": 0.8, "valid_loss": 0.41 - e / 100, "valid_acc": 0.81}}
            for e in range(epochs)]
    final = {"train_loss": 0.05, "test_accuracy": 0.93, "test_loss": 0.26, "train_accuracy": 0.95,
             "train_eval_loss": 0.15}
    runs = {fw: _run(fw, 125 * epochs, 2.3, epochs=rows, final=final, data={"train_size": 4000, "test_size": 1000})
            for fw in ("torch", "jax")}
    ref = {"epoch_10": {"bn": {"train_loss": 0.0463, "train_acc": 0.99, "valid_loss": 0.09259, "valid_acc": 0.97},
                        "plain": {"train_loss": 0.0996, "train_acc": 0.97, "valid_loss": 0.1675, "valid_acc": 0.96}}}
    return {"lab": "mnist_batchnorm", "title": "BN", "task": "mnist", "status": "ok", "runs": runs, "reference": ref,
            "model_labels": ["bn", "plain"]}


def _mnist(epochs_done: int) -> dict:
    runs = {fw: _run(fw, 40 * epochs_done, 2.3, epoch_cost=[1.0 / (e + 1) for e in range(epochs_done)],
                     final={"train_loss": 0.1, "test_loss": 0.2, "test_accuracy": 0.95},
                     data={"train_size": 4000, "test_size": 1000})
            for fw in ("torch", "jax")}
    return {"lab": "mnist_relu_xavier", "title": "ReLU", "task": "mnist", "status": "ok", "runs": runs,
            "raw_pixel_reference": True,
            "reference": {"cost": {"1": 0.2499, "15": 0.0062}, "accuracy": 0.9805}}


# ----------------------------------------------------------------------------------------------- metrics


def test_metric_reads_the_one_meaning_keys():
    new = {"final": {"train_loss": 0.01, "test_loss": 0.2, "test_accuracy": 0.97, "train_accuracy": 0.99},
           "loss": [0.5, 0.03]}
    assert [course.metric(new, k) for k in course.METRICS] == [0.01, 0.2, 0.97, 0.99]
    # a key a record does not have is no figure, whatever else it holds (no guessing from old layouts)
    xor = {"final": {"train_loss": 0.1, "train_accuracy": 1.0, "loss": 0.1, "accuracy": 1.0}, "loss": [0.7, 0.1]}
    assert [course.metric(xor, k) for k in course.METRICS] == [0.1, None, None, 1.0]
    bn = _mnist_bn(1)["runs"]["torch"]
    assert course.metric(bn, "test_loss") == 0.26 and course.metric(bn, "train_accuracy") == 0.95


# ----------------------------------------------------------------------------------------------- like with like


def test_xor_figures_hold_the_same_step():
    full = course.figures(_xor(10001))
    assert [f.kind for f in full] == ["training loss at step 10000", "training-set accuracy after step 10000"]
    assert full[0].course == 0.0012345 and full[0].ours["jax"] == pytest.approx(0.1) and full[0].ours_at is None
    short = course.figures(_xor(300))
    assert short[0].ours_at == "step 299" and short[1].ours_at == "after step 299"


def test_batchnorm_figures_are_validation_losses_at_the_same_epoch():
    figures = course.figures(_mnist_bn(10))
    assert [f.kind for f in figures] == ["BN: validation loss, epoch 10", "no BN: validation loss, epoch 10"]
    assert [f.course for f in figures] == [0.09259, 0.1675]
    assert figures[0].ours["torch"] == pytest.approx(0.31 - 9 / 100) and figures[0].ours_at is None
    short = course.figures(_mnist_bn(2))
    assert short[0].ours["jax"] == pytest.approx(0.30) and short[0].ours_at == "epoch 2"


def test_mnist_cost_and_raw_pixel_accuracy():
    cost, acc = course.figures(_mnist(15))
    assert cost.kind == "mean training loss of epoch 15" and cost.ours["torch"] == pytest.approx(1 / 15)
    assert acc.kind == "test accuracy after epoch 15" and acc.course_note == course.RAW_PIXELS
    assert acc.ours == {"torch": 0.95, "jax": 0.95} and acc.ours_at is None
    cost, acc = course.figures(_mnist(7))
    assert cost.ours_at == "epoch 7" and acc.ours_at == "after step 279"


def test_summary_tables_name_the_kind():
    labs = {"mnist_batchnorm": _mnist_bn(2), "mnist_relu_xavier": _mnist(15)}
    results = {"options": {"frameworks": ["torch", "jax"], "threshold": 1e-4, "device": "cpu", "dtype": "float32",
                           "steps": None, "epochs": None},
               "job": {"status": "complete", "computed": list(labs), "reused": [], "errors": []}, "labs": labs,
               "machine": {}, "command": "dlzta report", "data": None, "peak": {}, "pending": [], "init_study": None}
    md = render.build(results, set()).markdown()
    assert ("| [mnist_batchnorm](#mnist_batchnorm) | BN: validation loss, epoch 10 (ours: epoch 2) | 0.09259 | 0.3 "
            "| 0.3 |") in md
    assert "| test accuracy after epoch 15 | 0.9805 (raw pixels *) | 0.95 | 0.95 |" in md
    page = render.build(results, set()).html(lambda p: None)
    assert "<em>raw pixels</em>" in page and "*raw pixels*" not in page


# ----------------------------------------------------------------------------------------------- HTML


def test_html_renders_markdown_and_boxes_tables():
    doc = Doc("T")
    doc.para("*italics*, **bold**, `a*b*c`, <script>x</script>")
    doc.table(["lab", "figure", "value"], [["a", "x " * 30, "1.5"]], right=[2])
    page = doc.html(lambda p: None)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "<em>italics</em>" in page and "<strong>bold</strong>" in page and "<code>a*b*c</code>" in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert '<div class="scroll"><table>' in page and '<td class="w">' in page and '<td class="r">1.5</td>' in page


def test_figure_is_shown_at_its_physical_size():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2), dpi=plots.DPI)
    fig.subplots().plot([0, 1], [1, 0])
    data = plots.to_png(fig)
    width, height, dpi = png_size(data)
    assert (width, height) == (4 * plots.DPI, 2 * plots.DPI) and dpi == pytest.approx(plots.DPI, rel=1e-3)
    doc = Doc("T")
    doc.image("plots/x.png", "x")
    page = doc.html(lambda p: data)
    assert 'width="384" height="192"' in page  # 4 x 2 inches at 96 CSS pixels an inch
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + bytes(30))


# ----------------------------------------------------------------------------------------------- any backends


@pytest.fixture
def third_backend():
    backend.register(backend.BackendInfo("numpy3", "NumPy referee", "#2a9d4b", "nowhere.backend", ("fused",),
                                         execution_text={"fused": "one fused loop"}))
    yield "numpy3"
    backend.unregister("numpy3")


def test_plots_and_modes_with_three_backends(third_backend):
    import matplotlib.image

    rec = _xor(300)
    rec["runs"][third_backend] = _run(third_backend, 300)
    rec["per_step"] = {"rel_diff": [0.0] + [1e-7] * 299}
    results = {"labs": {"xor_mlp": rec}}
    modes = job_sections.run_modes(results)
    assert modes == {"torch": "eager", "jax": "fused (lax.scan)", third_backend: "one fused loop"}
    rows = [{"lab": "xor_mlp", **{fw: {"steps_per_s": r["timing"]["steps_per_s"], "pct_peak": 1.0}
                                  for fw, r in rec["runs"].items()}}]
    for png in (plots.throughput_figure(rows, modes), plots.lab_figure(rec)):
        image = matplotlib.image.imread(io.BytesIO(png))
        assert image.ndim == 3 and image.shape[1] > 800 and float(np.std(image)) > 0.01
    assert plots.color(third_backend) == "#2a9d4b" and plots.color("unregistered") == plots.NATIVE_COLOR


def test_smooth_is_a_trailing_mean():
    values = [1.0, 3.0, None, 5.0, 7.0]
    assert plots.smooth(values, 2).tolist() == pytest.approx([1.0, 2.0, 3.0, 5.0, 6.0])
    assert plots.smoothing_window(9000, 1) == 200 and plots.smoothing_window(300, 1) == 7
    assert plots.smoothing_window(101, 100) == 1  # a sparse log is drawn as it is
