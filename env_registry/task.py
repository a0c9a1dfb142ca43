"""A gait-imitation task: configuration, simulated body, reference and tracking targets, built once
and shared by the MJX (brax) and the MuJoCo-C (gymnasium) environments."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import mujoco
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.errors import InputError

from . import people, tracking
from .body import PELVIS_COORDINATES, Body, build_body
from .config import GaitImitationConfig
from .reference import Reference, Targets, frames_needed, load_reference, targets


@dataclass(frozen=True)
class GaitTask:
    """Everything an environment needs, as NumPy arrays (see :class:`.reference.Targets`).

    ``params`` are the trajectories' people (stacked, :mod:`.people`): the reference's, or the
    simulated body itself for every trajectory when ``config.per_person_body`` is off or the
    reference names no person. ``models`` compiles and keeps their MuJoCo models."""

    config: GaitImitationConfig
    body: Body
    reference: Reference
    targets: Targets
    params: BodyParams
    models: people.PersonModels = dataclasses.field(compare=False, repr=False)

    @property
    def num_joints(self) -> int:
        return int(self.body.joint_actuators.size)

    @property
    def action_size(self) -> int:
        j = self.num_joints
        return (2 * j if self.config.control in ("pd", "reference_pd") else j) + 6

    @property
    def observation_size(self) -> int:
        m = self.body.mj_model
        k = len(self.targets.keypoint_names)
        return 1 + 9 * len(self.body.segments) + (m.nq - 6) + m.nv + 3 * k + 3 * k * self.config.future_frames

    @property
    def non_pelvis_qpos(self) -> np.ndarray:
        """qpos addresses of every joint but the pelvis's six coordinates (observed as is)."""
        m = self.body.mj_model
        pelvis = {m.jnt_qposadr[m.joint(c).id] for c in PELVIS_COORDINATES}
        return np.array([i for i in range(m.nq) if i not in pelvis], dtype=int)

    @property
    def pelvis_ty_qpos(self) -> int:
        m = self.body.mj_model
        return int(m.jnt_qposadr[m.joint("pelvis_ty").id])

    @property
    def dt(self) -> float:
        return 1.0 / self.config.fps

    @property
    def body_weight(self) -> float:
        """Weight of the simulated body, N."""
        return self.weight(self.body.mj_model.body_mass)

    def weight(self, body_mass) -> float:
        """Weight (N) of a body of segment masses ``body_mass`` (nbody,) kg."""
        return body_mass.sum() * float(np.linalg.norm(self.body.mj_model.opt.gravity))

    def person_model(self, n: int) -> mujoco.MjModel:
        """The MuJoCo model of trajectory ``n``'s person (the simulated body itself when
        ``config.per_person_body`` is off), compiled once per person."""
        return self.models(people.person(self.params, n))

    def residual_force_fraction(self, ctrl, body_weight=None):
        """Magnitude of the pelvis residual force from the motor controls ``ctrl`` (nu,), as a
        fraction of ``body_weight`` (N; default the simulated body's)."""
        weight = self.body_weight if body_weight is None else body_weight
        return tracking.residual_force_fraction(ctrl[self.body.pelvis_actuators[:3]], self.config.residual_force, weight)

    def last_start(self, length):
        """The last frame an episode may start at, or step from, on a trajectory of ``length`` frames."""
        return length - frames_needed(self.config.future_frames)

    def step_errors(self, targets: Targets, n, frame, qpos, keypoints, keypoints0) -> tracking.Errors:
        """Tracking errors after the step to ``frame`` of trajectory ``n``: ``qpos`` (nq,) and the
        keypoints (K, 3) m after the step, ``keypoints0`` before it (velocity: their change over
        ``dt``). ``targets`` is :attr:`targets`, or the same with JAX arrays."""
        t = self.targets
        return tracking.tracking_errors(
            qpos[t.angle_qpos],
            targets.angles[n, frame],
            keypoints,
            targets.keypoints[n, frame],
            (keypoints - keypoints0) / self.dt,
            targets.keypoint_velocity[n, frame],
            t.pelvis_keypoint,
            targets.heights[n],
        )

    def step_end(self, targets: Targets, n, frame, qpos, qvel, pelvis_z, reward):
        """``(stable, fallen, out_of_frames)`` after the step to ``frame`` of trajectory ``n``
        (:func:`.tracking.step_end`; out of frames past :meth:`last_start`)."""
        c = self.config
        ref_pelvis_z = targets.pelvis_height[n, frame]
        stable, fallen = tracking.step_end(qpos, qvel, reward, pelvis_z, ref_pelvis_z, c.max_speed, c.fall_fraction)
        return stable, fallen, frame > self.last_start(targets.lengths[n])

    def reward(self, errors: tracking.Errors, action):
        c = self.config
        if c.reward == "exp":
            return tracking.exp_reward(errors, c.exp_alpha0, c.exp_alpha_angle, c.exp_alpha_position, c.exp_alpha_velocity)
        return tracking.mse_reward(
            errors,
            action,
            n_angles=len(tracking.SAGITTAL_COORDINATES),
            n_keypoints=len(self.targets.keypoint_names),
            alpha0=c.mse_alpha0,
            alpha_angle=c.mse_alpha_angle,
            alpha_position=c.mse_alpha_position,
            alpha_velocity=c.mse_alpha_velocity,
            beta=c.mse_beta,
        )

    def controls(self, action, qpos, qvel, ref_qpos=None, ref_qvel=None, mass=None, height=None, assist=1.0):
        """(J + 6,) motor controls (joint motors, then pelvis motors) from the policy's action.

        ``qpos`` (nq,), ``qvel`` (nv,): the state; ``reference_pd`` only: ``ref_qpos``, ``ref_qvel``,
        the reference's next frame; ``mass`` (kg, total) and ``height`` (m) of the person; ``assist``,
        the pelvis assist's strength (:meth:`assist_strength`)."""
        c, b = self.config, self.body
        q, qdot = qpos[b.joint_qpos], qvel[b.joint_qvel]
        if c.control == "pd":
            return tracking.pd_control(action, q, qdot, b.joint_range, b.gear, c.kp_max, c.damping_time)
        if c.control == "reference_pd":
            m = b.mj_model
            pq, pv = self.pelvis_addresses
            omega = 2 * np.pi * c.assist_frequency
            # Translations: the person's mass; rotations: a mass at a quarter of their height.
            translation = (np.arange(6) < 3).astype(float)
            inertia = mass * (translation + (1.0 - translation) * (height / 4) ** 2)
            return tracking.reference_pd_control(
                action, q, qdot, ref_qpos[b.joint_qpos], ref_qvel[b.joint_qvel], b.gear, c.kp_max, c.damping_time,
                c.setpoint_range, qpos[pq], qvel[pv], ref_qpos[pq], ref_qvel[pv],
                m.actuator_gear[b.pelvis_actuators, 0], assist * inertia * omega**2, assist * 2 * inertia * omega,
            )  # fmt: skip
        return tracking.torque_control(action, self.num_joints)

    def assist_strength(self, step):
        """Strength of the pelvis assist (fraction of ``assist_frequency``'s) after an environment's
        ``step`` control steps: from 1 down to ``assist_final`` over ``assist_anneal_steps``."""
        c = self.config
        if c.assist_anneal_steps == 0:
            return c.assist_final
        xp = tracking._xp(step)
        return c.assist_final + (1.0 - c.assist_final) * xp.clip(1.0 - step / c.assist_anneal_steps, 0.0, 1.0)

    @functools.cached_property
    def pelvis_addresses(self) -> tuple[np.ndarray, np.ndarray]:
        """(6,) qpos and (6,) dof addresses of the pelvis coordinates, in PELVIS_COORDINATES order
        (looked up by name once: :meth:`controls` reads them every physics step)."""
        m = self.body.mj_model
        joints = [m.joint(c).id for c in PELVIS_COORDINATES]
        return m.jnt_qposadr[joints].astype(int), m.jnt_dofadr[joints].astype(int)


def make_task(config: GaitImitationConfig | None = None, reference="synthetic", **overrides) -> GaitTask:
    """Build a task: ``overrides`` replace fields of ``config`` (e.g. ``future_frames=2``);
    ``reference`` is anything :func:`.reference.load_reference` takes, or a :class:`Reference`."""
    config = config or GaitImitationConfig()
    if overrides:
        known = {f.name for f in dataclasses.fields(GaitImitationConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"environment arguments: unknown {unknown}; expected 'reference', 'config' or some of {sorted(known)}")
        config = dataclasses.replace(config, **overrides)
    body = build_body(
        config.model,
        fps=config.fps,
        substeps=config.substeps,
        residual_force=config.residual_force,
        residual_torque=config.residual_torque,
        solver_iterations=config.solver_iterations,
        armature=config.armature,
        torque_scale=config.torque_scale,
    )
    missing = [n for n in tracking.SAGITTAL_COORDINATES if n not in body.model.coordinate_names]
    if missing:
        raise InputError(f"model: {config.model}: the tracked sagittal coordinates {missing} are not in the model")
    ref = load_reference(reference, body, config.fps)
    if abs(ref.fps - config.fps) > 1e-9:
        raise InputError(f"reference: {ref.fps} frames/s; the environment runs at fps={config.fps}")
    n = ref.num_trajectories
    if ref.params is not None:
        ref = dataclasses.replace(ref, params=people.check(body, ref.params, n, "reference"))
    own = config.per_person_body and ref.params is not None
    params = ref.params if own else people.identity(body, n)
    models = people.PersonModels(body)
    return GaitTask(config, body, ref, targets(ref, body, config.future_frames, models if own else None), params, models)
