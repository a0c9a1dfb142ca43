"""Synthetic data with known ground truth: normative walking, people, camera rigs and captures.

Everything here is NumPy (float64) and seeded, so a test or a benchmark can rebuild exactly the
same trial. The world is the model's (MuJoCo, Z-up); a walk advances along +X through the
origin, where :func:`ring_rig` points its cameras.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix
from scipy.spatial.transform import Rotation

from mjx_biomech.body.params import BodyParams
from mjx_biomech.capture.cameras import Camera, CameraRig
from mjx_biomech.capture.captures import Capture
from mjx_biomech.capture.projection import project
from mjx_biomech.errors import InputError
from mjx_biomech.fitting.trajectories import markers_along

# Normative sagittal and frontal joint angles over one gait cycle, from right heel strike
# (percent of the cycle, degrees), after Perry & Burnfield (2010) and Winter (2009): hip
# flexion +30 → −10 → +32, knee 5 → 20 (loading response) → 5 → 60 (swing) → 5, ankle
# 0 → −7 (plantarflexion after strike) → +12 (late stance) → −17 (push-off) → 0. Left joints
# take the same curve half a cycle later; arms swing against the leg on their own side. The hip
# curves are relative to the pelvis, which walks tilted about 10° forward (anterior tilt; OpenSim's
# pelvis_tilt is positive backwards): the thighs then reach about ±20° from vertical at heel
# strike and toe off, and both feet can touch the floor in double support.
_KEYS_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    "hip_flexion": ((0, 30), (15, 25), (30, 10), (50, -10), (62, 0), (75, 22), (87, 32), (95, 31)),
    "hip_adduction": ((0, 0), (15, 6), (35, 3), (55, -2), (65, -6), (80, -3), (95, 0)),
    "hip_rotation": ((0, 3), (25, 0), (50, -4), (75, 2)),
    "knee_angle": ((0, 5), (15, 20), (40, 5), (50, 9), (62, 40), (73, 60), (87, 28), (97, 4)),
    "ankle_angle": ((0, 0), (7, -7), (30, 6), (45, 12), (55, 4), (62, -17), (72, -5), (85, 1)),
    "subtalar_angle": ((0, -2), (30, 3), (60, -1), (80, -3)),
    "mtp_angle": ((0, 0), (40, 5), (55, 25), (65, 15), (75, 0)),
    "arm_flex": ((0, -17), (50, 17)),
    "elbow_flex": ((0, 25), (50, 35)),
    "pelvis_tilt": ((0, -10), (12, -8), (25, -10), (50, -10), (62, -8), (75, -10)),
    "pelvis_list": ((0, 0), (15, -5), (40, -1), (50, 0), (65, 5), (90, 1)),
    "pelvis_rotation": ((0, 5), (50, -5)),
    "lumbar_extension": ((0, 0), (15, -2), (50, 0), (65, -2)),
    "lumbar_bending": ((0, 0), (15, 3), (50, 0), (65, -3)),
    "lumbar_rotation": ((0, -4), (50, 4)),
}
_HARMONICS = 6
# Mean lateral sway of the pelvis (m), toward the stance foot.
_SWAY_M = 0.02
# Step length ≈ 0.41 × standing height at a preferred walking speed (Grieve & Gear 1966).
_STEP_PER_HEIGHT = 0.41
# Each foot is on the ground for the first 60 % of its gait cycle (Perry & Burnfield 2010): heel
# strike at 0 (right) and 50 % (left), double support for 10 % after each strike.
STANCE_FRACTION = 0.6
# Least height of a swinging foot above the floor, m: a half sine over the swing, 0 at toe off and
# heel strike, peaking mid-swing (minimum toe clearance in walking is 1-2 cm).
_SWING_CLEARANCE_M = 0.03
# Joints whose curves may bend (with the pelvis height) to put the feet on the floor.
_CONTACT_JOINTS = ("knee_angle_r", "ankle_angle_r", "knee_angle_l", "ankle_angle_l")
# Samples of one gait cycle at which the ground contact is solved (interpolated in between).
_CYCLE_SAMPLES = 128


def _fourier(keys: tuple[tuple[float, float], ...], harmonics: int = _HARMONICS) -> np.ndarray:
    """Coefficients (1 + 2H,) of a truncated Fourier series through periodic key points.

    The key points (percent, degrees) are joined by a periodic cubic spline, sampled, and the
    first ``harmonics`` harmonics kept: a smooth curve with the literature's shape.
    """
    ph = np.array([k[0] for k in keys], float) / 100.0
    val = np.radians([k[1] for k in keys])
    x = np.concatenate([ph, [ph[0] + 1.0]])
    y = np.concatenate([val, [val[0]]])
    if len(keys) == 2:  # two keys make a sinusoid
        x = np.concatenate([ph, ph + 1.0, [ph[0] + 2.0]])
        y = np.concatenate([val, val, [val[0]]])
    spline = CubicSpline(x, y, bc_type="periodic")
    n = 256
    s = spline(ph[0] + np.arange(n) / n)
    # Re-phase to start at phase 0.
    s = np.roll(s, int(round(ph[0] * n)))
    c = np.fft.rfft(s) / n
    out = [c[0].real]
    for h in range(1, harmonics + 1):
        out += [2 * c[h].real, -2 * c[h].imag]
    return np.array(out)


def _evaluate(coef: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Fourier series (1 + 2H,) at gait phases (T,) (cycles)."""
    out = np.full(phase.shape, coef[0])
    for h in range(1, (len(coef) - 1) // 2 + 1):
        a = 2 * math.pi * h * phase
        out = out + coef[2 * h - 1] * np.cos(a) + coef[2 * h] * np.sin(a)
    return out


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def default_cadence(model, speed: float, params: BodyParams | None = None) -> float:
    """Steps per minute at ``speed`` (m/s) for a model (the person ``params``) of this standing height."""
    return 60.0 * speed / (_STEP_PER_HEIGHT * model.standing_height(params))


def walking(
    model,
    duration: float = 2.0,
    fps: float = 30.0,
    speed: float = 1.3,
    cadence: float | None = None,
    seed: int | np.random.Generator | None = None,
    x0: float | None = None,
    params: BodyParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normative level walking along +X.

    Joint angles are smooth periodic curves (a 6-harmonic Fourier series through literature key
    points, see ``_KEYS_DEG``) for the OpenSim coordinates the model has: pelvis tilt/list/
    rotation, hips, knees, ankles, subtalar and MTP joints, lumbar, shoulders (arm swing) and
    elbows; other coordinates stay neutral. ``pelvis_tx`` advances at ``speed`` from ``x0``
    (None centres the walk on the origin) and ``pelvis_tz`` sways 2 cm toward the stance side.
    The pelvis height, knees and ankles then change by the least that keeps each foot's contact
    spheres on the floor (z = 0) through its stance (the first 60 % of its cycle, right heel
    strike at phase 0, left at 0.5; :func:`in_stance`) and above it in swing: a vertical
    oscillation of a few centimetres, knees and ankles within a few degrees of the curves. A
    model without foot contact spheres only moves its pelvis height, keeping its lowest site at
    its standing height.

    Args:
        model: a ``BiomechModel`` with OpenSim coordinate names.
        duration: seconds; fps: samples per second (Hz).
        speed: m/s. cadence: steps per minute (default: a step of 0.41 × standing height).
        seed: None for the normative curves; otherwise amplitudes vary by ±8 % and offsets by
            ±2° per joint, as between people.
        x0: starting ``pelvis_tx`` (m).
        params: the person walking (default: the unscaled model): the feet are put on the floor
            of their statically scaled model, and the default cadence follows their height.

    Returns:
        ``times`` (T,) seconds from 0 and ``coords`` (T, C) radians/metres in
        ``model.coordinate_names`` order, clipped into the coordinate ranges.
    """
    if not (duration > 0 and fps > 0 and speed >= 0):
        raise InputError(f"walking: expected duration > 0, fps > 0 and speed >= 0, got {duration}, {fps}, {speed}")
    cadence = default_cadence(model, speed, params) if cadence is None else float(cadence)
    if cadence <= 0:
        raise InputError(f"walking: cadence must be positive steps/min, got {cadence}")
    times = np.arange(int(round(duration * fps))) / fps
    stride_time = 120.0 / cadence
    names = model.coordinate_names
    index = {n: i for i, n in enumerate(names)}
    coords = np.tile(model.neutral_coordinates(), (len(times), 1))
    variation = _variation(seed)
    phase = times / stride_time
    angles = _gait_angles(model, phase, variation)
    coords = np.where(np.isnan(angles), coords, angles)
    if "pelvis_tz" in index:
        coords[:, index["pelvis_tz"]] += _SWAY_M * np.sin(2 * math.pi * phase)
    start = -speed * (times[-1] if len(times) else 0.0) / 2 if x0 is None else float(x0)
    if "pelvis_tx" in index:
        coords[:, index["pelvis_tx"]] = start + speed * times
    if "pelvis_ty" in index:
        cols, corrections = _ground_contact(model, variation, params)
        grid = np.arange(_CYCLE_SAMPLES) / _CYCLE_SAMPLES
        for col, c in zip(cols, corrections.T):
            coords[:, col] += np.interp(np.mod(phase, 1.0), grid, c, period=1.0)
    lo, hi = model.coordinate_ranges.T
    return times, np.clip(coords, lo, hi)


def _variation(seed) -> dict[str, tuple[float, float]] | None:
    """Per joint curve: (amplitude gain, offset rad) of one person; None for the normative curves."""
    if seed is None:
        return None
    rng = _rng(seed)
    return {j: (rng.uniform(0.92, 1.08), math.radians(rng.uniform(-2.0, 2.0))) for j in _KEYS_DEG}


def _gait_angles(model, phase: np.ndarray, variation: dict | None) -> np.ndarray:
    """(T, C) the gait curves at ``phase`` (cycles) for the coordinates that have one, NaN elsewhere."""
    index = {n: i for i, n in enumerate(model.coordinate_names)}
    out = np.full((len(phase), len(index)), np.nan)
    for joint, keys in _KEYS_DEG.items():
        coef = _fourier(keys)
        if variation is not None:
            gain, offset = variation[joint]
            coef = coef * gain
            coef[0] += offset
        # OpenSim mirrors the left side's frontal and transverse axes, so one curve serves
        # both sides, half a cycle apart.
        targets = [(joint, 0.0)] if joint.startswith(("pelvis", "lumbar")) else [(f"{joint}_r", 0.0), (f"{joint}_l", 0.5)]
        for name, shift in targets:
            if name in index:
                out[:, index[name]] = _evaluate(coef, phase + shift)
    return out


def foot_geoms(model) -> tuple[np.ndarray, np.ndarray] | None:
    """Geom ids (right, left) of the model's foot contact spheres (named ``foot_contact_*_r`` and
    ``foot_contact_*_l``), or None when it has none."""
    m = model.mj_model
    names = [m.geom(g).name for g in range(m.ngeom)]
    feet = tuple(np.array([g for g, n in enumerate(names) if n.startswith("foot_contact") and n.endswith(side)], int)
                 for side in ("_r", "_l"))  # fmt: skip
    return feet if all(f.size for f in feet) else None


@partial(jax.jit, static_argnums=0)
def _lowest_points(model, poses, params, sphere_pos, sphere_radius):
    """(N, 2) the lowest point (z, m) of each foot's contact spheres (:func:`foot_geoms`: right,
    left) at coordinates ``poses`` (N, C) of the person ``params``, spheres at ``sphere_pos`` (G, 3)
    in their bodies with radii (G,); (N, 1) the lowest site when the model has no such spheres."""
    feet = foot_geoms(model)
    if feet is None:
        return jax.vmap(lambda c: jnp.min(model.markers(c, params)[:, 2], keepdims=True))(poses)
    kin = jax.vmap(lambda c: model.forward(c, params, sites=np.zeros(0, int)))(poses)
    bodies = model.mj_model.geom_bodyid[np.concatenate(feet)]
    z = kin.xpos[:, bodies, 2] + jnp.einsum("ngj,gj->ng", kin.xmat[:, bodies, 2, :], sphere_pos) - sphere_radius
    return jnp.stack([jnp.min(z[:, : len(feet[0])], axis=1), jnp.min(z[:, len(feet[0]):], axis=1)], axis=1)


def in_stance(phase: np.ndarray) -> np.ndarray:
    """(T, 2) whether the right and the left foot are on the ground at gait ``phase`` (T,) (cycles)."""
    own = np.mod(np.stack([phase, phase + 0.5], axis=-1), 1.0)
    return own < STANCE_FRACTION


def _ground_contact(model, variation: dict | None, params: BodyParams | None = None) -> tuple[list[int], np.ndarray]:
    """Coordinate columns and their corrections (N, len(columns)) at the gait phases
    ``arange(N) / N`` that put the walk on the floor (z = 0).

    With foot contact spheres (:func:`foot_geoms`), the pelvis height, knees and ankles change by
    the least (smooth over the cycle) that puts each foot's lowest point on the floor while it is
    in stance (:func:`in_stance`) and keeps it above a clearance in swing (``_SWING_CLEARANCE_M``):
    a least-squares problem over all N samples, solved on the model's kinematics (one batched
    program per evaluation; the person ``params``, default unscaled, with the spheres where the
    statically scaled model puts them). Without them only the pelvis height moves, keeping the lowest
    site at its standing height.
    """
    names = model.coordinate_names
    neutral = model.neutral_coordinates()
    n = _CYCLE_SAMPLES
    cycle = np.arange(n) / n
    angles = _gait_angles(model, cycle, variation)
    poses = np.where(np.isnan(angles), neutral, angles)
    lo, hi = model.coordinate_ranges.T
    m = model.mj_model if params is None else model.to_mujoco(params)
    params = model.default_params() if params is None else params
    feet = foot_geoms(model)
    ids = np.concatenate(feet) if feet is not None else np.zeros(0, int)
    # The person's contact spheres as the statically scaled model places and sizes them.
    spheres = (m.geom_pos[ids], m.geom_size[ids, 0])

    def lowest_points(p: np.ndarray) -> np.ndarray:
        return np.asarray(_lowest_points(model, jnp.asarray(np.clip(p, lo, hi)), params, *spheres), float)

    if feet is None:
        standing = lowest_points(neutral[None])[0, 0]
        return [names.index("pelvis_ty")], standing - lowest_points(poses)
    cols = [names.index("pelvis_ty")] + [names.index(j) for j in _CONTACT_JOINTS if j in names]
    k = len(cols)
    stance = in_stance(cycle)
    swing = (np.mod(np.stack([cycle, cycle + 0.5], axis=-1), 1.0) - STANCE_FRACTION) / (1.0 - STANCE_FRACTION)
    clearance = np.where(stance, 0.0, _SWING_CLEARANCE_M * np.sin(np.pi * np.clip(swing, 0.0, 1.0)))
    # Weights: 1 mm off the floor weighs as 0.3 rad of joint change or 0.1 rad (0.1 mm) of change
    # between neighbouring samples; the pelvis height itself is free.
    w_contact, w_joint, w_smooth = 1000.0, 3.0, np.array([100.0] + [10.0] * (k - 1))

    def residuals(x):
        x = x.reshape(n, k)
        p = poses.copy()
        p[:, cols] += x
        low = lowest_points(p)
        contact = np.where(stance, low, np.minimum(low - clearance, 0.0)) * w_contact
        smooth = (x - np.roll(x, 1, axis=0)) * w_smooth
        return np.concatenate([contact.ravel(), (x[:, 1:] * w_joint).ravel(), smooth.ravel()])

    sparsity = lil_matrix((2 * n + (k - 1) * n + k * n, n * k), dtype=int)
    for i in range(n):
        sparsity[2 * i : 2 * i + 2, i * k : (i + 1) * k] = 1
        for j in range(1, k):
            sparsity[2 * n + i * (k - 1) + j - 1, i * k + j] = 1
        for j in range(k):
            row = 2 * n + (k - 1) * n + i * k + j
            sparsity[row, i * k + j] = sparsity[row, ((i - 1) % n) * k + j] = 1
    x0 = np.zeros((n, k))
    x0[:, 0] = -np.where(stance, lowest_points(poses), np.inf).min(axis=1)
    scale = np.tile([0.01] + [0.05] * (k - 1), n)
    # Differences over 1e-4 (rad or m, about 50 µm at the foot), not least_squares' default ~1e-8:
    # the kinematics may run in float32, whose rounding (~1e-7 m) would swamp smaller steps.
    fit = least_squares(residuals, x0.ravel(), jac_sparsity=sparsity, x_scale=scale, max_nfev=200, diff_step=1e-4)
    return cols, fit.x.reshape(n, k)


def person(
    model,
    seed: int | np.random.Generator | None = 0,
    marker_set: str | None = None,
    scale_range: tuple[float, float] = (0.05, 0.10),
    offset_range_m: tuple[float, float] = (0.01, 0.02),
    left_right_asymmetry: float | None = None,
) -> BodyParams:
    """A random person: every scale parameter 1 ± U(``scale_range``) (random sign), and each
    marker of ``marker_set`` moved by U(``offset_range_m``) metres in a random direction (in its
    body's frame). Sites outside the set keep offset 0; ``marker_set=None`` moves no marker.
    With ``left_right_asymmetry`` = a, each ``<name>_l`` parameter is its ``<name>_r`` one times
    1 + U(−a, a) (people are nearly symmetric: a few per cent), instead of drawn on its own.
    """
    rng = _rng(seed)
    P, S = len(model.scale_param_names), len(model.site_names)
    lo, hi = scale_range
    scales = 1.0 + rng.choice([-1.0, 1.0], P) * rng.uniform(lo, hi, P)
    if left_right_asymmetry is not None:
        names = list(model.scale_param_names)
        for i, name in enumerate(names):
            group, dot, axis = name.partition(".")  # per-axis parameters: "<group>.x"
            right = group[:-2] + "_r" + dot + axis
            if group.endswith("_l") and right in names:
                scales[i] = scales[names.index(right)] * (1.0 + rng.uniform(-left_right_asymmetry, left_right_asymmetry))
    offsets = np.zeros((S, 3))
    if marker_set is not None:
        ids = model.marker_site_ids(marker_set)
        direction = rng.normal(size=(len(ids), 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        offsets[ids] = direction * rng.uniform(*offset_range_m, size=(len(ids), 1))
    return BodyParams(jnp.asarray(scales), jnp.asarray(offsets))


def look_at(name: str, position, target, size=(1920, 1080), focal_px: float = 1100.0) -> Camera:
    """A distortion-free camera at ``position`` (m, world Z-up) looking at ``target`` with the
    image's x axis horizontal (OpenCV frame: x right, y down, z forward)."""
    c, p = np.asarray(position, float), np.asarray(target, float)
    z = p - c
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-9:
        raise InputError(f"look_at: camera {name!r} looks straight up or down; its image x axis is undefined")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    w, h = size
    return Camera(
        name=name,
        size=(int(w), int(h)),
        fx=focal_px,
        fy=focal_px,
        cx=(w - 1) / 2,
        cy=(h - 1) / 2,
        dist=np.zeros(5),
        rvec=Rotation.from_matrix(R).as_rotvec(),
        tvec=-R @ c,
    )


def ring_rig(
    n_cameras: int = 8,
    radius: float = 4.5,
    height: float = 1.6,
    size: tuple[int, int] = (1920, 1080),
    focal_px: float = 1100.0,
    target=(0.0, 0.0, 0.9),
) -> CameraRig:
    """``n_cameras`` cameras evenly spaced on a horizontal circle of ``radius`` (m) around the
    walkway's centre (the origin), at ``height`` (m), all looking at ``target`` (m). Camera
    names are ``cam1``, ``cam2``, ...; the first stands on the +X axis (ahead of the walker)."""
    if n_cameras < 2:
        raise InputError(f"ring_rig: n_cameras must be at least 2, got {n_cameras}")
    cams = []
    for i in range(n_cameras):
        a = 2 * math.pi * i / n_cameras
        cams.append(look_at(f"cam{i + 1}", (radius * math.cos(a), radius * math.sin(a), height), target, size, focal_px))
    return CameraRig.from_cameras(cams)


def capture(
    model,
    params: BodyParams,
    times,
    coords,
    rig: CameraRig,
    marker_set: str,
    noise_px: float = 1.5,
    dropout: float = 0.1,
    outlier_fraction: float = 0.01,
    seed: int | np.random.Generator | None = 0,
    name: str = "synthetic",
) -> Capture:
    """The 2D keypoints a detector would report for the model's ``marker_set`` markers.

    True pixels are the markers of ``model`` with ``params`` at ``coords`` (T, C), projected by
    ``rig``. Confidences are drawn from [0.6, 1]; each detection gets Gaussian noise of
    ``noise_px`` (px, per axis); a fraction ``dropout`` is missing (NaN, confidence 0), as are
    points behind a camera or outside its image; a fraction ``outlier_fraction`` is moved 20 to
    150 px in a random direction with a lower confidence (0.3 to 0.7), as detectors do with
    confusions. ``times`` (T,) must be evenly spaced; ``fps`` follows from them.
    """
    if not (noise_px >= 0 and 0 <= dropout <= 1 and 0 <= outlier_fraction <= 1):
        raise InputError(
            "capture: expected noise_px >= 0 and dropout, outlier_fraction in [0, 1], "
            f"got {noise_px}, {dropout} and {outlier_fraction}"
        )
    rng = _rng(seed)
    times = np.asarray(times, float)
    coords = np.asarray(coords, float)
    if times.ndim != 1 or len(times) < 2 or coords.shape != (len(times), model.num_coordinates):
        raise InputError(
            f"capture: expected times (T,) with T >= 2 and coords (T, {model.num_coordinates}), got {times.shape} and {coords.shape}"
        )
    dt = np.diff(times)
    if not np.allclose(dt, dt[0], rtol=1e-6, atol=1e-9) or dt[0] <= 0:
        raise InputError("capture: times must be evenly spaced and increasing")
    markers = np.asarray(markers_along(model, params, jnp.asarray(coords), marker_set))
    uv, depth = project(rig, markers, return_depth=True)
    uv, depth = np.asarray(uv, float), np.asarray(depth, float)
    shape = uv.shape[:-1]
    conf = rng.uniform(0.6, 1.0, shape)
    uv = uv + rng.normal(scale=noise_px, size=uv.shape)
    outlier = rng.random(shape) < outlier_fraction
    angle = rng.uniform(0, 2 * math.pi, shape)
    jump = rng.uniform(20.0, 150.0, shape)
    uv = np.where(outlier[..., None], uv + jump[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1), uv)
    conf = np.where(outlier, rng.uniform(0.3, 0.7, shape), conf)
    sizes = np.array(rig.sizes, float)[:, None, None, :]
    visible = (depth > 0) & np.all((uv >= 0) & (uv <= sizes - 1), axis=-1)
    seen = visible & (rng.random(shape) >= dropout)
    return Capture(
        keypoints=np.where(seen[..., None], uv, np.nan),
        confidence=np.where(seen, conf, 0.0),
        fps=1.0 / dt[0],
        keypoint_names=model.marker_names(marker_set),
        camera_names=rig.names,
        name=name,
        start_time=float(times[0]),
    )


def perturb_cameras(rig: CameraRig, names, angle_deg: float = 2.0, distance_m: float = 0.02, seed=0) -> CameraRig:
    """``rig`` with the cameras ``names`` turned by ``angle_deg`` about a random axis and moved
    by ``distance_m`` in a random direction (the others unchanged): a calibration error for
    bundle adjustment to recover."""
    moved = rig.perturb(seed, angle_deg, distance_m)
    idx = np.array([rig.index(n) for n in names], int)
    rvec = np.array(rig.rvec)
    tvec = np.array(rig.tvec)
    rvec[idx], tvec[idx] = np.asarray(moved.rvec)[idx], np.asarray(moved.tvec)[idx]
    return rig.with_extrinsics(rvec, tvec)
