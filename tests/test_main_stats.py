"""``--mode=stats``: Table 1 for the synthetic default and for iu_xray/r2gen from the shared files."""

from jpg_jax import main
from configs import jpg


def test_stats_synthetic(tiny_synthetic):
  data_dir, _ = tiny_synthetic
  config = jpg.get_config("smoke")
  config.dataset.data_dir = data_dir
  table = main.run_stats(config)
  lines = table.splitlines()
  assert lines[2].split()[:4] == ["TRAIN", "96", "48", "48"]
  assert lines[3].split()[:4] == ["VAL", "24", "12", "12"]


def test_stats_r2gen_from_shared_sources(tmp_path, iu_xray_dir):
  config = jpg.get_config("r2gen_split")
  config.dataset.data_dir = str(tmp_path)
  config.dataset.manual_dir = str(iu_xray_dir)
  rows = {l.split()[0]: l.split()[1:] for l in main.run_stats(config).splitlines()[2:]
          if l.split() and l.split()[0] in ("TRAIN", "VAL", "TEST")}
  assert rows["TRAIN"][:3] == ["4,138", "2,069", "2,069"]
  assert rows["VAL"][:3] == ["592", "296", "296"]
  assert rows["TEST"][:3] == ["1,180", "590", "590"]
  assert 25 < float(rows["TRAIN"][3]) < 40


def test_stats_paper_split_beside_the_papers_table1(tmp_path, iu_xray_dir):
  """The default split is Sec. 4.1's (Li et al.'s 70/10/20 of the reports with FINDINGS and MeSH); the
  paper's Table 1 is printed under each split's row."""
  config = jpg.get_config()
  assert config.dataset.name == jpg.get_config("paper_split").dataset.name == "iu_xray/paper"
  config.dataset.data_dir = str(tmp_path)
  config.dataset.manual_dir = str(iu_xray_dir)
  lines = main.run_stats(config).splitlines()
  ours = {l.split()[0]: l.split()[1:4] for l in lines if l.split() and l.split()[0] in ("TRAIN", "VAL", "TEST")}
  paper = [l.split()[4:7] for l in lines if l.startswith("  the paper's Table 1")]
  assert ours == {"TRAIN": ["4,038", "2,019", "2,019"], "VAL": ["576", "288", "288"],
                  "TEST": ["1,156", "578", "578"]}
  assert paper == [["5,226", "2,770", "2,770"], ["748", "395", "395"], ["1,496", "790", "790"]]
  n = {k: int(v[1].replace(",", "")) for k, v in ours.items()}
  assert abs(n["TRAIN"] / sum(n.values()) - 0.7) < 0.001 and abs(n["TEST"] / sum(n.values()) - 0.2) < 0.001
