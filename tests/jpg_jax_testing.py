"""Helpers shared by several test files."""

import socket

from configs import jpg


def smoke_config(data_dir, *variants):
  """The smoke config (a tiny model for tests) with ``variants`` on the dataset in ``data_dir``."""
  config = jpg.get_config(",".join(("smoke",) + variants))
  config.unlock()
  config.dataset.data_dir = data_dir
  config.lock()
  return config


def base_config(data_dir, **train):
  """The smoke config's BASE (no stage 1: the shortest whole run), with ``train`` fields overridden."""
  config = smoke_config(data_dir, "base")
  config.unlock()
  config.train.update(train)
  config.lock()
  return config


def free_port() -> int:
  """A TCP port that was free a moment ago (for a jax.distributed coordinator on localhost)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def damage_checkpoint_item(step_dir, item: str) -> None:
  """Cuts every data file of a checkpoint item (``state``: its array data files) to 7 bytes."""
  files = [p for p in (step_dir / item).rglob("*") if p.is_file() and (p.parent.name == "d" or item != "state")]
  assert files
  for p in files:
    p.write_bytes(p.read_bytes()[:7])
