"""Evaluators, as big_vision's: each is built once (per stage) around its jitted prediction function and
``run(variables) -> dict`` scores a split with it, so that every validation pass reuses one compiled
program. ``labels``: stage 1's validation (and the generated labels mining reads); ``reports``: report
generation (validation and test) with the head's label scores. The scoring itself is ``jpg_jax/evaluate.py``.
"""
