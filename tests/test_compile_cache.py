"""The persistent compilation cache of ``python -m jpg_jax.main`` (jpg_jax/compile_cache.py)."""

import os
import subprocess
import sys

from jpg_jax import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_directory_is_jaxs_variable_or_the_users_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
  assert compile_cache.default_directory() == str(tmp_path / "jax")
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.default_directory() == str(tmp_path / "xdg" / "jpg_jax" / "xla")


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
  """The cache on in ``tmp_path``: the first process writes a program there, the second reads it (JAX's
  cache-hit events); ``none`` turns it off."""
  script = ("import sys, jax, jax.numpy as jnp\n"
            "from jax._src import monitoring\n"
            "from jpg_jax import compile_cache\n"
            "hits = []\n"
            "monitoring.register_event_listener(lambda e, **k: hits.append(e) if e == '/jax/compilation_cache/cache_hits' else None)\n"
            "print(compile_cache.enable(sys.argv[1], min_compile_time_secs=0.0))\n"
            "jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((8, 8))).block_until_ready()\n"
            "print(len(hits))\n")
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT") and k != "JAX_COMPILATION_CACHE_DIR"}
  run = lambda where: subprocess.run([sys.executable, "-c", script, where], env=dict(env, JAX_PLATFORMS="cpu"),
                                     cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
  cache = str(tmp_path / "cache")
  assert run(cache) == [cache, "0"] and os.listdir(cache)
  second = run(cache)
  assert second[0] == cache and int(second[1]) >= 1   # the function and the array constructors' programs
  assert run("none") == ["None", "0"]
