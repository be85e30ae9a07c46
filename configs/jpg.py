"""JPG (COLING 2022) on IU X-Ray, R2Gen's split: the paper's settings (Sec. 4.4) and its variants.

  --config=configs/jpg.py                  the paper: iu_xray/r2gen, ResNet-101, 224x224 views
  --config=configs/jpg.py:synthetic        the embedded default: a small model on synthetic_cxr
  --config=configs/jpg.py:synthetic_long   the embedded default trained longer (20 + 30 epochs)
  --config=configs/jpg.py:smoke            a tiny model on a tiny synthetic set, for tests
  --config=configs/jpg.py:mimic            MIMIC-CXR in R2Gen's layout with R2Gen's MIMIC-CXR settings
  --config=configs/jpg.py:base             ablation BASE: no shared subspace, no labels in the encoder
  --config=configs/jpg.py:projection       ablation JPG-projection: no shared subspace
  --config=configs/jpg.py:auxiliary        ablation JPG-auxiliary: no label features in the encoder
  --config=configs/jpg.py:r2gen            Table 2's R2Gen: BASE + relational memory and MCLN (R2Gen's settings)
  --config=configs/jpg.py:cmn              Table 2's CMN: BASE + cross-modal memory (R2GenCMN's settings)
Variants combine with commas (``:synthetic,base``); the model variants apply first and the data variants
(synthetic, synthetic_long, smoke, mimic) after them, whatever the order written, so that ``:synthetic,cmn`` is
CMN's architecture under the embedded default's training. Any field can be set with ``--config.a.b=v``; an
unknown key is an error (the ConfigDict is locked).
"""

import os

import ml_collections

_MODEL_VARIANTS = ("base", "projection", "auxiliary", "r2gen", "cmn")
_DATA_VARIANTS = ("synthetic", "synthetic_long", "smoke", "mimic")
_VARIANTS = _DATA_VARIANTS + _MODEL_VARIANTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 42

  # ------------------------------------------------------------------ data (Sec. 4.1, 4.4; GUIDE sec. 3)
  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "iu_xray/r2gen"
  c.dataset.data_dir = os.environ.get("JPG_JAX_DATA_DIR", "data/tfds")
  c.dataset.manual_dir = os.environ.get("JPG_JAX_MANUAL_DIR", "data/iu_xray")
  c.dataset.download = False        # fetch sources missing from the manual dir from Open-i (TFDS download)
  c.dataset.image_size = 224        # crop / eval size
  c.dataset.resize_size = 256       # train: shorter side before the random crop
  c.dataset.random_flip = True      # R2Gen flips (it swaps laterality: see input_pipeline.py)
  c.dataset.max_seq_length = 60
  c.dataset.vocab_threshold = 3
  c.dataset.worker_count = 0        # grain worker processes (0: threads in the main process)

  # ------------------------------------------------------------------ labels (Sec. 3.4)
  c.labels = ml_collections.ConfigDict()
  c.labels.num_patterns = 17        # stage 1's simple patterns
  c.labels.pattern_depth = 2        # heading + first subheading
  c.labels.num_mined = 57           # stage 2's context-aware labels
  c.labels.mining_beam = 1          # label decoding when mining (1 = greedy)
  c.labels.normal_keep = 0.3        # stage 1's "random data dropout" of normal cases: fraction kept an epoch
  c.labels.min_mined = 10           # fewer mined labels is warned about (log and results/)

  # ------------------------------------------------------------------ model (Sec. 3, 4.4; jpg_jax/models/jpg.py)
  c.model = ml_collections.ConfigDict()
  c.model.resnet_depth = 101
  c.model.resnet_width = 64        # torchvision's ResNets (the smoke config narrows it)
  c.model.frozen_extractor = False
  c.model.extractor_batch = "per_view"  # R2Gen runs the extractor once per view (BatchNorm per view)
  c.model.cached_features = False   # a stage with a frozen extractor reads patch grids computed once
  c.model.use_subspace = True
  c.model.num_bases = 2048          # m: "a 512 x 2048 memory matrix", d_s = 512
  # Eq. 7: the text's "cosine similarity" (the formula's plain dot product is 'dot'; 'scaled_dot' is CMN's).
  # The dot product collapses the softmax onto a few basis vectors in training (README, design notes).
  c.model.similarity = "cosine"
  c.model.top_k = 0
  # N(0, 1): CMN's N(0, 1/d_b) (0.0 here) makes r_x and r_y about 1e-3 in norm at this config's init
  # (0.83 with N(0, 1)), so the text path passes little but the positions.
  c.model.basis_init_std = 1.0
  # r = x~ + S B~, as CMN adds its memory's response to the query (R2GenCMN base_cmn.py); False: Eq. 10's
  # r = S B~. Chosen by measurement on the synthetic default (README, design notes).
  c.model.subspace_residual = True
  c.model.use_labeler = True
  c.model.labels_in_encoder = True
  c.model.train_label_source = "predicted"
  c.model.head = "googlenet"        # Sec. 4.4 (Fig. 3 also: 'alexnet', 'nin')
  c.model.label_hidden = 512
  c.model.label_steps = 5           # the GRU's unroll: at most 5 tokens a label (Sec. 3.3)
  c.model.label_dropout = 0.2
  c.model.d_model = 512
  c.model.d_ff = 512
  c.model.num_heads = 8
  c.model.num_layers = 3
  c.model.dropout = 0.1
  c.model.visual_dropout = 0.5      # R2Gen's att_embed dropout (drop_prob_lm; BASE, JPG-projection)
  c.model.layer_norm = "r2gen"
  c.model.attention_layer = 0       # Fig. 4: the first decoder layer's cross-attention
  c.model.max_length = 512
  # Table 2's memory baselines (configs ``:r2gen``, ``:cmn``; jpg_jax/models/memory.py)
  c.model.relational_memory = False # R2Gen: relational memory + memory-driven conditional LayerNorm
  c.model.rm_num_slots = 3
  c.model.rm_num_heads = 8
  c.model.cross_modal_memory = False  # CMN: a memory matrix queried by visual and textual features
  c.model.cmm_size = 2048
  c.model.cmm_top_k = 32
  c.model.visual_positions = False  # CMN's src_embed: sinusoidal positions on the encoder's inputs
  # A jax.checkpoint_policies name: ResNet blocks and Transformer layers rematerialised in training, for
  # less memory at the cost of recomputing the forward pass (README, Performance); '' keeps everything.
  c.model.remat = ""
  c.compute_dtype = "float32"       # 'bfloat16' on TPU; parameters stay float32
  c.resnet_checkpoint = ""          # orbax dir from jpg_jax.tools.convert_resnet ('' = random init)

  # ------------------------------------------------------------------ training (Sec. 4.4; R2Gen's optimiser)
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 16           # global, over every device of every host
  c.train.eval_batch_size = 16
  c.train.stage1_epochs = 30.0      # not given in the paper
  c.train.stage2_extractor = "trained"   # 'frozen': stage 1's extractor held fixed in stage 2 (not said)
  c.train.stage2_epochs = 100.0     # R2Gen on IU X-Ray
  c.train.eval_every_epochs = 1.0   # validation + checkpoint
  c.train.log_every_steps = 50
  c.train.keep_checkpoints = 3      # last N, plus the best on validation
  c.train.beam_size = 3
  c.train.label_loss_weight = 1.0   # GRU tokens (Eq. 11)
  c.train.class_loss_weight = 1.0   # multi-label head
  c.train.val_meteor = False        # METEOR starts a JVM: test only by default
  c.train.stage1_select_metric = "pattern_macro_f1"   # a constant predictor cannot maximise it
  c.train.stage2_select_metric = "BLEU_4"
  c.train.allow_config_change = False
  c.train.diagnostics = True        # subspace entropy, bases in use, feature spread, gradient per module
  c.train.precise_bn_batches = 0    # >0: BatchNorm statistics re-estimated on K batches before validating

  c.decode = ml_collections.ConfigDict()
  c.decode.policy = "r2gen"         # R2Gen's beam_step; 'live_beams': EOS never takes a slot (decode.py)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"             # 'adagrad': the paper's "initial accumulator value of 0.1"
  c.optim.amsgrad = True
  c.optim.b1 = 0.9                  # torch.optim.Adam's defaults (R2Gen passes none)
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.learning_rate = 1e-4
  c.optim.extractor_learning_rate = 5e-5
  c.optim.weight_decay = 5e-5       # coupled L2, as torch's Adam(weight_decay)
  c.optim.lr_step_epochs = 50       # StepLR(50, 0.1)
  c.optim.lr_gamma = 0.1
  c.optim.grad_clip_value = 0.1     # clip_grad_value_
  c.optim.adagrad_initial_accumulator = 0.1

  if arg:
    variants = arg.split(",")
    for variant in variants:
      if variant not in _VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose from {_VARIANTS}.")
    for variant in sorted(variants, key=lambda v: v in _DATA_VARIANTS):   # model variants first
      _apply(c, variant)
  c.lock()
  return c


def _apply(c: ml_collections.ConfigDict, variant: str) -> None:
  if variant == "base":            # vanilla Transformer: no subspace, no labels
    c.model.use_subspace = False
    c.model.use_labeler = False
    c.model.labels_in_encoder = False
  elif variant == "projection":    # JPG-projection: no shared subspace
    c.model.use_subspace = False
  elif variant == "auxiliary":     # JPG-auxiliary: labels learnt in parallel, not fed to the encoder
    c.model.labels_in_encoder = False
  elif variant == "r2gen":         # R2Gen (EMNLP 2020): github.com/cuhksz-nlp/R2Gen, main.py's defaults
    _apply(c, "base")
    c.model.relational_memory = True   # rm_num_slots 3, rm_num_heads 8, rm_d_model = d_model 512
  elif variant == "cmn":           # CMN (ACL 2021): github.com/zhjohnchan/R2GenCMN, train_iu_xray.sh
    _apply(c, "base")
    c.model.cross_modal_memory = True  # cmm_size 2048, cmm_dim = d_model 512, topk 32
    c.model.visual_positions = True
    c.optim.learning_rate = 5e-4      # lr_ed
    c.optim.extractor_learning_rate = 1e-4   # lr_ve
    c.optim.lr_step_epochs = 10
    c.optim.lr_gamma = 0.8
    c.optim.b2 = 0.98                 # adam_betas (0.9, 0.98), adam_eps 1e-9
    c.optim.eps = 1e-9
    c.optim.grad_clip_value = 0.0     # CMN's trainer does not clip
  elif variant == "synthetic":
    c.dataset.name = "synthetic_cxr/templates"
    c.dataset.image_size = 96
    c.dataset.resize_size = 108
    c.dataset.random_flip = False
    c.model.resnet_depth = 10      # G2: 40% cheaper steps than ResNet-18, so stage 1 gets 9 epochs
    c.model.num_bases = 256
    c.model.d_model = c.model.d_ff = c.model.label_hidden = 128
    c.model.num_heads = 4
    c.model.num_layers = 2
    # G2, by measurement (README, design notes): one BatchNorm batch for both views, statistics
    # re-estimated before each validation, stage 1's extractor kept in stage 2 and read from a cache.
    c.model.extractor_batch = "joint"
    c.train.precise_bn_batches = 20
    c.train.stage2_extractor = "frozen"
    c.model.cached_features = True
    c.train.stage1_epochs = 9.0
    c.train.stage2_epochs = 10.0
    c.train.eval_batch_size = 50
    c.train.log_every_steps = 20
    c.optim.learning_rate = 5e-4
    c.optim.extractor_learning_rate = 2e-4
    c.optim.lr_step_epochs = 1000
    # The whole optimiser is the default's, whatever model variant is written with it (:synthetic,cmn is
    # CMN's architecture under this training): Adam's torch defaults, R2Gen's value clipping.
    c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
    c.optim.grad_clip_value = 0.1
    c.optim.lr_gamma = 0.1
  elif variant == "synthetic_long":   # where the default's numbers go with more training (<= 1 h, 2 cores)
    _apply(c, "synthetic")
    c.train.stage1_epochs = 20.0
    c.train.stage2_epochs = 30.0
  elif variant == "mimic":
    # R2Gen's run_mimic_cxr.sh: one image per example (R2Gen's MimiccxrSingleImageDataset), reports cleaned
    # by clean_report_mimic_cxr (the dataset's cleaning), tokens seen 10 times, 100 tokens, 30 epochs with
    # StepLR(1, 0.8); everything else is R2Gen's main.py default, as for IU X-Ray (images too: R2Gen's
    # transforms are the same for both datasets). With :cmn, R2GenCMN's train_mimic_cxr.sh: StepLR(3, 0.8)
    # (its learning rates are :cmn's). Stage 1 (ours) keeps the paper config's 30 epochs and so runs under
    # the same StepLR. The disease labels are the CheXpert observations the findings labeler reads
    # (jpg_jax/datasets/mimic_cxr.py): 14 at most, so stage 1 has at most 14 simple patterns.
    c.dataset.name = "mimic_cxr/r2gen"
    c.dataset.manual_dir = os.environ.get("JPG_JAX_MANUAL_DIR", "data/mimic_cxr")
    c.dataset.max_seq_length = 100
    c.dataset.vocab_threshold = 10
    c.train.stage2_epochs = 30.0
    c.optim.lr_step_epochs = 3 if c.model.cross_modal_memory else 1
    c.optim.lr_gamma = 0.8
  elif variant == "smoke":
    c.dataset.name = "synthetic_cxr/tiny"
    c.dataset.image_size = 56
    c.dataset.resize_size = 64
    c.dataset.random_flip = False
    c.labels.num_patterns = 5
    c.labels.num_mined = 8
    c.model.resnet_depth = 10
    c.model.resnet_width = 16        # ResNet-10 at 0.31 M parameters instead of 4.91 M: small checkpoints
    c.model.num_bases = 16
    c.model.d_model = c.model.d_ff = c.model.label_hidden = 32
    c.model.num_heads = 4
    c.model.num_layers = 2
    c.train.batch_size = 8
    c.train.eval_batch_size = 8
    c.train.stage1_epochs = 4.0        # 4 steps: stage 1's epoch is 14 reports (normal cases at 0.3)
    c.train.stage2_epochs = 2.0
    c.train.log_every_steps = 2
    c.train.beam_size = 2
    c.dataset.max_seq_length = 40
