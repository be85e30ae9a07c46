"""A checkpoint in R2Gen's and CMN's released layout (``epoch``, ``state_dict`` with the torchvision
extractor as ``visual_extractor.model.N.*``, ``optimizer``, ``monitor_best``), made by the PyTorch
transcriptions of ``tests/torch_reference.py``, imported by ``tools/import_torch`` as a finished run: the
same log-probs and beam-search reports as the original on the same images, then ``--mode=evaluate`` (with
the originals' metric names) and ``--mode=predict`` on it."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from configs import jpg  # noqa: E402
from jpg_jax import decode  # noqa: E402
from jpg_jax import errors  # noqa: E402
from jpg_jax import inference  # noqa: E402
from jpg_jax import input_pipeline as ip  # noqa: E402
from jpg_jax.tools import import_torch  # noqa: E402
from tests import torch_reference as ref  # noqa: E402
from tests.test_baselines import torch_beam_search  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(2)


def _config(data_dir, kind="r2gen", **dataset):
  config = jpg.get_config(f"smoke,{kind}")
  config.unlock()
  config.dataset.data_dir = data_dir
  config.dataset.update(dataset)
  config.model.resnet_depth, config.model.resnet_width = 18, 64   # torchvision's ResNet-18 (the reference's)
  config.lock()
  return config


def _released(path, kind, num_words, seed=0, data_parallel=False):
  """The original (eval mode, random BatchNorm statistics) saved as its trainer saves it."""
  m = jpg.get_config(f"smoke,{kind}").model
  torch_kw = (dict(rm_num_slots=m.rm_num_slots, rm_num_heads=m.rm_num_heads) if kind == "r2gen"
              else dict(topk=m.cmm_top_k, cmm_size=m.cmm_size))
  torch.manual_seed(seed)
  net = ref.R2GenModel(kind, num_words, depth=18, d_model=m.d_model, d_ff=m.d_ff, num_heads=m.num_heads,
                       num_layers=m.num_layers, dropout=m.dropout, **torch_kw).eval()
  with torch.no_grad():
    ref.randomize_batchnorm(net, torch.Generator().manual_seed(seed + 1))
    net.encoder_decoder.logit.bias[0] = -2.0   # EOS less likely: beams run for a while
  state_dict = net.state_dict()
  if data_parallel:
    state_dict = {f"module.{k}": v for k, v in state_dict.items()}
  torch.save({"epoch": 12, "state_dict": state_dict, "optimizer": {"state": {}, "param_groups": []},
              "monitor_best": torch.tensor(0.1234)}, path)
  children = {k.split("visual_extractor.model.")[1].split(".")[0] for k in state_dict if "visual_extractor.model." in k}
  assert children >= {"0", "1", "4", "7"}   # torchvision's conv1, bn1, layer1 ... layer4 as a Sequential
  return net


@pytest.fixture(scope="module")
def imported(tiny_synthetic, tmp_path_factory):
  data_dir, _ = tiny_synthetic
  config = _config(data_dir)
  vocab = ip.load_data(config).vocab
  root = tmp_path_factory.mktemp("import")
  net = _released(root / "model_best.pth", "r2gen", len(vocab))
  workdir = root / "run"
  step = import_torch.import_checkpoint("r2gen", str(root / "model_best.pth"), config, str(workdir))
  return config, net, workdir, step, root


def test_the_imported_run_gives_the_originals_log_probs_and_beam_reports(imported):
  config, net, workdir, step, _ = imported
  assert sorted(p.name for p in (workdir / "stage2").iterdir() if p.name.isdigit()) == [str(step)]
  saved = json.loads((workdir / "imported.json").read_text())
  assert saved["epoch"] == 12 and saved["monitor_best"] == pytest.approx(0.1234) and saved["model"] == "r2gen"
  restored = inference.restore_for_inference(config, workdir)
  g = torch.Generator().manual_seed(2)
  images = torch.randn(2, 2, 3, 56, 56, generator=g)
  reports = torch.randint(1, len(restored.vocab) + 1, (2, 12), generator=g)
  reports[:, 0] = 0
  with torch.no_grad():
    expected = net(images, reports).numpy()
  images_f = jnp.asarray(images.numpy().transpose(0, 1, 3, 4, 2))
  logits = restored.model.apply(restored.variables, images_f, jnp.asarray(reports.numpy()))["logits"]
  np.testing.assert_allclose(jax.nn.log_softmax(logits, -1), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
  beam, max_len = 3, 14
  done = torch_beam_search(net, images, beam, max_len)
  tokens, _ = decode.generate_reports(restored.model, restored.variables, images_f, beam=beam, max_len=max_len)
  for b in range(2):
    seq = [int(t) for t in done[b][0]["seq"]]
    np.testing.assert_array_equal(np.asarray(tokens[b]), seq + [0] * (max_len - len(seq)))


def test_evaluate_and_predict_read_the_imported_run(imported, tiny_synthetic, tmp_path):
  """The two commands, with nothing else to do; evaluate's lines carry the originals' metric names."""
  config, _, workdir, _, _ = imported
  data_dir, _ = tiny_synthetic
  common = [sys.executable, "-m", "jpg_jax.main", "--config=configs/jpg.py:smoke,r2gen", f"--workdir={workdir}",
            f"--config.dataset.data_dir={data_dir}", "--config.model.resnet_depth=18",
            "--config.model.resnet_width=64"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(common + ["--mode=evaluate", f"--output_dir={tmp_path / 'eval'}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((tmp_path / "eval" / "test_metrics.json").read_text())
  named = {k.strip(): v for k, v in (l.strip().split(": ") for l in out.stdout.splitlines()
                                       if l.strip().startswith("test_"))}
  assert set(named) == {"test_BLEU_1", "test_BLEU_2", "test_BLEU_3", "test_BLEU_4",
                                        "test_METEOR", "test_ROUGE_L"}
  assert float(named["test_BLEU_4"]) == pytest.approx(metrics["BLEU_4"])
  paths = []
  for k in range(2):
    p = tmp_path / f"view{k}.png"
    Image.fromarray((np.random.default_rng(k).random((80, 70)) * 255).astype(np.uint8)).save(p)
    paths.append(str(p))
  result = inference.predict(config, str(workdir), paths, str(tmp_path / "predict"), attention_png=None)
  assert isinstance(result["report"], str)


def test_a_vocabulary_that_does_not_fit_and_a_wrong_file_are_one_line(imported, tiny_synthetic, tmp_path):
  config, _, _, _, root = imported
  data_dir, _ = tiny_synthetic
  other = _config(data_dir, vocab_threshold=1)   # another threshold: a larger vocabulary
  with pytest.raises(errors.ConfigError, match=r"embedding has \d+ rows, this config's vocabulary \d+ ids") as e:
    import_torch.import_checkpoint("r2gen", str(root / "model_best.pth"), other, str(tmp_path / "a"))
  assert "vocab_threshold=1" in str(e.value) and not (tmp_path / "a").exists()
  with pytest.raises(errors.ConfigError, match="does not match the config's architecture"):
    import_torch.import_checkpoint("cmn", str(root / "model_best.pth"), config, str(tmp_path / "b"))
  bare = tmp_path / "bare.pth"
  torch.save({"model": {}}, bare)
  with pytest.raises(errors.InputError, match=r"not in the released layout: no 'state_dict' key"):
    import_torch.import_checkpoint("r2gen", str(bare), config, str(tmp_path / "c"))
  missing = torch.load(root / "model_best.pth", weights_only=True)
  key = "encoder_decoder.model.decoder.norm.gamma"
  del missing["state_dict"][key]
  torch.save(missing, tmp_path / "missing.pth")
  with pytest.raises(errors.InputError, match="No torch parameter for params/"):
    import_torch.import_checkpoint("r2gen", str(tmp_path / "missing.pth"), config, str(tmp_path / "d"))
  out = subprocess.run([sys.executable, "-m", "jpg_jax.tools.import_torch", "--model=r2gen",
                        f"--checkpoint={tmp_path / 'nothing.pth'}", "--config=configs/jpg.py:smoke,r2gen",
                        f"--workdir={tmp_path / 'e'}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == errors.EXIT_STATUS and out.stderr.strip().splitlines()[-1].startswith(
      "import_torch: error: --checkpoint") and "is not a file" in out.stderr


def test_a_data_parallel_cmn_checkpoint_imports(tiny_synthetic, tmp_path):
  data_dir, _ = tiny_synthetic
  config = _config(data_dir, "cmn")
  vocab = ip.load_data(config).vocab
  _released(tmp_path / "cmn.pth", "cmn", len(vocab), seed=5, data_parallel=True)
  step = import_torch.import_checkpoint("cmn", str(tmp_path / "cmn.pth"), config, str(tmp_path / "run"))
  assert (tmp_path / "run" / "stage2" / str(step)).is_dir()
