"""What one training step costs: XLA's cost analysis of the compiled step, from shapes alone.

``compile_train_step`` lowers and compiles the same jitted ``steps.train_step`` that training runs, for
abstract state and batch shapes (nothing is allocated or computed), on a one-device mesh with the whole
global batch, so its FLOPs are those of the global step. ``implied_step_time`` turns them into the step
time a slice of accelerators would reach at a stated model-FLOPs utilisation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jpg_jax import input_pipeline as ip
from jpg_jax import parallel
from jpg_jax import steps
from jpg_jax.models import jpg as jpg_lib

# Dense bf16 peak FLOP/s per chip (vendor figures) for the accelerators the README sizes runs for.
PEAK_FLOPS = {"a100": 312e12, "tpu-v4": 275e12, "tpu-v5e": 197e12, "tpu-v5p": 459e12, "h100": 989e12, "h200": 989e12}


@dataclasses.dataclass(frozen=True)
class StepCost:
  flops: float            # per global step
  bytes_accessed: float
  global_batch: int
  stage: int


def abstract_inputs(config, model, optimizer, global_batch: int):
  """ShapeDtypeStructs of the train state and of one global batch."""
  d = config.dataset
  shapes = ip.example_shapes(d.image_size, d.max_seq_length, config.model.label_steps, model.num_labels,
                            ip.num_views(config))
  dtypes = {"images": jnp.float32, "report_mask": jnp.float32, "label_mask": jnp.float32,
            "label_targets": jnp.float32, "mask": jnp.float32}
  batch = {k: jax.ShapeDtypeStruct((global_batch,) + s, dtypes.get(k, jnp.int32)) for k, s in shapes.items()}
  return steps.abstract_train_state(model, optimizer, config), batch


def compile_train_step(config, stage: int = 2, global_batch: int | None = None, vocab_size: int = 761,
                       num_label_tokens: int = 64, device=None):
  """The compiled train step of ``config`` (stage 1 or 2) on one device, and its abstract inputs."""
  global_batch = global_batch or config.train.batch_size
  num_labels = config.labels.num_patterns if stage == 1 else config.labels.num_mined
  # The step on images (a stage that reads cached grids skips the extractor's forward as well).
  model = jpg_lib.from_config(config.model, vocab_size, num_labels, num_label_tokens,
                              jnp.dtype(config.compute_dtype),
                              frozen_extractor=steps.extractor_frozen(config, stage), cached_features=False)
  optimizer, _ = steps.make_optimizer(config, steps.param_shapes(model, config), 1, stage)
  state, batch = abstract_inputs(config, model, optimizer, global_batch)
  mesh = parallel.make_mesh([device or jax.devices()[0]])
  step = steps.jit_train_step(model, optimizer, config, stage, mesh)
  return step.lower(state, batch).compile(), state, batch


def analysis_of(compiled) -> dict:
  """XLA's cost analysis of a compiled function (one dict; older JAX returned one per partition)."""
  analysis = compiled.cost_analysis()
  return analysis[0] if isinstance(analysis, (list, tuple)) else analysis


def cost_of(compiled, global_batch: int, stage: int) -> StepCost:
  analysis = analysis_of(compiled)
  return StepCost(float(analysis.get("flops", 0.0)), float(analysis.get("bytes accessed", 0.0)),
                  global_batch, stage)


def train_step_cost(config, stage: int = 2, global_batch: int | None = None) -> StepCost:
  global_batch = global_batch or config.train.batch_size
  compiled, _, _ = compile_train_step(config, stage, global_batch)
  return cost_of(compiled, global_batch, stage)


def implied_step_time(flops: float, chips: int, peak_flops_per_chip: float, utilisation: float) -> float:
  """Seconds per step when ``chips`` accelerators run at ``utilisation`` of their peak."""
  return flops / (chips * peak_flops_per_chip * utilisation)


# (name, chips, peak key): slices the README sizes runs for. v4-32 = 16 chips (32 TensorCores, 4 hosts),
# v5litepod-64 = 64 chips (16 hosts).
SLICES = (("one A100", 1, "a100"), ("TPU v4-8", 4, "tpu-v4"), ("TPU v4-32", 16, "tpu-v4"),
          ("TPU v5e-64", 64, "tpu-v5e"))


def table(config, utilisation: float = 0.4) -> str:
  """FLOPs per step of both stages at the config's global batch, and the step times they imply."""
  stages = (1, 2) if config.model.use_labeler else (2,)
  return format_table([train_step_cost(config, s) for s in stages], config, utilisation)


def format_table(costs, config, utilisation: float) -> str:
  lines = [f"Train-step cost from XLA's cost analysis (global batch {config.train.batch_size}, "
           f"{config.dataset.image_size}px, compute {config.compute_dtype}); step times at "
           f"{utilisation:.0%} of bf16 peak"]
  for c in costs:
    times = ", ".join(
        f"{name} ({chips} chips): {implied_step_time(c.flops, chips, PEAK_FLOPS[key], utilisation) * 1e3:.1f} ms"
        for name, chips, key in SLICES)
    lines.append(f"stage {c.stage}: {c.flops / 1e12:.3f} TFLOP/step "
                 f"({c.flops / c.global_batch / 1e9:.1f} GFLOP/example); {times}")
  return "\n".join(lines)
