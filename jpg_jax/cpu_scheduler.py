"""How XLA:CPU orders a program's operations: for memory, or for concurrency (issue J, memory).

XLA's CPU backend schedules a program's operations, by default, to run independent ones at the same time
(``--xla_cpu_enable_concurrency_optimized_scheduler``, on): the backward pass's work starts early and its
buffers live long. Off, the scheduler orders for memory. Measured on the paper's train step (README,
Performance): XLA's buffers for the step fall from 6.43 to 4.37 GiB, and the step takes 27% longer (29.0
-> 36.8 s on 2 cores). Same operations, same numbers: only their order changes. So 'concurrency' (XLA's
own default) is the default, and 'memory' is for a CPU run that does not fit; ``jax.checkpoint``
(``model.remat``) saves memory on CPU only with it (under the concurrency scheduler the recomputation is
also run early, and the step needs more memory, not less).

The choice is an XLA flag, read when JAX starts its backends: ``use`` must run before the first
computation (``jpg_jax.main`` calls it first thing). An ``XLA_FLAGS`` that already sets the option wins.
The flag is XLA:CPU's: TPU and GPU programs are not affected.
"""

from __future__ import annotations

import os

OPTION = "--xla_cpu_enable_concurrency_optimized_scheduler"
CHOICES = ("memory", "concurrency")


def use(choice: str) -> str:
  """Sets XLA:CPU's scheduler to ``choice`` ('memory' or 'concurrency', XLA's default) through
  ``XLA_FLAGS``, unless that already names the option; returns the flags in effect."""
  if choice not in CHOICES:
    raise ValueError(f"Unknown CPU scheduler {choice!r}; choose from {CHOICES}.")
  flags = os.environ.get("XLA_FLAGS", "")
  if OPTION not in flags:
    value = "false" if choice == "memory" else "true"
    flags = f"{flags} {OPTION}={value}".strip()
    os.environ["XLA_FLAGS"] = flags
  return flags
