"""``bench`` like for like: every framework timed on the same intra-op threads (XLA's CPU pool pinned as its
backend starts), each % of peak of a peak measured on the threads its framework used, and the tables saying so,
or saying where the threads differ. Each real run is a fresh process: XLA's pool is sized once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bench.formats import format_markdown, format_threads
from harness.bench.measure import thread_summary

ROOT = Path(__file__).resolve().parents[1]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
needs_two_cores = pytest.mark.skipif(CORES < 2 or not hasattr(os, "sched_setaffinity"),
                                     reason="pinning needs two cores and CPU affinity")

# the CPU ticks each thread of the process spends on 20 jitted 1024x1024 matmuls
TICKS = """
import json, os, sys
from jax_impl import bench
import jax, jax.numpy as jnp
settings = bench.configure(int(sys.argv[1])) if sys.argv[1] != "none" else None
def ticks():
    out = {}
    for t in os.listdir("/proc/self/task"):
        try:
            fields = open(f"/proc/self/task/{t}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[t] = int(fields[11]) + int(fields[12])
    return out
f = jax.jit(lambda a: a @ a)
a = jnp.ones((1024, 1024))
f(a).block_until_ready()
before = ticks()
for _ in range(20):
    f(a).block_until_ready()
after = ticks()
busy = sorted((after[t] - before.get(t, 0) for t in after), reverse=True)
again = bench.configure(2)  # the pool is fixed once XLA has started: recorded, not changed
print(json.dumps({"settings": settings and settings["threads"], "again": again["threads"],
                  "requested": again["threads_requested"], "busy": busy}))
"""


def _python(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@needs_two_cores
def test_xla_pool_pinned_as_its_backend_starts_runs_on_one_thread():
    pinned = json.loads(_python(TICKS, "1").splitlines()[-1])
    assert pinned["settings"] == 1 and pinned["again"] == 1 and pinned["requested"] == 2
    assert pinned["busy"][0] >= 0.9 * sum(pinned["busy"])  # one thread did the matmuls
    free = json.loads(_python(TICKS, "none").splitlines()[-1])
    assert free["again"] == CORES  # started unpinned: its pool is every core the process may use
    assert free["busy"][1] > 0.2 * sum(free["busy"])  # the control: unpinned, a second thread shares the work


BENCH = ["bench", "xor_mlp", "--frameworks", "torch,jax", "--modes", "eager,per_step", "--block-steps", "100",
         "--blocks", "3", "--warmup-blocks", "0", "--overhead-rounds", "0", "--peak-repeats", "3", "--quiet",
         "--threads", "1"]
# a bench run in a process whose XLA backend started before bench could pin it (on every core)
STARTED = """
import sys, jax
jax.devices()
from harness.commands.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _check_peaks(record: dict) -> None:
    """Each entry's % of peak is of the peak its framework measured on the entry's own threads, in its dtype."""
    for e in record["results"]:
        assert e["status"] == "ok" and e["peak_threads"] == e["threads"]
        peaks = record["frameworks"][e["framework"]]["devices"]["cpu"]["peaks"]
        own = [p for p in peaks if p["threads"] == e["threads"] and p["dtype"] == e["peak_dtype"]]
        assert len(own) == 1 and own[0]["gflops"] == e["peak_gflops"]
        assert e["pct_peak"] == pytest.approx(100 * e["gflops"] / own[0]["gflops"])


@needs_two_cores
def test_tables_say_when_xla_started_on_other_threads_and_each_pct_is_of_its_own_threads_peak(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    _python(STARTED, *BENCH, "--out", str(out), "--markdown", str(md))
    record = json.loads(out.read_text())
    threads = {e["framework"]: e["threads"] for e in record["results"]}
    assert threads == {"torch": 1, "jax": CORES}
    assert record["threads"] == {"per_framework": {"torch": [1], "jax": [CORES]}, "like_for_like": False,
                                 "differ": ["xor_mlp"]}
    _check_peaks(record)
    assert "threads DIFFER between frameworks for xor_mlp" in md.read_text()


def test_thread_summary_and_its_line():
    def entry(lab: str, fw: str, threads: int) -> dict:
        return {"lab": lab, "framework": fw, "device": "cpu", "threads": threads, "status": "ok"}

    same = thread_summary([entry("xor_mlp", "torch", 1), entry("xor_mlp", "jax", 1),
                           entry("mnist_dropout", "torch", 2), entry("mnist_dropout", "jax", 2)])
    assert same == {"per_framework": {"torch": [1, 2], "jax": [1, 2]}, "like_for_like": True, "differ": []}
    assert "same threads" in format_threads(same)
    differ = thread_summary([entry("xor_mlp", "torch", 1), entry("xor_mlp", "jax", 1),
                             entry("mnist_dropout", "torch", 2), entry("mnist_dropout", "jax", 1)])
    assert not differ["like_for_like"] and differ["differ"] == ["mnist_dropout"]
    record = {"machine": {"cpu_model": "x", "cpu_count": 2, "platform": "p", "python": "3"}, "created": "now",
              "frameworks": {}, "results": [], "threads": differ}
    assert "threads DIFFER between frameworks for mnist_dropout: torch 1, 2; jax 1" in format_markdown(record)
