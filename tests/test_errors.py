"""One error contract: every bad input to the library raises ``mjx_biomech.InputError`` (a
``ValueError``) whose message names the argument or file and what was expected."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import mjx_biomech as mb
from mjx_biomech.body import functions
from mjx_biomech.capture import cameras, projection, synthetic
from mjx_biomech.capture.captures import Capture

NAMES = ("nose", "left_hip", "right_hip")


@pytest.fixture(scope="module")
def model():
    return mb.load_model()


def test_input_error_is_the_exported_value_error():
    assert issubclass(mb.InputError, ValueError) and "InputError" in mb.__all__


def test_unknown_names_are_named(model):
    q, params = model.neutral_coordinates(), model.default_params()
    with pytest.raises(mb.InputError, match=r"marker_set 'no_such_set': expected one of .*'coco17'"):
        model.markers(q, params, "no_such_set")
    with pytest.raises(mb.InputError, match=r"scale 'femur' is not one of \['overall'"):
        model.scale_params(femur=1.1)
    with pytest.raises(mb.InputError, match="per_axis: group 'femur' is not a scale group"):
        model.with_scale_groups(per_axis=("femur",))
    with pytest.raises(mb.InputError, match=r"with_scale_groups: groups\[0\] lacks 'bodies'"):
        model.with_scale_groups([{"name": "legs"}])


def test_arrays_of_the_wrong_shape_are_named(model):
    q, params = model.neutral_coordinates(), model.default_params()
    with pytest.raises(mb.InputError, match=r"params.scales has shape \(3,\), expected"):
        model.markers(q, params.replace(scales=jnp.ones(3)))
    with pytest.raises(mb.InputError, match=r"coords has shape \(2, 40\), expected \(40,\)"):
        model.coords_to_qpos(np.zeros((2, 40)), params)


def test_bad_model_sources_are_named(tmp_path):
    with pytest.raises(mb.InputError, match="load_model: source must be .* not int"):
        mb.load_model(42)
    path = tmp_path / "m.xml"
    for meta, expected in (
        (["not", "an", "object"], "metadata: expected a JSON object, got list"),
        ({"coordinates": [{"name": "q", "motion": "rotational"}]}, r"coordinates\[0\] \('q'\) lacks 'range'"),
        ({"coordinates": [{"name": "q", "motion": "rotational", "range": [1, -1], "joint": "j"}]},
         r"coordinates\[0\] \('q'\): 'range' must be \[lower, upper\]"),
        ({"scale_groups": [{"name": "all", "bodies": ["nobody"]}]}, r"scale_groups\[0\] \('all'\) names body 'nobody'"),
        ({"marker_sets": {"coco17": ["nose"]}}, "marker_sets: set 'coco17': expected a JSON object"),
    ):
        text = json.dumps(meta).replace('"', "&quot;")
        path.write_text(
            f'<mujoco><custom><text name="mjx_biomech" data="{text}"/></custom>'
            '<worldbody><body name="b"><joint name="j" type="hinge"/><geom size=".1"/>'
            '<site name="s"/></body></worldbody></mujoco>'
        )
        with pytest.raises(mb.InputError, match=expected) as info:
            mb.load_model(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "fn, expected",
    [
        ({"type": "step"}, "unsupported coordinate function type 'step'"),
        ({"type": "linear", "slope": 1.0}, "linear: missing key 'intercept'"),
        ({"type": "constant", "value": float("nan")}, "constant: 'value' must be finite"),
        ({"type": "polynomial", "coefficients": []}, "polynomial: 'coefficients' must be a list of at least one"),
        ({"type": "simm_spline", "x": [0.0, 1.0], "y": ["a", "b"]}, "simm_spline: 'y' must be numbers"),
        ("linear", "expected a dict with a 'type' key"),
    ],
)
def test_malformed_coordinate_functions_are_named(fn, expected):
    with pytest.raises(mb.InputError, match=expected):
        functions.build(fn)


def test_cameras_reject_unknown_names_and_wrong_types():
    rig = synthetic.ring_rig(n_cameras=2)
    with pytest.raises(mb.InputError, match="camera 'cam3' is not in the calibration"):
        rig.subset(["cam1", "cam3"])
    with pytest.raises(mb.InputError, match="cams: expected a Camera or CameraRig, got str"):
        projection.project("cam1", np.zeros(3))


def test_calibration_with_nan_is_named(tmp_path):
    rig = synthetic.ring_rig(n_cameras=2)
    path = rig.to_toml(tmp_path / "calibration.toml")
    text = path.read_text()
    start = text.index("translation = [")
    path.write_text(text[:start] + "translation = [ nan" + text[text.index(",", start) :])
    with pytest.raises(mb.InputError, match=r"calibration\.toml: \[cam1\]: 'translation' must be finite"):
        cameras.CameraRig.from_toml(path)


def test_captures_reject_non_finite_timing_but_keep_nan_keypoints():
    kp = np.full((1, 2, 3, 2), np.nan)
    cap = Capture(kp, np.ones((1, 2, 3)), 30.0, NAMES, ["cam1"])
    assert np.all(cap.confidence == 0)
    with pytest.raises(mb.InputError, match="fps: expected a positive frame rate in Hz, got nan"):
        Capture(kp, np.ones((1, 2, 3)), float("nan"), NAMES, ["cam1"])
    with pytest.raises(mb.InputError, match="start_time: expected a finite time"):
        Capture(kp, np.ones((1, 2, 3)), 30.0, NAMES, ["cam1"], start_time=float("inf"))
    with pytest.raises(mb.InputError, match=r"confidence: expected shape \(1, 2, 3\)"):
        Capture(kp, np.ones((1, 2)), 30.0, NAMES, ["cam1"])


@pytest.mark.parametrize("config, policy", [("{not json", b"x"), ('{"ppo": {}}', b"x"), (None, b"not a pickle")])
def test_a_corrupt_trained_policy_folder_is_named(tmp_path, config, policy):
    pytest.importorskip("brax", reason="brax is not installed")
    from env_registry import evaluate

    good = {"ppo": {"policy_hidden": [4], "value_hidden": [4]}, "observation_size": 3, "action_size": 2}
    (tmp_path / "config.json").write_text(config if config is not None else json.dumps(good))
    (tmp_path / "policy.pkl").write_bytes(policy)
    culprit = "config.json" if config is not None else "policy.pkl"
    with pytest.raises(mb.InputError, match=culprit):
        evaluate.load_policy(tmp_path)
