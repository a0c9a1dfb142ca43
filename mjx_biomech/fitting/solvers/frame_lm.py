"""A small bounded Levenberg–Marquardt for one frame's pose, with a secant second-order term.

Inverse kinematics (:mod:`mjx_biomech.fitting.ik`) solves one of these per frame, and marker
scaling (:mod:`mjx_biomech.fitting.markers`) solves them for its starting poses and its final IK.

The model Hessian is Gauss–Newton's ``JᵀJ`` plus a secant estimate ``S`` of the second-order
term ``Σ r ∇²r`` (Dennis, Gay and Welsch, as in NL2SOL), which large residuals (centimetres of
marker error on real recordings) make matter: without it Gauss–Newton converges only linearly.
``S`` can be carried from one frame to the next, as can the pose. Where the caller can evaluate
``Σ r ∇²r`` itself (the closed form of models of hinges and slides), it replaces the estimate
and the solver is Newton's method, damped. A variable on a bound whose
gradient pushes outwards is held there (the active set) and steps are clipped into the box. The
solver stops when the next step would move no variable by more than ``accuracy``, that step
taken without another evaluation. (optimistix's Levenberg–Marquardt has neither bounds nor the
second-order term; hence this solver.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["FrameState", "Newton", "solve_frame"]


class Newton(NamedTuple):
    """What a ``linearise`` that knows its objective's second-order term returns instead of
    ``(r, J)``: ``cost`` ``|r|²``, gradient ``g = Jᵀr`` (n,), Gauss–Newton matrix ``JtJ``
    (n, n), second-order term ``S = Σ r ∇²r`` (n, n), and ``point``, anything the caller wants
    kept of the last accepted evaluation (a pytree, or None)."""

    cost: jax.Array
    g: jax.Array
    JtJ: jax.Array
    S: jax.Array
    point: object = None


class FrameState(NamedTuple):
    """Levenberg–Marquardt state: the point ``x`` (n,), its residuals ``r`` (m,), their squared
    norm ``cost``, Jacobian ``J`` (m, n), gradient ``g = Jᵀr`` (n,) and Gauss–Newton matrix
    ``JtJ`` (n, n), the second-order part ``S`` (n, n) of the Hessian, the damping ``lam``, the
    ``step`` proposed from ``x``, the evaluations so far, whether ``x`` was reached by an
    accepted step (``moved``) and ``last``, the largest move of that step when it came from a
    point that was itself so reached (0 otherwise, and after a rejection); the Cholesky
    ``factor`` (n, n) and the ``free`` (n,) variables of the step's model, and the ``point`` a
    :class:`Newton` evaluation of ``x`` kept."""

    x: jax.Array
    r: jax.Array
    cost: jax.Array
    J: jax.Array
    g: jax.Array
    JtJ: jax.Array
    S: jax.Array
    lam: jax.Array
    step: jax.Array
    iterations: jax.Array
    moved: jax.Array
    last: jax.Array
    factor: jax.Array
    free: jax.Array
    point: object


def _propose(state: FrameState, moving, lower, upper) -> FrameState:
    """The damped, projected step from ``state.x`` for the model Hessian ``JᵀJ + S``, and that
    model's factor and free variables."""
    x, g, JtJ = state.x, state.g, state.JtJ
    free = moving & ~(((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0)))
    d = jnp.diagonal(JtJ)
    # A variable no residual sees gets a unit diagonal: a zero step, not a division by zero.
    d = jnp.where(d > jnp.finfo(d.dtype).eps * jnp.max(d), d, 1.0)
    n = x.shape[0]
    both = free[:, None] & free[None, :]
    eye = jnp.eye(n, dtype=x.dtype)

    def solve(S):
        L = jnp.linalg.cholesky(jnp.where(both, JtJ + S + state.lam * jnp.diag(d), eye))
        return jax.scipy.linalg.cho_solve((L, True), jnp.where(free, -g, 0.0)), L

    dx, L = solve(state.S)
    # An indefinite model (a secant estimate far off, or Newton's far from the optimum) fails the
    # factorisation: Gauss–Newton's model instead, at no extra evaluation (a NaN step that fails
    # still is rejected and damped more).
    dx, L = jax.lax.cond(jnp.all(jnp.isfinite(dx)), lambda: (dx, L), lambda: solve(jnp.zeros_like(state.S)))
    return state._replace(step=jnp.clip(x + dx, lower, upper) - x, factor=L, free=free)


def _secant_update(S, s, J0, g0, r1, g1):
    """Dennis–Gay–Welsch (NL2SOL) update of the second-order part of the Hessian after a step ``s``
    from the point of Jacobian ``J0`` and gradient ``g0 = J0ᵀr0`` to residuals ``r1`` and gradient
    ``g1 = J1ᵀr1``: it then maps ``s`` to the change of the residual curvature term,
    ``(J1 − J0)ᵀ r1``."""
    y = g1 - g0
    y_sharp = g1 - J0.T @ r1
    sSs = jnp.abs(s @ S @ s)
    # NL2SOL's sizing keeps a stale S from dominating a small step.
    S = S * jnp.where(sSs > 0, jnp.minimum(1.0, jnp.abs(s @ y_sharp) / jnp.where(sSs > 0, sSs, 1.0)), 1.0)
    w = y_sharp - S @ s
    ys = y @ s
    ok = ys > jnp.finfo(ys.dtype).eps * jnp.sqrt(y @ y) * jnp.sqrt(s @ s)
    ys = jnp.where(ok, ys, 1.0)
    update = (jnp.outer(w, y) + jnp.outer(y, w)) / ys - (w @ s) * jnp.outer(y, y) / ys**2
    return S + jnp.where(ok, update, 0.0)


# The contraction estimate of _converged is trusted only for steps this little damped.
_UNDAMPED = 1e-4


def _converged(state: FrameState, accuracy, lower, upper) -> jax.Array:
    """Whether ``x + step`` is within ``accuracy`` of the solution in every variable: the step is
    that small, or the steps contract at the rate ``θ = |step| / |last|`` and the moves still to
    come, ``|step| θ / (1 − θ)``, are (the a-posteriori estimate of Hairer and Wanner's Newton
    iterations). The estimate is exact for linear convergence and an overestimate for
    quadratic; it is not used right after a rejection, for a damped step or with a variable on
    a bound (whose clipped steps say nothing of the contraction), nor from the first step, which
    corrects the starting guess rather than contracts. (The estimate of
    quadratic convergence, ``|step| θ²``, stops sooner but let 2 of 121 frames of a real walk end
    25 % beyond the accuracy.)"""
    size = jnp.max(jnp.abs(state.step))
    theta = size / state.last
    remaining = size * theta / (1.0 - theta)
    x1 = state.x + state.step
    inside = ~jnp.any((state.x <= lower) | (state.x >= upper) | (x1 <= lower) | (x1 >= upper))
    contracted = (state.last > 0) & (theta < 1) & (state.lam <= _UNDAMPED) & inside & (remaining <= accuracy)
    # Written so that a NaN step (a failed factorisation) is not converged.
    return (size <= accuracy) | contracted


def solve_frame(
    linearise: Callable, x, S, moving, lower, upper, accuracy, max_iterations, newton_start=False
) -> tuple[FrameState, jax.Array]:
    """Minimise ``|r(x)|²`` over ``x`` (n,) in the box ``[lower, upper]`` (±inf where unbounded),
    moving only the ``moving`` (n,) bool variables, from ``x`` with second-order estimate ``S`` (n, n).

    ``linearise(x) -> (r (m,), J (m, n))``, or a :class:`Newton` with the second-order
    part ``S = Σ r ∇²r`` itself, which then replaces the secant estimate (neither ``r`` nor
    ``J`` is then kept): Newton's model, whose convergence is quadratic, not the secant's
    superlinear. Stops when the proposed step moves no
    variable by more than ``accuracy``, or the steps contract fast enough that taking it leaves
    every variable within ``accuracy`` of the solution (:func:`_converged`; that step is then
    taken unevaluated), or after ``max_iterations`` evaluations (0: ``x`` is returned
    unevaluated). Traceable (``jit``, ``vmap``, ``lax.scan``). Returns the final state and whether
    it converged; a converged state's ``x`` has the last step taken, its ``r``, ``J``, ``g``,
    ``JtJ``, ``point`` and the step's ``factor`` are those of the point before it.

    ``newton_start`` (bool, may be traced): ``x`` is itself a Newton step's result (a prediction
    from a nearby problem's Newton model), so the contraction from the first step on tells how
    far the solution is (:func:`_converged`); otherwise the first step, which corrects a guess,
    is left out of it.
    """
    n = x.shape[0]

    def body(state: FrameState) -> FrameState:
        x1 = state.x + state.step
        out = linearise(x1)
        point1 = state.point
        if isinstance(out, Newton):
            cost1, g1, JtJ1, S1, point1 = out
            r1, J1 = state.r, state.J
        else:
            r1, J1 = out
            g1, cost1, JtJ1 = J1.T @ r1, jnp.sum(r1 * r1), J1.T @ J1
            S1 = _secant_update(state.S, state.step, state.J, state.g, r1, g1)
        accept = cost1 < state.cost
        # A rejected step: more damping, and back to the Gauss–Newton model.
        new = state._replace(x=x1, r=r1, cost=cost1, J=J1, g=g1, JtJ=JtJ1, S=S1, point=point1,
                             lam=jnp.maximum(state.lam * 0.1, 1e-12), moved=(state.iterations > 0) | newton_start,
                             last=jnp.where(state.moved, jnp.max(jnp.abs(state.step)), 0.0))
        old = state._replace(S=jnp.zeros_like(state.S), lam=state.lam * 10.0, last=jnp.zeros_like(state.last))
        nxt = jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)
        return _propose(nxt, moving, lower, upper)._replace(iterations=state.iterations + 1)

    def cond(state: FrameState):
        # A NaN step (a failed factorisation) is not converged: it goes on, to be rejected.
        go_on = ~_converged(state, accuracy, lower, upper) & (state.lam < 1e8)
        return (state.iterations < max_iterations) & ((state.iterations == 0) | go_on)

    # The first pass evaluates x itself (a zero step against an infinite cost): one linearisation
    # in the compiled program instead of two.
    evaluated = jax.eval_shape(linearise, x)
    newton = isinstance(evaluated, Newton)
    point = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), evaluated.point) if newton else None
    size = 0 if newton else evaluated[0].shape[0]
    state = FrameState(x, jnp.zeros(size, x.dtype), jnp.asarray(jnp.inf, x.dtype), jnp.zeros((size, n), x.dtype),
                       jnp.zeros_like(x), jnp.zeros_like(S), S, jnp.asarray(1e-6, x.dtype), jnp.zeros_like(x),
                       jnp.asarray(0), jnp.asarray(False), jnp.zeros((), x.dtype), jnp.eye(n, dtype=x.dtype),
                       jnp.zeros(n, bool), point)
    state = jax.lax.while_loop(cond, body, state)
    converged = _converged(state, accuracy, lower, upper)
    return state._replace(x=jnp.where(converged, state.x + state.step, state.x)), converged
