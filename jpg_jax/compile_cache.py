"""JAX's persistent compilation cache for jpg-jax's commands (issue J, time to first step).

A run compiles its programs (the train step of each stage, the label evaluator, the beam search) before its
first step; the same command, or another of the same shapes, compiles the same programs again. With the
cache on, XLA's executables are written to ``directory`` keyed by the program, the backend and the jaxlib
version, and a later process loads them instead of compiling (numbers: README, Performance).

The directory is a trusted location: JAX runs what it finds there (its docs say so), so it defaults to the
user's own cache folder, ``$XDG_CACHE_HOME/jpg_jax/xla`` (``~/.cache/jpg_jax/xla``), never a folder that
others write. ``JAX_COMPILATION_CACHE_DIR``, where set, wins over the default: JAX reads it itself.
"""

from __future__ import annotations

import os

import jax
from absl import logging

OFF = "none"


def default_directory() -> str:
  """``$JAX_COMPILATION_CACHE_DIR`` where set, else ``$XDG_CACHE_HOME/jpg_jax/xla`` (``~/.cache/...``)."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jpg_jax", "xla")


def enable(directory: str = "", min_compile_time_secs: float = 1.0) -> str | None:
  """Turns the cache on in ``directory`` ('' = ``default_directory()``; ``'none'`` = off) for programs
  that take at least ``min_compile_time_secs`` to compile (smaller ones cost more to read and write than
  to compile; ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``, where set, wins). Returns the directory, or
  None when off. Call it before the first compilation."""
  if directory == OFF:
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  directory = directory or default_directory()
  jax.config.update("jax_compilation_cache_dir", directory)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_secs)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  logging.info("Compiled programs are cached in %s (--compilation_cache=none: off).", directory)
  return directory
