"""coco-caption scores as R2Gen computes them, label F1, the baseline and the significance test."""

import math

import numpy as np
import pytest

from jpg_jax import evaluate


def test_hand_checked_bleu_and_rouge():
  # One pair, 4 tokens, 3 matching unigrams and 2 matching bigrams; no brevity penalty.
  s = evaluate.caption_scores(["a b c d"], ["a b c e"], with_meteor=False)
  assert s["BLEU_1"] == pytest.approx(3 / 4, abs=1e-6)
  assert s["BLEU_2"] == pytest.approx(math.sqrt(3 / 4 * 2 / 3), abs=1e-6)
  # BLEU-3: 1 of 2 trigrams; BLEU-4: 0 of 1 4-grams (pycocoevalcap smooths with tiny/small counts).
  assert s["BLEU_3"] == pytest.approx((3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3), abs=1e-6)
  assert s["BLEU_4"] < 1e-3
  # ROUGE-L: LCS 3, P = R = 3/4, F_beta (beta = 1.2) = 3/4.
  assert s["ROUGE_L"] == pytest.approx(0.75, abs=1e-6)


def test_identical_reports_score_one_and_match_pycocoevalcap_directly():
  refs = ["the heart is normal . the lungs are clear .", "no pleural effusion or pneumothorax ."]
  preds = ["the heart is normal . lungs clear .", "no pleural effusion or pneumothorax ."]
  same = evaluate.caption_scores(refs, refs)
  assert same["BLEU_4"] == pytest.approx(1.0, abs=1e-6) and same["ROUGE_L"] == pytest.approx(1.0)
  assert same["METEOR"] > 0.99
  # R2Gen's compute_scores, written out: the same numbers.
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.meteor.meteor import Meteor
  from pycocoevalcap.rouge.rouge import Rouge
  gts = {i: [r] for i, r in enumerate(refs)}
  res = {i: [p] for i, p in enumerate(preds)}
  ours = evaluate.caption_scores(refs, preds)
  bleu, _ = Bleu(4).compute_score(gts, res)
  assert [ours[f"BLEU_{n}"] for n in range(1, 5)] == pytest.approx(bleu)
  assert ours["METEOR"] == pytest.approx(Meteor().compute_score(gts, res)[0])
  assert ours["ROUGE_L"] == pytest.approx(Rouge().compute_score(gts, res)[0])


def test_per_report_scores_and_errors():
  scores, each = evaluate.caption_scores(["a b c d", "x y"], ["a b c d", "z"], with_meteor=False,
                                         per_report=True)
  assert each["ROUGE_L"] == pytest.approx([1.0, 0.0])
  with pytest.raises(ValueError):
    evaluate.caption_scores(["a"], [])


def test_label_scores_micro_and_per_label():
  truth = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
  pred = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])
  s = evaluate.label_scores(truth, pred, ["a", "b", "c"])
  # tp = 3, fp = 1, fn = 2
  assert s.micro_precision == pytest.approx(3 / 4) and s.micro_recall == pytest.approx(3 / 5)
  assert s.micro_f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
  assert s.per_label["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
  assert s.per_label["c"]["f1"] == 0.0


def test_paired_t_test_against_scipy():
  from scipy import stats
  a, b = [0.3, 0.5, 0.4, 0.6, 0.2], [0.2, 0.4, 0.45, 0.5, 0.1]
  r = evaluate.paired_t_test(a, b)
  t, p = stats.ttest_rel(a, b)
  assert r["t"] == pytest.approx(t) and r["p"] == pytest.approx(p) and r["n"] == 5
  assert r["mean_difference"] == pytest.approx(0.07)


def test_most_frequent_report_baseline():
  train = ["a b .", "c d .", "a b .", "e ."]
  assert evaluate.most_frequent_report(train) == "a b ."
  s = evaluate.baseline_scores(train, ["a b .", "c d ."], with_meteor=False)
  assert 0 < s["BLEU_1"] < 1
