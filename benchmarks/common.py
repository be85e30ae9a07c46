"""Shared by the benchmark scripts: timing, machine facts, the matmul peak, one JSON line of results.

Every script times a callable after warm-up (compilation, allocator and cache warm-up excluded) and reports
the median of ``runs`` timings. Numbers are measured on the machine the script runs on; nothing is
assumed.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:   # `python benchmarks/x.py` from the repository root
  sys.path.insert(0, ROOT)


def median_time(fn, runs: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
  """Median seconds of ``fn()`` (which must block until its work is done) over ``runs`` calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def machine() -> dict:
  import flax
  import jax
  dev = jax.devices()[0]
  return {"platform": dev.platform, "device": dev.device_kind, "devices": jax.device_count(),
          "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
          "jax": jax.__version__, "flax": flax.__version__}


def matmul_peak_flops(dtype: str = "float32", n: int | None = None, runs: int = 5) -> float:
  """Measured FLOP/s of one large square matmul in JAX: the machine's practical peak for ``dtype``."""
  import jax
  import jax.numpy as jnp
  n = n or (8192 if jax.devices()[0].platform == "gpu" else 2048)
  a = jnp.ones((n, n), dtype)
  b = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  t, _ = median_time(lambda: f(a, b).block_until_ready(), runs=runs, warmup=2)
  return 2 * n ** 3 / t


def emit(record: dict) -> None:
  """Prints one JSON line (the scripts' output contract)."""
  print(json.dumps(record, sort_keys=False), flush=True)
