"""The whole JPG model (Eqs. 1-2, 12-13) and its ablations, as switches of one module.

V is the number of views of an example (2 for IU X-Ray: frontal and lateral; 1 for MIMIC-CXR as R2Gen
reads it); nothing in the model fixes it.

  images (B, V, H, W, 3) --ResNet--> grids (B, V, h, w, d_x)                         Sec. 3.2, Eq. 3
  grids --shared subspace (visual path)--> r_x (B, V, h, w, d_s)                    Eqs. 4, 6-10
  r_x --classification head + GRU--> label logits, label tokens c                   Sec. 3.4, Eq. 11
  [r_x patches ; subspace(textual path)(embed(c))] --encoder--> z                   Eq. 12
  subspace(textual path)(embed(report tokens)) + positions --decoder(z)--> logits    Eqs. 2, 5, 13

Switches (``configs/jpg.py`` names the ablations of Table 2):

* ``use_subspace``: False replaces the subspace by R2Gen's ``att_embed`` (Linear d_x -> d_model, ReLU,
  Dropout(``visual_dropout`` = R2Gen's ``drop_prob_lm`` = 0.5)) on the visual side and plain scaled
  embeddings on the textual side (JPG-projection, BASE); the head then reads the raw extractor grids ("simply using the raw visual extractor and word embedding
  outputs to both predict disease labels and generate reports", Sec. 5.2).
* ``similarity``, ``top_k``, ``basis_init_std``, ``subspace_residual``: the subspace's readings
  (``models/subspace.py``); the paper config and this module both take Eq. 7's dot product, CMN's init
  and Eq. 10's r = S B~ (``:tuned``: cosine, N(0, 1), residual).
* ``use_labeler``: False drops the head and the GRU (BASE, the "vanilla Transformer").
* ``labels_in_encoder``: False keeps the labeler as a parallel task but feeds no label features to the
  encoder (JPG-auxiliary).
* ``relational_memory`` (R2Gen), ``cross_modal_memory`` and ``visual_positions`` (CMN): Table 2's
  strongest baselines on BASE (``configs/jpg.py:r2gen``, ``:cmn``; ``jpg_jax/models/memory.py``). R2Gen's
  relational memory (``rm_num_slots`` x d_model, ``rm_num_heads`` heads) conditions every decoder
  LayerNorm; CMN's memory (``cmm_size`` x d_model, ``cmm_top_k`` rows a head) answers the visual features
  after ``att_embed`` and the text features after their positions, each response added to its query, and
  CMN's encoder adds positions to its inputs. They combine with any other switch.
* ``cached_features``: the model's image input is the extractor's output, patch grids (B, V, h, w, d_x)
  computed once by a frozen extractor (``extract``), and the ResNet is skipped. Sec. 3.2 lets the
  extractor be any pretrained CNN; with it frozen, its features can be cached (eval-time views: no
  augmentation) and only the rest is trained on them. Training builds this model for the stages whose
  extractor is frozen (``steps.reads_features``, ``jpg_jax/feature_cache.py``); its parameters are the
  whole model's (the extractor's are carried, unused), so its checkpoints also take images.
* ``extractor_batch``: ``'per_view'`` (default) runs the extractor once per view, as R2Gen's
  ``forward_iu_xray`` does, so that BatchNorm normalises each view over the batch (frontal and lateral
  images differ in their statistics) and the running statistics are updated once per view, in that order;
  ``'joint'`` runs the views as one batch of VB images (one set of statistics, one update).
* ``train_label_source``: which labels the encoder reads in training: ``'predicted'`` (the GRU's greedy
  output, as at test time; Sec. 5.2 speaks of "predicted disease tags") or ``'ground_truth'`` (teacher
  forcing). At evaluation the encoder always reads predictions.

The label features c are label-token embeddings (the GRU's embedding table, d_model wide) passed through
the textual path of the same subspace (GUIDE sec. 4: labels enter as textual features), masked after the
first EOS. Text embeddings are scaled by sqrt(d_model) as R2Gen's; positions are added after alignment so
that the softmax over basis vectors does not wash them out.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jpg_jax.models import labeler as labeler_lib
from jpg_jax.models import memory as memory_lib
from jpg_jax.models import resnet
from jpg_jax.models import subspace as subspace_lib
from jpg_jax.models import transformer

xavier = nn.initializers.xavier_uniform()
EXTRACTOR_BATCHES = ("per_view", "joint")
TRAIN_LABEL_SOURCES = ("predicted", "ground_truth")


class JPG(nn.Module):
  vocab_size: int                        # report logits: len(vocabulary) + 1
  num_labels: int = 17
  num_label_tokens: int = 32
  # visual extractor
  resnet_depth: int = 101
  resnet_width: int = 64                 # torchvision's; ImageNet weights exist for 64 only
  frozen_extractor: bool = False
  extractor_batch: str = "per_view"      # 'per_view' (R2Gen) | 'joint'
  cached_features: bool = False          # inputs are precomputed extractor grids (see above)
  # shared subspace
  use_subspace: bool = True
  num_bases: int = 2048
  similarity: str = "dot"
  top_k: int = 0
  basis_init_std: float = 0.0
  subspace_residual: bool = False
  # Table 2's memory baselines (see above)
  relational_memory: bool = False        # R2Gen
  rm_num_slots: int = 3
  rm_num_heads: int = 8
  cross_modal_memory: bool = False       # CMN
  cmm_size: int = 2048
  cmm_top_k: int = 32
  visual_positions: bool = False         # CMN's src_embed: positions on the encoder's inputs
  # labels
  use_labeler: bool = True
  labels_in_encoder: bool = True
  train_label_source: str = "predicted"
  head: str = "googlenet"
  label_hidden: int = 512
  label_steps: int = 5
  label_dropout: float = 0.2
  # transformer
  d_model: int = 512
  d_ff: int = 512
  num_heads: int = 8
  num_layers: int = 3
  dropout: float = 0.1
  visual_dropout: float = 0.5            # R2Gen's att_embed dropout (drop_prob_lm)
  layer_norm: str = "r2gen"
  attention_layer: int = 0
  max_length: int = 512
  dtype: Any = jnp.float32
  # A jax.checkpoint_policies name ('nothing_saveable', ...): ResNet blocks and Transformer layers are
  # rematerialised in training (resnet.ResNet, transformer.remat_layer); '' keeps every activation.
  remat: str = ""

  def setup(self):
    self.visual_extractor = resnet.ResNet(self.resnet_depth, self.frozen_extractor, self.dtype,
                                          width=self.resnet_width, remat=self.remat)
    if self.use_subspace:
      self.subspace = subspace_lib.SharedSubspace(self.num_bases, self.d_model, self.d_model,
                                                  self.similarity, self.top_k, self.basis_init_std,
                                                  self.subspace_residual, self.dtype)
    else:
      self.att_embed = nn.Dense(self.d_model, dtype=self.dtype, kernel_init=xavier)
      self.att_dropout = nn.Dropout(self.visual_dropout)
    self.word_embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=xavier)
    if self.use_labeler:
      self.labeler = labeler_lib.Labeler(self.num_labels, self.num_label_tokens, self.head,
                                         self.label_hidden, self.d_model, self.label_steps,
                                         self.label_dropout, self.dtype)
    self.cmn = (memory_lib.CrossModalMemory(self.cmm_size, self.d_model, self.num_heads, self.cmm_top_k,
                                            self.dropout, self.dtype) if self.cross_modal_memory else None)
    kw = dict(num_layers=self.num_layers, d_model=self.d_model, d_ff=self.d_ff,
              num_heads=self.num_heads, dropout=self.dropout, layer_norm=self.layer_norm,
              max_length=self.max_length, dtype=self.dtype, remat=self.remat)
    self.encoder = transformer.Encoder(positions=self.visual_positions, **kw)
    self.decoder = transformer.Decoder(attention_layer=self.attention_layer,
                                       relational_memory=self.relational_memory, rm_num_slots=self.rm_num_slots,
                                       rm_num_heads=self.rm_num_heads, text_memory=self.cmn, **kw)
    self.logit = nn.Dense(self.vocab_size, dtype=self.dtype, kernel_init=xavier)

  # ------------------------------------------------------------------------------- visual side
  def extract(self, images, train: bool):
    """(B, V, H, W, 3) -> patch grids (B, V, h, w, d_x); the views share the extractor. With
    ``cached_features`` the input already is those grids."""
    if self.cached_features:
      return images.astype(self.dtype)
    b, v = images.shape[:2]
    if self.extractor_batch == "per_view":
      return jnp.stack([self.visual_extractor(images[:, k], train) for k in range(v)], axis=1)
    if self.extractor_batch != "joint":
      raise ValueError(f"Unknown extractor_batch {self.extractor_batch!r}; choose from {EXTRACTOR_BATCHES}.")
    grids = self.visual_extractor(images.reshape((b * v,) + images.shape[2:]), train)
    return grids.reshape((b, v) + grids.shape[1:])

  def align_visual(self, grids, train: bool):
    """r_x (Eq. 10) or, without the subspace, R2Gen's att_embed."""
    if self.use_subspace:
      aligned = self.subspace.align_visual(grids)
    else:
      aligned = self.att_dropout(nn.relu(self.att_embed(grids)), deterministic=not train)
    self.sow("intermediates", "grids", grids)       # kept only where asked (jpg_jax/diagnostics.py)
    self.sow("intermediates", "aligned", aligned)
    return aligned

  def label_input(self, grids, aligned):
    return aligned if self.use_subspace else grids

  # ------------------------------------------------------------------------------- textual side
  def align_textual(self, embeddings):
    return self.subspace.align_textual(embeddings) if self.use_subspace else embeddings

  def embed_report(self, ids):
    """Aligned textual features r_y of report tokens (Eqs. 5, 7-10)."""
    y = self.word_embed(ids).astype(self.dtype) * jnp.sqrt(jnp.asarray(self.d_model, self.dtype))
    return self.align_textual(y)

  def label_features(self, tokens):
    """c: aligned embeddings of label tokens (B, steps, d) and their mask (B, steps)."""
    c = self.align_textual(self.labeler.label_embed(tokens).astype(self.dtype))
    return c, labeler_lib.label_token_mask(tokens).astype(bool)

  # ------------------------------------------------------------------------------- labels
  def labels(self, images, label_ids, train: bool):
    """Stage 1's forward: class logits and teacher-forced token logits, no Transformer."""
    grids = self.extract(images, train)
    return self.labeler(self.label_input(grids, self.align_visual(grids, train)), label_ids, train)

  def batch_norm_layers(self, images):
    """Every BatchNorm layer of the model (the extractor's and the head's) on ``images`` in training mode,
    nothing else: what re-estimating their statistics runs (``jpg_jax/precise_bn.py``)."""
    grids = self.extract(images, True)
    if self.use_labeler:
      self.labeler.embed(self.label_input(grids, self.align_visual(grids, True)), True)

  # ------------------------------------------------------------------------------- encoder-decoder
  def encode(self, images, train: bool, label_ids=None):
    """Everything up to the encoder memory. Returns (memory, memory_mask, outputs dict)."""
    grids = self.extract(images, train)
    aligned = self.align_visual(grids, train)
    b = aligned.shape[0]
    patches = aligned.reshape(b, -1, aligned.shape[-1])
    if self.cmn is not None:
      patches = patches + self.cmn(patches, train)
    mask = jnp.ones(patches.shape[:2], bool)
    out = {}
    if self.use_labeler:
      # The head runs once (its BatchNorm statistics update once a step); the teacher-forced GRU (for the
      # label loss) and the greedy GRU (labels for the encoder) both start from its h_0.
      h0, out["label_class_logits"] = self.labeler.embed(self.label_input(grids, aligned), train)
      if label_ids is not None:
        out["label_token_logits"] = self.labeler.teacher_forced(h0, label_ids)
      teacher = train and self.train_label_source == "ground_truth"
      if train and self.train_label_source not in TRAIN_LABEL_SOURCES:
        raise ValueError(f"Unknown train_label_source {self.train_label_source!r}; choose from "
                         f"{TRAIN_LABEL_SOURCES}.")
      if label_ids is None or (self.labels_in_encoder and not teacher):
        tokens = jax.lax.stop_gradient(self.labeler.greedy_tokens(h0))
        out["label_tokens"] = tokens
      if self.labels_in_encoder:
        if teacher:
          tokens = label_ids[:, 1:] * labeler_lib.label_token_mask(label_ids[:, 1:])
        c, c_mask = self.label_features(tokens)
        patches = jnp.concatenate([patches, c], axis=1)
        mask = jnp.concatenate([mask, c_mask], axis=1)
    return self.encoder(patches, mask, train), mask, out

  def decode(self, ids, memory, memory_mask, train: bool, decode: bool = False):
    """Report logits for decoder inputs ``ids`` (B, L)."""
    target_mask = jnp.ones(ids.shape, bool).at[:, 1:].set(ids[:, 1:] > 0)
    h = self.decoder(self.embed_report(ids), memory, memory_mask, target_mask, train, decode)
    return self.logit(h).astype(jnp.float32)

  def __call__(self, images, report_ids, label_ids=None, train: bool = False):
    """Teacher-forced forward: report logits (B, L-1, V) for targets report_ids[:, 1:], plus labels."""
    memory, memory_mask, out = self.encode(images, train, label_ids)
    out["logits"] = self.decode(report_ids[:, :-1], memory, memory_mask, train)
    return out


def from_config(model_config, vocab_size: int, num_labels: int, num_label_tokens: int,
                dtype=jnp.float32, **overrides) -> JPG:
  """Builds JPG from a config's ``model`` section (a ConfigDict whose keys are JPG's fields), with
  ``overrides`` of some fields (a stage's ``frozen_extractor`` and ``cached_features``: ``steps.create_model``)."""
  return JPG(vocab_size=vocab_size, num_labels=num_labels, num_label_tokens=num_label_tokens,
             dtype=dtype, **{**model_config.to_dict(), **overrides})
