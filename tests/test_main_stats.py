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
  config = jpg.get_config()
  config.dataset.data_dir = str(tmp_path)
  config.dataset.manual_dir = str(iu_xray_dir)
  rows = {l.split()[0]: l.split()[1:] for l in main.run_stats(config).splitlines()[2:5]}
  assert rows["TRAIN"][:3] == ["4,138", "2,069", "2,069"]
  assert rows["VAL"][:3] == ["592", "296", "296"]
  assert rows["TEST"][:3] == ["1,180", "590", "590"]
  assert 25 < float(rows["TRAIN"][3]) < 40
