"""Coordinate functions (OpenSim's ``Function`` family) evaluated exactly in JAX.

A function is described by a JSON-able dict (the form stored in a model's ``<custom>``
metadata) and turned into a traceable callable by :func:`build`:

- ``{"type": "constant", "value": v}``
- ``{"type": "linear", "slope": a, "intercept": b}``
- ``{"type": "polynomial", "coefficients": [c_n, ..., c_1, c_0]}`` (highest order first, as OpenSim)
- ``{"type": "piecewise_linear", "x": [...], "y": [...]}`` (linear extrapolation beyond the ends)
- ``{"type": "multiplier", "scale": k, "function": {...}}`` (nests)
- ``{"type": "simm_spline", "x": [...], "y": [...]}`` and ``{"type": "natural_cubic_spline", ...}``
- ``{"type": "composite", "outer": {...}, "inner": {...}}``: ``outer(inner(x))``, what a
  coordinate coupler makes of the functions of the coordinate it drives.

Both spline types are OpenSim's: OpenSim's ``NaturalCubicSpline`` is, despite its name, the
same Forsythe–Malcolm–Moler cubic spline as ``SimmSpline`` (end third derivatives taken from
the cubic through the four end knots; a parabola for three knots, a line for two), and
OpenSim 4.6 reads a ``<NaturalCubicSpline>`` element as a ``SimmSpline``. Beyond the knots
both continue as the straight line with the end slope.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpy as np

from mjx_biomech.errors import InputError

Function = Callable[[Any], Any]


# The function types that are OpenSim's splines (one evaluation, see the module docstring).
SPLINE_TYPES = ("simm_spline", "natural_cubic_spline")


class UnsupportedFunctionError(InputError):
    """A function dict whose type this module does not evaluate."""


def _numbers(x, kind: str, key: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as e:
        raise InputError(f"{kind}: {key!r} must be numbers, got {x!r}") from e
    if not np.all(np.isfinite(a)):
        raise InputError(f"{kind}: {key!r} must be finite numbers, got {a.tolist()}")
    return a


def _knots(x, y, kind: str, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    x = _numbers(x, kind, "x")
    y = _numbers(y, kind, "y")
    if x.ndim != 1 or x.shape != y.shape:
        raise InputError(f"{kind} needs x and y of equal length, got {x.shape} and {y.shape}")
    if x.size < minimum or np.any(np.diff(x) <= 0):
        raise InputError(f"{kind} needs at least {minimum} strictly increasing x values, got {x.tolist()}")
    return x, y


def _piecewise_linear(x, y, xp):
    x, y = _knots(x, y, "piecewise_linear", 2)
    slopes = np.diff(y) / np.diff(x)

    def f(t):
        # The float64 tables become arrays when called, in the precision JAX runs in then: a model
        # loaded without x64 still evaluates exactly under x64.
        xs, ys, s = xp.asarray(x), xp.asarray(y), xp.asarray(slopes)
        i = _interval(xs, t, xp)
        return ys[i] + s[i] * (t - xs[i])

    return f


def _interval(knots, t, xp):
    """The index k of the interval [knots[k], knots[k+1]) holding ``t`` (elementwise), the end
    intervals extended outwards: how many inner knots lie at or below ``t``. A comparison with
    every knot, not a binary search: tables are short, and under ``jit`` one fused comparison
    is several times cheaper than ``searchsorted``'s loop in an inverse-kinematics iteration."""
    t = xp.asarray(t)
    return xp.sum(t[..., None] >= knots[1:-1], axis=-1)


def _third_divided_difference(x: np.ndarray, y: np.ndarray) -> float:
    """f[x0, x1, x2, x3]: six times it is the third derivative of the cubic through the 4 points."""
    d1 = np.diff(y) / np.diff(x)
    d2 = np.diff(d1) / (x[2:] - x[:-2])
    return float((d2[1] - d2[0]) / (x[3] - x[0]))


def simm_spline_coefficients(x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-interval cubic ``y_k + b_k dx + c_k dx^2 + d_k dx^3`` of OpenSim's SimmSpline.

    Returns ``(x, y, b, c, d)``, each of length n; ``b[-1]`` is the slope at the last knot
    (used beyond it), the last ``c``/``d`` entries are unused.
    """
    x, y = _knots(x, y, "simm_spline", 2)
    n = x.size
    h = np.diff(x)
    delta = np.diff(y) / h
    if n == 2:
        return x, y, np.full(2, delta[0]), np.zeros(2), np.zeros(2)
    # Second derivatives M at the knots: continuity of the first derivative inside, and
    # at each end the third derivative of the end interval equals that of the cubic
    # through the four end knots (zero, i.e. one parabola, when there are only three).
    a = np.zeros((n, n))
    rhs = np.zeros(n)
    for i in range(1, n - 1):
        a[i, i - 1 : i + 2] = h[i - 1], 2.0 * (h[i - 1] + h[i]), h[i]
        rhs[i] = 6.0 * (delta[i] - delta[i - 1])
    a[0, :2] = -1.0, 1.0
    a[-1, -2:] = -1.0, 1.0
    if n > 3:
        rhs[0] = 6.0 * h[0] * _third_divided_difference(x[:4], y[:4])
        rhs[-1] = 6.0 * h[-1] * _third_divided_difference(x[-4:], y[-4:])
    m = np.linalg.solve(a, rhs)
    b = np.empty(n)
    b[:-1] = delta - h * (2.0 * m[:-1] + m[1:]) / 6.0
    b[-1] = delta[-1] + h[-1] * (m[-2] + 2.0 * m[-1]) / 6.0
    c = np.append(m[:-1] / 2.0, 0.0)
    d = np.append(np.diff(m) / (6.0 * h), 0.0)
    return x, y, b, c, d


def _simm_spline(x, y, xp):
    coefficients = simm_spline_coefficients(x, y)

    def f(t):
        # As in _piecewise_linear: arrays in the precision of the call.
        x, y, b, c, d = (xp.asarray(v) for v in coefficients)
        k = _interval(x, t, xp)
        dx = t - x[k]
        inside = y[k] + dx * (b[k] + dx * (c[k] + dx * d[k]))
        below = y[0] + (t - x[0]) * b[0]
        above = y[-1] + (t - x[-1]) * b[-1]
        return xp.where(t < x[0], below, xp.where(t > x[-1], above, inside))

    return f


class SplineBank:
    """Several OpenSim splines (``simm_spline``/``natural_cubic_spline`` dicts) evaluated at once:
    ``bank(t)`` (M,) gives ``f_m(t_m)`` for every spline m, each exactly as :func:`build`'s, in one
    short program (the knots padded to a common length; each interval's coefficients picked by a
    0/1 mask, not a gather) instead of one per spline."""

    def __init__(self, fns):
        coefficients = [simm_spline_coefficients(fn.get("x"), fn.get("y")) for fn in fns]
        n = max(len(c[0]) for c in coefficients)
        # Inner knots padded with +inf (never at or below t); the coefficients with 0 (finite,
        # so the mask's zeros stay zeros).
        self._inner = np.full((len(fns), max(n - 2, 0)), np.inf)
        self._table = np.zeros((5, len(fns), n))  # x, y, b, c, d
        for m, c in enumerate(coefficients):
            self._inner[m, : len(c[0]) - 2] = c[0][1:-1]
            self._table[:, m, : len(c[0])] = c
        self._first = np.array([[c[0][0], c[1][0], c[2][0]] for c in coefficients]).T  # x, y, slope at the first knot
        self._last = np.array([[c[0][-1], c[1][-1], c[2][-1]] for c in coefficients]).T  # and at the last

    def __call__(self, t):
        t = jnp.asarray(t)
        dtype = t.dtype
        k = jnp.sum(t[:, None] >= jnp.asarray(self._inner, dtype), axis=-1)
        pick = (k[:, None] == np.arange(self._table.shape[2])).astype(dtype)  # (M, n) one 1 per row
        x, y, b, c, d = jnp.sum(pick * jnp.asarray(self._table, dtype), axis=-1)
        dx = t - x
        inside = y + dx * (b + dx * (c + dx * d))
        (x0, y0, b0), (x1, y1, b1) = (jnp.asarray(a, dtype) for a in (self._first, self._last))
        below = y0 + (t - x0) * b0
        above = y1 + (t - x1) * b1
        return jnp.where(t < x0, below, jnp.where(t > x1, above, inside))


def build(fn: Mapping, xp=jnp) -> Function:
    """Return a JAX-traceable function ``f(x)``, elementwise, for the function dict ``fn``.

    ``xp=numpy`` gives the same function on NumPy arrays, for fast evaluation outside JAX.
    Raises :class:`~mjx_biomech.InputError` naming the type and the key when ``fn`` is malformed.
    """
    if not isinstance(fn, Mapping):
        raise InputError(f"coordinate function: expected a dict with a 'type' key, got {fn!r}")
    kind = fn.get("type")

    def field(key: str):
        if key not in fn:
            raise InputError(f"{kind}: missing key {key!r} in {fn!r}")
        return fn[key]

    def number(key: str) -> float:
        a = _numbers(field(key), kind, key)
        if a.shape != ():
            raise InputError(f"{kind}: {key!r} must be one number, got {fn[key]!r}")
        return float(a)

    if kind == "constant":
        value = number("value")
        return lambda t: xp.zeros_like(t) + value
    if kind == "linear":
        a, b = number("slope"), number("intercept")
        return lambda t: a * t + b
    if kind == "polynomial":
        coeffs = _numbers(field("coefficients"), kind, "coefficients")
        if coeffs.ndim != 1 or coeffs.size == 0:
            raise InputError(f"polynomial: 'coefficients' must be a list of at least one number, got {fn['coefficients']!r}")
        coeffs = [float(c) for c in coeffs]

        def poly(t):
            acc = xp.zeros_like(t) + coeffs[0]
            for c in coeffs[1:]:
                acc = acc * t + c
            return acc

        return poly
    if kind == "piecewise_linear":
        return _piecewise_linear(field("x"), field("y"), xp)
    if kind in SPLINE_TYPES:
        return _simm_spline(field("x"), field("y"), xp)
    if kind == "multiplier":
        k = number("scale")
        inner = build(field("function"), xp)
        return lambda t: k * inner(t)
    if kind == "composite":
        outer, inner = build(field("outer"), xp), build(field("inner"), xp)
        return lambda t: outer(inner(t))
    raise UnsupportedFunctionError(f"unsupported coordinate function type {kind!r} in {fn!r}")
