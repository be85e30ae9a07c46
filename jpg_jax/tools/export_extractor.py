"""A finished run's stage-1 visual extractor as a ``resnet_checkpoint`` folder.

  python -m jpg_jax.tools.export_extractor --workdir=/runs/jpg42 --output=/runs/jpg42_extractor
  python -m jpg_jax.main --config=configs/jpg.py:synthetic,base --workdir=/runs/base_from_stage1_42 \\
      --config.resnet_checkpoint=/runs/jpg42_extractor --config.model.frozen_extractor=True \\
      --config.model.cached_features=True

Writes the extractor's parameters and BatchNorm statistics of the run's best stage-1 checkpoint (the one
mining and stage 2 started from) in the folder format of ``tools/convert_resnet`` (``resnet_weights.py``).
The second command is the synthetic Table 2's "BASE from JPG's stage-1 extractor" row: BASE's report
model trained on the very grids JPG's stage 2 reads, which separates the report side's gain from stage 1's
extra supervision of the extractor (docs/results.md).
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
from etils import epath

from jpg_jax import checkpointing
from jpg_jax import errors
from jpg_jax import resnet_weights
from jpg_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir with a stage1/ checkpoint.")
_OUTPUT = flags.DEFINE_string("output", None, "The folder to write (new, empty, or written by this tool).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --output even when no tool of ours wrote it.")

EXTRACTOR = "visual_extractor"


def export(workdir: str, output: str, overwrite: bool = False) -> tuple[int, dict]:
  """Writes the best stage-1 extractor of ``workdir`` to ``output``; returns (its step, the run's model
  config section)."""
  workdir = epath.Path(workdir)
  trained = checkpointing.read_workdir_config(workdir) if workdir.is_dir() else None
  if trained is None:
    raise errors.MissingFileError(f"--workdir {workdir} holds no config.json: not a run's workdir.")
  config = json.loads(trained)
  if not (workdir / "stage1").is_dir():
    raise errors.MissingFileError(f"{workdir / 'stage1'} is missing: the run has no stage 1 (BASE?).")
  resnet_weights.check_output(output, overwrite)
  m = config["model"]
  abstract = resnet_weights.template(m["resnet_depth"], m["resnet_width"])
  abstract = {k: {EXTRACTOR: v} for k, v in abstract.items()}
  ckpt = checkpointing.StageCheckpoints(workdir / "stage1", config["train"]["keep_checkpoints"],
                                        config["train"]["stage1_select_metric"], read_only=True)
  try:
    step = ckpt.best_step()
    if step is None:
      raise errors.MissingFileError(f"{workdir / 'stage1'} holds no checkpoint.")
    try:
      restored = ckpt.restore_variables(step, abstract)
    except Exception as e:  # noqa: BLE001  (orbax and tensorstore raise many types)
      raise errors.CheckpointError(f"{ckpt.step_dir(step)} does not restore ({checkpointing.summary(e)}).")
  finally:
    ckpt.close()
  variables = {k: v[EXTRACTOR] for k, v in restored.items()}
  resnet_weights.save(variables, output, tool="jpg_jax.tools.export_extractor",
                      source=f"{workdir / 'stage1' / str(step)}", depth=m["resnet_depth"],
                      width=m["resnet_width"], overwrite=overwrite)
  return step, m


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    step, m = export(_WORKDIR.value, _OUTPUT.value, _OVERWRITE.value)
  except errors.UserError as e:
    cli.fail(e)
  print(f"ResNet-{m['resnet_depth']} (width {m['resnet_width']}) of {_WORKDIR.value} stage-1 step {step} "
        f"written to {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main, required=["workdir", "output"])
