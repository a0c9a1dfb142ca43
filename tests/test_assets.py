"""The bundled full-body model (mjx_biomech/data/fullbody.xml, built from assets/): generated from its tables, anthropometry and OpenSim sign conventions
checked with MuJoCo's C engine."""

import json
import math

import mujoco
import numpy as np
import pytest

import assets
from assets import build_model
from mjx_biomech.errors import InputError

# Rajagopal2016.osim's coordinates (plus a neck), in its coordinate order: pelvis tilt/list/rotation/tx/ty/tz, right leg,
# left leg, lumbar, neck, right arm, left arm.
COORDINATES = (
    ["pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz"]
    + [f"{c}_{s}" for s in "rl" for c in ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle", "ankle_angle",
                                          "subtalar_angle", "mtp_angle")]
    + ["lumbar_extension", "lumbar_bending", "lumbar_rotation", "neck_flexion", "neck_bending", "neck_rotation"]
    + [f"{c}_{s}" for s in "rl" for c in ("arm_flex", "arm_add", "arm_rot", "elbow_flex", "pro_sup", "wrist_flex", "wrist_dev")]
)
# Ranges of Rajagopal2016.osim (radians / metres) for the coordinates it has.
RAJAGOPAL_RANGES = {
    "pelvis_tx": (-5, 5), "pelvis_ty": (-1, 2), "pelvis_tz": (-3, 3),
    "hip_flexion_r": (-0.52359878, 2.0943951), "hip_adduction_r": (-0.87266463, 0.52359878),
    "hip_rotation_r": (-0.6981317, 0.6981317), "knee_angle_r": (0.0, 2.0944), "ankle_angle_r": (-0.6981317, 0.52359878),
    "subtalar_angle_r": (-0.34906585, 0.34906585), "mtp_angle_r": (-0.52359878, 0.52359878),
    "lumbar_extension": (-1.57079633, 1.57079633), "arm_flex_r": (-1.57079633, 1.57079633),
    "arm_add_r": (-2.0943951, 1.57079633), "arm_rot_r": (-1.57079633, 1.57079633), "elbow_flex_r": (0.0, 2.618),
    "pro_sup_r": (0.0, 1.57079633), "wrist_flex_r": (-1.22173048, 1.22173048), "wrist_dev_r": (-0.43633231, 0.61086524),
}
BLAZEPOSE33 = [
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer", "left_ear",
    "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
    "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel", "left_foot_index",
    "right_foot_index",
]
COCO17 = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]
HALPE26 = [
    "Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow", "LWrist", "RWrist", "LHip", "RHip",
    "LKnee", "RKnee", "LAnkle", "RAnkle", "Head", "Neck", "Hip", "LBigToe", "RBigToe", "LSmallToe", "RSmallToe", "LHeel",
    "RHeel",
]
_MOVI_SIDED = [
    "fronthead", "backhead", "back", "shom", "upperarm", "elbm", "forearm", "writhumbside", "wripinkieside", "fin", "asis",
    "psis", "frontthigh", "thigh", "knem", "ankm", "hee", "fifthmetatarsal", "toe", "cheek", "breast", "elbinner", "waist",
    "thumb", "frontinnerthigh", "innerknee", "shin", "firstmetatarsal", "fourthtoe", "scapula", "bum",
]
_MOVI_JOINTS = ["ank", "elb", "hip", "han", "kne", "sho", "wri", "foo"]
BML_MOVI_87 = (
    ["backneck", "upperback", "clavicle", "sternum", "umbilicus"]
    + ["l" + n for n in _MOVI_SIDED] + ["r" + n for n in _MOVI_SIDED]
    + ["head", "mhip", "pelv", "thor"]
    + ["l" + n for n in _MOVI_JOINTS] + ["r" + n for n in _MOVI_JOINTS]
)
EXPECTED_SETS = {"blazepose33": BLAZEPOSE33, "coco17": COCO17, "halpe26": HALPE26, "bml_movi_87": BML_MOVI_87}
# de Leva (1996) male segment lengths (mm) of the 1741 mm reference subject, scaled to 1.75 m.
DE_LEVA_LENGTHS = {("femur_r", "tibia_r"): 422.2, ("tibia_r", "talus_r"): 434.0, ("humerus_r", "ulna_r"): 281.7,
                   ("ulna_r", "hand_r"): 268.9}
JOINT_CENTRE_KEYPOINTS = {
    "blazepose33": {"right_hip": "femur_r", "left_knee": "tibia_l", "right_ankle": "talus_r", "left_shoulder": "humerus_l",
                    "right_elbow": "ulna_r", "left_wrist": "hand_l"},
    "coco17": {"left_hip": "femur_l", "right_knee": "tibia_r", "left_ankle": "talus_l", "right_shoulder": "humerus_r",
               "left_elbow": "ulna_l", "right_wrist": "hand_r"},
    "halpe26": {"RHip": "femur_r", "LKnee": "tibia_l", "RAnkle": "talus_r", "LShoulder": "humerus_l", "RElbow": "ulna_r",
                "LWrist": "hand_l", "Hip": "pelvis"},
    "bml_movi_87": {"lhip": "femur_l", "rkne": "tibia_r", "lank": "talus_l", "rsho": "humerus_r", "lelb": "ulna_l",
                    "rwri": "hand_r", "mhip": "pelvis"},
}


@pytest.fixture(scope="module")
def model():
    return mujoco.MjModel.from_xml_path(str(assets.MODEL_PATH))


@pytest.fixture(scope="module")
def meta(model):
    text = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_TEXT, "mjx_biomech")
    start = model.text_adr[text]
    return json.loads(model.text_data[start:start + model.text_size[text] - 1])


def _pose(model, **coords):
    """MjData after mj_kinematics at the neutral keyframe with the given coordinates changed."""
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("neutral").id)
    for name, value in coords.items():
        data.qpos[model.jnt_qposadr[model.joint(name).id]] = value
    mujoco.mj_kinematics(model, data)
    return data


def _body(model, data, name):
    return data.xpos[model.body(name).id].copy()


def _site(model, data, name):
    return data.site_xpos[model.site(name).id].copy()


def _geom(model, data, name):
    return data.geom_xpos[model.geom(name).id].copy()


def test_committed_model_is_what_the_tables_build():
    assert assets.build_mjcf() == assets.MODEL_PATH.read_text(encoding="utf-8"), (
        "mjx_biomech/data/fullbody.xml is out of date with its tables: run python -m assets.build_model")


def test_model_compiles_with_75_kg_and_opensim_coordinates(model, meta):
    assert model.body_subtreemass[0] == pytest.approx(75.0, rel=0.005)
    assert meta["format"] == "mjx_biomech/1"
    assert meta["dependent_joints"] == []
    assert [c["name"] for c in meta["coordinates"]] == COORDINATES
    for c in meta["coordinates"]:
        joint = model.joint(c["joint"])
        expected_type = mujoco.mjtJoint.mjJNT_HINGE if c["motion"] == "rotational" else mujoco.mjtJoint.mjJNT_SLIDE
        assert c["joint"] == c["name"] and model.jnt_type[joint.id] == expected_type
        np.testing.assert_allclose(model.jnt_range[joint.id], c["range"], rtol=0, atol=1e-12, err_msg=c["name"])
        assert c["range"][0] <= c["default"] <= c["range"][1] and c["locked"] is False
    for name, expected in RAJAGOPAL_RANGES.items():
        coordinate = next(c for c in meta["coordinates"] if c["name"] == name)
        np.testing.assert_allclose(coordinate["range"], expected, atol=1e-8, err_msg=name)


def test_every_coordinate_but_the_pelvis_has_a_motor_named_like_its_joint(model):
    motors = {model.actuator(i).name: i for i in range(model.nu)}
    for name in COORDINATES:
        if name.startswith("pelvis_"):
            assert name not in motors
            continue
        act = motors[name]
        assert model.actuator_trntype[act] == mujoco.mjtTrn.mjTRN_JOINT
        assert model.actuator_trnid[act, 0] == model.joint(name).id
        assert model.actuator_gear[act, 0] > 0
    assert len(motors) == len(COORDINATES) - 6


def test_pelvis_slides_translate_along_opensim_ground_axes(model):
    base = _body(model, _pose(model), "pelvis")
    for name, world_shift in (("pelvis_tx", (0.1, 0, 0)), ("pelvis_ty", (0, 0, 0.1)), ("pelvis_tz", (0, -0.1, 0))):
        value = _pose(model).qpos[model.jnt_qposadr[model.joint(name).id]] + 0.1
        moved = _body(model, _pose(model, **{name: value}), "pelvis")
        np.testing.assert_allclose(moved - base, world_shift, atol=1e-12, err_msg=name)


def test_neutral_pose_stands_1_75_m_tall_on_the_floor(model, meta):
    data = _pose(model)
    head = model.geom("head_geom").id
    assert data.geom_xpos[head, 2] + model.geom_size[head, 0] == pytest.approx(1.75, abs=0.03)
    for side in "rl":
        heights = [_body(model, data, f"{b}_{side}")[2] for b in ("femur", "tibia", "talus")]
        assert heights[0] > heights[1] > heights[2] > 0
    contacts = [i for i in range(model.ngeom) if model.geom(i).name.startswith("foot_contact_")]
    assert len(contacts) == 8
    lowest = min(data.geom_xpos[i, 2] - model.geom_size[i, 0] for i in contacts)
    assert abs(lowest) < 0.01
    defaults = {c["joint"]: c["default"] for c in meta["coordinates"]}
    for name, value in defaults.items():
        assert data.qpos[model.jnt_qposadr[model.joint(name).id]] == pytest.approx(value)


def test_limb_lengths_follow_de_leva_scaled_to_stature(model):
    data = _pose(model)
    for (proximal, distal), length_mm in DE_LEVA_LENGTHS.items():
        for side in ("r", "l"):
            names = [n[:-1] + side for n in (proximal, distal)]
            measured = np.linalg.norm(_body(model, data, names[1]) - _body(model, data, names[0]))
            assert measured == pytest.approx(length_mm / 1000 * 1.75 / 1.741, abs=1e-4), names


@pytest.mark.parametrize("coordinate, value, point, axis, sign", [
    # Directions in MuJoCo's world: +X forward, +Y left, +Z up. Each row is Rajagopal2016's meaning of a positive value.
    ("hip_flexion_r", 0.5, ("body", "tibia_r"), 0, +1),          # flexion: knee forward
    ("hip_adduction_r", 0.3, ("body", "tibia_r"), 1, +1),        # adduction: right knee toward the midline
    ("hip_adduction_l", 0.3, ("body", "tibia_l"), 1, -1),        # adduction: left knee toward the midline
    ("hip_rotation_r", 0.3, ("site", "coco17/right_ankle"), 1, 0),  # rotation about the femur's axis leaves the ankle
    ("knee_angle_r", 0.5, ("body", "talus_r"), 0, -1),           # flexion is positive: ankle swings back
    ("ankle_angle_r", 0.3, ("geom", "foot_contact_toe_r"), 2, +1),   # dorsiflexion: toes up
    ("mtp_angle_r", 0.3, ("geom", "foot_contact_toe_r"), 2, -1),     # Rajagopal's mtp axis: positive turns the toes down
    ("lumbar_extension", 0.3, ("body", "head"), 0, -1),          # extension: trunk leans back
    ("lumbar_bending", 0.3, ("body", "head"), 1, -1),            # bending toward the right
    ("lumbar_rotation", 0.3, ("site", "bml_movi_87/sternum"), 1, +1),  # chest turns to the left
    ("neck_flexion", 0.3, ("site", "blazepose33/nose"), 2, -1),  # flexion: chin down
    ("neck_bending", 0.3, ("site", "blazepose33/nose"), 1, -1),  # bending toward the right
    ("neck_rotation", 0.3, ("site", "blazepose33/nose"), 1, +1),  # face turns to the left
    ("arm_flex_r", 0.5, ("body", "hand_r"), 0, +1),              # flexion: arm forward
    ("arm_add_r", 0.3, ("body", "hand_r"), 1, +1),               # adduction: right hand toward the midline
    ("arm_add_l", 0.3, ("body", "hand_l"), 1, -1),
    ("elbow_flex_r", 0.5, ("body", "hand_r"), 0, +1),            # flexion: hand forward
    ("pro_sup_r", 0.5, ("site", "bml_movi_87/rwrithumbside"), 0, +1),  # pronation from the supinated neutral: thumb forward
    ("wrist_flex_r", 0.5, ("site", "bml_movi_87/rhan"), 0, +1),  # flexion: palm (forward in neutral) closes
    ("wrist_dev_r", 0.3, ("site", "bml_movi_87/rhan"), 1, +1),   # ulnar deviation: right hand toward the midline
])
def test_positive_coordinates_move_segments_as_in_rajagopal2016(model, coordinate, value, point, axis, sign):
    kind, name = point
    where = {"body": _body, "site": _site, "geom": _geom}[kind]
    shift = where(model, _pose(model, **{coordinate: value}), name) - where(model, _pose(model), name)
    if sign == 0:
        assert abs(shift[axis]) < 1e-9
    else:
        assert sign * shift[axis] > 0.01, (coordinate, shift)


def test_hip_rotation_and_subtalar_follow_rajagopal2016_with_the_knee_flexed(model):
    bent = {"knee_angle_r": math.pi / 2}
    # Internal rotation (positive) swings the flexed shank's foot laterally, i.e. away from the midline (-Y for the right leg).
    ankle = _body(model, _pose(model, hip_rotation_r=0.3, **bent), "talus_r")[1] - _body(model, _pose(model, **bent), "talus_r")[1]
    assert ankle < -0.01
    # Inversion (positive subtalar): the medial border of the sole rises above the lateral one.
    def border_drop(data):
        return _geom(model, data, "foot_contact_medial_r")[2] - _geom(model, data, "foot_contact_lateral_r")[2]
    assert border_drop(_pose(model, subtalar_angle_r=0.3)) - border_drop(_pose(model)) > 0.005


def test_left_side_mirrors_the_right_for_equal_coordinates(model, meta):
    rng = np.random.default_rng(0)
    pose = {}
    for c in meta["coordinates"]:
        if c["name"].endswith("_r"):
            value = rng.uniform(*c["range"])
            pose[c["name"]] = value
            pose[c["name"][:-2] + "_l"] = value
    data = _pose(model, **pose)
    for i in range(model.nbody):
        name = model.body(i).name
        if name.endswith("_r"):
            right, left = data.xpos[i], _body(model, data, name[:-2] + "_l")
            np.testing.assert_allclose(left, right * [1, -1, 1], atol=1e-12, err_msg=name)


@pytest.mark.parametrize("set_name", sorted(EXPECTED_SETS))
def test_marker_set_tables_name_existing_bodies_in_canonical_order(model, meta, set_name):
    bodies = {model.body(i).name for i in range(1, model.nbody)}
    markers = build_model.read_marker_table(build_model.MARKERSETS_DIR / f"{set_name}.csv", bodies)
    assert [m.keypoint for m in markers] == EXPECTED_SETS[set_name]
    assert list(meta["marker_sets"][set_name]) == EXPECTED_SETS[set_name]
    data = _pose(model)
    for m in markers:
        site = model.site(meta["marker_sets"][set_name][m.keypoint])
        assert site.name == f"{set_name}/{m.keypoint}"
        assert model.body(model.site_bodyid[site.id]).name == m.body
        assert model.site_group[site.id] == 3
    for keypoint, body in JOINT_CENTRE_KEYPOINTS[set_name].items():
        np.testing.assert_allclose(_site(model, data, f"{set_name}/{keypoint}"), _body(model, data, body), atol=1e-12)


@pytest.mark.parametrize("set_name", sorted(EXPECTED_SETS))
def test_left_keypoints_lie_on_the_left(model, set_name):
    data = _pose(model)

    def side(keypoint):
        if set_name == "halpe26":
            return keypoint[0] if keypoint[0] in "LR" and keypoint[1].isupper() else None
        if set_name == "bml_movi_87":
            return keypoint[0].upper() if keypoint[0] in "lr" else None
        return "L" if "left" in keypoint else "R" if "right" in keypoint else None

    sided = [(k, side(k)) for k in EXPECTED_SETS[set_name] if side(k)]
    assert sided
    for keypoint, s in sided:
        y = _site(model, data, f"{set_name}/{keypoint}")[1]
        assert (y > 0) == (s == "L"), keypoint


def test_marker_table_naming_an_unknown_body_is_rejected(tmp_path):
    bad = tmp_path / "bad_set.csv"
    bad.write_text("# a comment\nkeypoint,body,x,y,z\nnose,head,0.1,0.1,0\nleft_knee,femur_x,0,0,0\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        build_model.read_marker_table(bad, {"head", "femur_l"})
    assert str(bad) in str(err.value) and "line 4" in str(err.value) and "femur_x" in str(err.value)


def test_marker_table_with_wrong_columns_is_rejected(tmp_path):
    bad = tmp_path / "bad_header.csv"
    bad.write_text("name,body,x,y,z\nnose,head,0,0,0\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1: expected columns keypoint,body,x,y,z"):
        build_model.read_marker_table(bad, {"head"})


def test_scale_groups_are_the_papers_eight_plus_torso_and_head(model, meta):
    groups = {g["name"]: g for g in meta["scale_groups"]}
    assert list(groups) == ["overall", "pelvis", "thigh_r", "thigh_l", "leg_r", "leg_l", "arm_r", "arm_l", "torso", "head"]
    assert set(groups["overall"]["bodies"]) == {model.body(i).name for i in range(1, model.nbody)}
    assert groups["leg_r"]["bodies"] == ["tibia_r", "talus_r", "calcn_r", "toes_r"]
    assert all(g["per_axis"] is False for g in groups.values())


def test_only_foot_contact_geoms_touch_the_floor(model):
    data = _pose(model)
    data.qpos[model.jnt_qposadr[model.joint("pelvis_ty").id]] -= 0.005
    mujoco.mj_forward(model, data)
    touching = {model.geom(c.geom[0]).name for c in data.contact[: data.ncon]} | {
        model.geom(c.geom[1]).name for c in data.contact[: data.ncon]}
    assert touching == {"floor"} | {f"foot_contact_{p}_{s}" for p in ("heel", "lateral", "medial", "toe") for s in "rl"}


def test_one_second_of_mj_step_from_neutral_stays_finite(model):
    data = _pose(model)
    data.ctrl[:] = 0
    for _ in range(int(round(1.0 / model.opt.timestep))):
        mujoco.mj_step(model, data)
    assert np.isfinite(data.qpos).all() and np.isfinite(data.qvel).all()
    assert data.time == pytest.approx(1.0)
