"""Where every value of a config comes from: the paper, R2Gen's or CMN's released code, or this project.

  python -m jpg_jax.tools.provenance [--config=configs/jpg.py[:variants]] [--departures]
  python -m jpg_jax.tools.provenance --markdown=docs/fidelity.md

One row per field: field, value, source (paper / r2gen / cmn / ours / departs), and the section, equation,
released file or reason (``jpg_jax/provenance.py``). ``--departures`` keeps only the values that are not
the paper's where the paper speaks. ``--markdown`` writes the fidelity page: every departure of the default
and of each named variant (``VARIANTS_DOCUMENTED``), then the default's every field.
"""

from __future__ import annotations

import importlib.util
import sys

from absl import app
from absl import flags
from etils import epath

from jpg_jax import provenance
from jpg_jax import cli

_CONFIG = flags.DEFINE_string("config", "configs/jpg.py", "A config file, optionally with :variants.")
_DEPARTURES = flags.DEFINE_bool("departures", False, "Only the departures from the paper.")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Write the fidelity page (every documented variant) here.")

# The variants docs/fidelity.md lists, each alone: what a user of Table 2 runs.
VARIANTS_DOCUMENTED = ("", "r2gen_split", "tuned", "base", "projection", "auxiliary", "r2gen", "cmn",
                       "synthetic", "synthetic,faithful", "synthetic,base", "mimic")
MARKDOWN_COMMAND = "python -m jpg_jax.tools.provenance --markdown=docs/fidelity.md"


def load_config_module(path: str):
  """The config file as a module (it must define ``get_config`` and ``get_provenance``)."""
  if not epath.Path(path).is_file():
    raise app.UsageError(f"--config: {path} is not a file.")
  spec = importlib.util.spec_from_file_location("jpg_jax_config_under_review", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_provenance"):
    raise app.UsageError(f"--config: {path} defines no get_provenance(arg): its values have no sources.")
  return module


def split_config_flag(value: str) -> tuple[str, str]:
  path, _, arg = value.partition(":")
  return path, arg


def config_rows(module, arg: str) -> list[provenance.Row]:
  try:
    return provenance.rows(module.get_config(arg or None), module.get_provenance(arg or None))
  except ValueError as e:   # an unknown variant
    raise app.UsageError(str(e)) from None


def fidelity_page(module, path: str) -> str:
  configs = {}
  for arg in VARIANTS_DOCUMENTED:
    name = f"{path}:{arg}" if arg else path
    configs[name] = (module.get_config(arg or None), module.get_provenance(arg or None))
  return provenance.markdown(configs, MARKDOWN_COMMAND)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  path, arg = split_config_flag(_CONFIG.value)
  module = load_config_module(path)
  if _MARKDOWN.value:
    epath.Path(_MARKDOWN.value).write_text(fidelity_page(module, path))
    print(f"wrote {_MARKDOWN.value}")
    return
  rows = config_rows(module, arg)
  if _DEPARTURES.value:
    rows = provenance.departures(rows)
  print(provenance.table(rows))
  missing = [r.field for r in rows if r.kind == provenance.MISSING]
  if missing:
    print(f"provenance: {len(missing)} fields have no source: {', '.join(missing)}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main)
