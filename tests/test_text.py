import pytest

from jpg_jax import text


@pytest.mark.parametrize("raw, cleaned", [
    ("The heart is normal. No effusion.", "the heart is normal . no effusion ."),
    # '..' collapses; list markers go; '/', quotes and the class [.,?;*!%^&_+():-\[\]{}] go.
    ("1. Heart size normal.. 2. Lungs clear; no 'effusion'.", "heart size normal . lungs clear no effusion ."),
    # The range ':-\[' removes ; < = > ? @ too; digits and '-' stay.
    ("T-spine <7 mm> @ level 5.", "t-spine 7 mm  level 5 ."),
    ("Right/left (bilateral) opacities!", "rightleft bilateral opacities ."),
    # R2Gen keeps empty sentences (``str != []`` is always true).
    ("Normal. . Clear.", "normal .  . clear ."),
])
def test_clean_report_matches_r2gen(raw, cleaned):
  assert text.clean_report_iu_xray(raw) == cleaned


def test_drop_empty_sentences_option():
  assert text.clean_report_iu_xray("Normal. . Clear.", drop_empty_sentences=True) == "normal . clear ."


def test_vocabulary_conventions():
  vocab = text.Vocabulary.build(["a b b .", "b c . b a ."], threshold=2)
  assert [vocab.idx2token[i] for i in range(1, len(vocab) + 1)] == [".", "<unk>", "a", "b"]
  assert vocab.num_logits == len(vocab) + 1
  assert vocab.encode("a z b .") == [0, 3, 2, 4, 1, 0]
  ids, mask = vocab.encode_padded("a b", 6)
  assert ids.tolist() == [0, 3, 4, 0, 0, 0] and mask.tolist() == [1, 1, 1, 1, 0, 0]
  # Truncation keeps BOS and drops the EOS of long reports, as R2Gen does.
  assert vocab.encode("a " * 10, max_length=4) == [0, 3, 3, 3]
  assert vocab.decode([3, 4, 0, 3]) == "a b"
  assert text.Vocabulary.from_json(vocab.to_json()) == vocab


def test_r2gen_vocabulary_has_760_tokens(r2gen_annotation):
  vocab = text.Vocabulary.build(text.clean_report_iu_xray(e["report"]) for e in r2gen_annotation["train"])
  assert len(vocab) == 760
  assert vocab.token2idx["<unk>"] > 0 and 0 not in vocab.token2idx.values()


def test_count_words_ignores_sentence_marks():
  assert text.count_words("the heart is normal . lungs clear .") == 6


# ------------------------------------------------------------------- against R2Gen's own functions
def _tricky_reports(n: int, seed: int = 0) -> list[str]:
  """Strings built from what R2Gen's cleaners act on: runs of '_', ' ', '.', newlines, list markers."""
  import random
  rng = random.Random(seed)
  pieces = ["The", "heart", "is", "normal", "___", "_", "__", " ", "  ", "\n", "\n\n", ".", "..", "...",
            "1. ", "2. ", ". 3. ", " 4. ", "5.", ",", ";", "'", '"', "/", "\\", "(", ")", "[", "]", "{", "}",
            "?", "<", "=", "@", "-", "T-spine", "x-XXXX", "PA", "AP", "cm", "7", "%", "&", "FINDINGS:",
            " " * 100, "_" * 200, "." * 300]
  return ["".join(rng.choice(pieces) + rng.choice(("", " ")) for _ in range(rng.randint(0, 40)))
          for _ in range(n)]


@pytest.mark.parametrize("cleaning", ["iu_xray", "mimic_cxr"])
def test_cleaning_equals_r2gens_own_code_on_tricky_strings(cleaning):
  from tests import torch_reference as ref
  original = {"iu_xray": ref.r2gen_clean_report_iu_xray, "mimic_cxr": ref.r2gen_clean_report_mimic_cxr}[cleaning]
  for report in _tricky_reports(3000, seed=len(cleaning)):
    assert text.clean_report(report, cleaning) == original(report), repr(report)


def test_mimic_cleaning_on_a_mimic_style_report():
  report = ("FINDINGS:\n PA and lateral views of the chest.  ___ tubes  removed.. \n\n"
            "1. No pneumothorax.  2. Heart size is normal.")
  assert text.clean_report_mimic_cxr(report) == (
      "findings pa and lateral views of the chest .  tubes removed . no pneumothorax . heart size is normal .")
  # Applied R2Gen's number of times, not to a fixed point: 200 spaces halve six times, to 4.
  assert text.clean_report_mimic_cxr("a" + " " * 200 + "b.") == "a    b ."
  with pytest.raises(ValueError, match="mimic_cxr"):
    text.clean_report("x", "chexpert")


def test_cleaning_of_the_real_iu_xray_reports_equals_r2gens(r2gen_annotation):
  from tests import torch_reference as ref
  for split in r2gen_annotation.values():
    for e in split:
      assert text.clean_report_iu_xray(e["report"]) == ref.r2gen_clean_report_iu_xray(e["report"])
      assert text.clean_report_mimic_cxr(e["report"]) == ref.r2gen_clean_report_mimic_cxr(e["report"])
