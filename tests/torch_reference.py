"""Hand-written PyTorch references of every JPG component, for parity tests and benchmarks.

torchvision cannot be installed beside the CPU torch wheel here, so ResNet is written out with
torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample.0``) to exercise the
converter on the real key layout. The Transformer is R2Gen's (``MultiHeadedAttention`` with four linears,
``SublayerConnection`` with pre-norm, R2Gen's LayerNorm with the unbiased std). Module names mirror
jpg-jax's Flax modules so that ``jpg_jax.tools.convert_torch`` maps one to the other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ------------------------------------------------------------------------------------------ ResNet
_STAGES = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
           50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)   # v1.5: stride in the 3x3
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
  """torchvision's ResNet body (no avgpool/fc): NCHW in, the last conv map out."""

  def __init__(self, depth=101):
    super().__init__()
    kind, blocks = _STAGES[depth]
    block = BasicBlock if kind == "basic" else Bottleneck
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = 64
    for i, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512))):
      stride = 1 if i == 0 else 2
      layers = []
      for b in range(n):
        s = stride if b == 0 else 1
        down = None
        if b == 0 and (s != 1 or inplanes != planes * block.expansion):
          down = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, s, bias=False),
                               nn.BatchNorm2d(planes * block.expansion))
        layers.append(block(inplanes, planes, s, down))
        inplanes = planes * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*layers))

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def randomize_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
  """Non-trivial BN statistics and affine parameters, so that parity tests see them."""
  for m in module.modules():
    if isinstance(m, nn.BatchNorm2d):
      n = m.num_features
      m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
      m.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
      m.weight.data.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
      m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


# ------------------------------------------------------------------------------------------ subspace
class SharedSubspace(nn.Module):
  """Eqs. 4-10. ``similarity``: 'dot' (Eq. 7's formula), 'scaled_dot' (/ sqrt(d_k), as CMN's
  ``memory_querying_responding``), 'cosine' (the text's word: unit vectors times exp(log_temperature));
  ``residual``: the response added to the projected query, as CMN's ``att_feats + responses``
  (R2GenCMN ``modules/base_cmn.py``)."""

  def __init__(self, num_bases, basis_dim, subspace_dim, visual_dim, text_dim, similarity="dot",
               residual=False):
    super().__init__()
    self.basis = nn.Parameter(torch.randn(num_bases, basis_dim) / basis_dim)
    self.w_x = nn.Linear(visual_dim, subspace_dim)
    self.w_y = nn.Linear(text_dim, subspace_dim)
    self.w_b = nn.Linear(basis_dim, subspace_dim)
    self.similarity, self.residual = similarity, residual
    if similarity == "cosine":
      self.log_temperature = nn.Parameter(torch.tensor(math.log(10.0)))

  def _align(self, f):
    b = self.w_b(self.basis)
    if self.similarity == "cosine":
      scores = F.normalize(f, dim=-1) @ F.normalize(b, dim=-1).t() * self.log_temperature.exp()
    else:
      scores = f @ b.t()
      if self.similarity == "scaled_dot":
        scores = scores / math.sqrt(f.size(-1))
    response = torch.softmax(scores, dim=-1) @ b
    return f + response if self.residual else response

  def align_visual(self, x):
    return self._align(self.w_x(x))

  def align_textual(self, y):
    return self._align(self.w_y(y))


# ------------------------------------------------------------------------------------------ labeler
class GoogLeNetHead(nn.Module):
  def __init__(self, in_ch, views, hidden):
    super().__init__()
    self.branch1 = nn.Conv2d(in_ch, 64, 1)
    self.branch2 = nn.ModuleList([nn.Conv2d(in_ch, 96, 1), nn.Conv2d(96, 128, 3, padding=1)])
    self.branch3 = nn.ModuleList([nn.Conv2d(in_ch, 16, 1), nn.Conv2d(16, 32, 5, padding=2)])
    self.branch4 = nn.Conv2d(in_ch, 32, 1)
    self.bn = nn.BatchNorm2d(256)
    self.fc = nn.Linear(views * 256, hidden)

  def forward(self, grids):   # (B, V, C, h, w)
    b, v = grids.shape[:2]
    x = grids.flatten(0, 1)
    y = torch.cat([self.branch1(x), self.branch2[1](F.relu(self.branch2[0](x))),
                   self.branch3[1](F.relu(self.branch3[0](x))),
                   self.branch4(F.max_pool2d(x, 3, 1, 1))], dim=1)
    y = F.relu(self.bn(y)).mean(dim=(2, 3)).reshape(b, -1)
    return F.relu(self.fc(y))


class Labeler(nn.Module):
  def __init__(self, in_ch, views, num_labels, num_label_tokens, hidden, embed_dim, steps):
    super().__init__()
    self.classifier_head = GoogLeNetHead(in_ch, views, hidden)
    self.classifier = nn.Linear(hidden, num_labels)
    self.label_embed = nn.Embedding(num_label_tokens, embed_dim)
    self.gru = nn.GRUCell(embed_dim, hidden)
    self.label_out = nn.Linear(hidden, num_label_tokens)
    self.steps = steps

  def forward(self, grids, label_ids):
    h = self.classifier_head(grids)
    class_logits = self.classifier(h)
    logits = []
    for t in range(self.steps):
      h = self.gru(self.label_embed(label_ids[:, t]), h)
      logits.append(self.label_out(h))
    return class_logits, torch.stack(logits, 1)

  def greedy(self, grids):
    h = self.classifier_head(grids)
    tok = torch.zeros(grids.shape[0], dtype=torch.long)
    out = []
    for _ in range(self.steps):
      h = self.gru(self.label_embed(tok), h)
      tok = self.label_out(h).argmax(-1)
      out.append(tok)
    tokens = torch.stack(out, 1)
    return tokens * (torch.cumsum(tokens == 0, -1) == 0).long()


# ------------------------------------------------------------------------------------------ R2Gen Transformer
class LayerNorm(nn.Module):
  """R2Gen's LayerNorm: a_2 * (x - mean) / (std + eps) + b_2, std unbiased (named weight / bias here)."""

  def __init__(self, features, eps=1e-6):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(features))
    self.bias = nn.Parameter(torch.zeros(features))
    self.eps = eps

  def forward(self, x):
    return self.weight * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + self.eps) + self.bias


class MultiHeadedAttention(nn.Module):
  def __init__(self, h, d_model, dropout=0.1):
    super().__init__()
    self.h, self.d_k = h, d_model // h
    self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))
    self.dropout = nn.Dropout(dropout)
    self.attn = None

  def forward(self, query, key, value, mask=None):
    b = query.size(0)
    q, k, v = [lin(x).view(b, -1, self.h, self.d_k).transpose(1, 2)
               for lin, x in zip((self.q, self.k, self.v), (query, key, value))]
    scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
    if mask is not None:
      scores = scores.masked_fill(mask == 0, -1e9)
    self.attn = torch.softmax(scores, dim=-1)
    x = (self.dropout(self.attn) @ v).transpose(1, 2).contiguous().view(b, -1, self.h * self.d_k)
    return self.o(x)


class PositionwiseFeedForward(nn.Module):
  def __init__(self, d_model, d_ff, dropout=0.1):
    super().__init__()
    self.w_1, self.w_2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x):
    return self.w_2(self.dropout(F.relu(self.w_1(x))))


class EncoderLayer(nn.Module):
  def __init__(self, d_model, d_ff, h, dropout):
    super().__init__()
    self.self_attn = MultiHeadedAttention(h, d_model, dropout)
    self.feed_forward = PositionwiseFeedForward(d_model, d_ff, dropout)
    self.norms = nn.ModuleList([LayerNorm(d_model) for _ in range(2)])
    self.dropout = nn.Dropout(dropout)

  def forward(self, x, mask):
    y = self.norms[0](x)
    x = x + self.dropout(self.self_attn(y, y, y, mask))
    return x + self.dropout(self.feed_forward(self.norms[1](x)))


class DecoderLayer(nn.Module):
  def __init__(self, d_model, d_ff, h, dropout):
    super().__init__()
    self.self_attn = MultiHeadedAttention(h, d_model, dropout)
    self.src_attn = MultiHeadedAttention(h, d_model, dropout)
    self.feed_forward = PositionwiseFeedForward(d_model, d_ff, dropout)
    self.norms = nn.ModuleList([LayerNorm(d_model) for _ in range(3)])
    self.dropout = nn.Dropout(dropout)

  def forward(self, x, memory, src_mask, tgt_mask):
    y = self.norms[0](x)
    x = x + self.dropout(self.self_attn(y, y, y, tgt_mask))
    y = self.norms[1](x)
    x = x + self.dropout(self.src_attn(y, memory, memory, src_mask))
    return x + self.dropout(self.feed_forward(self.norms[2](x)))


class Encoder(nn.Module):
  def __init__(self, n, d_model, d_ff, h, dropout):
    super().__init__()
    self.layers = nn.ModuleList([EncoderLayer(d_model, d_ff, h, dropout) for _ in range(n)])
    self.norm = LayerNorm(d_model)

  def forward(self, x, mask):   # mask: (B, S) bool
    m = mask[:, None, None, :]
    for layer in self.layers:
      x = layer(x, m)
    return self.norm(x)


def sinusoid(length, d_model):
  pe = torch.zeros(length, d_model)
  pos = torch.arange(0, length).unsqueeze(1).float()
  div = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model))
  pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
  return pe


class Decoder(nn.Module):
  def __init__(self, n, d_model, d_ff, h, dropout):
    super().__init__()
    self.layers = nn.ModuleList([DecoderLayer(d_model, d_ff, h, dropout) for _ in range(n)])
    self.norm = LayerNorm(d_model)
    self.dropout = nn.Dropout(dropout)

  def forward(self, y, memory, memory_mask, target_mask):
    """y: (B, L, d) embedded targets; memory_mask (B, S) bool; target_mask (B, L) bool padding."""
    length = y.size(1)
    x = self.dropout(y + sinusoid(length, y.size(-1))[None])
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
    self_mask = causal[None, None] & target_mask[:, None, None, :]
    for layer in self.layers:
      x = layer(x, memory, memory_mask[:, None, None, :], self_mask)
    return self.norm(x)


# ------------------------------------------------------------------------------------------ JPG
class JPG(nn.Module):
  """The full model with the subspace, GoogLeNet head + GRU and label features in the encoder."""

  def __init__(self, vocab_size, num_labels, num_label_tokens, resnet_depth=101, num_bases=2048,
               d_model=512, d_ff=512, num_heads=8, num_layers=3, dropout=0.1, label_hidden=512,
               label_steps=5, views=2):
    super().__init__()
    feat = 512 if _STAGES[resnet_depth][0] == "basic" else 2048
    self.visual_extractor = ResNet(resnet_depth)
    self.subspace = SharedSubspace(num_bases, d_model, d_model, feat, d_model)
    self.word_embed = nn.Embedding(vocab_size, d_model)
    self.labeler = Labeler(d_model, views, num_labels, num_label_tokens, label_hidden, d_model,
                           label_steps)
    self.encoder = Encoder(num_layers, d_model, d_ff, num_heads, dropout)
    self.decoder = Decoder(num_layers, d_model, d_ff, num_heads, dropout)
    self.logit = nn.Linear(d_model, vocab_size)
    self.d_model = d_model

  def extract(self, images):
    """R2Gen's ``forward_iu_xray``: the extractor once per view (BatchNorm statistics per view)."""
    grids = torch.stack([self.visual_extractor(images[:, k]) for k in range(images.shape[1])], 1)
    return grids.permute(0, 1, 3, 4, 2)                                       # (B, V, h, w, C)

  def encode(self, images, label_ids=None):
    b, v = images.shape[:2]
    grids = self.extract(images)
    aligned = self.subspace.align_visual(grids)
    head_in = aligned.permute(0, 1, 4, 2, 3)                                  # (B, V, d, h, w)
    out = {}
    if label_ids is not None:
      out["label_class_logits"], out["label_token_logits"] = self.labeler(head_in, label_ids)
    tokens = self.labeler.greedy(head_in)
    c = self.subspace.align_textual(self.labeler.label_embed(tokens))
    patches = aligned.reshape(b, -1, aligned.shape[-1])
    x = torch.cat([patches, c], 1)
    mask = torch.cat([torch.ones(patches.shape[:2], dtype=torch.bool),
                      (torch.cumsum(tokens == 0, -1) == 0)], 1)
    out["label_tokens"] = tokens
    return self.encoder(x, mask), mask, out

  def decode(self, ids, memory, memory_mask):
    target_mask = torch.ones_like(ids, dtype=torch.bool)
    target_mask[:, 1:] = ids[:, 1:] > 0
    y = self.subspace.align_textual(self.word_embed(ids) * math.sqrt(self.d_model))
    return self.logit(self.decoder(y, memory, memory_mask, target_mask))

  def forward(self, images, report_ids, label_ids=None):
    """images: (B, V, 3, H, W)."""
    memory, mask, out = self.encode(images, label_ids)
    out["logits"] = self.decode(report_ids[:, :-1], memory, mask)
    return out


# ------------------------------------------------------------------------------------------ R2Gen's training
# Transcribed from github.com/cuhksz-nlp/R2Gen: modules/optimizers.py (build_optimizer,
# build_lr_scheduler), modules/trainer.py (_train_epoch: backward, clip_grad_value_, step; the scheduler
# steps once per epoch) and main.py's defaults (Adam, amsgrad, weight decay 5e-5, StepLR(50, 0.1)).
def r2gen_build_optimizer(visual_extractor_params, other_params, lr_ve=5e-5, lr_ed=1e-4, weight_decay=5e-5,
                          amsgrad=True):
  return torch.optim.Adam([{"params": list(visual_extractor_params), "lr": lr_ve},
                           {"params": list(other_params), "lr": lr_ed}],
                          weight_decay=weight_decay, amsgrad=amsgrad)


def r2gen_build_lr_scheduler(optimizer, step_size=50, gamma=0.1):
  return torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma)


def r2gen_train_step(params, grads, optimizer, grad_clip=0.1):
  """``loss.backward(); clip_grad_value_(model.parameters(), 0.1); optimizer.step()`` with given
  gradients (a parameter whose gradient is None is skipped by Adam, as in PyTorch)."""
  optimizer.zero_grad()
  for p, g in zip(params, grads):
    p.grad = None if g is None else g.clone()
  torch.nn.utils.clip_grad_value_([p for p in params if p.grad is not None], grad_clip)
  optimizer.step()


# ------------------------------------------------------------------------------------------ R2Gen's beam search
def r2gen_beam_search(init_logprobs, get_logprobs_state, init_state, beam_size, max_seq_length, eos_idx=0):
  """``CaptionModel.beam_search`` of R2Gen's ``modules/caption_model.py`` with group_size 1 (no diversity
  term), temperature 1, no decoding constraint and no length penalty (R2Gen's settings), transcribed.

  ``init_logprobs`` (N, V): the first step's log-probs (R2Gen's ``_sample_beam`` runs the first step before
  expanding to beams); ``get_logprobs_state(it (N*b,), state) -> (logits (N*b, V), state)``; ``state`` is a
  list of tensors with the N*b axis at dim 1 (R2Gen's convention). Returns the done beams per example,
  sorted by score: lists of dicts ``{'seq', 'p'}``.
  """
  batch_size = init_logprobs.shape[0]
  beam_seq = torch.LongTensor(batch_size, beam_size, 0)
  beam_logprobs_sum = torch.zeros(batch_size, beam_size)
  done_beams = [[] for _ in range(batch_size)]
  state = [s.clone() for s in init_state]
  logprobs = init_logprobs.clone()

  def beam_step(logprobs, t, beam_seq, beam_logprobs_sum, state):
    vocab_size = logprobs.shape[-1]
    logprobs = logprobs.reshape(batch_size, -1, vocab_size)
    if t == 0:
      assert logprobs.shape[1] == 1
      beam_logprobs_sum = beam_logprobs_sum[:, :1]
    candidate_logprobs = beam_logprobs_sum.unsqueeze(-1) + logprobs
    ys, ix = torch.sort(candidate_logprobs.reshape(candidate_logprobs.shape[0], -1), -1, True)
    ys, ix = ys[:, :beam_size], ix[:, :beam_size]
    beam_ix = ix // vocab_size
    selected_ix = ix % vocab_size
    state_ix = (beam_ix + torch.arange(batch_size).type_as(beam_ix).unsqueeze(-1) * logprobs.shape[1]).reshape(-1)
    if t > 0:
      beam_seq = beam_seq.gather(1, beam_ix.unsqueeze(-1).expand_as(beam_seq))
    beam_seq = torch.cat([beam_seq, selected_ix.unsqueeze(-1)], -1)
    beam_logprobs_sum = beam_logprobs_sum.gather(1, beam_ix) + logprobs.reshape(batch_size, -1).gather(1, ix)
    state = [s[:, state_ix] for s in state]
    return beam_seq, beam_logprobs_sum, state

  for t in range(max_seq_length):
    beam_seq, beam_logprobs_sum, state = beam_step(logprobs, t, beam_seq, beam_logprobs_sum, state)
    for b in range(batch_size):
      is_end = beam_seq[b, :, t] == eos_idx
      if t == max_seq_length - 1:
        is_end.fill_(1)
      for vix in range(beam_size):
        if is_end[vix]:
          done_beams[b].append({"seq": beam_seq[b, vix].clone(), "p": beam_logprobs_sum[b, vix].item()})
      beam_logprobs_sum[b, is_end] -= 1000
    it = beam_seq[:, :, t].reshape(-1)
    logprobs, state = get_logprobs_state(it, state)
    logprobs = F.log_softmax(logprobs, dim=-1)
  return [sorted(d, key=lambda x: -x["p"])[:beam_size] for d in done_beams]
