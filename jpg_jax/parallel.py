"""Device mesh, shardings and host-local -> global batches (data parallel over every device and host).

One mesh axis, ``data``, spans every device of every process. Parameters are replicated; a batch is
sharded along its leading axis. Each host's input pipeline yields its local share of the global batch
(``global_batch_size // jax.process_count()`` examples), and ``global_batch`` stitches those shares into
one ``jax.Array`` laid out over the mesh, without any host holding the whole batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def make_mesh(devices=None) -> Mesh:
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This host's share, checking that the global batch divides over devices and hosts."""
  if global_batch_size % mesh.size:
    raise ValueError(f"Global batch {global_batch_size} must be a multiple of the {mesh.size} devices.")
  return global_batch_size // jax.process_count()


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global ``jax.Array``s sharded over the ``data`` axis."""
  sharding = data_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)
