"""Optimisers: AdamW on random frames, Levenberg–Marquardt, and the Schur-complement LM of bundle adjustment."""

from collections.abc import Callable

# ``progress(stage, done, total, info)``: how every solver and fit reports progress (see
# :mod:`mjx_biomech.fitting.fit`).
Progress = Callable[[str, int, int, dict], None]
