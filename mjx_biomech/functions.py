"""Coordinate functions (OpenSim's ``Function`` family) evaluated exactly in JAX.

A function is described by a JSON-able dict (the form stored in a model's ``<custom>``
metadata) and turned into a traceable callable by :func:`build`:

- ``{"type": "constant", "value": v}``
- ``{"type": "linear", "slope": a, "intercept": b}``
- ``{"type": "polynomial", "coefficients": [c_n, ..., c_1, c_0]}`` (highest order first, as OpenSim)
- ``{"type": "piecewise_linear", "x": [...], "y": [...]}`` (linear extrapolation beyond the ends)
- ``{"type": "multiplier", "scale": k, "function": {...}}`` (nests)
- ``{"type": "natural_cubic_spline", "x": [...], "y": [...]}`` and ``{"type": "simm_spline", ...}``
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

Function = Callable[[Any], Any]


class UnsupportedFunctionError(ValueError):
    """A function dict whose type this module does not evaluate."""


def _piecewise_linear(x, y):
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.size < 2 or np.any(np.diff(x) <= 0):
        raise ValueError("piecewise_linear needs at least 2 strictly increasing x values")
    slopes = np.diff(y) / np.diff(x)

    def f(t):
        i = jnp.clip(jnp.searchsorted(jnp.asarray(x[1:-1]), t, side="right"), 0, x.size - 2)
        return jnp.asarray(y)[i] + jnp.asarray(slopes)[i] * (t - jnp.asarray(x)[i])

    return f


def build(fn: dict) -> Function:
    """Return a JAX-traceable scalar function ``f(x)`` for the function dict ``fn``."""
    kind = fn.get("type")
    if kind == "constant":
        value = float(fn["value"])
        return lambda t: jnp.zeros_like(t) + value
    if kind == "linear":
        a, b = float(fn["slope"]), float(fn["intercept"])
        return lambda t: a * t + b
    if kind == "polynomial":
        coeffs = [float(c) for c in fn["coefficients"]]

        def poly(t):
            acc = jnp.zeros_like(t) + coeffs[0]
            for c in coeffs[1:]:
                acc = acc * t + c
            return acc

        return poly
    if kind == "piecewise_linear":
        return _piecewise_linear(fn["x"], fn["y"])
    if kind == "multiplier":
        k = float(fn["scale"])
        inner = build(fn["function"])
        return lambda t: k * inner(t)
    if kind in _EXTRA_BUILDERS:
        return _EXTRA_BUILDERS[kind](fn)
    raise UnsupportedFunctionError(f"unsupported coordinate function type {kind!r} in {fn!r}")


# Spline families register here (see below) so ``build`` stays one dispatch.
_EXTRA_BUILDERS: dict[str, Callable[[dict], Function]] = {}
