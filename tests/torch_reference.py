"""Hand-written PyTorch references of every JPG component, for parity tests and benchmarks.

torchvision cannot be installed beside the CPU torch wheel here, so ResNet is written out with
torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample.0``) to exercise the
converter on the real key layout. The Transformer is R2Gen's (``MultiHeadedAttention`` with four linears,
``SublayerConnection`` with pre-norm, R2Gen's LayerNorm with the unbiased std). Module names mirror
jpg-jax's Flax modules so that ``jpg_jax.tools.convert_torch`` maps one to the other.
"""

from __future__ import annotations

import math
import re

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


# ------------------------------------------------------------------------------------------ R2Gen and CMN
# Transcribed from github.com/cuhksz-nlp/R2Gen modules/encoder_decoder.py (EncoderDecoder, RelationalMemory,
# ConditionalLayerNorm, ...), modules/visual_extractor.py and models/r2gen.py, and from
# github.com/zhjohnchan/R2GenCMN modules/base_cmn.py (BaseCMN, MultiThreadMemory,
# memory_querying_responding), with their module and parameter names, so that their state_dicts have the
# originals' keys (``encoder_decoder.model.decoder.layers.0.sublayer.0.norm.mlp_gamma.0.weight``, ...).
# Eval-mode behaviour is the originals'; the AttModel plumbing (pack_wrapper, clip_att) is the identity on
# full masks and is left out.
def _clones(module, n):
  import copy
  return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


def _subsequent_mask(size):
  return torch.triu(torch.ones(1, size, size), diagonal=1) == 0


def _attention(query, key, value, mask=None, dropout=None, fill=-1e9):
  d_k = query.size(-1)
  scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
  if mask is not None:
    scores = scores.masked_fill(mask == 0, fill)
  p_attn = F.softmax(scores, dim=-1)
  if dropout is not None:
    p_attn = dropout(p_attn)
  return torch.matmul(p_attn, value), p_attn


def _memory_querying_responding(query, key, value, mask=None, dropout=None, topk=32):
  d_k = query.size(-1)
  scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
  if mask is not None:
    scores = scores.masked_fill(mask == 0, float("-inf"))
  selected_scores, idx = scores.topk(topk)
  dummy_value = value.unsqueeze(2).expand(idx.size(0), idx.size(1), idx.size(2), value.size(-2), value.size(-1))
  dummy_idx = idx.unsqueeze(-1).expand(idx.size(0), idx.size(1), idx.size(2), idx.size(3), value.size(-1))
  selected_value = torch.gather(dummy_value, 3, dummy_idx)
  p_attn = F.softmax(selected_scores, dim=-1)
  if dropout is not None:
    p_attn = dropout(p_attn)
  return torch.matmul(p_attn.unsqueeze(3), selected_value).squeeze(3), p_attn


class R2GenMultiHeadedAttention(nn.Module):
  def __init__(self, h, d_model, dropout=0.1, fill=-1e9):
    super().__init__()
    self.d_k, self.h, self.fill = d_model // h, h, fill
    self.linears = _clones(nn.Linear(d_model, d_model), 4)
    self.dropout = nn.Dropout(p=dropout)

  def forward(self, query, key, value, mask=None):
    if mask is not None:
      mask = mask.unsqueeze(1)
    nbatches = query.size(0)
    query, key, value = [lin(x).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)
                         for lin, x in zip(self.linears, (query, key, value))]
    x, self.attn = _attention(query, key, value, mask=mask, dropout=self.dropout, fill=self.fill)
    x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)
    return self.linears[-1](x)


class MultiThreadMemory(nn.Module):
  """CMN's memory attention (its ``layer_past`` path, unused by its beam search, left out)."""

  def __init__(self, h, d_model, dropout=0.1, topk=32):
    super().__init__()
    self.d_k, self.h, self.topk = d_model // h, h, topk
    self.linears = _clones(nn.Linear(d_model, d_model), 4)
    self.dropout = nn.Dropout(p=dropout)

  def forward(self, query, key, value, mask=None):
    nbatches = query.size(0)
    query, key, value = [lin(x) for lin, x in zip(self.linears, (query, key, value))]
    query, key, value = [x.view(nbatches, -1, self.h, self.d_k).transpose(1, 2) for x in (query, key, value)]
    x, self.attn = _memory_querying_responding(query, key, value, mask=mask, dropout=self.dropout, topk=self.topk)
    x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)
    return self.linears[-1](x)


class R2GenLayerNorm(nn.Module):
  """R2Gen's LayerNorm (``gamma``/``beta``); CMN's is the same with ``a_2``/``b_2``."""

  def __init__(self, features, eps=1e-6, names=("gamma", "beta")):
    super().__init__()
    self.names = names
    setattr(self, names[0], nn.Parameter(torch.ones(features)))
    setattr(self, names[1], nn.Parameter(torch.zeros(features)))
    self.eps = eps

  def forward(self, x):
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True)
    return getattr(self, self.names[0]) * (x - mean) / (std + self.eps) + getattr(self, self.names[1])


class ConditionalLayerNorm(nn.Module):
  def __init__(self, d_model, rm_num_slots, rm_d_model, eps=1e-6):
    super().__init__()
    self.gamma = nn.Parameter(torch.ones(d_model))
    self.beta = nn.Parameter(torch.zeros(d_model))
    self.rm_d_model, self.rm_num_slots, self.eps = rm_d_model, rm_num_slots, eps
    self.mlp_gamma = nn.Sequential(nn.Linear(rm_num_slots * rm_d_model, d_model), nn.ReLU(inplace=True),
                                   nn.Linear(rm_d_model, rm_d_model))
    self.mlp_beta = nn.Sequential(nn.Linear(rm_num_slots * rm_d_model, d_model), nn.ReLU(inplace=True),
                                  nn.Linear(d_model, d_model))
    for m in self.modules():
      if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.constant_(m.bias, 0.1)

  def forward(self, x, memory):
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True)
    delta_gamma = self.mlp_gamma(memory)
    delta_beta = self.mlp_beta(memory)
    gamma_hat = torch.stack([torch.stack([self.gamma.clone()] * x.size(0), dim=0)] * x.size(1), dim=1)
    beta_hat = torch.stack([torch.stack([self.beta.clone()] * x.size(0), dim=0)] * x.size(1), dim=1)
    gamma_hat = gamma_hat + delta_gamma
    beta_hat = beta_hat + delta_beta
    return gamma_hat * (x - mean) / (std + self.eps) + beta_hat


class SublayerConnection(nn.Module):
  def __init__(self, d_model, dropout, norm_names=("gamma", "beta")):
    super().__init__()
    self.norm = R2GenLayerNorm(d_model, names=norm_names)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x, sublayer):
    return x + self.dropout(sublayer(self.norm(x)))


class ConditionalSublayerConnection(nn.Module):
  def __init__(self, d_model, dropout, rm_num_slots, rm_d_model):
    super().__init__()
    self.norm = ConditionalLayerNorm(d_model, rm_num_slots, rm_d_model)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x, sublayer, memory):
    return x + self.dropout(sublayer(self.norm(x, memory)))


class R2GenEncoderLayer(nn.Module):
  def __init__(self, d_model, self_attn, feed_forward, dropout, norm_names=("gamma", "beta")):
    super().__init__()
    self.self_attn, self.feed_forward, self.d_model = self_attn, feed_forward, d_model
    self.sublayer = _clones(SublayerConnection(d_model, dropout, norm_names), 2)

  def forward(self, x, mask):
    x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, mask))
    return self.sublayer[1](x, self.feed_forward)


class R2GenEncoder(nn.Module):
  def __init__(self, layer, n, norm_names=("gamma", "beta")):
    super().__init__()
    self.layers = _clones(layer, n)
    self.norm = R2GenLayerNorm(layer.d_model, names=norm_names)

  def forward(self, x, mask):
    for layer in self.layers:
      x = layer(x, mask)
    return self.norm(x)


class R2GenDecoderLayer(nn.Module):
  """R2Gen's DecoderLayer (MCLN sublayers) or, with ``rm_num_slots=None``, CMN's (plain sublayers)."""

  def __init__(self, d_model, self_attn, src_attn, feed_forward, dropout, rm_num_slots=None, rm_d_model=None,
               norm_names=("gamma", "beta")):
    super().__init__()
    self.d_model, self.self_attn, self.src_attn, self.feed_forward = d_model, self_attn, src_attn, feed_forward
    self.conditional = rm_num_slots is not None
    sub = (ConditionalSublayerConnection(d_model, dropout, rm_num_slots, rm_d_model) if self.conditional
           else SublayerConnection(d_model, dropout, norm_names))
    self.sublayer = _clones(sub, 3)

  def forward(self, x, hidden_states, src_mask, tgt_mask, memory=None):
    m = hidden_states
    extra = (memory,) if self.conditional else ()
    x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, tgt_mask), *extra)
    x = self.sublayer[1](x, lambda x: self.src_attn(x, m, m, src_mask), *extra)
    return self.sublayer[2](x, self.feed_forward, *extra)


class R2GenDecoder(nn.Module):
  def __init__(self, layer, n, norm_names=("gamma", "beta")):
    super().__init__()
    self.layers = _clones(layer, n)
    self.norm = R2GenLayerNorm(layer.d_model, names=norm_names)

  def forward(self, x, hidden_states, src_mask, tgt_mask, memory=None):
    for layer in self.layers:
      x = layer(x, hidden_states, src_mask, tgt_mask, memory)
    return self.norm(x)


class Embeddings(nn.Module):
  def __init__(self, d_model, vocab):
    super().__init__()
    self.lut = nn.Embedding(vocab, d_model)
    self.d_model = d_model

  def forward(self, x):
    return self.lut(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
  def __init__(self, d_model, dropout, max_len=5000):
    super().__init__()
    self.dropout = nn.Dropout(p=dropout)
    self.register_buffer("pe", sinusoid(max_len, d_model).unsqueeze(0))

  def forward(self, x):
    return self.dropout(x + self.pe[:, :x.size(1)])


class RelationalMemory(nn.Module):
  def __init__(self, num_slots, d_model, num_heads=1):
    super().__init__()
    self.num_slots, self.num_heads, self.d_model = num_slots, num_heads, d_model
    self.attn = R2GenMultiHeadedAttention(num_heads, d_model)
    self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model), nn.ReLU())
    self.W = nn.Linear(d_model, d_model * 2)
    self.U = nn.Linear(d_model, d_model * 2)

  def init_memory(self, batch_size):
    memory = torch.stack([torch.eye(self.num_slots)] * batch_size)
    if self.d_model > self.num_slots:
      memory = torch.cat([memory, torch.zeros((batch_size, self.num_slots, self.d_model - self.num_slots))], -1)
    elif self.d_model < self.num_slots:
      memory = memory[:, :, :self.d_model]
    return memory

  def forward_step(self, input, memory):
    memory = memory.reshape(-1, self.num_slots, self.d_model)
    q = memory
    k = torch.cat([memory, input.unsqueeze(1)], 1)
    v = torch.cat([memory, input.unsqueeze(1)], 1)
    next_memory = memory + self.attn(q, k, v)
    next_memory = next_memory + self.mlp(next_memory)
    gates = self.W(input.unsqueeze(1)) + self.U(torch.tanh(memory))
    input_gate, forget_gate = torch.split(gates, split_size_or_sections=self.d_model, dim=2)
    next_memory = torch.sigmoid(input_gate) * torch.tanh(next_memory) + torch.sigmoid(forget_gate) * memory
    return next_memory.reshape(-1, self.num_slots * self.d_model)

  def forward(self, inputs, memory):
    outputs = []
    for i in range(inputs.shape[1]):
      memory = self.forward_step(inputs[:, i], memory)
      outputs.append(memory)
    return torch.stack(outputs, dim=1)


class R2GenTransformer(nn.Module):
  """R2Gen's ``Transformer`` (``rm`` given) or CMN's (``cmn`` given: its shared memory module)."""

  def __init__(self, encoder, decoder, src_embed, tgt_embed, rm=None, cmn=None):
    super().__init__()
    self.encoder, self.decoder, self.src_embed, self.tgt_embed = encoder, decoder, src_embed, tgt_embed
    if rm is not None:
      self.rm = rm
    if cmn is not None:
      self.cmn = cmn

  def encode(self, src, src_mask):
    return self.encoder(self.src_embed(src), src_mask)

  def decode(self, hidden_states, src_mask, tgt, tgt_mask, memory_matrix=None):
    if hasattr(self, "rm"):                                           # R2Gen
      memory = self.rm.init_memory(hidden_states.size(0)).to(hidden_states)
      memory = self.rm(self.tgt_embed(tgt), memory)
      return self.decoder(self.tgt_embed(tgt), hidden_states, src_mask, tgt_mask, memory)
    embeddings = self.tgt_embed(tgt)                                  # CMN
    dummy = memory_matrix.unsqueeze(0).expand(embeddings.size(0), memory_matrix.size(0), memory_matrix.size(1))
    embeddings = embeddings + self.cmn(embeddings, dummy, dummy)
    return self.decoder(embeddings, hidden_states, src_mask, tgt_mask)


class R2GenEncoderDecoder(nn.Module):
  """R2Gen's ``EncoderDecoder`` (``kind='r2gen'``) or R2GenCMN's ``BaseCMN`` (``kind='cmn'``), each built as
  its ``make_model`` builds it (xavier-uniform on every matrix of ``model``)."""

  def __init__(self, kind, vocab_size, d_vf, d_model=512, d_ff=512, num_heads=8, num_layers=3, dropout=0.1,
               drop_prob_lm=0.5, rm_num_slots=3, rm_num_heads=8, topk=32, cmm_size=2048):
    super().__init__()
    import copy
    c = copy.deepcopy
    self.kind = kind
    self.att_embed = nn.Sequential(nn.Linear(d_vf, d_model), nn.ReLU(), nn.Dropout(drop_prob_lm))
    names = ("gamma", "beta") if kind == "r2gen" else ("a_2", "b_2")
    fill = -1e9 if kind == "r2gen" else float("-inf")
    attn = R2GenMultiHeadedAttention(num_heads, d_model, fill=fill)
    ff = PositionwiseFeedForward(d_model, d_ff, dropout)
    position = PositionalEncoding(d_model, dropout)
    encoder = R2GenEncoder(R2GenEncoderLayer(d_model, c(attn), c(ff), dropout, names), num_layers, names)
    tgt_embed = nn.Sequential(Embeddings(d_model, vocab_size + 1), c(position))
    if kind == "r2gen":
      rm = RelationalMemory(num_slots=rm_num_slots, d_model=d_model, num_heads=rm_num_heads)
      decoder = R2GenDecoder(R2GenDecoderLayer(d_model, c(attn), c(attn), c(ff), dropout, rm_num_slots, d_model),
                             num_layers)
      self.model = R2GenTransformer(encoder, decoder, lambda x: x, tgt_embed, rm=rm)
    else:
      self.cmn = MultiThreadMemory(num_heads, d_model, topk=topk)
      decoder = R2GenDecoder(R2GenDecoderLayer(d_model, c(attn), c(attn), c(ff), dropout, norm_names=names),
                             num_layers, names)
      self.model = R2GenTransformer(encoder, decoder, nn.Sequential(c(position)), tgt_embed, cmn=self.cmn)
    for p in self.model.parameters():
      if p.dim() > 1:
        nn.init.xavier_uniform_(p)
    self.logit = nn.Linear(d_model, vocab_size + 1)
    if kind == "cmn":
      self.memory_matrix = nn.Parameter(torch.FloatTensor(cmm_size, d_model))
      nn.init.normal_(self.memory_matrix, 0, 1 / d_model)

  def prepare(self, att_feats):
    """``_prepare_feature_forward`` without a sequence: embedded (and for CMN, memory-answered) patches."""
    att_feats = self.att_embed(att_feats)
    if self.kind == "cmn":
      dummy = self.memory_matrix.unsqueeze(0).expand(att_feats.size(0), *self.memory_matrix.shape)
      att_feats = att_feats + self.cmn(att_feats, dummy, dummy)
    return att_feats, att_feats.new_ones(att_feats.shape[:2], dtype=torch.long).unsqueeze(-2)

  def forward(self, att_feats, seq):
    """``_forward``: log-probs (B, L-1, V+1) of ``seq[:, 1:]``, teacher-forced."""
    att_feats, att_masks = self.prepare(att_feats)
    seq = seq[:, :-1]
    seq_mask = (seq.data > 0)
    seq_mask[:, 0] += True
    seq_mask = seq_mask.unsqueeze(-2) & _subsequent_mask(seq.size(-1)).to(seq_mask)
    memory_matrix = self.memory_matrix if self.kind == "cmn" else None
    out = self.model.decode(self.model.encode(att_feats, att_masks), att_masks, seq, seq_mask, memory_matrix)
    return F.log_softmax(self.logit(out), dim=-1)

  def core_logprobs(self, ys, hidden_states, att_masks):
    """``core`` + ``logit``: the log-probs after the prefix ``ys``, recomputed whole (R2Gen's ``core`` does
    so; CMN's keeps a key/value ``past``, the same in eval mode)."""
    memory_matrix = self.memory_matrix if self.kind == "cmn" else None
    out = self.model.decode(hidden_states, att_masks, ys, _subsequent_mask(ys.size(1)), memory_matrix)
    return F.log_softmax(self.logit(out[:, -1]), dim=-1)


class R2GenVisualExtractor(nn.Module):
  """R2Gen's ``VisualExtractor``: torchvision's ResNet without avgpool and fc as ``model`` (a Sequential:
  0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4); patch features (B, h*w, C)."""

  def __init__(self, depth):
    super().__init__()
    net = ResNet(depth)
    self.model = nn.Sequential(net.conv1, net.bn1, nn.ReLU(), net.maxpool, net.layer1, net.layer2, net.layer3,
                               net.layer4)

  def forward(self, images):
    patch_feats = self.model(images)
    batch_size, feat_size = patch_feats.shape[:2]
    return patch_feats.reshape(batch_size, feat_size, -1).permute(0, 2, 1)


class R2GenModel(nn.Module):
  """R2Gen's ``R2GenModel`` / R2GenCMN's ``BaseCMNModel`` on IU X-Ray (``forward_iu_xray``)."""

  def __init__(self, kind, vocab_size, depth=101, **kw):
    super().__init__()
    self.visual_extractor = R2GenVisualExtractor(depth)
    d_vf = 512 if _STAGES[depth][0] == "basic" else 2048
    self.encoder_decoder = R2GenEncoderDecoder(kind, vocab_size, d_vf, **kw)

  def att_feats(self, images):
    return torch.cat([self.visual_extractor(images[:, 0]), self.visual_extractor(images[:, 1])], dim=1)

  def forward(self, images, seq):
    return self.encoder_decoder(self.att_feats(images), seq)


# ------------------------------------------------------------------------------------------ R2Gen's report cleaning
# modules/tokenizers.py of github.com/cuhksz-nlp/R2Gen, Tokenizer.clean_report_iu_xray and
# Tokenizer.clean_report_mimic_cxr, as written there (only ``self`` dropped and the regex written as a raw
# string: the same characters, without Python's invalid-escape warning).
def r2gen_clean_report_iu_xray(report):
    report_cleaner = lambda t: t.replace('..', '.').replace('..', '.').replace('..', '.').replace('1. ', '') \
        .replace('. 2. ', '. ').replace('. 3. ', '. ').replace('. 4. ', '. ').replace('. 5. ', '. ') \
        .replace(' 2. ', '. ').replace(' 3. ', '. ').replace(' 4. ', '. ').replace(' 5. ', '. ') \
        .strip().lower().split('. ')
    sent_cleaner = lambda t: re.sub(r'[.,?;*!%^&_+():-\[\]{}]', '', t.replace('"', '').replace('/', '').
                                    replace('\\', '').replace("'", '').strip().lower())
    tokens = [sent_cleaner(sent) for sent in report_cleaner(report) if sent_cleaner(sent) != []]
    report = ' . '.join(tokens) + ' .'
    return report


def r2gen_clean_report_mimic_cxr(report):
    report_cleaner = lambda t: t.replace('\n', ' ').replace('__', '_').replace('__', '_').replace('__', '_') \
        .replace('__', '_').replace('__', '_').replace('__', '_').replace('__', '_').replace('  ', ' ') \
        .replace('  ', ' ').replace('  ', ' ').replace('  ', ' ').replace('  ', ' ').replace('  ', ' ') \
        .replace('..', '.').replace('..', '.').replace('..', '.').replace('..', '.').replace('..', '.') \
        .replace('..', '.').replace('..', '.').replace('..', '.').replace('1. ', '').replace('. 2. ', '. ') \
        .replace('. 3. ', '. ').replace('. 4. ', '. ').replace('. 5. ', '. ').replace(' 2. ', '. ') \
        .replace(' 3. ', '. ').replace(' 4. ', '. ').replace(' 5. ', '. ') \
        .strip().lower().split('. ')
    sent_cleaner = lambda t: re.sub(r'[.,?;*!%^&_+():-\[\]{}]', '', t.replace('"', '').replace('/', '')
                                    .replace('\\', '').replace("'", '').strip().lower())
    tokens = [sent_cleaner(sent) for sent in report_cleaner(report) if sent_cleaner(sent) != []]
    report = ' . '.join(tokens) + ' .'
    return report
