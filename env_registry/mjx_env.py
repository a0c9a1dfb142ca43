"""The MJX gait-imitation environment with brax's ``Env`` interface (``backend='mjx'``).

A body (see :mod:`.body`) follows reference gait: each control step (1/fps s) applies the
policy's action for ``substeps`` physics steps, advances the reference one frame, and rewards
tracking (formulas in :mod:`.tracking`). The reference trajectory and frame live in the physics
state's ``userdata``.

brax's auto-reset (``AutoResetWrapper``, and MuJoCo Playground's) restores, when an episode
ends, the state it kept from the first reset (``info["first_pipeline_state"]`` and
``info["first_obs"]``; Playground: ``info["AutoResetWrapper_first_data"]`` and
``info["AutoResetWrapper_first_obs"]``): alone, every environment would restart from the same
start forever. So each step draws a fresh start from the random key carried in
``info["rng"]`` and puts it in the kept state's place; the wrapper uses it only where the
episode ends (by this environment's rules or by a wrapper's time limit).

Each trajectory is walked by its person's body (``per_person_body``, :mod:`.people`): the fields
of the ``mjx.Model`` that the core's dynamic MJX scaling changes (geometry, masses, inertias and
the constants derived from them) are computed once per person and stacked; a step takes those
of its trajectory's person (from ``userdata``), so every person runs in the one compiled step.

Episodes start at a random trajectory and frame (joint angles and velocities perturbed by
``reset_noise``, the body lifted so that every foot is at least 0.1 mm above the floor) and end when the reference
runs out of frames, the reward turns negative, the pelvis falls below ``fall_fraction`` of the
reference pelvis height, or the state becomes unstable (not finite, or a generalised velocity
above ``max_speed``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env, State
from mujoco import mjx

from . import people, tracking
from .config import GaitImitationConfig
from .task import GaitTask, make_task

_FRAME_TARGETS = ("qpos", "qvel", "keypoints", "keypoint_velocity", "angles", "pelvis_height", "lengths", "heights")
# Keys under which brax's and MuJoCo Playground's auto-reset wrappers keep the first physics state
# and observation.
_FIRST_STATE_KEYS = (("first_pipeline_state", "first_obs"), ("AutoResetWrapper_first_data", "AutoResetWrapper_first_obs"))


# Per-step metrics (brax sums them over an episode, and its training log divides those named
# ``*_per_step`` by the episode's length): tracking errors, the frame reached, the pelvis residual
# force as a fraction of body weight, whether the episode ended by a fall or an unstable
# (non-finite or too fast) state, and the pelvis assist's strength (``reference_pd``).
_METRICS = ("angle_error", "position_error", "velocity_error", "frame", "residual_force_per_step", "fallen", "unstable",
            "assist_per_step")


class GaitImitationEnv(Env):
    """Brax environment; build with ``GaitImitationEnv(reference=..., **config_fields)`` or from a
    :class:`.task.GaitTask` (``task=``)."""

    def __init__(self, config: GaitImitationConfig | None = None, reference="synthetic", task: GaitTask | None = None, **overrides):
        self.task = task if task is not None else make_task(config, reference, **overrides)
        t, body = self.task.targets, self.task.body
        self.sys = mjx.put_model(body.mj_model)
        # (N, ...) per person, the mjx.Model fields that differ between the people.
        self._people = people.mjx_fields(body, self.sys, self.task.params)
        # The per-frame targets as device arrays, indexed by traced (trajectory, frame); the index
        # tables (sites, qpos addresses) stay NumPy, static under jit.
        self._targets = dataclasses.replace(t, **{k: jnp.asarray(getattr(t, k)) for k in _FRAME_TARGETS})
        self._joint_noise = np.zeros(body.mj_model.nq, bool)
        self._joint_noise[self.task.non_pelvis_qpos] = True

    # ------------------------------------------------------------------ brax Env
    @property
    def observation_size(self) -> int:
        return self.task.observation_size

    @property
    def action_size(self) -> int:
        return self.task.action_size

    @property
    def backend(self) -> str:
        return "mjx"

    @property
    def dt(self) -> float:
        return self.task.dt

    def reset(self, rng: jax.Array) -> State:
        c = self.task.config
        rng, k_traj, k_frame = jax.random.split(rng, 3)
        n = jax.random.randint(k_traj, (), 0, self._targets.lengths.shape[0])
        frame = jax.random.randint(k_frame, (), 0, self.task.last_start(self._targets.lengths[n]) + 1)
        return self.reset_to(rng, n, frame, c.reset_noise)

    def reset_to(self, rng: jax.Array, n, frame, noise: float) -> State:
        """Start at reference trajectory ``n``, ``frame``, with joint angles and velocities
        perturbed uniformly by ±``noise`` (rad, rad/s, m/s)."""
        body = self.task.body
        n, frame = jnp.asarray(n, jnp.int32), jnp.asarray(frame, jnp.int32)
        rng, k_q, k_v, k_obs = jax.random.split(rng, 4)
        qpos = self._targets.qpos[n, frame]
        qpos = qpos + jnp.where(self._joint_noise, jax.random.uniform(k_q, qpos.shape, minval=-1, maxval=1), 0.0) * noise
        qvel = self._targets.qvel[n, frame] + jax.random.uniform(k_v, (body.mj_model.nv,), minval=-1, maxval=1) * noise
        sys = self.person_system(n)
        data = mjx.make_data(sys)
        data = data.replace(qpos=qpos.astype(data.qpos.dtype), qvel=qvel.astype(data.qvel.dtype))
        data = mjx.kinematics(sys, data)
        lowest = tracking.lowest_foot_point(data.geom_xpos[body.foot_geoms, 2], sys.geom_size[body.foot_geoms, 0])
        data = data.replace(
            qpos=data.qpos.at[self.task.pelvis_ty_qpos].add(jnp.maximum(tracking.RESET_CLEARANCE_M - lowest, 0.0)),
            userdata=jnp.stack([n, frame]).astype(data.userdata.dtype),
        )
        data = self._kinematics(sys, data)
        obs = self._observation(data, n, frame, k_obs)
        zero = jnp.zeros(())
        metrics = {name: zero for name in _METRICS}
        metrics["frame"] = frame.astype(zero.dtype)
        return State(data, obs, zero, zero, metrics, {"rng": rng, "assist_step": jnp.zeros((), jnp.int32)})

    def step(self, state: State, action: jax.Array) -> State:
        task, body, c = self.task, self.task.body, self.task.config
        data0 = state.pipeline_state
        keypoints0 = data0.site_xpos[task.targets.keypoint_sites]
        n = data0.userdata[0].astype(jnp.int32)
        sys = self.person_system(n)
        nxt = data0.userdata[1].astype(jnp.int32) + 1
        ref_qpos, ref_qvel = self._targets.qpos[n, nxt], self._targets.qvel[n, nxt]
        mass, height = jnp.sum(sys.body_mass), self._targets.heights[n]
        assist = task.assist_strength(state.info["assist_step"])

        def physics_step(data, _):
            u = task.controls(action, data.qpos, data.qvel, ref_qpos, ref_qvel, mass, height, assist)
            ctrl = jnp.zeros(body.mj_model.nu, data.ctrl.dtype)
            ctrl = ctrl.at[body.joint_actuators].set(u[: task.num_joints]).at[body.pelvis_actuators].set(u[task.num_joints :])
            return mjx.step(sys, data.replace(ctrl=ctrl)), None

        data, _ = jax.lax.scan(physics_step, data0, None, length=c.substeps)
        # mjx.step leaves positions of the state before integration; recompute them for the new state.
        data = self._kinematics(sys, data)
        frame = data.userdata[1].astype(jnp.int32) + 1
        data = data.replace(userdata=data.userdata.at[1].add(1))
        errors = task.step_errors(self._targets, n, frame, data.qpos, data.site_xpos[task.targets.keypoint_sites], keypoints0)
        reward = task.reward(errors, action)
        stable, fallen, out_of_frames = task.step_end(
            self._targets, n, frame, data.qpos, data.qvel, data.xpos[body.pelvis_body, 2], reward
        )
        done = out_of_frames | fallen | (reward < 0) | ~stable
        rng, k_obs, k_start = jax.random.split(state.info["rng"], 3)
        obs = self._observation(data, n, frame, k_obs)
        metrics = {
            "angle_error": errors.angle,
            "position_error": errors.position,
            "velocity_error": errors.velocity,
            "frame": frame.astype(reward.dtype),
            "residual_force_per_step": task.residual_force_fraction(data.ctrl, task.weight(sys.body_mass)),
            "fallen": fallen & stable,
            "unstable": ~stable,
            "assist_per_step": jnp.asarray(assist),
        }
        # Keys a wrapper added (brax's evaluation wrapper adds "reward") pass through unchanged.
        metrics = {**state.metrics, **{k: jnp.nan_to_num(v).astype(state.reward.dtype) for k, v in metrics.items()}}
        info = {**state.info, "rng": rng, "assist_step": state.info["assist_step"] + 1, **self._fresh_start(state.info, k_start)}
        return state.replace(
            pipeline_state=data,
            obs=obs,
            reward=jnp.where(stable, reward, 0.0).astype(state.reward.dtype),
            done=done.astype(state.done.dtype),
            metrics=metrics,
            info=info,
        )

    # ------------------------------------------------------------------ helpers
    def person_system(self, n) -> mjx.Model:
        """The ``mjx.Model`` of trajectory ``n``'s person (``n`` may be traced)."""
        return self.sys.replace(**{k: v[n] for k, v in self._people.items()}) if self._people else self.sys

    def _fresh_start(self, info: dict, key) -> dict:
        """The auto-reset wrapper's kept first state and observation (if ``info`` has them),
        replaced by a fresh start."""
        kept = [(data, obs) for data, obs in _FIRST_STATE_KEYS if data in info and obs in info]
        if not kept:
            return {}
        fresh = self.reset(key)
        return {k: v for data, obs in kept for k, v in ((data, fresh.pipeline_state), (obs, fresh.obs))}

    @staticmethod
    def _kinematics(sys, data):
        """Body and site poses and body velocities of ``data.qpos, data.qvel``: what the
        observation and the reward read (a full ``mjx.forward`` would also compile collisions
        and the constraint solver a second time)."""
        data = mjx.kinematics(sys, data)
        data = mjx.com_pos(sys, data)
        return mjx.com_vel(sys, data)

    def _observation(self, data, n, frame, key) -> jax.Array:
        task, body, c = self.task, self.task.body, self.task.config
        future = jax.lax.dynamic_slice_in_dim(self._targets.keypoints[n], frame + 1, c.future_frames, axis=0)
        obs = tracking.observation(
            data.xpos[body.pelvis_body, 2],
            data.xmat[body.segments],
            data.cvel[body.segments, :3],
            data.qpos[task.non_pelvis_qpos],
            data.qvel,
            data.site_xpos[task.targets.keypoint_sites],
            future,
            self._targets.keypoints[n, frame, task.targets.pelvis_keypoint],
            task.targets.pelvis_keypoint,
            self._targets.heights[n],
        )
        obs = obs + c.observation_noise * jax.random.normal(key, obs.shape, obs.dtype)
        return tracking.bounded(obs)
