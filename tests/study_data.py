"""Synthetic studies for ``mjx-biomech batch`` (tests/test_batch.py, benchmarks/batch.py).

A small two-legged model (pelvis, thighs, shanks, feet; 12 coordinates, 22 markers, 5 scale
groups) keeps compiling cheap; each subject is a person of known scales who swings their legs
for a fraction of a second, seen either by a ring of cameras (a markerless subject: a
calibration and keypoint ``.npz`` trials) or by optical motion capture (a marker-based subject:
a static and a motion ``.trc``).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mjx_biomech
from converters import trc
from mjx_biomech.capture import synthetic

MARKER_SET = "legs22"
FPS = 30.0

# body -> (parent, position in the parent, markers: name -> position in the body)
_BODIES = {
    "pelvis": (None, (0.0, 0.0, 0.95), {"RASI": (0.12, -0.12, 0.08), "LASI": (0.12, 0.12, 0.08),
                                         "RPSI": (-0.1, -0.06, 0.1), "LPSI": (-0.1, 0.06, 0.1)}),
}
for _side, _y in (("r", -0.09), ("l", 0.09)):
    _s = 1.0 if _side == "l" else -1.0
    _BODIES[f"femur_{_side}"] = ("pelvis", (0.0, _y, -0.05), {
        f"{_side.upper()}THI1": (0.06, _s * 0.05, -0.15), f"{_side.upper()}THI2": (-0.04, _s * 0.06, -0.28),
        f"{_side.upper()}KNE": (0.0, _s * 0.06, -0.42)})
    _BODIES[f"tibia_{_side}"] = (f"femur_{_side}", (0.0, 0.0, -0.42), {
        f"{_side.upper()}TIB1": (0.05, _s * 0.04, -0.12), f"{_side.upper()}TIB2": (-0.03, _s * 0.05, -0.26),
        f"{_side.upper()}ANK": (0.0, _s * 0.05, -0.4)})
    _BODIES[f"foot_{_side}"] = (f"tibia_{_side}", (0.0, 0.0, -0.42), {
        f"{_side.upper()}HEE": (-0.06, 0.0, -0.03), f"{_side.upper()}TOE": (0.16, 0.0, -0.04),
        f"{_side.upper()}MT5": (0.1, _s * 0.04, -0.03)})

# coordinate -> (body, joint type, axis, range)
_ROOT = {"pelvis_tx": ("slide", (1, 0, 0), (-3.0, 3.0)), "pelvis_ty": ("slide", (0, 1, 0), (-3.0, 3.0)),
         "pelvis_tz": ("slide", (0, 0, 1), (0.0, 2.0)), "pelvis_rotation": ("hinge", (0, 0, 1), (-3.0, 3.0)),
         "pelvis_list": ("hinge", (1, 0, 0), (-1.0, 1.0)), "pelvis_tilt": ("hinge", (0, 1, 0), (-1.0, 1.0))}
_JOINTS = {"femur": ("hip_flexion", (0, 1, 0), (-0.8, 1.6)), "tibia": ("knee_angle", (0, 1, 0), (0.0, 2.0)),
           "foot": ("ankle_angle", (0, 1, 0), (-0.8, 0.6))}
SCALE_GROUPS = {"pelvis": ["pelvis"], "thigh_r": ["femur_r"], "thigh_l": ["femur_l"],
                "leg_r": ["tibia_r", "foot_r"], "leg_l": ["tibia_l", "foot_l"]}


def _vec(v) -> str:
    return " ".join(f"{x:g}" for x in v)


def write_legs_model(path: Path) -> Path:
    """The two-legged MJCF (with its ``mjx_biomech`` metadata) at ``path``."""
    coords, xml_bodies = [], {}
    for body, (parent, pos, markers) in _BODIES.items():
        joints = []
        if parent is None:
            for name, (kind, axis, rng) in _ROOT.items():
                joints.append(f'<joint name="{name}" type="{kind}" axis="{_vec(axis)}" range="{_vec(rng)}"/>')
                coords.append({"name": name, "joint": name, "motion": "translational" if kind == "slide" else "rotational",
                               "range": list(rng), "default": 0.0, "locked": False})
        else:
            stem, side = body.split("_")
            name, axis, rng = _JOINTS[stem]
            name = f"{name}_{side}"
            joints.append(f'<joint name="{name}" type="hinge" axis="{_vec(axis)}" range="{_vec(rng)}"/>')
            coords.append({"name": name, "joint": name, "motion": "rotational", "range": list(rng), "default": 0.0,
                           "locked": False})
        sites = "".join(f'<site name="{m}" pos="{_vec(p)}" size="0.01"/>' for m, p in markers.items())
        geom = '<geom type="capsule" fromto="0 0 0 0 0 -0.4" size="0.05" mass="5"/>'
        xml_bodies[body] = (parent, f'<body name="{body}" pos="{_vec(pos)}">{"".join(joints)}{geom}{sites}', "</body>")

    def nest(name: str) -> str:
        _, head, tail = xml_bodies[name]
        return head + "".join(nest(child) for child, (p, _, _) in xml_bodies.items() if p == name) + tail

    markers = {m: m for _, _, ms in _BODIES.values() for m in ms}
    meta = {"format": "mjx_biomech/1", "coordinates": coords, "dependent_joints": [],
            "scale_groups": [{"name": g, "bodies": b, "per_axis": False} for g, b in SCALE_GROUPS.items()],
            "marker_sets": {MARKER_SET: markers}, "opensim": {}}
    data = json.dumps(meta).replace("&", "&amp;").replace('"', "&quot;")
    path.write_text(f'<mujoco model="legs"><compiler angle="radian"/><custom><text name="mjx_biomech" data="{data}"/>'
                    f'</custom><worldbody>{nest("pelvis")}</worldbody></mujoco>')
    return path


def swing(model, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``times`` (T,) s and ``coords`` (T, C): walking forward along +X while the legs swing."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / FPS
    w = 2 * np.pi * 1.0 * t
    index = model.coordinate_names.index
    q = np.zeros((frames, model.num_coordinates))
    q[:, index("pelvis_tx")] = -0.3 + 1.2 * t
    q[:, index("pelvis_tz")] = 0.02 * np.sin(2 * w)
    q[:, index("pelvis_rotation")] = 0.1 * np.sin(w)
    q[:, index("pelvis_tilt")] = 0.05 * np.sin(w + 1)
    for side, phase in (("r", 0.0), ("l", np.pi)):
        q[:, index(f"hip_flexion_{side}")] = 0.3 + 0.4 * np.sin(w + phase + rng.uniform(-0.2, 0.2))
        q[:, index(f"knee_angle_{side}")] = 0.6 + 0.4 * np.sin(w + phase + 1.0)
        q[:, index(f"ankle_angle_{side}")] = 0.2 * np.sin(w + phase - 0.5)
    return t, q


def person(model, seed: int):
    """Scales 1 ± 5-8 % per group, no marker offsets (the subjects differ by size and motion)."""
    return synthetic.person(model, seed=seed, marker_set=None, scale_range=(0.05, 0.08))


def _markers(model, params, coords) -> np.ndarray:
    return np.asarray(jax.vmap(lambda q: model.markers(q, params, MARKER_SET))(jnp.asarray(coords)))


def write_markerless_subject(folder: Path, model, seed: int, frames: int = 9, cameras: int = 4) -> dict:
    """``calibration.toml`` and ``walk.npz`` of a person in ``folder``; returns the study entry's files."""
    folder.mkdir(parents=True, exist_ok=True)
    times, coords = swing(model, frames, seed)
    rig = synthetic.ring_rig(n_cameras=cameras, radius=3.5, target=(0.0, 0.0, 0.6))
    capture = synthetic.capture(model, person(model, seed), times, coords, rig, MARKER_SET, noise_px=1.0,
                                dropout=0.05, outlier_fraction=0.0, seed=seed, name="walk")
    rig.to_toml(folder / "calibration.toml")
    capture.to_npz(folder / "walk.npz")
    return {"calibration": str(folder / "calibration.toml"), "keypoints": [str(folder / "walk.npz")]}


def write_marker_subject(folder: Path, model, seed: int, frames: int = 9) -> dict:
    """``static.trc`` and ``walk.trc`` of a person in ``folder``; returns the study entry's files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    params = person(model, seed)
    times, coords = swing(model, frames, seed)
    static = np.zeros((3, model.num_coordinates))
    names = model.marker_names(MARKER_SET)
    for name, q, t in (("static", static, np.arange(3) / FPS), ("walk", coords, times)):
        points = _markers(model, params, q) + rng.normal(0.0, 0.001, (len(q), len(names), 3))
        trc.write_trc(folder / f"{name}.trc", t, names, points, units="mm", z_up_input=True, data_rate=FPS)
    return {"static": str(folder / "static.trc"), "trials": [str(folder / "walk.trc")]}


def load_legs(folder: Path):
    return mjx_biomech.load_model(write_legs_model(folder / "legs.xml"))


def write_study(folder: Path, markerless: int = 2, marker_based: int = 2, frames: int = 9, steps: int = 10,
                broken: str | None = None) -> Path:
    """``study.toml`` in ``folder`` with ``markerless`` + ``marker_based`` subjects (``m1``, ...,
    ``k1``, ...) of the legs model, each a different person; ``broken`` names one whose keypoints
    come from cameras its calibration lacks. Settings keep the fits short (``steps``)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = load_legs(folder)
    lines = ['[markerless]', 'model = "legs.xml"', f'marker_set = "{MARKER_SET}"', f"steps = {steps}",
             "no_bundle_adjust = true", "", "[marker_based]", 'model = "legs.xml"', f'marker_set = "{MARKER_SET}"',
             "marker_sigma = 0.001", ""]
    for i in range(markerless):
        name = f"m{i + 1}"
        files = write_markerless_subject(folder / name, model, seed=10 + i, frames=frames)
        if name == broken:
            other = write_markerless_subject(folder / f"{name}_other", model, seed=10 + i, frames=frames, cameras=5)
            files["keypoints"] = other["keypoints"]
            files["calibration"] = str(folder / name / "calibration.toml")
        lines += ["[[subject]]", f'name = "{name}"', f'calibration = "{Path(files["calibration"]).relative_to(folder)}"',
                  f'keypoints = ["{Path(files["keypoints"][0]).relative_to(folder)}"]', ""]
    for i in range(marker_based):
        name = f"k{i + 1}"
        files = write_marker_subject(folder / name, model, seed=20 + i, frames=frames)
        lines += ["[[subject]]", f'name = "{name}"', f'static = "{Path(files["static"]).relative_to(folder)}"',
                  f'trials = ["{Path(files["trials"][0]).relative_to(folder)}"]', ""]
    path = folder / "study.toml"
    path.write_text("\n".join(lines))
    return path
