"""Rotations: quaternions (w, x, y, z), rotation vectors and axis-angle, in NumPy (static model
data) and JAX (traced values)."""

from __future__ import annotations

import jax.numpy as jnp
import mujoco
import numpy as np
from jax import Array


def quat_to_mat_np(quat) -> np.ndarray:
    """(3, 3) rotation matrix of a quaternion (w, x, y, z), by MuJoCo's own conversion."""
    r = np.zeros(9)
    mujoco.mju_quat2Mat(r, np.asarray(quat, float))
    return r.reshape(3, 3)


def rotvec_to_quat(v: Array) -> Array:
    """Unit quaternion (w, x, y, z) of a rotation vector; smooth (and differentiable) at 0."""
    theta2 = jnp.sum(v * v)
    safe = jnp.where(theta2 > 1e-12, theta2, 1.0)
    theta = jnp.sqrt(safe)
    half_sinc = jnp.where(theta2 > 1e-12, jnp.sin(theta / 2) / theta, 0.5 - theta2 / 48.0)
    w = jnp.where(theta2 > 1e-12, jnp.cos(theta / 2), 1.0 - theta2 / 8.0)
    return jnp.concatenate([w[None], half_sinc * v])


def quat_to_mat(q) -> Array:
    q = q / jnp.linalg.norm(q)
    w, x, y, z = q[0], q[1], q[2], q[3]
    return jnp.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def quats_to_mats_np(quats) -> np.ndarray:
    """(N, 3, 3) rotation matrices of (N, 4) quaternions, by MuJoCo's own conversion."""
    quats = np.asarray(quats, float).reshape(-1, 4)
    return np.stack([quat_to_mat_np(q) for q in quats]) if len(quats) else np.zeros((0, 3, 3))


def quat_mul(a, b, xp=jnp):
    """(..., 4) Hamilton product ``a b`` of quaternions (w, x, y, z); ``xp`` is numpy or jax.numpy."""
    aw, av = a[..., :1], a[..., 1:]
    bw, bv = b[..., :1], b[..., 1:]
    w = aw * bw - xp.sum(av * bv, axis=-1, keepdims=True)
    return xp.concatenate([w, aw * bv + bw * av + xp.cross(av, bv)], axis=-1)


def mat_to_quat(mat, xp=jnp):
    """(..., 4) unit quaternions (w, x, y, z) of (..., 3, 3) rotation matrices.

    MuJoCo's ``mju_mat2Quat`` (the largest component is computed from the diagonal, the others
    from the off-diagonal terms), written without branches: every candidate's square root is
    kept away from 0 so that the candidates not selected leave finite gradients.
    """
    m = mat
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    diag = [m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]]
    # Candidate k computes component k (w, x, y, z) from the diagonal.
    big = [
        1 + trace,
        1 + diag[0] - diag[1] - diag[2],
        1 - diag[0] + diag[1] - diag[2],
        1 - diag[0] - diag[1] + diag[2],
    ]
    odd = {  # (i, j): 4 q_i q_j from the off-diagonal entries
        (0, 1): m[..., 2, 1] - m[..., 1, 2],
        (0, 2): m[..., 0, 2] - m[..., 2, 0],
        (0, 3): m[..., 1, 0] - m[..., 0, 1],
        (1, 2): m[..., 0, 1] + m[..., 1, 0],
        (1, 3): m[..., 0, 2] + m[..., 2, 0],
        (2, 3): m[..., 1, 2] + m[..., 2, 1],
    }
    candidates = []
    for k in range(4):
        qk = 0.5 * xp.sqrt(xp.maximum(big[k], 1e-12))
        comps = [qk if i == k else 0.25 * odd[(min(i, k), max(i, k))] / qk for i in range(4)]
        candidates.append(xp.stack(comps, axis=-1))
    # mju_mat2Quat's choice: w if the trace is positive, else the largest diagonal entry.
    pick_x = (diag[0] > diag[1]) & (diag[0] > diag[2])
    pick_y = diag[1] > diag[2]
    q = xp.where(
        (trace > 0)[..., None],
        candidates[0],
        xp.where(pick_x[..., None], candidates[1], xp.where(pick_y[..., None], candidates[2], candidates[3])),
    )
    return q / xp.sqrt(xp.sum(q * q, axis=-1, keepdims=True))


def quat_between(a, b, xp=jnp):
    """(..., 4) the smallest rotation taking unit vectors ``a`` to ``b`` (..., 3); not for opposite vectors."""
    q = xp.concatenate([1 + xp.sum(a * b, axis=-1, keepdims=True), xp.cross(a, b)], axis=-1)
    return q / xp.sqrt(xp.sum(q * q, axis=-1, keepdims=True))


# Below this squared angle (rad²) the Rodrigues coefficients use their Taylor series: the
# closed forms divide by θ and θ², whose gradients are NaN at θ = 0.
_SMALL_ANGLE_SQ = 1e-6


def rodrigues(rvec: Array) -> Array:
    """Rotation matrices (..., 3, 3) from rotation vectors (..., 3) (axis × angle, rad).

    ``R = I + a K + b K²`` with ``K = [rvec]×``, ``a = sin θ / θ``, ``b = (1 − cos θ)/θ²``; near
    θ = 0 the coefficients switch to their Taylor series, so values and gradients stay exact
    and finite there.
    """
    rvec = jnp.asarray(rvec)
    theta_sq = jnp.sum(rvec**2, axis=-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    # Where the Taylor branch is used, feed the closed form a harmless value: jnp.where passes
    # the unused branch's NaN gradients through otherwise.
    safe_sq = jnp.where(small, 1.0, theta_sq)
    theta = jnp.sqrt(safe_sq)
    half_sin = jnp.sin(theta / 2)
    a = jnp.where(small, 1 - theta_sq / 6 + theta_sq**2 / 120, jnp.sin(theta) / theta)
    # 2 sin²(θ/2) = 1 − cos θ without the cancellation of the latter for small θ.
    b = jnp.where(small, 0.5 - theta_sq / 24 + theta_sq**2 / 720, 2 * half_sin**2 / safe_sq)
    x, y, z = rvec[..., 0], rvec[..., 1], rvec[..., 2]
    zero = jnp.zeros_like(x)
    K = jnp.stack([jnp.stack([zero, -z, y], -1), jnp.stack([z, zero, -x], -1), jnp.stack([-y, x, zero], -1)], -2)
    eye = jnp.eye(3, dtype=K.dtype)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)
