"""How XLA:CPU orders a program's operations: for memory, or for concurrency (issue J, memory).

XLA's CPU backend schedules a program's operations, by default, to run independent ones at the same time
(``--xla_cpu_enable_concurrency_optimized_scheduler``, on): the backward pass's work starts early and its
buffers live long. Off, the scheduler orders for memory. Measured on the paper's train step (README,
Performance): XLA's buffers for the step fall from 6.43 to 4.37 GiB, and the step took 27% longer on
one 2-core host (29.0 -> 36.8 s) and no longer on a faster one (13.3 -> 12.1 s). Same operations, same
numbers: only their order changes. So 'concurrency' (XLA's own default) is the default, and 'memory' is
for a CPU run that does not fit; ``jax.checkpoint`` (``model.remat``) saves memory on CPU only with it
(under the concurrency scheduler the recomputation is also run early, and the step needs more memory,
not less).

The choice is an XLA flag, read when JAX starts its backends: ``use`` must run before the first
computation (``jpg_jax.main`` calls it first thing). An ``XLA_FLAGS`` that already sets the option wins.
The flag is XLA:CPU's: TPU and GPU programs are not affected.

'memory' also makes the C allocator hand freed buffers back to the system (``return_freed_memory``).
glibc's malloc raises its mmap threshold to the size of each large block freed (up to 32 MiB), so after a
few steps XLA's activation buffers come from the heap, and memory freed there stays in the process: on the
paper's training run (``benchmarks/host_memory.py --cpu_scheduler=memory``) 0.97 GiB of the peak RSS was
such memory (9.78 -> 8.80 GiB). A fixed threshold of 128 KiB (``mallopt(M_MMAP_THRESHOLD)``, the same as
``MALLOC_MMAP_THRESHOLD_=131072``) maps every larger buffer on its own and unmaps it when freed; the cost is
the page faults of mapping them afresh (README, Performance).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

OPTION = "--xla_cpu_enable_concurrency_optimized_scheduler"
CHOICES = ("memory", "concurrency")


def use(choice: str, return_freed: bool | None = None) -> str:
  """Sets XLA:CPU's scheduler to ``choice`` ('memory' or 'concurrency', XLA's default) through
  ``XLA_FLAGS``, unless that already names the option, and, where ``return_freed`` (default: for 'memory'),
  the allocator to ``return_freed_memory``; returns the flags in effect."""
  if choice not in CHOICES:
    raise ValueError(f"Unknown CPU scheduler {choice!r}; choose from {CHOICES}.")
  flags = os.environ.get("XLA_FLAGS", "")
  if OPTION not in flags:
    value = "false" if choice == "memory" else "true"
    flags = f"{flags} {OPTION}={value}".strip()
    os.environ["XLA_FLAGS"] = flags
  if choice == "memory" if return_freed is None else return_freed:
    return_freed_memory()
  return flags


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters (malloc.h)


def return_freed_memory(threshold: int = 128 * 1024) -> bool:
  """Blocks of at least ``threshold`` bytes mapped on their own and unmapped when freed, and the heap
  trimmed past ``threshold`` (glibc only; elsewhere a no-op). Returns whether it took effect."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):   # not glibc (musl has no mallopt)
    return False
  return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))
