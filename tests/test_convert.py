"""torchvision .pth -> orbax checkpoint -> Flax variables, through the CLI."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jpg_jax import errors  # noqa: E402
from jpg_jax.tools import convert_resnet  # noqa: E402
from jpg_jax.tools import convert_torch  # noqa: E402
from tests import torch_reference as ref  # noqa: E402


def test_cli_writes_an_orbax_checkpoint_that_restores(tmp_path):
  torch.manual_seed(0)
  net = ref.ResNet(18)
  sd = dict(net.state_dict())
  sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)   # as torchvision ships it
  torch.save(sd, tmp_path / "resnet18.pth")
  out = subprocess.run([sys.executable, "-m", "jpg_jax.tools.convert_resnet", "--depth=18",
                        f"--torch_checkpoint={tmp_path / 'resnet18.pth'}", f"--output={tmp_path / 'flax'}"],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "11,176,512 parameters" in out.stdout   # torchvision ResNet-18 without fc
  restored = convert_resnet.restore(str(tmp_path / "flax"), 18)
  np.testing.assert_array_equal(restored["params"]["layer2_0"]["downsample_0"]["kernel"],
                                net.layer2[0].downsample[0].weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(restored["batch_stats"]["bn1"]["var"], net.bn1.running_var.numpy())

  # It never deletes what it did not write: a foreign, non-empty --output is refused in one line.
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("keep")
  out = subprocess.run([sys.executable, "-m", "jpg_jax.tools.convert_resnet", "--depth=18",
                        f"--torch_checkpoint={tmp_path / 'resnet18.pth'}", f"--output={mine}"],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert out.stderr.splitlines()[-1].startswith(f"convert_resnet: error: --output {mine} is a folder")
  assert (mine / "notes.txt").read_text() == "keep"
  convert_resnet.save(restored, str(tmp_path / "flax"))   # its own output: replaced
  with pytest.raises(errors.OutputExistsError, match="--overwrite"):
    convert_resnet.save(restored, str(mine))
  convert_resnet.save(restored, str(mine), overwrite=True)
  assert not (mine / "notes.txt").exists() and (mine / convert_resnet.MARKER).exists()


def test_converter_reports_missing_and_unused_keys():
  net = ref.ResNet(18)
  template = convert_resnet.resnet_template(18)
  sd = dict(net.state_dict())
  del sd["layer1.0.conv1.weight"]
  with pytest.raises(KeyError, match="layer1_0/conv1/kernel"):
    convert_torch.torch_to_flax(sd, template)
  sd = dict(net.state_dict(), extra=torch.zeros(3))
  with pytest.raises(ValueError, match="Unused torch parameters: \\['extra'\\]"):
    convert_torch.torch_to_flax(sd, template)
  sd = dict(net.state_dict())
  sd["bn1.weight"] = torch.zeros(65)
  with pytest.raises(ValueError, match="bn1.weight"):
    convert_torch.torch_to_flax(sd, template)
