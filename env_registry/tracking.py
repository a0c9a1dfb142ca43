"""Observation, reward and control of gait imitation, shared by the MJX and the MuJoCo-C environments.

Every function takes NumPy or JAX arrays and computes with the matching module (``jnp`` as soon
as one argument is a JAX array or tracer), so the brax environment and the gymnasium environment
run the same arithmetic.

Notation (one control step, frame t of the reference, h the standing height in m of the person
the reference trajectory comes from):

- sagittal joint angles ``a`` (hip flexion, knee angle, ankle angle, both sides; rad) and their
  reference ``â``;
- keypoints ``x_k`` (the paper's K = 23 MOVI keypoints, world frame, m), the pelvis keypoint ``x_p``, their
  world velocities ``ẋ_k`` (m/s, change over the control step), and the reference ``x̂, x̂_p, ẋ̂``.

Tracking errors (sums of squares; positions and velocities divided by h):

    e_a = Σ_j (a_j − â_j)²
    e_x = Σ_k ‖(x_k − x_p) − (x̂_k − x̂_p)‖² / h²
    e_ẋ = Σ_k ‖ẋ_k − ẋ̂_k‖² / h²

Exp form (the paper's product; default α0 = 1, α_a = 5, α_x = 2.5, α_ẋ = 0.17; between 0 and α0):

    r = α0 · exp(−α_a e_a) · exp(−α_x e_x) · exp(−α_ẋ e_ẋ)

MSE form (default α0 = 8, α_a = 2.5, α_x = 3.9, α_ẋ = 20, β = 0.005), on mean squared errors
(the sums above divided by their number of components: J_a angles, 3K position and 3K velocity
coordinates) and the action u (its components in [−1, 1]):

    r = α0 − α_a e_a / J_a − α_x e_x / 3K − α_ẋ e_ẋ / 3K − β Σ_i u_i²
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The paper's 23 keypoints, from the BML-MoVi marker set: heels, big toes, feet, ankles, knees,
# hips, elbows, shoulders, wrists, hands (right, left), head, pelvis and sternum.
KEYPOINT_SET = "bml_movi_87"
KEYPOINTS = (
    "rhee", "lhee", "rtoe", "ltoe", "rfoo", "lfoo", "rank", "lank", "rkne", "lkne", "rhip", "lhip",
    "relb", "lelb", "rsho", "lsho", "rwri", "lwri", "rhan", "lhan", "head", "pelv", "sternum",
)  # fmt: skip
PELVIS_KEYPOINT = "pelv"
SAGITTAL_COORDINATES = ("hip_flexion_r", "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "knee_angle_l", "ankle_angle_l")


def _xp(*arrays):
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


class Errors(NamedTuple):
    """The three tracking errors (see the module docstring): angle (rad²), position and velocity
    (dimensionless, divided by h²), each a sum over its elements."""

    angle: object
    position: object
    velocity: object


def tracking_errors(angles, ref_angles, keypoints, ref_keypoints, velocity, ref_velocity, pelvis: int, height) -> Errors:
    """Errors of a pose against its reference.

    Args:
        angles, ref_angles: (J_a,) sagittal joint angles, rad.
        keypoints, ref_keypoints: (K, 3) world positions, m; ``pelvis`` indexes the pelvis keypoint.
        velocity, ref_velocity: (K, 3) world velocities, m/s.
        height: the reference person's standing height, m.
    """
    xp = _xp(angles, keypoints, velocity)
    rel = keypoints - keypoints[pelvis]
    ref_rel = ref_keypoints - ref_keypoints[pelvis]
    return Errors(
        angle=xp.sum((angles - ref_angles) ** 2),
        position=xp.sum((rel - ref_rel) ** 2) / height**2,
        velocity=xp.sum((velocity - ref_velocity) ** 2) / height**2,
    )


def step_end(qpos, qvel, reward, pelvis_z, ref_pelvis_z, max_speed: float, fall_fraction: float):
    """``(stable, fallen)`` after a control step: stable when ``qpos`` (nq,), ``qvel`` (nv,) and
    the reward are finite and every ``|qvel|`` is below ``max_speed``; fallen when the pelvis
    height ``pelvis_z`` (m) is below ``fall_fraction`` of the reference's ``ref_pelvis_z`` (m)."""
    xp = _xp(qpos, qvel, reward)
    stable = xp.all(xp.isfinite(qpos)) & xp.all(xp.abs(qvel) < max_speed) & xp.isfinite(reward)
    return stable, pelvis_z < fall_fraction * ref_pelvis_z


def exp_reward(
    errors: Errors, alpha0: float = 1.0, alpha_angle: float = 5.0, alpha_position: float = 2.5, alpha_velocity: float = 0.17
):
    """The exp-form reward (module docstring): a product of the three exponentials."""
    xp = _xp(*errors)
    return (
        alpha0
        * xp.exp(-alpha_angle * errors.angle)
        * xp.exp(-alpha_position * errors.position)
        * xp.exp(-alpha_velocity * errors.velocity)
    )


def mse_reward(
    errors: Errors,
    action,
    n_angles: int,
    n_keypoints: int,
    alpha0: float = 8.0,
    alpha_angle: float = 2.5,
    alpha_position: float = 3.9,
    alpha_velocity: float = 20.0,
    beta: float = 0.005,
):
    """The MSE-form reward (module docstring); ``action`` is the (A,) policy output."""
    xp = _xp(*errors, action)
    return (
        alpha0
        - alpha_angle * errors.angle / n_angles
        - alpha_position * errors.position / (3 * n_keypoints)
        - alpha_velocity * errors.velocity / (3 * n_keypoints)
        - beta * xp.sum(action**2)
    )


def observation(
    pelvis_height,
    segment_xmat,
    segment_angvel,
    joint_qpos,
    qvel,
    keypoints,
    future_keypoints,
    ref_pelvis,
    pelvis: int,
    height,
):
    """The observation vector.

    Args:
        pelvis_height: pelvis origin height above the floor, m.
        segment_xmat: (S, 3, 3) world orientations of the moving segments.
        segment_angvel: (S, 3) their world angular velocities, rad/s.
        joint_qpos: (Q,) joint positions other than the pelvis's 6 coordinates.
        qvel: (V,) all generalised velocities.
        keypoints: (K, 3) current keypoints, m; ``pelvis`` indexes the pelvis keypoint.
        future_keypoints: (F, K, 3) the next F reference frames' keypoints, m.
        ref_pelvis: (3,) the reference pelvis keypoint at the current frame, m.
        height: the reference person's standing height, m.

    Returns:
        (1 + 9S + Q + V + 3K + 3FK,): pelvis height / h; the first two columns of every segment's
        orientation (6 each) and its angular velocity (3 each); joint positions; velocities;
        current keypoints relative to the pelvis / h; future reference keypoints relative to the
        current reference pelvis / h.
    """
    xp = _xp(segment_xmat, keypoints, future_keypoints)
    s = segment_xmat.shape[0]
    return xp.concatenate(
        [
            xp.reshape(pelvis_height / height, (1,)),
            xp.reshape(segment_xmat[:, :, :2], (s * 6,)),
            xp.reshape(segment_angvel, (s * 3,)),
            joint_qpos,
            qvel,
            xp.reshape((keypoints - keypoints[pelvis]) / height, (-1,)),
            xp.reshape((future_keypoints - ref_pelvis) / height, (-1,)),
        ]
    )


def torque_control(action, n_joints: int):
    """Direct control: the action is the (J + 6,) motor controls (joint torques, then the pelvis
    residual wrench), clipped into [−1, 1]."""
    xp = _xp(action)
    return xp.clip(action, -1.0, 1.0)


def pd_control(action, q, qdot, joint_range, gear, kp_max: float, damping_ratio_time: float):
    """PD control: the action is (2J + 6,): setpoints, gains, pelvis residual wrench, each in [−1, 1].

    Setpoint q* = mid + a·half-range of each joint's range; stiffness kp = kp_max·(g + 1)/2 (N·m/rad);
    damping kd = kp·``damping_ratio_time`` (s). Torque τ = kp (q* − q) − kd q̇, sent to the motors as
    τ / gear clipped into [−1, 1]; the residual wrench is passed through.

    Args:
        q, qdot: (J,) joint positions and velocities; joint_range (J, 2); gear (J,).
    """
    xp = _xp(action, q, qdot)
    action = xp.clip(action, -1.0, 1.0)
    n = q.shape[0]
    lo, hi = joint_range[:, 0], joint_range[:, 1]
    target = (lo + hi) / 2 + action[:n] * (hi - lo) / 2
    kp = kp_max * (action[n : 2 * n] + 1.0) / 2
    torque = kp * (target - q) - kp * damping_ratio_time * qdot
    return xp.concatenate([xp.clip(torque / gear, -1.0, 1.0), action[2 * n :]])


def reference_pd_control(
    action,
    q,
    qdot,
    ref_q,
    ref_qdot,
    gear,
    kp_max: float,
    damping_time: float,
    setpoint_range: float,
    pelvis_q,
    pelvis_qdot,
    ref_pelvis_q,
    ref_pelvis_qdot,
    pelvis_gear,
    assist_kp,
    assist_kd,
):
    """PD control around the reference, with a pelvis assist: the action is (2J + 6,) in [−1, 1].

    Joints: setpoint q* = q̂ + a·``setpoint_range`` (q̂ the reference's next frame), stiffness
    kp = kp_max·(g + 1)/2 (N·m/rad), damping kd = kp·``damping_time`` towards the reference
    velocity: τ = kp (q* − q) + kd (q̂̇ − q̇), sent as τ / gear clipped into [−1, 1]. The zero
    action tracks the reference at half the largest stiffness.

    Pelvis: the assist, a PD of the six pelvis coordinates towards the reference's,
    w = assist_kp (p̂ − p) + assist_kd (p̂̇ − ṗ) (N, N·m), plus the policy's wrench: controls
    w / pelvis_gear + a, clipped into [−1, 1]. Both count as residual force.

    Args:
        q, qdot, ref_q, ref_qdot, gear: (J,) joint positions and velocities, their reference, motor gears.
        pelvis_q, pelvis_qdot, ref_pelvis_q, ref_pelvis_qdot, pelvis_gear, assist_kp, assist_kd: (6,).
    """
    xp = _xp(action, q, qdot)
    action = xp.clip(action, -1.0, 1.0)
    n = q.shape[0]
    target = ref_q + action[:n] * setpoint_range
    kp = kp_max * (action[n : 2 * n] + 1.0) / 2
    torque = kp * (target - q) + kp * damping_time * (ref_qdot - qdot)
    assist = assist_kp * (ref_pelvis_q - pelvis_q) + assist_kd * (ref_pelvis_qdot - pelvis_qdot)
    return xp.concatenate([xp.clip(torque / gear, -1.0, 1.0), xp.clip(assist / pelvis_gear + action[2 * n :], -1.0, 1.0)])


def residual_force_fraction(translation_controls, residual_force: float, body_weight: float):
    """Magnitude of the pelvis residual force, as a fraction of body weight, from the (3,)
    controls of the three pelvis translation motors (``residual_force`` N per unit control)."""
    xp = _xp(translation_controls)
    return xp.sqrt(xp.sum((translation_controls * residual_force) ** 2)) / body_weight


# Observations are clipped so that the state just before an unstable episode ends cannot
# poison a running observation normaliser.
OBSERVATION_BOUND = 100.0


def bounded(obs):
    """``obs`` with NaN set to 0 and values clipped into ±OBSERVATION_BOUND."""
    xp = _xp(obs)
    return xp.clip(xp.nan_to_num(obs), -OBSERVATION_BOUND, OBSERVATION_BOUND)


# An episode starts with every foot at least this far above the floor (m): at exactly zero
# distance, whether a contact is active hinges on rounding, and MJX and MuJoCo C may decide it
# differently (a reference whose stance foot is on the floor would start there).
RESET_CLEARANCE_M = 1e-4


def lowest_foot_point(geom_z, geom_radius):
    """Height (m) of the lowest point of the foot contact spheres (centres (G,) m, radii (G,) m)."""
    xp = _xp(geom_z)
    return xp.min(geom_z - geom_radius)
