"""XLA:CPU's scheduler choice (jpg_jax/cpu_scheduler.py): the flag it sets, and that this jaxlib takes it."""

import os
import subprocess
import sys

import pytest

from jpg_jax import cpu_scheduler


def test_the_choice_becomes_an_xla_flag_unless_xla_flags_names_it(monkeypatch):
  released = []   # 'memory' also sets the allocator (tested below, in its own process)
  monkeypatch.setattr(cpu_scheduler, "return_freed_memory", lambda: released.append(True) or True)
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert cpu_scheduler.use("memory") == ("--xla_force_host_platform_device_count=2 "
                                         "--xla_cpu_enable_concurrency_optimized_scheduler=false")
  assert os.environ["XLA_FLAGS"].endswith("scheduler=false")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=true")
  assert cpu_scheduler.use("memory") == "--xla_cpu_enable_concurrency_optimized_scheduler=true"
  monkeypatch.delenv("XLA_FLAGS")
  assert cpu_scheduler.use("concurrency") == "--xla_cpu_enable_concurrency_optimized_scheduler=true"
  assert released == [True, True]   # the two 'memory' calls
  with pytest.raises(ValueError, match="CPU scheduler"):
    cpu_scheduler.use("fast")


@pytest.mark.parametrize("choice", cpu_scheduler.CHOICES)
def test_this_jaxlib_compiles_with_either_choice(choice):
  """XLA aborts on a flag it does not know: both settings start a backend and run a program."""
  code = ("from jpg_jax import cpu_scheduler; cpu_scheduler.use(%r); import jax.numpy as jnp; "
          "print(float(jnp.ones(3).sum()))" % choice)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(env, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0 and out.stdout.strip() == "3.0", out.stderr[-2000:]


_RETAINED = """
import sys
import numpy as np
from jpg_jax import cpu_scheduler
if sys.argv[1] == "memory":
  assert cpu_scheduler.return_freed_memory()
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
np.ones(1 << 19)        # 4 MiB mapped and freed: glibc raises its mmap threshold past 4 MiB
base = rss()
arrays = [np.ones(1 << 19) for _ in range(100)]   # 400 MiB
last = arrays.pop()
del arrays              # all freed but the last one allocated
print(round(rss() - base))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_memory_choice_returns_freed_buffers_to_the_system():
  """glibc keeps 4 MiB buffers freed below the heap's top (its raised mmap threshold put them there); with
  ``return_freed_memory`` they were mapped on their own and go back when freed."""
  retained = {}
  for choice in ("concurrency", "memory"):
    out = subprocess.run([sys.executable, "-c", _RETAINED, choice], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    retained[choice] = int(out.stdout)
  assert retained["concurrency"] > 300 and retained["memory"] < 50, retained
