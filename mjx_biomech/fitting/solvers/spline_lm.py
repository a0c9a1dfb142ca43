"""Levenberg–Marquardt over cubic B-spline control points and shared variables: a banded arrow.

The problem is that of :mod:`~mjx_biomech.fitting.solvers.schur_lm`,

    minimise  ½ Σ_f |r(u_f, p; data_f)|² + ½ |prior(p)|²,

with each frame's variables a point on a uniform cubic B-spline, ``u_f = Σ_a w_fa c_{i_f + a} +
o_f`` (four neighbouring control points ``c``, weights ``w``, a fixed offset ``o``: the root's
line). Its Gauss–Newton normal matrix in ``(c, p)`` is an arrow whose head is block-banded: two
control points are coupled only through frames that both influence, so block ``(k, l)`` is
zero for ``|k − l| > 3``. The frames' own blocks ``A_f = J_uᵀ J_u``, ``B_f = J_uᵀ J_p`` (the
same per-frame linearisation bundle adjustment assembles, :func:`schur_lm.normal_equations`) are
summed into that band with the spline weights; a block-banded Cholesky factorisation (a scan
over the control points, three blocks to the left of each diagonal one) eliminates the control
points, and the Schur complement leaves one dense system in ``p``. Per iteration the cost is
linear in the number of frames and control points; the dense Jacobian (every residual × every
variable) is never formed.

Several trials' splines are one sequence of control points: a frame only ever touches its own
trial's, so the band has zero blocks between trials and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.fitting.solvers import Progress
from mjx_biomech.fitting.solvers.schur_lm import damped_iterations, normal_equations, objective
from mjx_biomech.program_cache import cached_jit

# The lower band: block (k, k − d) for d = 0..3, and the (a, b) pairs of a frame's four control
# points that land in it (a ≥ b: row i + a, column i + b).
_PAIRS = np.array([(a, b) for a in range(4) for b in range(a + 1)])


class Basis(NamedTuple):
    """Where each frame sits on the splines: ``index`` (F,) its first control point (in the
    concatenated sequence), ``weights`` (F, 4) the cubic B-spline weights of control points
    ``index .. index + 3``, ``offset`` (F, n) added to the spline's value."""

    index: jax.Array
    weights: jax.Array
    offset: jax.Array


def spline_basis(times: np.ndarray, K: int, t_start: float, t_end: float, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(index (N,), weights (N, 4))`` of a uniform cubic B-spline with ``K`` control points on
    ``[t_start, t_end]`` at ``times`` (clamped to the span; as
    :class:`~mjx_biomech.fitting.trajectories.SplineTrajectory` evaluates), control points
    numbered from ``first``."""
    dt = (t_end - t_start) / (K - 3)
    u = np.clip((np.asarray(times, float) - t_start) / dt, 0.0, K - 3 - 1e-6)
    i = np.floor(u).astype(int)
    f = u - i
    w = np.stack([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3], -1) / 6.0
    return first + i, w


def frame_values(c: jax.Array, basis: Basis) -> jax.Array:
    """(F, n) every frame's variables ``u_f`` from the control points ``c`` (K, n)."""
    idx = basis.index[:, None] + jnp.arange(4)
    return jnp.einsum("fa,fan->fn", basis.weights.astype(c.dtype), c[idx]) + basis.offset


class BandedEquations(NamedTuple):
    """The Gauss–Newton system in ``(c, p)``: ``D`` (K, 4, n, n) with ``D[k, d]`` the block
    ``(k, k − d)`` of ``J_cᵀJ_c`` (zero where ``k − d < 0``), ``E`` (K, n, np) ``J_cᵀJ_p``, ``gc``
    (K, n) ``J_cᵀr``; ``C`` (np, np), ``gp`` (np,) and ``cost`` as in
    :class:`~mjx_biomech.fitting.solvers.schur_lm.NormalEquations`."""

    D: jax.Array
    E: jax.Array
    gc: jax.Array
    C: jax.Array
    gp: jax.Array
    cost: jax.Array


def banded_equations(residual, prior, c, p, frames, basis: Basis, args, linearise=None, assemble=None) -> BandedEquations:
    """The frames' blocks (:func:`~mjx_biomech.fitting.solvers.schur_lm.normal_equations` at
    ``u = frame_values(c)``, or ``assemble(u, p, frames, args)`` where the problem assembles them
    itself) summed into the control points' band with the spline weights."""
    K, n = c.shape
    u = frame_values(c, basis)
    if assemble is None:
        eq = normal_equations(residual, prior, u, p, frames, args, linearise)
    else:
        eq = assemble(u, p, frames, args)
    w = basis.weights.astype(c.dtype)
    a, b = _PAIRS.T
    rows = basis.index[:, None] + a  # (F, 10)
    vals = (w[:, a] * w[:, b])[:, :, None, None] * eq.A[:, None]  # (F, 10, n, n)
    D = jnp.zeros((K, 4, n, n), c.dtype).at[rows, np.broadcast_to(a - b, rows.shape)].add(vals)
    at = basis.index[:, None] + jnp.arange(4)
    E = jnp.zeros((K,) + eq.B.shape[1:], c.dtype).at[at].add(w[:, :, None, None] * eq.B[:, None])
    gc = jnp.zeros((K, n), c.dtype).at[at].add(w[:, :, None] * eq.gq[:, None])
    return BandedEquations(D, E, gc, eq.C, eq.gp, eq.cost)


def _tri_right(L, R):
    """``R L⁻ᵀ`` for lower-triangular ``L``."""
    return jax.scipy.linalg.solve_triangular(L, R.T, lower=True).T


def banded_cholesky(D: jax.Array) -> jax.Array:
    """The block-banded Cholesky factor of the symmetric positive definite matrix whose lower
    band is ``D`` (K, 4, n, n): ``L`` in the same layout (``L[k, d]`` the block ``(k, k − d)``)."""
    n = D.shape[-1]
    eye = jnp.eye(n, dtype=D.dtype)
    zero = jnp.zeros((n, n), D.dtype)
    # Rows before the first: identity diagonal, nothing else; their blocks of D are zero, so
    # every block they would contribute is zero.
    blank = jnp.stack([eye, zero, zero, zero])

    def row(prev, Dk):
        # prev[j]: row k − 1 − j of L (its blocks (k−1−j, k−1−j−d), d = 0..3).
        r1, r2, r3 = prev
        L3 = _tri_right(r3[0], Dk[3])
        L2 = _tri_right(r2[0], Dk[2] - L3 @ r2[1].T)
        L1 = _tri_right(r1[0], Dk[1] - L3 @ r1[2].T - L2 @ r1[1].T)
        Lkk = jnp.linalg.cholesky(Dk[0] - L1 @ L1.T - L2 @ L2.T - L3 @ L3.T)
        Lk = jnp.stack([Lkk, L1, L2, L3])
        return (Lk, r1, r2), Lk

    _, L = jax.lax.scan(row, (blank, blank, blank), D)
    return L


def banded_solve(L: jax.Array, b: jax.Array) -> jax.Array:
    """``x`` (K, n, m) with ``L Lᵀ x = b`` for the factor :func:`banded_cholesky` gave."""
    zero = jnp.zeros_like(b[0])

    def forward(prev, x):
        Lk, bk = x
        y1, y2, y3 = prev
        rhs = bk - Lk[1] @ y1 - Lk[2] @ y2 - Lk[3] @ y3
        y = jax.scipy.linalg.solve_triangular(Lk[0], rhs, lower=True)
        return (y, y1, y2), y

    _, y = jax.lax.scan(forward, (zero, zero, zero), (L, b))
    # L_{k+d, k} for d = 1..3 beside row k (zero past the end).
    pad = jnp.zeros((3,) + L.shape[2:], L.dtype)
    below = [jnp.concatenate([L[d:, d], pad[:d]]) for d in (1, 2, 3)]

    def backward(nxt, x):
        L0, B1, B2, B3, yk = x
        x1, x2, x3 = nxt
        rhs = yk - B1.T @ x1 - B2.T @ x2 - B3.T @ x3
        xk = jax.scipy.linalg.solve_triangular(L0, rhs, lower=True, trans="T")
        return (xk, x1, x2), xk

    _, x = jax.lax.scan(backward, (zero, zero, zero), (L[:, 0], *below, y), reverse=True)
    return x


def damped_step(eq: BandedEquations, lam, held=None) -> tuple[jax.Array, jax.Array]:
    """The Levenberg–Marquardt step ``(dc (K, n), dp (np,))``: the solution of
    ``(JᵀJ + lam·I) δ = −Jᵀr``, with the shared variables where ``held`` (np,) is nonzero kept
    where they are (their rows and columns of the system replaced by the identity's, their step
    exactly 0: the same compiled step serves any choice of held variables).

    Levenberg's damping (the identity), not Marquardt's (the normal matrix's diagonal): on the
    camera fit, where a weakly seen coordinate's column is nearly zero, Marquardt's damping
    hardly holds that coordinate, its steps overshoot and are rejected, and the damping grows
    for every variable; from the same start on a 0.6 s walk it stalled at twice the objective
    that Levenberg's reached in 11 iterations (measured)."""
    E, C, gp = eq.E, eq.C, eq.gp
    if held is not None:
        keep = 1.0 - jnp.asarray(held, C.dtype)
        E, gp = E * keep, gp * keep
        C = C * keep[:, None] * keep[None, :] + jnp.diag(1.0 - keep)
    D = eq.D.at[:, 0].add(lam * jnp.eye(eq.D.shape[-1], dtype=eq.D.dtype))
    L = banded_cholesky(D)
    n_p = E.shape[-1]
    sol = banded_solve(L, jnp.concatenate([E, eq.gc[..., None]], -1))
    X, y = sol[..., :n_p], sol[..., n_p]
    S = C + lam * jnp.eye(C.shape[-1], dtype=C.dtype) - jnp.einsum("kna,knb->ab", E, X)
    rhs = gp - jnp.einsum("kna,kn->a", E, y)
    dp = -jax.scipy.linalg.solve(0.5 * (S + S.T), rhs, assume_a="pos")
    dc = -(y + jnp.einsum("kna,a->kn", X, dp))
    return dc, dp


def _objective(residual, prior, c, p, frames, basis, args):
    return objective(residual, prior, frame_values(c, basis), p, frames, args)


_cost = cached_jit(_objective)


@cached_jit
def _assemble(residual, prior, c, p, frames, basis, args, linearise, assemble):
    return banded_equations(residual, prior, c, p, frames, basis, args, linearise, assemble)


@cached_jit
def _try(residual, prior, eq, c, p, frames, basis, args, lam, held):
    dc, dp = damped_step(eq, lam, held)
    c1, p1 = c + dc, p + dp
    cost = _objective(residual, prior, c1, p1, frames, basis, args)
    predicted = -(jnp.sum(dc * eq.gc) + jnp.dot(dp, eq.gp)) * 0.5
    return (c1, p1), cost, predicted


def iteration_bytes(residual, prior, c, p, frames, basis: Basis, args=None, linearise=None, assemble=None) -> int:
    """Memory (bytes) an iteration of :func:`spline_levenberg_marquardt` needs on the device:
    the larger of its two compiled programs' (assembling the system; one damped step and its
    objective), arguments, outputs and temporaries together, from XLA's own accounting."""

    def total(compiled):
        m = compiled.compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)

    eq = _assemble(residual, prior, c, p, frames, basis, args, linearise, assemble)
    lam = jnp.asarray(1e-3, eq.C.dtype)
    return max(total(_assemble.lower(residual, prior, c, p, frames, basis, args, linearise, assemble).compile()),
               total(_try.lower(residual, prior, eq, c, p, frames, basis, args, lam, jnp.zeros_like(p)).compile()))


def spline_levenberg_marquardt(
    residual: Callable,
    prior: Callable,
    c,
    p,
    frames,
    basis: Basis,
    args=None,
    iterations: int = 30,
    lam: float = 1e-3,
    rtol: float = 1e-6,
    progress: Progress | None = None,
    stage: str = "lm",
    linearise: Callable | None = None,
    assemble: Callable | None = None,
    held=None,
):
    """Minimise ``½ Σ_f |residual(u_f, p, frames_f, args)|² + ½ |prior(p, args)|²`` over the
    control points ``c`` (K, n) and shared variables ``p`` (np,), ``u = frame_values(c, basis)``.

    ``residual``, ``prior``, ``frames``, ``args``, ``linearise``: as
    :func:`~mjx_biomech.fitting.solvers.schur_lm.schur_levenberg_marquardt` (give module-level
    functions so the compiled steps are reused); ``assemble(u, p, frames, args) ->
    NormalEquations``, where given, replaces the per-frame linearisation with the problem's own
    assembly of the frames' blocks. ``held`` (np,): nonzero where a shared variable stays where
    it is (None: none; see :func:`damped_step`). ``iterations``: Gauss–Newton systems assembled
    at most, each trying up to 8 dampings from ``lam``; it stops once an accepted step lowers the
    objective by less than ``rtol`` of it, or no damping lowers it. ``progress``: called as
    ``progress(stage, 0, iterations, {})`` and after each iteration ``i`` as
    ``progress(stage, i, iterations, {"loss": objective})``.

    Returns:
        ``(c, p, history)``: the solution and the objective after every accepted step.
    """
    held = jnp.zeros_like(p) if held is None else jnp.asarray(held, p.dtype)
    cost = float(_cost(residual, prior, c, p, frames, basis, args))
    (c, p), history = damped_iterations(
        (c, p), cost, lambda x: _assemble(residual, prior, *x, frames, basis, args, linearise, assemble),
        lambda eq, x, lam: _try(residual, prior, eq, *x, frames, basis, args, jnp.asarray(lam, eq.C.dtype), held),
        iterations, lam, rtol, progress, stage)
    return c, p, history
