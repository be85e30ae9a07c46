"""Beam search (beam 3, at most 60 tokens, batch 16): jpg-jax vs a PyTorch beam search in R2Gen's style.

  python benchmarks/decode.py

Both sides decode the paper's JPG (ResNet-101, 2 x 49 patches + label features, 3-layer Transformer,
761 report logits). jpg-jax: one jitted ``lax.while_loop`` over a key/value cache (``jpg_jax.decode``).
PyTorch: R2Gen's way (``CaptionModel``'s beam search over ``core``), which re-runs the decoder over the
whole prefix at every step, then log-softmax and top-k over beam x vocabulary, eagerly. The EOS logit is
pushed down on both sides so that every hypothesis runs the full 60 steps: the same work for both.

Prints one JSON line: medians over ``--runs`` of (a) decoding from the encoder memory (the beam search
itself) and (b) images to reports (encoder, labels and beam search), as reports/s and their ratio.

``--variant=r2gen`` / ``cmn`` (a ``configs/jpg.py`` model variant: Table 2's baselines) times that model's
decoding on the JAX side only (``--framework=jax``): R2Gen's relational memory steps with every token, and
CMN's memory answers every new token's query.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import common  # noqa: F401  (sets sys.path)

import jax
import jax.numpy as jnp
import numpy as np

from configs import jpg as jpg_config
from jpg_jax import decode as decode_lib
from jpg_jax.models import jpg as jpg_lib

VOCAB, LABELS, LABEL_TOKENS, VIEWS = 761, 57, 64, 2


def jax_side(args, images: np.ndarray) -> dict:
  c = jpg_config.get_config(args.variant or None)
  model = jpg_lib.from_config(c.model, VOCAB, LABELS, LABEL_TOKENS, jnp.dtype(args.dtype))
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), images[:1], jnp.zeros((1, 60), jnp.int32))
  variables = jax.tree.map(lambda x: x, variables)
  params = dict(variables["params"])
  params["logit"] = dict(params["logit"], bias=params["logit"]["bias"].at[0].set(-30.0))   # no EOS
  variables = dict(variables, params=params)
  images = jax.device_put(images)
  beam, max_len = args.beam, args.max_len

  @jax.jit
  def encode(v, x):
    memory, mask, _ = model.apply(v, x, False, method=jpg_lib.JPG.encode)
    return memory, mask

  @jax.jit
  def decode(v, memory, mask):
    memory, mask = decode_lib.tile_beams((memory, mask), beam)
    cache = decode_lib.init_cache(model, v, memory, mask, max_len)
    step = decode_lib.report_step_fn(model, v, memory, mask)
    return decode_lib.beam_search(step, cache, images.shape[0], beam, max_len)[0]

  end_to_end = jax.jit(lambda v, x: decode_lib.generate_reports(model, v, x, beam=beam, max_len=max_len)[0])
  memory, mask = encode(variables, images)
  tokens = decode(variables, memory, mask)
  assert int((tokens > 0).sum(-1).min()) == max_len, "a hypothesis ended early: the timing would differ"
  t_dec, _ = common.median_time(lambda: decode(variables, memory, mask).block_until_ready(), args.runs)
  t_all, _ = common.median_time(lambda: end_to_end(variables, images).block_until_ready(), args.runs)
  return {"decode_s": t_dec, "end_to_end_s": t_all}


def torch_side(args, images: np.ndarray) -> dict:
  import torch
  import torch.nn.functional as F
  sys.path.insert(0, os.path.join(common.ROOT, "tests"))
  import torch_reference as ref

  torch.set_num_threads(args.threads or os.cpu_count())
  device = "cuda" if torch.cuda.is_available() and jax.devices()[0].platform == "gpu" else "cpu"
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  torch.manual_seed(0)
  net = ref.JPG(VOCAB, LABELS, LABEL_TOKENS).to(device).eval()
  with torch.no_grad():
    net.logit.bias[0] = -30.0   # no EOS, as on the JAX side
  x = torch.as_tensor(images).permute(0, 1, 4, 2, 3).contiguous().to(device)
  beam, max_len = args.beam, args.max_len
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

  def sync():
    if device == "cuda":
      torch.cuda.synchronize()

  @torch.no_grad()
  def beam_search(memory, mask):
    """R2Gen's scoring: summed log-probs, EOS included; the decoder re-reads the whole prefix each step."""
    b = memory.shape[0]
    memory, mask = memory.repeat_interleave(beam, 0), mask.repeat_interleave(beam, 0)
    seqs = torch.zeros(b * beam, 1, dtype=torch.long, device=device)
    scores = torch.full((b, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    done = torch.zeros(b * beam, dtype=torch.bool, device=device)
    base = (torch.arange(b, device=device) * beam)[:, None]
    for _ in range(max_len):
      with autocast:
        logits = net.decode(seqs, memory, mask)[:, -1]
      logp = F.log_softmax(logits.float(), -1)
      logp[done] = float("-inf")
      logp[done, 0] = 0.0                          # a finished hypothesis only pads, at no cost
      cand = (scores.reshape(-1, 1) + logp).reshape(b, -1)
      scores, idx = cand.topk(beam, -1)
      src = (base + torch.div(idx, logp.shape[-1], rounding_mode="floor")).reshape(-1)
      tok = (idx % logp.shape[-1]).reshape(-1, 1)
      seqs = torch.cat([seqs[src], tok], 1)
      done = done[src] | (tok[:, 0] == 0)
      if bool(done.all()):
        break
    best = scores.argmax(-1)
    return seqs.reshape(b, beam, -1)[torch.arange(b, device=device), best, 1:]

  @torch.no_grad()
  def encode():
    with autocast:
      memory, mask, _ = net.encode(x)
    return memory, mask

  memory, mask = encode()
  tokens = beam_search(memory, mask)
  assert tokens.shape[1] == max_len and int((tokens > 0).sum(-1).min()) == max_len
  t_dec, _ = common.median_time(lambda: (beam_search(memory, mask), sync()), args.runs)
  t_all, _ = common.median_time(lambda: (beam_search(*encode()), sync()), args.runs)
  return {"decode_s": t_dec, "end_to_end_s": t_all, "version": torch.__version__, "device": device,
          "threads": torch.get_num_threads()}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--beam", type=int, default=3)
  p.add_argument("--max_len", type=int, default=60)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--threads", type=int, default=0)
  p.add_argument("--variant", default="", help="a configs/jpg.py model variant (r2gen, cmn, base); JAX only")
  p.add_argument("--framework", default="both", choices=["both", "jax"])
  args = p.parse_args()
  if args.variant and args.framework != "jax":
    p.error("--variant times the JAX side only: add --framework=jax")
  images = np.random.default_rng(0).standard_normal(
      (args.batch, VIEWS, args.image_size, args.image_size, 3)).astype(np.float32)
  record = {"benchmark": "decode", **common.machine(), "batch": args.batch, "beam": args.beam,
            "max_len": args.max_len, "dtype": args.dtype, "runs": args.runs, "variant": args.variant or "jpg"}
  j = jax_side(args, images)
  t = torch_side(args, images) if args.framework == "both" else None
  for name, r in (("jax", j), ("torch", t)):
    if r is None:
      continue
    for k, v in r.items():
      record[f"{name}_{k}"] = round(v, 4) if isinstance(v, float) else v
    record[f"{name}_decode_reports_per_s"] = round(args.batch / r["decode_s"], 3)
    record[f"{name}_end_to_end_reports_per_s"] = round(args.batch / r["end_to_end_s"], 3)
  if t is not None:
    record["decode_speedup_jax_over_torch"] = round(t["decode_s"] / j["decode_s"], 2)
    record["end_to_end_speedup_jax_over_torch"] = round(t["end_to_end_s"] / j["end_to_end_s"], 2)
  common.emit(record)


if __name__ == "__main__":
  main()
