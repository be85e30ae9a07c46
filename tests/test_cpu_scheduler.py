"""XLA:CPU's scheduler choice (jpg_jax/cpu_scheduler.py): the flag it sets, and that this jaxlib takes it."""

import os
import subprocess
import sys

import pytest

from jpg_jax import cpu_scheduler


def test_the_choice_becomes_an_xla_flag_unless_xla_flags_names_it(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert cpu_scheduler.use("memory") == ("--xla_force_host_platform_device_count=2 "
                                         "--xla_cpu_enable_concurrency_optimized_scheduler=false")
  assert os.environ["XLA_FLAGS"].endswith("scheduler=false")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=true")
  assert cpu_scheduler.use("memory") == "--xla_cpu_enable_concurrency_optimized_scheduler=true"
  monkeypatch.delenv("XLA_FLAGS")
  assert cpu_scheduler.use("concurrency") == "--xla_cpu_enable_concurrency_optimized_scheduler=true"
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
