"""One device and 8 fake CPU devices give the same losses (a subprocess: XLA flags are read at start)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import functools, logging, sys, tempfile
    import jax, numpy as np
    from configs import jpg
    from jpg_jax import input_pipeline as ip, parallel, train

    config = jpg.get_config("smoke")
    config.unlock(); config.dataset.data_dir = sys.argv[1]; config.lock()
    data = train.load_data(config)
    patterns, kept, assigned = train.stage1_labels(config, data.index["train"])
    targets = ip.Targets(data.vocab, config.dataset.max_seq_length, patterns, 5, assigned)
    compiles = []   # jax logs each XLA compilation of a jitted function when jax_log_compiles is on

    class CountCompiles(logging.Handler):
      def emit(self, record):
        if record.getMessage().startswith("Compiling jit(train_step)"):
          compiles.append(record.getMessage())

    logging.getLogger("jax._src.interpreters.pxla").addHandler(CountCompiles())
    jax.config.update("jax_log_compiles", True)
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
      losses[n], before = [], len(compiles)
      for _ in range(5):
        batch = parallel.global_batch(next(it), mesh)
        assert len(batch["images"].sharding.device_set) == n
        state, terms = step(state, batch)
        losses[n].append(float(terms["loss"]))
      # Compiled once per mesh. (On the 8-device mesh jit's dispatch cache, ``_cache_size()``, gains a
      # second entry at the third call, but no second XLA compilation happens.)
      assert len(compiles) - before == 1, compiles
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
