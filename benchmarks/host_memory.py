"""Peak host memory (RSS) of a training run at batch 16 with the paper's model.

  python benchmarks/host_memory.py

Runs ``train.train_and_evaluate`` with the paper's config (ResNet-101 at 224 px, the subspace, labeler,
3-layer Transformer, global batch 16) on ``synthetic_cxr/tiny`` (48 training cases, upscaled to 256/224 by
the input pipeline) through stage 1 (one epoch, its validation), label mining and two stage-2 steps, then
stops as a preemption would (writing its checkpoint). The JSON line gives the process's peak resident set
(``ru_maxrss``: dataset build, compilation, training, evaluation and checkpointing together) and the peak
of RSS samples taken every 0.2 s by a thread, and where that peak falls: the log message (jpg-jax's and
absl's INFO lines, e.g. "Stage 1: ...", the progress line, "Test: ...") last written before it, and the
highest sample between each two messages (``phases``, the five highest), so that a peak outside the
train step can be placed, with the memory held in ``jax.Array`` s (``jax.live_arrays()``) when the main
thread wrote each message (``live_arrays_mib``: the five highest): what a phase holds beyond its program's
own buffers. ``--remat=nothing_saveable`` (a ``model.remat`` policy)
trains with the ResNet blocks and Transformer layers rematerialised; ``--cpu_scheduler`` is XLA:CPU's
scheduler (``jpg_jax/cpu_scheduler.py``: 'concurrency', XLA's default and ``jpg_jax.main``'s, or
'memory', for a third less memory).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import threading
import time

import common  # noqa: F401  (sets sys.path)

import jax
import psutil

from configs import jpg as jpg_config
from jpg_jax import checkpointing
from jpg_jax import cpu_scheduler
from jpg_jax import train


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--stage2_steps", type=int, default=2)
  p.add_argument("--remat", default="", help="model.remat: a jax.checkpoint_policies name ('' off)")
  p.add_argument("--cpu_scheduler", default="concurrency", choices=cpu_scheduler.CHOICES,
                 help="XLA:CPU's scheduler, as jpg_jax.main's flag (default: the same, concurrency)")
  p.add_argument("--return_freed", default="auto", choices=["auto", "on", "off"],
                 help="the allocator returns freed buffers to the system (cpu_scheduler.return_freed_memory); "
                      "auto: with --cpu_scheduler=memory, as jpg_jax.main")
  args = p.parse_args()
  returned = {"auto": args.cpu_scheduler == "memory", "on": True, "off": False}[args.return_freed]
  cpu_scheduler.use(args.cpu_scheduler, returned)   # before JAX starts its backends
  jax.devices()   # start the backends now: the recorder below asks for live arrays at every log message, and
                  # a message logged while the backends start would wait on their lock (a deadlock)
  tmp = tempfile.mkdtemp()
  c = jpg_config.get_config()
  c.unlock()
  c.dataset.name, c.dataset.data_dir = "synthetic_cxr/tiny", f"{tmp}/tfds"
  c.dataset.random_flip = False
  c.labels.num_patterns = 5
  c.labels.normal_keep = 1.0   # stage 1 keeps 23 of the 48 cases (at 0.3: 14, less than one batch)
  c.train.batch_size = c.train.eval_batch_size = args.batch
  c.train.stage1_epochs = c.train.stage2_epochs = 1.0
  c.train.log_every_steps = 1
  c.model.remat = args.remat
  c.lock()

  proc, samples, done = psutil.Process(), [], threading.Event()

  def sample():
    while not done.is_set():
      samples.append((time.time(), proc.memory_info().rss))
      time.sleep(0.2)

  messages = []   # (time, first 100 characters) of every log record at INFO and above
  live = {}       # message index -> MiB of jax.Arrays alive when the main thread logged it

  class Recorder(logging.Handler):
    def emit(self, record):
      if threading.current_thread() is threading.main_thread():
        live[len(messages)] = sum(a.nbytes for a in jax.live_arrays()) / 2**20
      messages.append((record.created, record.getMessage()[:100]))

  recorder = Recorder(logging.INFO)
  logging.getLogger().addHandler(recorder)
  logging.getLogger().setLevel(logging.INFO)
  thread = threading.Thread(target=sample, daemon=True)
  start = time.time()
  thread.start()
  try:
    stop = lambda stage, step: (stage, step) == (2, args.stage2_steps)   # as a preemption: checkpoint, stop
    train.train_and_evaluate(c, f"{tmp}/run", hooks=[stop])
  except checkpointing.Preempted:
    pass
  done.set()
  thread.join()
  logging.getLogger().removeHandler(recorder)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB -> MiB on Linux
  common.emit({"benchmark": "host_memory", **common.machine(), "batch": args.batch, "image_size": 224,
               "resnet_depth": 101, "remat": args.remat,
               "xla_flags": os.environ.get("XLA_FLAGS", ""), "return_freed": returned,
               "wall_s": round(time.time() - start, 1),
               "peak_rss_mib": round(peak, 1),
               "sampled_peak_rss_mib": round(max(r for _, r in samples) / 2**20, 1),
               "rss_at_exit_mib": round(proc.memory_info().rss / 2**20, 1),
               "peak_after_message": _message_before(messages, max(samples, key=lambda s: s[1])[0]),
               "phases": _phases(messages, samples, live)[:5],
               "live_arrays_mib": _live(messages, live)[:5]})


def _message_before(messages, t):
  before = [m for when, m in messages if when <= t]
  return before[-1] if before else "(start-up)"


def _live(messages, live):
  """The messages at which the most memory was held in jax.Arrays (MiB), highest first."""
  rows = [{"at": messages[i][1], "live_arrays_mib": round(mib, 1)} for i, mib in live.items()]
  return sorted(rows, key=lambda r: -r["live_arrays_mib"])


def _phases(messages, samples, live):
  """The highest RSS sample (MiB) after each log message and before the next, highest first, with the
  jax.Arrays alive at that message."""
  bounds = [(0.0, "(start-up)")] + messages
  out = []
  for i, (start, message) in enumerate(bounds):
    end = bounds[i + 1][0] if i + 1 < len(bounds) else float("inf")
    inside = [rss for t, rss in samples if start <= t < end]
    if inside:
      out.append({"after": message, "peak_rss_mib": round(max(inside) / 2**20, 1),
                  "live_arrays_mib": round(live[i - 1], 1) if i - 1 in live else None,
                  "seconds": round(min(end, samples[-1][0]) - max(start, samples[0][0]), 1)})
  return sorted(out, key=lambda p: -p["peak_rss_mib"])


if __name__ == "__main__":
  main()
