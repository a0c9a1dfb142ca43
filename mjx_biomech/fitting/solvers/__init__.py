"""Optimisers: AdamW on random frames, Levenberg–Marquardt, and the Schur-complement LM of bundle adjustment."""
