"""``bench``: step throughput of the labs in each backend, held against the machine's own matmul peak.

The rooms:

- :mod:`~harness.bench.workloads`: the suites and one workload per lab x backend x device x mode x precision,
  with the defaults each backend declares in the registry (block and fuse steps) and the same threads for every
  backend (a pool sized at start-up pinned as it starts).
- :mod:`~harness.bench.protocol`: the timing protocol. A backend's stepper runs the trainer's own step on batches
  gathered onto the device; the first dispatch (which compiles) and ``warmup_blocks`` blocks are timed apart;
  then ``blocks`` blocks of ``block_steps`` steps, each ended by an explicit device sync and timed alone; the
  harness's own overhead against a bare loop of the same step function.
- :mod:`~harness.bench.peak`: the machine, its matmul peak (merged over a run), the analytic FLOPs of a step.
- :mod:`~harness.bench.measure`: one workload's entry (ms/step median, p5, p95; steps/s, samples/s, GFLOP/s, % of
  the peak of its precision's dtype the same backend measured in the same run on the same threads; each block
  paired with a matmul timed right after it; each precision's speed-up over float32) and a whole run's record.
- :mod:`~harness.bench.gate`: the regression gate against a baseline results file.
- :mod:`~harness.bench.formats`: printed lines, markdown tables, the results JSON, github-action-benchmark files.
- :mod:`~harness.bench.targets`: the project's development targets (``--targets``).
- :mod:`~harness.bench.command`: ``dlzta bench`` itself (its options live in :mod:`harness.commands.cli`).
"""

from __future__ import annotations

from harness.bench.formats import format_entry, format_markdown, github_action, github_action_paths, write_outputs
from harness.bench.gate import (
    EXIT_REGRESSION,
    MATMUL_BOUND_PCT,
    MAX_THRESHOLD,
    MIN_THRESHOLD,
    NOISE_FACTOR,
    GateError,
    check_baseline,
    compare_entry,
    format_gate,
    gate,
    load_baseline,
    regressions,
)
from harness.bench.measure import (
    PEAK_N,
    SCHEMA,
    add_peak_figures,
    matmul_times,
    measure,
    measure_peak,
    merge_rerun,
    run,
)
from harness.bench.protocol import INJECTIONS, harness_overhead, inject_sync, ms_stats, time_stepper, timed_blocks
from harness.bench.targets import TARGETS, check_targets, format_targets
from harness.bench.workloads import BLOCK_STEPS, SUITES, Overrides, Suite, Workload, all_modes, default_threads, plan
from harness.errors import BackendError

__all__ = ["BLOCK_STEPS", "EXIT_REGRESSION", "INJECTIONS", "MATMUL_BOUND_PCT", "MAX_THRESHOLD", "MIN_THRESHOLD",
           "NOISE_FACTOR", "PEAK_N", "SCHEMA", "SUITES", "TARGETS", "BackendError", "GateError", "Overrides", "Suite",
           "Workload", "add_peak_figures", "all_modes", "check_baseline", "check_targets",
           "compare_entry", "default_threads", "format_entry", "format_gate", "format_markdown", "format_targets",
           "gate", "github_action", "github_action_paths", "harness_overhead", "inject_sync", "load_baseline",
           "matmul_times", "measure", "measure_peak", "merge_rerun", "ms_stats", "plan", "regressions",
           "run", "time_stepper", "timed_blocks", "write_outputs"]

