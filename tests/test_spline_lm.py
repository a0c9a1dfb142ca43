"""The banded spline Levenberg–Marquardt against dense linear algebra and SciPy's least squares.

A small problem with the camera fit's structure: two trials, each a 3D point moving along a
cubic B-spline (its control points the per-trial variables), seen by three pinhole cameras
whose poses are shared. The damped step must equal the dense solve of ``(JᵀJ + λ D) δ = −Jᵀr``
on the stacked vector, the banded factor the dense Cholesky factor, and the optimum SciPy's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from mjx_biomech.body.rotations import rodrigues
from mjx_biomech.fitting.solvers import spline_lm

jax.config.update("jax_enable_x64", True)

CAMS = 3
# Two trials: (frames, control points, duration s).
TRIALS = ((25, 9, 1.0), (14, 6, 0.5))


def residual(u, p, obs, args):
    """Reprojection (CAMS·2,) px of the point ``u`` (3,) by cameras ``p`` (rvec 3, centre 3 each)."""
    cams = p.reshape(CAMS, 6)
    R = jax.vmap(rodrigues)(cams[:, :3])
    x = jnp.einsum("cij,cj->ci", R, u[None] - cams[:, 3:6])
    return (800.0 * x[:, :2] / x[:, 2:3]).ravel() - obs


def prior(p, start):
    # The gauge: camera 1's pose and camera 2's centre held near where they started.
    return 1e3 * jnp.concatenate([(p - start)[:6], (p - start)[9:12]])


def _basis():
    index, weights, first = [], [], 0
    for frames, K, duration in TRIALS:
        i, w = spline_lm.spline_basis(np.linspace(0, duration, frames), K, 0.0, duration, first)
        index.append(i)
        weights.append(w)
        first += K
    F = sum(t[0] for t in TRIALS)
    # The offset: a fixed line added to every frame (as the fit adds the root's).
    offset = np.linspace(0, 0.3, F)[:, None] * np.array([1.0, -0.5, 0.2])
    return spline_lm.Basis(jnp.asarray(np.concatenate(index)), jnp.asarray(np.concatenate(weights)), jnp.asarray(offset)), first


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    cams = []
    for k in range(CAMS):
        a = 2 * np.pi * k / CAMS
        centre = np.array([4 * np.cos(a), 4 * np.sin(a), 0.5])
        z = -centre / np.linalg.norm(centre)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        rvec = Rotation.from_matrix(np.stack([x, np.cross(z, x), z])).as_rotvec()
        cams.append(np.concatenate([rvec, centre]))
    p_true = np.concatenate(cams)
    basis, K = _basis()
    c_true = rng.normal(scale=0.5, size=(K, 3))
    u_true = spline_lm.frame_values(jnp.asarray(c_true), basis)
    obs = jax.vmap(lambda u: residual(u, jnp.asarray(p_true), 0.0, None))(u_true)
    obs = obs + rng.normal(scale=0.5, size=obs.shape)
    p0 = p_true.copy()
    p0[6:] += rng.normal(scale=[0.02, 0.02, 0.02, 0.05, 0.05, 0.05] * 2)
    c0 = c_true + rng.normal(scale=0.03, size=c_true.shape)
    return dict(p0=jnp.asarray(p0), c0=jnp.asarray(c0), obs=obs, start=jnp.asarray(p_true), basis=basis, K=K)


def _stacked(problem):
    """The problem on one stacked vector ``[c.ravel(), p]``: residual function and Jacobian."""
    K, basis = problem["K"], problem["basis"]

    def fun(x):
        c, p = x[: K * 3].reshape(K, 3), x[K * 3 :]
        u = spline_lm.frame_values(c, basis)
        r = jax.vmap(lambda uf, of: residual(uf, p, of, None))(u, problem["obs"]).ravel()
        return jnp.concatenate([r, prior(p, problem["start"])])

    return fun, jax.jacfwd(fun)


def _equations(problem):
    return spline_lm.banded_equations(residual, prior, problem["c0"], problem["p0"], problem["obs"], problem["basis"],
                                      problem["start"])


def _dense_band(D):
    """The symmetric matrix whose lower band is ``D`` (K, 4, n, n)."""
    K, _, n, _ = D.shape
    M = np.zeros((K * n, K * n))
    for k in range(K):
        for d in range(4):
            if k - d >= 0:
                M[k * n:(k + 1) * n, (k - d) * n:(k - d + 1) * n] = D[k, d]
    return np.tril(M) + np.tril(M, -1).T


def test_the_band_holds_the_normal_matrix_and_its_cholesky_factor(problem):
    eq = _equations(problem)
    fun, jac = _stacked(problem)
    x = jnp.concatenate([problem["c0"].ravel(), problem["p0"]])
    J = np.asarray(jac(x))
    n_c = problem["K"] * 3
    H = J.T @ J
    np.testing.assert_allclose(_dense_band(np.asarray(eq.D)), H[:n_c, :n_c], rtol=0, atol=1e-8 * np.abs(H).max())
    np.testing.assert_allclose(np.asarray(eq.E).reshape(n_c, -1), H[:n_c, n_c:], rtol=0, atol=1e-8 * np.abs(H).max())
    # Beyond the band the normal matrix is zero: the structure the solver relies on.
    band = _dense_band(np.ones_like(np.asarray(eq.D))) != 0
    assert np.all(H[:n_c, :n_c][~band] == 0)
    L = spline_lm.banded_cholesky(eq.D.at[:, 0].add(jnp.eye(3)))
    dense_L = np.linalg.cholesky(_dense_band(np.asarray(eq.D)) + np.eye(n_c))
    np.testing.assert_allclose(np.tril(_dense_band(np.asarray(L)) * np.tril(np.ones((n_c, n_c)))), dense_L, atol=1e-9)


def test_the_damped_step_equals_the_dense_damped_solve(problem):
    eq = _equations(problem)
    lam = 0.37
    dc, dp = spline_lm.damped_step(eq, lam)
    fun, jac = _stacked(problem)
    x = jnp.concatenate([problem["c0"].ravel(), problem["p0"]])
    J, r = np.asarray(jac(x)), np.asarray(fun(x))
    H = J.T @ J
    dense = np.linalg.solve(H + lam * np.eye(len(H)), -J.T @ r)
    step = np.concatenate([np.asarray(dc).ravel(), np.asarray(dp)])
    np.testing.assert_allclose(step, dense, rtol=0, atol=1e-8 * np.abs(dense).max())
    assert np.isclose(float(eq.cost), 0.5 * np.sum(r * r), rtol=1e-12)


def test_the_optimum_equals_scipy_least_squares(problem):
    c, p, history = spline_lm.spline_levenberg_marquardt(
        residual, prior, problem["c0"], problem["p0"], problem["obs"], problem["basis"], problem["start"],
        iterations=50, rtol=1e-14)
    assert all(b <= a for a, b in zip(history, history[1:]))
    fun, jac = _stacked(problem)
    x0 = np.concatenate([np.asarray(problem["c0"]).ravel(), np.asarray(problem["p0"])])
    ref = least_squares(lambda x: np.asarray(fun(jnp.asarray(x))), x0, jac=lambda x: np.asarray(jac(jnp.asarray(x))),
                        method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert abs(history[-1] - ref.cost) <= 1e-9 * ref.cost
    np.testing.assert_allclose(np.concatenate([np.asarray(c).ravel(), np.asarray(p)]), ref.x, atol=1e-6)


def test_progress_moves_every_iteration(problem):
    calls = []
    spline_lm.spline_levenberg_marquardt(residual, prior, problem["c0"], problem["p0"], problem["obs"], problem["basis"],
                                         problem["start"], iterations=4, rtol=0.0,
                                         progress=lambda *a: calls.append(a[:3]))
    assert calls[0] == ("lm", 0, 4)
    assert [k for _, k, _ in calls[1:]] == list(range(1, len(calls)))


@pytest.fixture(scope="module")
def camera_fit():
    """A short synthetic capture of the bundled model and the camera fit's problem on it, away
    from any optimum (poses, scales, offsets and camera moves perturbed)."""
    import mjx_biomech
    from mjx_biomech.capture import synthetic
    from mjx_biomech.fitting import anthropometry
    from mjx_biomech.fitting.variables import FitSetup, TrialArrays, initial_variables

    markers = "coco17"
    model = mjx_biomech.load_model()
    times, coords = synthetic.walking(model, duration=0.3, fps=30.0, seed=1)
    person = synthetic.person(model, seed=1, marker_set=markers, offset_range_m=(0.0, 0.0))
    rig = synthetic.ring_rig()
    cap = synthetic.capture(model, person, times, coords, rig, markers, seed=2, dropout=0.2).aligned_to(rig)
    setup = FitSetup(model=model, marker_set=markers, site_ids=tuple(int(i) for i in model.marker_site_ids(markers)),
                     scale_prior=tuple(n != "overall" for n in model.scale_param_names), delta_px=10.0, offset_weight=1.0,
                     scale_weight=1.0, smooth_weight=0.0, camera_weight=0.1, points=30,
                     scale_sd=tuple(float(x) for x in np.nan_to_num(anthropometry.group_sd(model), nan=0.0)),
                     mirror=tuple(map(tuple, anthropometry.mirror_groups(model).tolist())), body_weight=100.0)
    trials = (TrialArrays.from_capture(cap, jnp.float64),)
    v = initial_variables(model, [cap], rig, markers, "spline", 12.0, 8, 1, jax.random.PRNGKey(0), jnp.float64)
    return setup, rig, trials, v


@pytest.mark.parametrize("free_cameras,frames", [(False, None), (True, None), (True, 41)])
def test_the_camera_fit_assembles_the_normal_equations_of_its_residuals(camera_fit, free_cameras, frames):
    # The structured assembly (closed-form pose Jacobian, per-point and per-camera blocks, the
    # gauge chained in) equals JᵀJ, Jᵀr of jax.jacfwd on the same residuals: one Huber residual
    # beyond its threshold and some points unseen included. With 41 frames (the capture's
    # repeated) the assembly pads them to whole batches of 32, which must add nothing.
    from mjx_biomech.fitting import bundle_adjustment as ba
    from mjx_biomech.fitting.solvers import schur_lm

    setup, rig, trials, v = camera_fit
    rng = np.random.default_rng(3)
    u, data, cmap = ba.frames_of(v, trials)
    if frames is not None:
        take = np.arange(frames) % u.shape[0]
        u, data = u[take], jax.tree_util.tree_map(lambda x: x[take], data)
    p = ba.shared_vector(v, free_cameras)
    p = p + jnp.asarray(rng.normal(scale=0.05, size=p.shape))
    u = u + jnp.asarray(rng.normal(scale=0.05, size=u.shape))
    args = (setup, rig, cmap, free_cameras)
    ref = jax.jit(lambda u, p: schur_lm.normal_equations(ba._residual, ba.prior, u, p, data, args))(u, p)
    new = jax.jit(lambda u, p: ba.normal_equations(u, p, data, args))(u, p)
    r = jax.vmap(lambda uf, df: ba._residual(uf, p, df, args))(u, data)
    assert float(jnp.max(jnp.abs(r))) > 10.0 * float(jnp.sqrt(data[3][0]))  # a residual in Huber's linear part
    for name, a, b in zip(ref._fields, ref, new):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12 * max(np.abs(a).max(), 1.0), err_msg=name)
