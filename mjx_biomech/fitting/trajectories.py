"""A trial's coordinates as a differentiable function of time.

Two representations share one interface, :class:`Trajectory` (``traj(t (N,)) -> (N, C)``):

- :class:`SplineTrajectory`: a uniform cubic B-spline per coordinate (few parameters; a
  least-squares solver handles it well);
- :class:`MLPTrajectory`: the implicit representation of the markerless-biomechanics paper, an
  MLP of a sinusoidal time encoding (dimension 29).

Both produce unconstrained values ``z`` that :class:`CoordinateMap` takes into the model's
coordinates: a sigmoid into the range of every bounded joint coordinate, and an affine map
(a straight line in time plus ``z``) for the root's translations and rotations, whose ranges
are wide or meaningless (the heading of a walker). Where a fit starts is
:mod:`~mjx_biomech.fitting.initialisation`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jax import Array

from mjx_biomech.program_cache import cached_jit

# Bounded coordinates start at least this fraction of their range inside a bound, where the
# sigmoid still has a useful slope.
_MARGIN = 0.03
# Time encoding of the MLP: t rescaled to [-1, 1] and sin/cos at 14 frequencies (Hz): 1 + 28 = 29.
ENCODING_FREQUENCIES_HZ = tuple(float(f) for f in np.geomspace(0.25, 16.0, 14))


@dataclass(frozen=True)
class CoordinateMap:
    """Unconstrained ``z`` (N, A) at times ``t`` (N,) → coordinates (N, C).

    ``z`` holds the A ``active`` coordinates (indices into the model's C); the others stay at
    ``fixed``. Bounded: ``lower + (upper − lower) · sigmoid(z)``. Unbounded (the root's
    coordinates): ``intercept + slope · (t − t0) + z``. Per-coordinate fields have length C and
    are tuples (hashable, static under jit).
    """

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    bounded: tuple[bool, ...]
    intercept: tuple[float, ...]
    slope: tuple[float, ...]
    t0: float
    active: tuple[int, ...]
    fixed: tuple[float, ...]

    def to_coords(self, z: Array, t: Array) -> Array:
        a = np.asarray(self.active, int)
        pick = lambda v: jnp.asarray(np.asarray(v)[a], z.dtype)  # noqa: E731
        lo, hi = pick(self.lower), pick(self.upper)
        line = pick(self.intercept) + pick(self.slope) * (t[:, None] - self.t0)
        values = jnp.where(np.asarray(self.bounded)[a], lo + (hi - lo) * jax.nn.sigmoid(z), line + z)
        out = jnp.broadcast_to(jnp.asarray(self.fixed, z.dtype), (z.shape[0], len(self.fixed)))
        return out.at[:, a].set(values)

    def to_z(self, coords: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_coords` (NumPy): (T, C) → (T, A); bounded values are kept
        ``_MARGIN`` of their range inside."""
        a = np.asarray(self.active, int)
        coords = np.asarray(coords, float)[:, a]
        lo, hi, bounded = np.asarray(self.lower)[a], np.asarray(self.upper)[a], np.asarray(self.bounded)[a]
        frac = np.clip((coords - lo) / np.where(bounded, hi - lo, 1.0), _MARGIN, 1 - _MARGIN)
        return np.where(bounded, np.log(frac / (1 - frac)), coords - self.root_line(t))

    def root_line(self, t: np.ndarray) -> np.ndarray:
        """(T, A) NumPy: the straight line added to the unbounded (root) active coordinates at
        times ``t`` (T,); 0 for the bounded ones."""
        a = np.asarray(self.active, int)
        line = np.asarray(self.intercept)[a] + np.asarray(self.slope)[a] * (np.asarray(t, float)[:, None] - self.t0)
        return np.where(np.asarray(self.bounded)[a], 0.0, line)


def root_coordinates(model) -> np.ndarray:
    """(C,) bool: the coordinates of joints on the root body (a floating base's 6 DoF)."""
    m = model.mj_model
    out = np.zeros(model.num_coordinates, bool)
    for i, c in enumerate(model.coordinates):
        if c.kind != "none":
            jid = int(np.flatnonzero(m.jnt_qposadr == c.qposadr)[0])
            out[i] = m.body_parentid[m.jnt_bodyid[jid]] == 0
    return out


def coordinate_map(model, intercept=None, slope=None, t0: float = 0.0, active=None) -> CoordinateMap:
    """The map of ``model``: root coordinates unbounded (line ``intercept + slope (t − t0)``,
    default the neutral pose at rest), every other coordinate bounded by its range.
    ``active`` (bool (C,) or indices; default all) are the coordinates the trajectory moves;
    the others stay neutral."""
    root = root_coordinates(model)
    C = model.num_coordinates
    if active is None:
        active = np.arange(C)
    active = np.asarray(active)
    if active.dtype == bool:
        active = np.flatnonzero(active)
    neutral = model.neutral_coordinates()
    intercept = np.where(root, neutral, 0.0) if intercept is None else np.asarray(intercept, float)
    slope = np.zeros(model.num_coordinates) if slope is None else np.asarray(slope, float)
    lo, hi = model.coordinate_ranges.T
    return CoordinateMap(
        lower=tuple(map(float, lo)),
        upper=tuple(map(float, hi)),
        bounded=tuple(bool(b) for b in ~root),
        intercept=tuple(map(float, intercept)),
        slope=tuple(map(float, slope)),
        t0=float(t0),
        active=tuple(int(i) for i in active),
        fixed=tuple(map(float, neutral)),
    )


def observed_coordinates(model, marker_set: str, step: float = 0.05, tol_m: float = 1e-4) -> np.ndarray:
    """(C,) bool: coordinates that move at least one marker of ``marker_set`` by ``tol_m`` when
    changed by ``step`` from the neutral pose (MuJoCo C kinematics). The others cannot be
    fitted from that set and stay neutral."""
    kin = _root_kinematics(model)
    ids = model.marker_site_ids(marker_set)
    neutral = model.neutral_coordinates()
    base = kin(neutral)[2][ids]
    lo, hi = model.coordinate_ranges.T
    out = np.zeros(model.num_coordinates, bool)
    for i in range(model.num_coordinates):
        for sign in (1.0, -1.0):
            q = neutral.copy()
            q[i] = np.clip(q[i] + sign * step, lo[i], hi[i])
            if q[i] != neutral[i] and np.max(np.linalg.norm(kin(q)[2][ids] - base, axis=1)) > tol_m:
                out[i] = True
    locked = np.array([c.locked for c in model.coordinates], bool)
    return out & ~locked


class Trajectory(eqx.Module):
    """Coordinates as a function of time: ``traj(t)`` with ``t`` (N,) s → (N, C)."""

    cmap: CoordinateMap = eqx.field(static=True)

    def raw(self, t: Array) -> Array:
        raise NotImplementedError

    def __call__(self, t) -> Array:
        t = jnp.atleast_1d(jnp.asarray(t))
        return self.cmap.to_coords(self.raw(t), t)


def _bspline_basis(u: Array) -> tuple[Array, Array]:
    """Segment index (N,) and the 4 uniform cubic B-spline weights (N, 4) at fractional knots u."""
    f = u - jnp.floor(u)
    f2, f3 = f * f, f * f * f
    w = jnp.stack([(1 - f) ** 3, 3 * f3 - 6 * f2 + 4, -3 * f3 + 3 * f2 + 3 * f + 1, f3], -1) / 6.0
    return jnp.floor(u).astype(jnp.int32), w


class SplineTrajectory(Trajectory):
    """Uniform cubic B-spline: ``control`` (K, C) unconstrained values, knots every
    ``(t1 − t0) / (K − 3)`` s over ``[t0, t1]``; times outside are clamped to the span."""

    control: Array
    t_start: float = eqx.field(static=True)
    t_end: float = eqx.field(static=True)

    def raw(self, t: Array) -> Array:
        K = self.control.shape[0]
        dt = (self.t_end - self.t_start) / (K - 3)
        u = jnp.clip((t - self.t_start) / dt, 0.0, K - 3 - 1e-6)
        i, w = _bspline_basis(u)
        idx = i[:, None] + jnp.arange(4)
        return jnp.einsum("nk,nkc->nc", w.astype(self.control.dtype), self.control[idx])

    @staticmethod
    def basis_matrix(t: np.ndarray, K: int, t_start: float, t_end: float) -> np.ndarray:
        """(N, K) B-spline basis at times ``t``, so that ``raw(t) = B @ control``."""
        dt = (t_end - t_start) / (K - 3)
        u = np.clip((np.asarray(t, float) - t_start) / dt, 0.0, K - 3 - 1e-6)
        i = np.floor(u).astype(int)
        f = u - i
        w = np.stack([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3], -1) / 6.0
        B = np.zeros((len(u), K))
        for k in range(4):
            np.add.at(B, (np.arange(len(u)), i + k), w[:, k])
        return B


def time_encoding(t: Array, t0: float, duration: float) -> Array:
    """(N, 29): ``2 (t − t0)/duration − 1`` and sin, cos of ``2π f (t − t0)`` for the 14
    frequencies ``ENCODING_FREQUENCIES_HZ``."""
    s = t - t0
    f = jnp.asarray(ENCODING_FREQUENCIES_HZ, s.dtype)
    a = 2 * math.pi * s[:, None] * f
    return jnp.concatenate([(2 * s / duration - 1)[:, None], jnp.sin(a), jnp.cos(a)], -1)


class MLPTrajectory(Trajectory):
    """The paper's implicit trajectory: ``z(t) = bias + MLP(encoding(t))``.

    ``mlp`` maps the 29-dimensional :func:`time_encoding` to C values; its last layer starts
    near zero so the initial trajectory is ``bias`` (C,), the initial pose.
    """

    mlp: eqx.nn.MLP
    bias: Array
    t_start: float = eqx.field(static=True)
    duration: float = eqx.field(static=True)

    def raw(self, t: Array) -> Array:
        enc = time_encoding(t, self.t_start, self.duration).astype(self.bias.dtype)
        return self.bias + jax.vmap(self.mlp)(enc)


def spline_from_coords(
    cmap: CoordinateMap, times: np.ndarray, coords: np.ndarray, knots_per_second: float = 12.0, dtype=None
) -> SplineTrajectory:
    """A spline through per-frame coordinates ``coords`` (T, C) at ``times`` (T,) by linear least
    squares in ``z`` (NaN rows are skipped), with ``knots_per_second`` segments per second."""
    times = np.asarray(times, float)
    t0, t1 = float(times[0]), float(times[-1])
    K = max(4, int(math.ceil((t1 - t0) * knots_per_second)) + 3)
    z = cmap.to_z(np.asarray(coords, float), times)
    ok = np.all(np.isfinite(z), axis=1)
    mean = z[ok].mean(0) if ok.any() else np.zeros(z.shape[1])
    control = _control_by_least_squares(times[ok], z[ok], K, t0, t1, mean)
    return SplineTrajectory(cmap=cmap, control=jnp.asarray(control, dtype), t_start=t0, t_end=t1)


def spline_from_z(spline: SplineTrajectory, times: np.ndarray, z: np.ndarray) -> SplineTrajectory:
    """``spline`` (its knots and map kept) with control points refitted by least squares to
    unconstrained values ``z`` (T, A) at ``times`` (T,)."""
    K = spline.control.shape[0]
    control = _control_by_least_squares(np.asarray(times, float), z, K, spline.t_start, spline.t_end, np.asarray(spline.control, float))
    return SplineTrajectory(cmap=spline.cmap, control=jnp.asarray(control, spline.control.dtype), t_start=spline.t_start, t_end=spline.t_end)


def _control_by_least_squares(times, z, K: int, t0: float, t1: float, toward) -> np.ndarray:
    """(K, A) control points whose spline passes nearest ``z`` (T, A) at ``times``; a small ridge
    keeps control points without data near them at ``toward`` ((A,) or (K, A))."""
    B = SplineTrajectory.basis_matrix(times, K, t0, t1)
    lam = 1e-6
    return np.linalg.solve(B.T @ B + lam * np.eye(K), B.T @ z + lam * toward)


def mlp_from_coords(
    cmap: CoordinateMap,
    times: np.ndarray,
    coords: np.ndarray,
    key: Array,
    width: int = 128,
    depth: int = 3,
    dtype=None,
) -> MLPTrajectory:
    """An MLP trajectory starting at the mean of ``z`` of per-frame ``coords`` (T, C)."""
    times = np.asarray(times, float)
    z = cmap.to_z(np.asarray(coords, float), times)
    ok = np.all(np.isfinite(z), axis=1)
    bias = z[ok].mean(0) if ok.any() else np.zeros(z.shape[1])
    dtype = dtype or jnp.result_type(float)
    mlp = eqx.nn.MLP(len(ENCODING_FREQUENCIES_HZ) * 2 + 1, z.shape[1], width, depth, activation=jax.nn.gelu, key=key, dtype=dtype)
    last = mlp.layers[-1]
    mlp = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp, (last.weight * 1e-2, jnp.zeros_like(last.bias)))
    return MLPTrajectory(
        cmap=cmap, mlp=mlp, bias=jnp.asarray(bias, dtype), t_start=float(times[0]), duration=float(max(times[-1] - times[0], 1e-3))
    )


def _root_kinematics(model):
    """MuJoCo C kinematics of the unscaled model at coordinate vectors: (root xpos, root xmat, sites)."""
    m = model.mj_model
    data = mujoco.MjData(m)
    params = model.default_params()
    to_qpos = jax.jit(lambda q: model.coords_to_qpos(q, params))
    root_body = int(np.flatnonzero(m.body_parentid == 0)[1]) if m.nbody > 1 else 0

    def kin(q):
        data.qpos[:] = np.asarray(to_qpos(jnp.asarray(q)))
        mujoco.mj_kinematics(m, data)
        return data.xpos[root_body].copy(), data.xmat[root_body].reshape(3, 3).copy(), data.site_xpos.copy()

    return kin


def fill_missing(times: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation of NaN rows of ``coords`` (T, C) over ``times`` (held at the ends)."""
    out = np.array(coords, float)
    for c in range(out.shape[1]):
        ok = np.isfinite(out[:, c])
        if ok.any() and not ok.all():
            out[:, c] = np.interp(times, times[ok], out[ok, c])
    return out


@cached_jit
def markers_along(model, params, coords, marker_set: str | None) -> Array:
    """(T, J, 3) markers of ``marker_set`` at every row of ``coords`` (T, C); compiled once per
    model, marker set and shape (the model is a static argument, hashed by identity)."""
    return jax.vmap(lambda q: model.markers(q, params, marker_set))(coords)
