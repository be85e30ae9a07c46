"""One device and 8 fake CPU devices give the same losses (a subprocess: XLA flags are read at start)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import functools, sys, tempfile
    import jax, numpy as np
    from configs import jpg
    from jpg_jax import input_pipeline as ip, parallel, train

    config = jpg.get_config("smoke")
    config.unlock(); config.dataset.data_dir = sys.argv[1]; config.lock()
    data = train.load_data(config)
    patterns, kept, assigned = train.stage1_labels(config, data.index["train"])
    targets = ip.Targets(data.vocab, config.dataset.max_seq_length, patterns, 5, assigned)
    losses = {}
    for n in (1, 8):
      mesh = parallel.make_mesh(jax.devices()[:n])
      trainer = train.Trainer(config, tempfile.mkdtemp(), mesh)
      model = train.create_model(config, data.vocab, patterns)
      opt = train.make_optimizer(config, trainer.param_shapes(model), 6, 2)
      state = trainer.init_state(model, opt, 0)
      rep, shard = parallel.replicated(mesh), parallel.data_sharded(mesh)
      step = jax.jit(functools.partial(train.train_step, model=model, optimizer=opt, config=config, stage=2),
                     in_shardings=(rep, shard), out_shardings=(rep, rep), donate_argnums=0)
      it = ip.to_iter(ip.train_dataset(data.sources["train"], data.index["train"], targets, batch_size=8,
                                       seed=0, image=train.image_options(config, True)))
      losses[n], sizes = [], []
      for _ in range(5):
        batch = parallel.global_batch(next(it), mesh)
        assert len(batch["images"].sharding.device_set) == n
        state, terms = step(state, batch)
        losses[n].append(float(terms["loss"]))
        sizes.append(step._cache_size())
      # One compilation on one device. On the 8-device CPU mesh jax compiles the step a second time at
      # the third call (inputs identical in shape, dtype and sharding; see the issue notes); never after.
      assert sizes == [1] * 5 if n == 1 else sizes[-1] == sizes[2] <= 2, sizes
    print(losses)
    np.testing.assert_allclose(losses[1], losses[8], rtol=2e-5)
    assert losses[1][0] != losses[1][-1]
    print("OK")
""")


def test_one_and_eight_devices_give_the_same_losses(tiny_synthetic):
  data_dir, _ = tiny_synthetic
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SCRIPT, data_dir], env=env, capture_output=True, text=True,
                       timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.returncode == 0 and "OK" in out.stdout, (out.stdout[-2000:], out.stderr[-4000:])
