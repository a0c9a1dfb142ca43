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


def axis_angle_to_mat(axis: np.ndarray, angle) -> Array:
    c, s = jnp.cos(angle), jnp.sin(angle)
    principal = np.flatnonzero(np.abs(axis) > 1 - 1e-12)
    if principal.size == 1:
        # Rotation about a body axis: write the matrix directly (a much smaller program to compile).
        k = int(principal[0])
        s = s * np.sign(axis[k])
        i, j = (k + 1) % 3, (k + 2) % 3
        one, zero = jnp.ones_like(c), jnp.zeros_like(c)
        rows = [[None] * 3 for _ in range(3)]
        rows[k][k], rows[k][i], rows[k][j] = one, zero, zero
        rows[i][k], rows[j][k] = zero, zero
        rows[i][i], rows[i][j], rows[j][i], rows[j][j] = c, -s, s, c
        return jnp.stack([jnp.stack(r) for r in rows])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + s * k + (1 - c) * (k @ k)
