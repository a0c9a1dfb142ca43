"""The Schur-complement Levenberg–Marquardt of bundle adjustment against dense least squares.

A small bundle-adjustment problem (3D points seen by three pinhole cameras whose poses and
focal lengths are shared, one point per "frame") is solved by :mod:`mjx_biomech.fitting.solvers.schur_lm` and by
SciPy's dense ``least_squares`` on the stacked vector: the oracle for the optimum. The damped
step itself must equal the dense linear solve of ``(JᵀJ + λ D) δ = −Jᵀr``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from mjx_biomech.body.rotations import rodrigues
from mjx_biomech.fitting.solvers import schur_lm as bundle

jax.config.update("jax_enable_x64", True)

F, CAMS = 12, 3


def residual(q, p, obs, args):
    """Reprojection of point ``q`` (3,) by cameras ``p`` = per camera (rvec 3, centre 3), focal 800 px."""
    cams = p.reshape(CAMS, 6)
    R = jax.vmap(rodrigues)(cams[:, :3])
    x = jnp.einsum("cij,cj->ci", R, q[None] - cams[:, 3:6])
    uv = 800.0 * x[:, :2] / x[:, 2:3]
    return uv.ravel() - obs


def prior(p, args):
    # The gauge: camera 1's pose and camera 2's centre weakly held to where they started.
    start = args
    return 1e3 * jnp.concatenate([(p - start)[:6], (p - start)[9:12]])


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    cams = []
    for k in range(CAMS):
        a = 2 * np.pi * k / CAMS
        centre = np.array([4 * np.cos(a), 4 * np.sin(a), 0.5])
        # Look at the origin: the camera's z axis points from the centre to it.
        z = -centre / np.linalg.norm(centre)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        rvec = Rotation.from_matrix(np.stack([x, y, z])).as_rotvec()
        cams.append(np.concatenate([rvec, centre]))
    p_true = np.concatenate(cams)
    q_true = rng.normal(scale=1.0, size=(F, 3))
    obs = np.stack([np.asarray(residual(jnp.asarray(q), jnp.asarray(p_true), 0.0, None)) for q in q_true])
    obs = obs + rng.normal(scale=0.5, size=obs.shape)
    p0 = p_true.copy()
    p0[6:] += rng.normal(scale=[0.02, 0.02, 0.02, 0.05, 0.05, 0.05] * 2)
    q0 = q_true + rng.normal(scale=0.02, size=q_true.shape)
    return dict(p0=jnp.asarray(p0), q0=jnp.asarray(q0), obs=jnp.asarray(obs), start=jnp.asarray(p_true))


def _stacked(problem):
    """The same problem on one stacked vector ``[q.ravel(), p]``: residual function and Jacobian."""

    def fun(x):
        q, p = x[: F * 3].reshape(F, 3), x[F * 3 :]
        r = jax.vmap(lambda qf, of: residual(qf, p, of, None))(q, problem["obs"]).ravel()
        return jnp.concatenate([r, prior(p, problem["start"])])

    return fun, jax.jacfwd(fun)


def test_the_damped_schur_step_equals_the_dense_damped_solve(problem):
    q, p = problem["q0"], problem["p0"]
    eq = bundle.normal_equations(residual, prior, q, p, problem["obs"], problem["start"])
    lam = 0.37
    dq, dp = bundle.damped_step(eq, lam)
    fun, jac = _stacked(problem)
    x = jnp.concatenate([q.ravel(), p])
    J, r = jac(x), fun(x)
    N = J.T @ J
    # Marquardt damping of the same blocks: the frame blocks and the shared block.
    D = np.diag(np.asarray(N)).copy()
    delta = np.linalg.solve(np.asarray(N) + lam * np.diag(D), -np.asarray(J.T @ r))
    np.testing.assert_allclose(np.asarray(dq).ravel(), delta[: F * 3], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dp), delta[F * 3 :], rtol=1e-8, atol=1e-12)
    assert float(eq.cost) == pytest.approx(0.5 * float(r @ r), rel=1e-12)


def test_schur_levenberg_marquardt_reaches_the_dense_least_squares_optimum(problem):
    fun, jac = _stacked(problem)
    x0 = np.concatenate([np.asarray(problem["q0"]).ravel(), np.asarray(problem["p0"])])
    ref = least_squares(lambda x: np.asarray(fun(jnp.asarray(x))), x0, jac=lambda x: np.asarray(jac(jnp.asarray(x))),
                        method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    q, p, history = bundle.schur_levenberg_marquardt(residual, prior, problem["q0"], problem["p0"], problem["obs"],
                                                     problem["start"], iterations=50, rtol=1e-14)
    assert all(b <= a for a, b in zip(history, history[1:]))
    assert history[-1] == pytest.approx(0.5 * float(ref.fun @ ref.fun), rel=1e-9)
    np.testing.assert_allclose(np.asarray(p), ref.x[F * 3 :], atol=1e-6)
    np.testing.assert_allclose(np.asarray(q).ravel(), ref.x[: F * 3], atol=1e-6)
    # The start was wrong: the solver moved the cameras by centimetres, not by rounding.
    assert np.max(np.abs(np.asarray(p) - np.asarray(problem["p0"]))) > 0.01
