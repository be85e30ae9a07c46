"""Device mesh, shardings and host-local -> global batches (data parallel over every device and host).

One mesh axis, ``data``, spans every device of every process. Parameters are replicated; a batch is
sharded along its leading axis. Each host's input pipeline yields its local share of the global batch
(``global_batch_size // jax.process_count()`` examples), and ``global_batch`` stitches those shares into
one ``jax.Array`` laid out over the mesh, without any host holding the whole batch.

Several processes (the hosts of a TPU pod slice, or local processes in tests) start JAX's distributed
runtime with ``initialize_distributed`` before anything touches a device.
"""

from __future__ import annotations

import os

import jax
from absl import logging
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jpg_jax import errors

DATA = "data"

# Environment variables of launchers that start one process per host or per task.
_MULTI_PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def initialize_distributed(mode: str = "auto", coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Starts ``jax.distributed`` when more than one process runs; returns whether it did.

  ``mode``: ``"true"`` always initialises: arguments left ``None`` are auto-detected by JAX (Cloud TPU
  slices from the metadata server, SLURM, Open MPI, Kubernetes; ``JAX_COORDINATOR_ADDRESS``).
  ``"auto"`` initialises when an argument is given, or ``JAX_COORDINATOR_ADDRESS`` is set, or SLURM /
  Open MPI report more than one task; a single process otherwise. ``"false"`` never initialises.
  """
  if mode not in ("auto", "true", "false"):
    raise ValueError(f"distributed mode must be auto, true or false, not {mode!r}.")
  if mode == "false":
    return False
  explicit = coordinator_address is not None or num_processes is not None
  launched = os.environ.get("JAX_COORDINATOR_ADDRESS") or any(
      int(os.environ.get(v, "1") or 1) > 1 for v in _MULTI_PROCESS_ENV[1:])
  if mode == "auto" and not (explicit or launched):
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def make_mesh(devices=None) -> Mesh:
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def local_batch_size(global_batch_size: int, mesh: Mesh, name: str = "train.batch_size") -> int:
  """This host's share, checking that the global batch (the config key ``name``) divides over devices."""
  if global_batch_size % mesh.size:
    raise errors.ConfigError(f"{name}={global_batch_size} (global) must be a multiple of the {mesh.size} "
                             f"devices.")
  return global_batch_size // jax.process_count()


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global ``jax.Array``s sharded over the ``data`` axis."""
  sharding = data_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)
