"""The simulated body of the gait-imitation environments.

``build_body("lower_body")`` is the paper's simplified humanoid made from the bundled model with
MjSpec: the lumbar, neck and arm joints are deleted (so the trunk, head and arms are welded to the
pelvis at their neutral pose, keeping their mass, inertia and marker sites), subtalar and MTP
joints are deleted (one-axis ankles), and six motors act on the six pelvis coordinates as the
residual force and torque. ``"fullbody"`` keeps every joint and adds the same pelvis motors. Any
other name is an MJCF/OpenSim path accepted by :func:`mjx_biomech.load_model` that has a 6-DoF
pelvis with OpenSim coordinate names.

The physics step is ``1 / (fps · substeps)`` s (30 Hz × 16 substeps by default), and the
constraint solver gets few iterations, as in brax's MJX locomotion tasks, so a batch of
environments stays cheap on CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

import mjx_biomech
from mjx_biomech.body.loading import bundled_model_path
from mjx_biomech.body.metadata import METADATA_NAME, read_metadata
from mjx_biomech.errors import InputError

PELVIS_COORDINATES = ("pelvis_tx", "pelvis_ty", "pelvis_tz", "pelvis_tilt", "pelvis_list", "pelvis_rotation")
# Joints the lower-body model deletes: the upper body is welded to the pelvis, the feet become
# one rigid segment on a one-axis ankle.
UPPER_BODY_JOINTS = (
    "lumbar_extension", "lumbar_bending", "lumbar_rotation",
    "neck_flexion", "neck_bending", "neck_rotation",
    "arm_flex_r", "arm_add_r", "arm_rot_r", "elbow_flex_r", "pro_sup_r", "wrist_flex_r", "wrist_dev_r",
    "arm_flex_l", "arm_add_l", "arm_rot_l", "elbow_flex_l", "pro_sup_l", "wrist_flex_l", "wrist_dev_l",
)  # fmt: skip
FOOT_JOINTS = ("subtalar_angle_r", "mtp_angle_r", "subtalar_angle_l", "mtp_angle_l")
BODY_MODELS = ("lower_body", "fullbody")


@dataclass(frozen=True)
class Body:
    """A compiled simulation model and the tables the environments index it with.

    Attributes:
        name: ``"lower_body"``, ``"fullbody"`` or the source path.
        model: the :class:`mjx_biomech.BiomechModel` of the simulated body (its coordinates are
            the simulated joints; markers are its sites).
        mj_model: the compiled ``MjModel`` with pelvis motors, timestep and solver settings.
        joint_actuators: (J,) actuator ids of the joint motors (pelvis motors excluded).
        pelvis_actuators: (6,) actuator ids of the residual pelvis motors, in PELVIS_COORDINATES order.
        joint_qpos: (J,) qpos addresses of the actuated joints; joint_qvel: (J,) their dof addresses.
        joint_range: (J, 2) their ranges (rad or m); gear: (J,) their motor gears (N·m per unit control).
        pelvis_body: body id of the pelvis; foot_geoms: ids of the foot contact spheres.
        segments: (S,) ids of the bodies that move relative to their parent (have a joint).
        height: standing height (m) used to scale positions and velocities.
    """

    name: str
    model: mjx_biomech.BiomechModel
    mj_model: mujoco.MjModel
    joint_actuators: np.ndarray
    pelvis_actuators: np.ndarray
    joint_qpos: np.ndarray
    joint_qvel: np.ndarray
    joint_range: np.ndarray
    gear: np.ndarray
    pelvis_body: int
    foot_geoms: np.ndarray
    segments: np.ndarray
    height: float


def _spec_for(name: str) -> tuple[mujoco.MjSpec, str]:
    if name in BODY_MODELS:
        return mujoco.MjSpec.from_file(str(bundled_model_path())), name
    path = Path(name)
    if not path.exists():
        raise InputError(
            f"model: {name!r} is neither one of the built-in bodies {BODY_MODELS} nor an existing MJCF/.osim file"
        )
    spec = mjx_biomech.load_model(path).spec
    if spec is None:
        raise InputError(f"model: {name}: could not be read as an MjSpec")
    return spec.copy(), str(path)


def _delete_joints(spec: mujoco.MjSpec, names: tuple[str, ...]) -> None:
    """Delete joints (welding their bodies to the parent) and every actuator that drives them."""
    names = set(names)
    for act in list(spec.actuators):
        if act.target in names:
            spec.delete(act)
    for joint in list(spec.joints):
        if joint.name in names:
            spec.delete(joint)
    for key in list(spec.keys):
        # Keyframes list a qpos for every joint; they no longer fit.
        spec.delete(key)
    text = spec.text(METADATA_NAME)
    if text is not None:
        meta = json.loads(text.data)
        meta["coordinates"] = [c for c in meta.get("coordinates", []) if c.get("joint") not in names]
        text.data = json.dumps(meta)


def _fused_metadata(mj_model: mujoco.MjModel) -> dict | None:
    """The model's metadata with scale groups restricted to the bodies left after fusing."""
    meta = read_metadata(mj_model)
    if meta is None or "scale_groups" not in meta:
        return meta
    bodies = {mj_model.body(i).name for i in range(mj_model.nbody)}
    groups = []
    for g in meta["scale_groups"]:
        kept = [b for b in g["bodies"] if b in bodies]
        if kept:
            groups.append({**g, "bodies": kept})
    return {**meta, "scale_groups": groups}


def build_body(
    name: str = "lower_body",
    fps: float = 30.0,
    substeps: int = 16,
    residual_force: float = 300.0,
    residual_torque: float = 100.0,
    solver_iterations: int = 1,
    armature: float = 0.05,
    torque_scale: float = 1.0,
) -> Body:
    """Build the simulated body (see the module docstring).

    Args:
        name: ``"lower_body"``, ``"fullbody"``, or a model path.
        fps, substeps: control rate (Hz) and physics steps per control step.
        residual_force: N per unit control of the three pelvis translation motors.
        residual_torque: N·m per unit control of the three pelvis rotation motors.
        solver_iterations: Newton solver iterations (the line search gets max(4, 2×) as many).
        torque_scale: factor on the gear (largest torque, N·m) of every joint motor.
        armature: least rotor inertia (kg·m²) of every non-pelvis joint; without it the light
            foot segments under full-scale random torques make the 2-ms step unstable.
    """
    spec, source = _spec_for(name)
    if name == "lower_body":
        _delete_joints(spec, UPPER_BODY_JOINTS + FOOT_JOINTS)
    joint_names = {j.name for j in spec.joints}
    missing = [c for c in PELVIS_COORDINATES if c not in joint_names]
    if missing:
        raise InputError(f"model: {source}: the pelvis needs the joints {list(PELVIS_COORDINATES)}; missing {missing}")
    for joint in spec.joints:
        if joint.name not in PELVIS_COORDINATES:
            joint.armature = max(joint.armature, armature)
    for act in spec.actuators:
        act.gear[0] *= torque_scale
    for coord in PELVIS_COORDINATES:
        gear = residual_force if coord in PELVIS_COORDINATES[:3] else residual_torque
        act = spec.add_actuator(name=f"residual_{coord}", target=coord, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.gear[0] = gear
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.ctrlrange = [-1.0, 1.0]
    # Welded segments become part of their parent body: fewer bodies to simulate and compile.
    spec.compiler.fusestatic = True
    # Semi-implicit Euler: the joints' damping is mild at this step, and MJX compiles it fastest.
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_EULER
    spec.option.timestep = 1.0 / (fps * substeps)
    spec.option.iterations = solver_iterations
    spec.option.ls_iterations = max(4, 2 * solver_iterations)
    # The environments keep (trajectory, frame) in userdata so that brax's auto-reset, which
    # restores the whole physics state, restores them too.
    spec.nuserdata = 2
    try:
        mj_model = spec.compile()
    except ValueError as e:
        raise InputError(f"model: {source}: MuJoCo could not compile the simulation model: {e}") from e
    model = mjx_biomech.BiomechModel.from_mujoco(spec, mj_model, source, _fused_metadata(mj_model))

    pelvis_act = np.array([mj_model.actuator(f"residual_{c}").id for c in PELVIS_COORDINATES])
    joint_act = np.array([i for i in range(mj_model.nu) if i not in set(pelvis_act.tolist())], dtype=int)
    if any(mj_model.actuator_trntype[i] != mujoco.mjtTrn.mjTRN_JOINT for i in joint_act):
        raise InputError(f"model: {source}: every actuator must drive one joint (motor on a joint)")
    joints = mj_model.actuator_trnid[joint_act, 0]
    foot = np.array([i for i in range(mj_model.ngeom) if mj_model.geom(i).name.startswith("foot_contact")], dtype=int)
    if foot.size == 0:
        raise InputError(f"model: {source}: no foot contact geoms (named foot_contact_*)")
    segments = np.array(sorted({int(mj_model.jnt_bodyid[j]) for j in range(mj_model.njnt)}), dtype=int)
    return Body(
        name=name if name in BODY_MODELS else source,
        model=model,
        mj_model=mj_model,
        joint_actuators=joint_act,
        pelvis_actuators=pelvis_act,
        joint_qpos=mj_model.jnt_qposadr[joints].astype(int),
        joint_qvel=mj_model.jnt_dofadr[joints].astype(int),
        joint_range=mj_model.jnt_range[joints].astype(float),
        gear=mj_model.actuator_gear[joint_act, 0].astype(float),
        pelvis_body=mj_model.body("pelvis").id,
        foot_geoms=foot,
        segments=segments,
        height=model.standing_height(),
    )
