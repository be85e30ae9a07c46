"""Where every config value comes from: the paper, a released file of R2Gen or CMN, or this project.

A config is built field by field through ``Sourced``, each value with its ``Source``:

* ``paper``   the value the paper gives (``ref``: the section or equation, and its words);
* ``r2gen``   the paper is silent; R2Gen's released code (``ref``: the file, e.g. ``main.py``);
* ``cmn``     the paper is silent; R2GenCMN's released code (``ref``: the file);
* ``ours``    the paper is silent and neither released code has the value; ``ref`` says why;
* ``departs`` the paper speaks, and this value is not what it says (a variant that measured better,
  or a stand-in the data forces); ``ref`` says why, and where the measurement is.

``rows`` lists a built config's every field with its source (a field without one is ``MISSING``, which
``tests/test_provenance.py`` fails on); ``markdown`` writes the fidelity page (``docs/fidelity.md``,
``python -m jpg_jax.tools.provenance --markdown``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import ml_collections

KINDS = ("paper", "r2gen", "cmn", "ours", "departs")
MISSING = "MISSING"


@dataclasses.dataclass(frozen=True)
class Source:
  kind: str   # one of KINDS
  ref: str    # where in the paper or the released code, or why

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"Unknown source kind {self.kind!r}; choose from {KINDS}.")
    if not self.ref.strip():
      raise ValueError(f"A {self.kind!r} source needs a reference or a reason.")


class Sourced:
  """A ``ConfigDict`` built one field at a time, each with its ``Source``: ``s("model.d_model", 512,
  "paper", "Sec. 4.4: ...")``. Setting a field again (a variant) replaces its value and its source."""

  def __init__(self):
    self.config = ml_collections.ConfigDict()
    self.sources: dict[str, Source] = {}

  def __call__(self, field: str, value: Any, kind: str, ref: str) -> None:
    *parents, name = field.split(".")
    node = self.config
    for part in parents:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[name] = value
    self.sources[field] = Source(kind, ref)

  def __getitem__(self, field: str) -> Any:
    node = self.config
    for part in field.split("."):
      node = node[part]
    return node


def leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """``{"model.d_model": 512, ...}``: every leaf of a (nested) config by its dotted path."""
  out = {}
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      out.update(leaves(value, path + "."))
    else:
      out[path] = value
  return out


@dataclasses.dataclass(frozen=True)
class Row:
  field: str
  value: Any
  kind: str
  ref: str


def rows(config: ml_collections.ConfigDict, sources: Mapping[str, Source]) -> list[Row]:
  """One row a field of ``config``, in its order: its value and source (``MISSING`` where none is
  recorded; ``command line`` where the value is not the one recorded, i.e. set with --config.x=y)."""
  out = []
  for field, value in leaves(config).items():
    src = sources.get(field)
    out.append(Row(field, value, src.kind, src.ref) if src else Row(field, value, MISSING, ""))
  return out


def overridden(rows_: Iterable[Row], built: ml_collections.ConfigDict) -> list[Row]:
  """``rows_`` with every field whose value differs from ``built``'s (the config file's own) marked as
  set on the command line."""
  own = leaves(built)
  return [r if own.get(r.field) == r.value else Row(r.field, r.value, "command line",
                                                      f"the config file's value: {own.get(r.field)!r}")
          for r in rows_]


def _cell(value: Any) -> str:
  return repr(value).replace("|", "\\|")


def table(rows_: Iterable[Row], markdown: bool = False, width: int = 160) -> str:
  """Rows as a markdown table, or as fixed-width text lines of at most ``width`` characters."""
  rows_ = list(rows_)
  if markdown:
    lines = ["| field | value | source | where / why |", "|---|---|---|---|"]
    lines += [f"| `{r.field}` | `{_cell(r.value)}` | {r.kind} | {r.ref.replace('|', '/')} |" for r in rows_]
    return "\n".join(lines)
  f = max((len(r.field) for r in rows_), default=5)
  v = min(max((len(repr(r.value)) for r in rows_), default=5), 24)
  lines = []
  for r in rows_:
    line = f"{r.field:<{f}}  {repr(r.value)[:v]:<{v}}  {r.kind:<8}  {r.ref}"
    lines.append(line if len(line) <= width else line[: width - 3] + "...")
  return "\n".join(lines)


def departures(rows_: Iterable[Row]) -> list[Row]:
  """The rows whose value is not the paper's where the paper speaks."""
  return [r for r in rows_ if r.kind == "departs"]


def markdown(configs: Mapping[str, tuple[ml_collections.ConfigDict, Mapping[str, Source]]],
             command: str) -> str:
  """The fidelity page: for each named config, its departures from the paper; then the default config's
  every field with its source. ``configs``' first entry is the default."""
  names = list(configs)
  default_rows = rows(*configs[names[0]])
  counts = {k: sum(r.kind == k for r in default_rows) for k in KINDS}
  out = [
      "# Fidelity: where every config value comes from",
      "",
      f"Made by `{command}`; do not edit by hand (`tests/test_provenance.py` checks that it is current).",
      "",
      "Each value of `configs/jpg.py` is tagged: **paper** (the paper gives it: section or equation), **r2gen** "
      "or **cmn** (the paper is silent; the released file it was read from), **ours** (the paper is silent "
      "and neither released code has it; why), or **departs** (the paper speaks and this value is not what it "
      "says; why, and where the measurement is).",
      "",
      f"The default config (`{names[0]}`): "
      + ", ".join(f"{counts[k]} {k}" for k in KINDS) + f" of {len(default_rows)} fields.",
      "",
      "## Departures from the paper, per config",
      "",
  ]
  for name in names:
    found = departures(rows(*configs[name]))
    out.append(f"### `{name}`")
    out.append("")
    out.append(table(found, markdown=True) if found else "None: where the paper speaks, this config does "
               "what it says.")
    out.append("")
  out += [f"## Every field of `{names[0]}`", "", table(default_rows, markdown=True), ""]
  return "\n".join(out)
