"""Coordinate functions equal OpenSim 4.6's own ``Function.calcValue``, inside and beyond the knots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mjx_biomech.body import functions

osim = pytest.importorskip("opensim")

# Knots with uneven spacing; points inside, at, between and well beyond them.
X = [-1.2, -0.4, 0.1, 0.9, 1.3, 2.6, 3.0]
Y = [0.3, -0.1, 0.45, 0.2, -0.6, 0.1, 0.05]
POINTS = np.concatenate([np.linspace(-4.0, 5.0, 91), X])


def opensim_values(fn, points=POINTS):
    return np.array([fn.calcValue(osim.Vector(1, float(t))) for t in points])


def ours(fn_dict, points=POINTS):
    with jax.enable_x64(True):
        return np.asarray(functions.build(fn_dict)(jnp.asarray(points)))


def xy_function(cls, x, y):
    fn = cls()
    for a, b in zip(x, y):
        fn.addPoint(a, b)
    return fn


@pytest.mark.parametrize("knots", [2, 3, 4, 5, 7])
def test_simm_spline_matches_opensim_inside_and_beyond_the_knots(knots):
    x, y = X[:knots], Y[:knots]
    expected = opensim_values(xy_function(osim.SimmSpline, x, y))
    np.testing.assert_allclose(ours({"type": "simm_spline", "x": x, "y": y}), expected, rtol=0, atol=1e-12)


def function_from_xml(tmp_path, body: str):
    """An OpenSim function read from XML (nested functions built in Python would be freed twice)."""
    path = tmp_path / "function.xml"
    path.write_text(f'<?xml version="1.0" encoding="UTF-8" ?>\n<OpenSimDocument Version="40000">{body}</OpenSimDocument>')
    return osim.Function.safeDownCast(osim.OpenSimObject.makeObjectFromFile(str(path)))


def knots_xml(tag, x, y):
    return f'<{tag}><x>{" ".join(map(repr, x))}</x><y>{" ".join(map(repr, y))}</y></{tag}>'


def test_natural_cubic_spline_is_what_opensim_reads_from_a_natural_cubic_spline_element(tmp_path):
    expected = opensim_values(function_from_xml(tmp_path, knots_xml("NaturalCubicSpline", X, Y)))
    np.testing.assert_allclose(ours({"type": "natural_cubic_spline", "x": X, "y": Y}), expected, rtol=0, atol=1e-12)


def test_piecewise_linear_matches_opensim_with_linear_extrapolation():
    expected = opensim_values(xy_function(osim.PiecewiseLinearFunction, X, Y))
    np.testing.assert_allclose(ours({"type": "piecewise_linear", "x": X, "y": Y}), expected, rtol=0, atol=1e-12)


def test_constant_linear_and_polynomial_match_opensim():
    cases = [
        (osim.Constant(0.37), {"type": "constant", "value": 0.37}),
        (osim.LinearFunction(-1.7, 0.25), {"type": "linear", "slope": -1.7, "intercept": 0.25}),
        (osim.PolynomialFunction(osim.Vector([0.5, -1.0, 0.2, 3.0])),
         {"type": "polynomial", "coefficients": [0.5, -1.0, 0.2, 3.0]}),
    ]
    for os_fn, fn_dict in cases:
        np.testing.assert_allclose(ours(fn_dict), opensim_values(os_fn), rtol=0, atol=1e-12)


def test_nested_multipliers_match_opensim(tmp_path):
    spline = knots_xml("SimmSpline", X[:3], Y[:3])
    inner = f"<MultiplierFunction><function>{spline}</function><scale>1.3</scale></MultiplierFunction>"
    outer = function_from_xml(tmp_path, f"<MultiplierFunction><function>{inner}</function><scale>-0.7</scale></MultiplierFunction>")
    fn_dict = {"type": "multiplier", "scale": -0.7,
               "function": {"type": "multiplier", "scale": 1.3, "function": {"type": "simm_spline", "x": X[:3], "y": Y[:3]}}}
    np.testing.assert_allclose(ours(fn_dict), opensim_values(outer), rtol=0, atol=1e-12)


def test_composite_applies_the_inner_function_first():
    inner = xy_function(osim.SimmSpline, X, Y)
    outer = osim.PolynomialFunction(osim.Vector([2.0, -1.0, 0.5]))
    expected = opensim_values(outer, opensim_values(inner))
    fn_dict = {"type": "composite", "outer": {"type": "polynomial", "coefficients": [2.0, -1.0, 0.5]},
               "inner": {"type": "simm_spline", "x": X, "y": Y}}
    np.testing.assert_allclose(ours(fn_dict), expected, rtol=0, atol=1e-12)


def test_numpy_build_equals_jax_build_and_jax_one_is_jittable_and_differentiable():
    fn_dict = {"type": "simm_spline", "x": X, "y": Y}
    with jax.enable_x64(True):
        f = functions.build(fn_dict)
        jitted = np.asarray(jax.jit(f)(jnp.asarray(POINTS)))
        slope = float(jax.grad(f)(4.0))
    np.testing.assert_allclose(functions.build(fn_dict, np)(POINTS), jitted, rtol=0, atol=1e-14)
    spline = xy_function(osim.SimmSpline, X, Y)
    # Beyond the last knot the spline is a line with the end slope.
    assert slope == pytest.approx(spline.calcValue(osim.Vector(1, 4.0)) - spline.calcValue(osim.Vector(1, 3.0)), abs=1e-12)


def test_bad_function_dicts_raise_naming_what_was_expected():
    with pytest.raises(functions.UnsupportedFunctionError, match="'step'"):
        functions.build({"type": "step"})
    with pytest.raises(ValueError, match="strictly increasing"):
        functions.build({"type": "simm_spline", "x": [0.0, 0.0, 1.0], "y": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="at least 2"):
        functions.build({"type": "piecewise_linear", "x": [0.0], "y": [1.0]})


@pytest.mark.parametrize("kind", ["simm_spline", "piecewise_linear"])
def test_a_function_built_without_x64_evaluates_in_float64_under_x64(kind):
    """Models are loaded in JAX's default float32; validating them against OpenSim runs in x64 and
    must not see float32-rounded knots (1e-8 m errors instead of 1e-15)."""
    fn = {"type": kind, "x": X, "y": Y}
    with jax.enable_x64(False):
        built = functions.build(fn)
    with jax.enable_x64(True):
        got = np.asarray(built(jnp.asarray(POINTS, jnp.float64)))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, functions.build(fn, np)(POINTS), rtol=0, atol=1e-14)


def test_spline_bank_equals_each_spline_built_alone():
    """The splines evaluated together (padded knots, a 0/1 mask picking each interval) give each
    spline's own value exactly and its derivative to rounding, inside, at the knots and beyond
    both ends, for 2, 3, 5 and 12 knots and both spline types."""
    rng = np.random.default_rng(0)
    fns = []
    for n, kind in ((2, "simm_spline"), (3, "natural_cubic_spline"), (5, "simm_spline"), (12, "simm_spline")):
        x = np.sort(rng.uniform(-2.0, 2.0, n))
        fns.append({"type": kind, "x": x.tolist(), "y": rng.normal(size=n).tolist()})
    bank = functions.SplineBank(fns)
    alone = [functions.build(f) for f in fns]
    points = [np.array([x for f in fns for x in f["x"]])] + [rng.uniform(-3.0, 3.0, 40) for _ in range(3)]
    with jax.enable_x64(True):
        for t in points:
            t = jnp.asarray(np.resize(t, (len(t) // len(fns) + 1) * len(fns)).reshape(-1, len(fns)))
            ours = jax.vmap(bank)(t)
            theirs = jnp.stack([jax.vmap(f)(t[:, m]) for m, f in enumerate(alone)], axis=1)
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
            slope = jax.vmap(jax.jacfwd(bank))(t)
            np.testing.assert_allclose(np.diagonal(np.asarray(slope), axis1=1, axis2=2),
                                       np.stack([np.asarray(jax.vmap(jax.jacfwd(f))(t[:, m])) for m, f in enumerate(alone)], 1),
                                       rtol=1e-14, atol=0)
