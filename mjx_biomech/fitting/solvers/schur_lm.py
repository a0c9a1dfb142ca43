"""Levenberg–Marquardt for bundle adjustment: per-frame variables and shared ones, by Schur complement.

The problem

    minimise  ½ Σ_f |r(q_f, p; data_f)|² + ½ |prior(p)|²

has per-frame variables ``q_f`` (a body pose: tens of numbers) and shared variables ``p`` (body
scales, marker offsets, camera extrinsics: hundreds). Its Gauss–Newton normal matrix is an arrow:
one small block ``A_f = J_qᵀ J_q`` per frame, coupled only through ``p``. Eliminating the frames
(the Schur complement ``S = Σ C_f − B_fᵀ A_f⁻¹ B_f``) leaves one dense system in ``p``; each
frame's step then follows from its own block. Memory grows with the number of frames times
``dim q × dim p``, never with the number of residuals times the number of variables as a dense
Jacobian would, and every iteration moves the cameras, the body and every pose together: the
joint optimum that alternating resection and body fits approach only slowly when a camera's
error has leaked into the poses.

Each frame's Jacobian comes from ``jax.jacfwd`` of the residual function, so the solver works
for any differentiable residual, or from the problem's own closed form (``linearise``); the
frames are visited with ``lax.scan``. Damping follows
Marquardt (a multiple of the normal matrix's diagonal), with the usual accept/reject rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from mjx_biomech.fitting.solvers import Progress
from mjx_biomech.program_cache import cached_jit


class NormalEquations(NamedTuple):
    """The arrow-shaped Gauss–Newton system at one point.

    ``A`` (F, nq, nq), ``B`` (F, nq, np), ``gq`` (F, nq): each frame's blocks ``J_qᵀJ_q``,
    ``J_qᵀJ_p``, ``J_qᵀr``; ``C`` (np, np) and ``gp`` (np,): ``Σ J_pᵀJ_p`` and ``Σ J_pᵀr`` over
    frames and the prior; ``cost``: the objective.
    """

    A: jax.Array
    B: jax.Array
    gq: jax.Array
    C: jax.Array
    gp: jax.Array
    cost: jax.Array


def objective(residual: Callable, prior: Callable, q, p, frames, args) -> jax.Array:
    """``½ Σ_f |residual(q_f, p, frames_f, args)|² + ½ |prior(p, args)|²``."""

    def one(qf, df):
        r = residual(qf, p, df, args)
        return 0.5 * jnp.sum(r * r)

    rp = prior(p, args)
    return jnp.sum(jax.vmap(one)(q, frames)) + 0.5 * jnp.sum(rp * rp)


def normal_equations(
    residual: Callable, prior: Callable, q, p, frames, args, linearise: Callable | None = None
) -> NormalEquations:
    """Assemble :class:`NormalEquations` frame by frame (``lax.scan``: one frame's Jacobian in
    memory at a time; vectorising over frames was no faster on a CPU).

    ``linearise(q_f, p, frame_data, args) -> (r, J_q, J_p)`` gives a frame's residuals and
    Jacobians where the problem knows them in closed form; default ``jax.jacfwd`` of ``residual``.
    """

    def with_value(f):
        # Returns the residual as the auxiliary output: Jacobian and value from one evaluation.
        def g(*a):
            r = f(*a)
            return r, r

        return g

    def frame(carry, x):
        C, gp, cost = carry
        qf, df = x
        if linearise is None:
            (Jq, Jp), r = jax.jacfwd(with_value(residual), argnums=(0, 1), has_aux=True)(qf, p, df, args)
        else:
            r, Jq, Jp = linearise(qf, p, df, args)
        out = (Jq.T @ Jq, Jq.T @ Jp, Jq.T @ r)
        return (C + Jp.T @ Jp, gp + Jp.T @ r, cost + 0.5 * jnp.sum(r * r)), out

    Jprior, rp = jax.jacfwd(with_value(prior), has_aux=True)(p, args)
    init = (Jprior.T @ Jprior, Jprior.T @ rp, 0.5 * jnp.sum(rp * rp))
    (C, gp, cost), (A, B, gq) = jax.lax.scan(frame, init, (q, frames))
    return NormalEquations(A, B, gq, C, gp, cost)


def _damp(M, lam):
    """``M + lam · diag(M)`` (batched), a variable that no residual sees given a unit diagonal: its
    step is 0 (its variance ``1/lam``), not a division by 0."""
    eps = jnp.finfo(M.dtype).eps
    d = jnp.diagonal(M, axis1=-2, axis2=-1)
    floor = eps * jnp.maximum(jnp.max(d, axis=-1, keepdims=True), 1.0)
    d = jnp.where(d > floor, d, jnp.maximum(floor, 1.0))
    return M + lam * d[..., :, None] * jnp.eye(M.shape[-1], dtype=M.dtype)


def _eliminate(eq: NormalEquations, lam):
    """The frames' blocks factored and the Schur complement in the shared variables."""
    Achol = jax.vmap(jnp.linalg.cholesky)(_damp(eq.A, lam))

    def solve_a(L, rhs):
        return jax.scipy.linalg.cho_solve((L, True), rhs)

    AinvB = jax.vmap(solve_a)(Achol, eq.B)  # (F, nq, np)
    Ainvg = jax.vmap(solve_a)(Achol, eq.gq)  # (F, nq)
    S = _damp(eq.C, lam) - jnp.einsum("fqa,fqb->ab", eq.B, AinvB)
    return Achol, AinvB, Ainvg, 0.5 * (S + S.T)


def damped_step(eq: NormalEquations, lam) -> tuple[jax.Array, jax.Array]:
    """The Levenberg–Marquardt step ``(dq (F, nq), dp (np,))`` for damping ``lam``: the frames
    eliminated by the Schur complement, each block damped by ``lam`` times its diagonal."""
    _, AinvB, Ainvg, S = _eliminate(eq, lam)
    rhs = eq.gp - jnp.einsum("fqa,fq->a", eq.B, Ainvg)
    dp = -jax.scipy.linalg.solve(S, rhs, assume_a="pos")
    dq = -(Ainvg + jnp.einsum("fqa,a->fq", AinvB, dp))
    return dq, dp


def covariance_of_shared(residual: Callable, prior: Callable, q, p, frames, args=None,
                         linearise: Callable | None = None) -> jax.Array:
    """:func:`shared_covariance` of the problem of :func:`schur_levenberg_marquardt` at ``(q, p)``."""
    return shared_covariance(_assemble(residual, prior, q, p, frames, args, linearise))


@cached_jit
def shared_covariance(eq: NormalEquations) -> jax.Array:
    """(np, np) the covariance of the shared variables at an optimum, ``S⁻¹`` of the undamped
    Schur complement (the Laplace approximation when the objective is a negative log-likelihood
    in units of its noise): the frames' variables are marginalised, no dense inverse of the
    whole problem is formed. A variable no residual sees gets a variance of order 1e12."""
    _, _, _, S = _eliminate(eq, 1e-12)
    return jnp.linalg.inv(S)


@cached_jit
def marginal_covariances(eq: NormalEquations) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The blocks of the inverse normal matrix that standard errors need, in the structure of
    :func:`shared_covariance` (no dense inverse of the whole problem):

    ``(Cov_p (np, np), A⁻¹ (F, nq, nq), W (F, nq, np))`` with ``Cov_p = S⁻¹`` and
    ``W_f = A_f⁻¹ B_f``, so that ``Cov(q_f, q_g) = δ_fg A_f⁻¹ + W_f S⁻¹ W_gᵀ`` and
    ``Cov(q_f, p) = −W_f S⁻¹``. A variable no residual sees gets a variance of order 1e12."""
    Achol, AinvB, _, S = _eliminate(eq, 1e-12)
    eye = jnp.eye(eq.A.shape[-1], dtype=eq.A.dtype)
    Ainv = jax.vmap(lambda L: jax.scipy.linalg.cho_solve((L, True), eye))(Achol)
    return jnp.linalg.inv(S), Ainv, AinvB


# Compiled: run op by op, the objective would compile every primitive of the model apart.
_objective = cached_jit(objective)


@cached_jit
def _assemble(residual, prior, q, p, frames, args, linearise, assemble=None):
    if assemble is not None:
        return assemble(q, p, frames, args)
    return normal_equations(residual, prior, q, p, frames, args, linearise)


@cached_jit
def _try(residual, prior, eq, q, p, frames, args, lam):
    dq, dp = damped_step(eq, lam)
    q1, p1 = q + dq, p + dp
    cost = objective(residual, prior, q1, p1, frames, args)
    # The cost the linear model predicts: how much of the decrease was real decides the damping.
    predicted = -(jnp.sum(dq * eq.gq) + jnp.dot(dp, eq.gp)) * 0.5
    return (q1, p1), cost, predicted


def schur_levenberg_marquardt(
    residual: Callable,
    prior: Callable,
    q,
    p,
    frames,
    args=None,
    iterations: int = 10,
    lam: float = 1e-3,
    rtol: float = 1e-9,
    progress: Progress | None = None,
    stage: str = "bundle adjustment",
    linearise: Callable | None = None,
    assemble: Callable | None = None,
):
    """Minimise ``½ Σ_f |residual(q_f, p, frames_f, args)|² + ½ |prior(p, args)|²``.

    Args:
        residual: ``residual(q_f (nq,), p (np,), frame_data, args) -> (m,)``, differentiable.
            Give a module-level function (not a fresh closure) so the compiled steps are reused.
        prior: ``prior(p, args) -> (k,)`` residuals on the shared variables (may be empty).
        q: (F, nq) per-frame variables. p: (np,) shared variables. frames: a pytree whose
            leaves have a leading axis F, the data of each frame. args: anything else (static
            parts hashed, arrays traced).
        iterations: Gauss–Newton systems assembled at most (each tries a few dampings).
        lam: initial Marquardt damping. rtol: stop when an accepted step lowers the objective
            by less than this fraction.
        progress: called as ``progress(stage, 0, iterations, {})`` at the start and
            ``progress(stage, i, iterations, {"loss": objective})`` after iteration i (see
            :mod:`mjx_biomech.fitting.fit`); it ends before ``iterations`` once converged.
        linearise: a frame's residuals and Jacobians in closed form (:func:`normal_equations`);
            None for ``jax.jacfwd`` of ``residual``. Give a module-level function.
        assemble: ``assemble(q, p, frames, args) -> NormalEquations``, where the problem
            assembles its system itself (replaces ``linearise``); a module-level function.

    Returns:
        ``(q, p, history)``: the solution and the objective after every accepted step.
    """
    cost = float(_objective(residual, prior, q, p, frames, args)) if iterations > 0 else float("nan")
    (q, p), history = damped_iterations(
        (q, p), cost, lambda x: _assemble(residual, prior, *x, frames, args, linearise, assemble),
        lambda eq, x, lam: _try(residual, prior, eq, *x, frames, args, jnp.asarray(lam, eq.C.dtype)),
        iterations, lam, rtol, progress, stage)
    return q, p, history


def damped_iterations(x, cost: float, assemble: Callable, attempt: Callable, iterations: int, lam: float, rtol: float,
                      progress: Progress | None, stage: str):
    """The Levenberg–Marquardt loop this module's solver and
    :func:`~mjx_biomech.fitting.solvers.spline_lm.spline_levenberg_marquardt` share: from the
    variables ``x`` (any pytree) at objective ``cost``, at most ``iterations`` systems
    ``assemble(x)``, each trying up to 8 dampings (``attempt(system, x, lam) -> (x1, cost1,
    predicted decrease)``, the damping ×10 after a rejection, then ×1/3, ×1 or ×2 by the gain
    ratio); it stops once an accepted step lowers the objective by less than ``rtol`` of it or
    none is accepted. ``progress(stage, i, iterations, {"loss", "damping"})`` after each
    iteration (and ``(stage, 0, iterations, {})`` first).

    Returns ``(x, history)``: the solution and the objective after every accepted step.
    """
    history = [cost]
    if progress is not None:
        progress(stage, 0, iterations, {})
    for i in range(iterations):
        eq = assemble(x)
        accepted = False
        for _attempt in range(8):
            x1, c1, predicted = attempt(eq, x, lam)
            c1 = float(c1)
            if math.isfinite(c1) and c1 < cost:
                gain = (cost - c1) / max(float(predicted), 1e-300)
                lam = lam * (1 / 3 if gain > 0.75 else 1.0 if gain > 0.25 else 2.0)
                accepted = True
                break
            lam *= 10.0
        if accepted:
            improvement = (cost - c1) / max(cost, 1e-300)
            x, cost = x1, c1
            history.append(cost)
        if progress is not None:
            progress(stage, i + 1, iterations, {"loss": cost, "damping": lam})
        if not accepted or improvement < rtol:
            break
    return x, history
