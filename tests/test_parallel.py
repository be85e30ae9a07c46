"""Batches laid out over a mesh of 8 fake CPU devices (a subprocess, since XLA flags are read at start)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jpg_jax import parallel
    mesh = parallel.make_mesh()
    assert mesh.size == 8, mesh
    assert parallel.local_batch_size(16, mesh) == 16
    local = {"images": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "mask": np.ones(16)}
    batch = parallel.global_batch(local, mesh)
    x = batch["images"]
    assert x.shape == (16, 3) and len(x.addressable_shards) == 8
    assert all(s.data.shape == (2, 3) for s in x.addressable_shards)
    np.testing.assert_array_equal(np.asarray(x), local["images"])
    try:
      parallel.local_batch_size(12, mesh)
      raise SystemExit("expected an error")
    except ValueError:
      pass
    print("OK")
""")


def test_global_batch_over_8_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
