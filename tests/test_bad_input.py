"""Bad input found by fuzzing the readers raises InputError naming the file and the element or
line (it used to hang, overflow the stack, or escape as ValueError, OverflowError,
UnicodeDecodeError, FileNotFoundError or IsADirectoryError, or reach MuJoCo as NaN); and every
writer leaves an earlier file untouched when it fails."""

from __future__ import annotations

import re
from pathlib import Path

import mujoco
import numpy as np
import pytest
import tomli_w

import mjx_biomech
from converters import osim as osim_converter
from converters.mot import read_mot, write_mot, write_sto
from converters.trc import read_trc, write_trc
from mjx_biomech.capture.cameras import Camera, CameraRig
from mjx_biomech.capture.captures import Capture
from mjx_biomech.errors import InputError

# A ground frame, a body with an offset frame, a pin and a marker on the offset frame.
OSIM = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="40000"><Model name="small">
<BodySet><objects><Body name="a"><mass>2</mass><inertia>0.1 0.1 0.1 0 0 0</inertia><components>
<PhysicalOffsetFrame name="a_off"><socket_parent>..</socket_parent><translation>0 -0.3 0</translation>
</PhysicalOffsetFrame></components></Body></objects></BodySet>
<JointSet><objects><CustomJoint name="hinge"><socket_parent_frame>/ground</socket_parent_frame>
<socket_child_frame>/bodyset/a</socket_child_frame><coordinates><Coordinate name="q"><range>-1 1</range></Coordinate>
</coordinates><SpatialTransform><TransformAxis name="rotation1"><coordinates>q</coordinates><axis>0 0 1</axis>
FUNCTION</TransformAxis></SpatialTransform></CustomJoint></objects></JointSet>
<MarkerSet><objects><Marker name="m"><socket_parent_frame>/bodyset/a/a_off</socket_parent_frame>
<location>0.1 0 0</location></Marker></objects></MarkerSet></Model></OpenSimDocument>
"""
LINEAR = '<LinearFunction name="function"><coefficients>1 0</coefficients></LinearFunction>'


def osim_file(tmp_path: Path, old: str = "", new: str = "", function: str = LINEAR) -> Path:
    text = OSIM.replace("FUNCTION", function)
    assert old in text
    path = tmp_path / "bad.osim"
    path.write_text(text.replace(old, new, 1))
    return path


def refused(path: Path, message: str) -> None:
    """Both ways in (to_mjcf and load_model) raise InputError naming the file and ``message``."""
    pattern = re.escape(str(path)) + r".*" + message
    with pytest.raises(InputError, match=pattern):
        osim_converter.to_mjcf(path)
    with pytest.raises(InputError, match=pattern):
        mjx_biomech.load_model(path)


def test_the_small_model_itself_converts(tmp_path):
    assert mujoco.MjModel.from_xml_string(osim_converter.to_mjcf(osim_file(tmp_path))).nsite == 1


@pytest.mark.parametrize("parent", ["/bodyset/a/a_off", "."])
def test_offset_frame_whose_parent_is_itself_is_refused(tmp_path, parent):
    path = osim_file(tmp_path, "<socket_parent>..</socket_parent>", f"<socket_parent>{parent}</socket_parent>")
    refused(path, r"frame '/bodyset/a/a_off': its socket_parent chain forms a cycle")


def test_thousands_of_nested_frames_or_multiplier_functions_are_refused_naming_the_line(tmp_path):
    depth = 1200
    frames = '<components><PhysicalOffsetFrame name="f"><socket_parent>..</socket_parent>' * depth
    path = osim_file(tmp_path, "<components>", frames + "</PhysicalOffsetFrame></components>" * depth + "<components>")
    refused(path, r"line \d+: <\w+>: elements nested more than 200 deep")
    function = LINEAR
    for _ in range(depth):
        function = f'<MultiplierFunction name="function"><function>{function}</function><scale>1</scale></MultiplierFunction>'
    refused(osim_file(tmp_path, function=function), r"line \d+: <\w+>: elements nested more than 200 deep")


def test_a_non_integer_version_is_refused(tmp_path):
    refused(osim_file(tmp_path, 'Version="40000"', 'Version="abc"'), r"<OpenSimDocument Version='abc'>: expected an integer")


@pytest.mark.parametrize("old, new, element", [
    ("<mass>2</mass>", "<mass>nan</mass>", r"<Body name='a'> <mass>: expected finite numbers, got 'nan'"),
    ("<translation>0 -0.3 0</translation>", "<translation>0 inf 0</translation>",
     r"<PhysicalOffsetFrame name='a_off'> <translation>: expected finite numbers"),
    ("<location>0.1 0 0</location>", "<location>0.1 -Infinity 0</location>", r"<Marker name='m'> <location>: expected finite"),
    ("<range>-1 1</range>", "<range>-1 NaN</range>", r"<Coordinate name='q'> <range>: expected finite"),
    ("<coefficients>1 0</coefficients>", "<coefficients>1 1e309</coefficients>",
     r"<TransformAxis name='rotation1'> <LinearFunction name='function'> <coefficients>: expected finite"),
])
def test_non_finite_numbers_in_an_osim_are_refused_naming_the_element(tmp_path, old, new, element):
    refused(osim_file(tmp_path, old, new), element)


def test_element_names_with_double_colons_parse(tmp_path):
    force = ('<ForceSet><objects><HuntCrossleyForce name="c"><HuntCrossleyForce::ContactParametersSet name="p">'
             "<objects /></HuntCrossleyForce::ContactParametersSet></HuntCrossleyForce></objects></ForceSet>")
    path = osim_file(tmp_path, "<MarkerSet>", force + "<MarkerSet>")
    assert mujoco.MjModel.from_xml_string(osim_converter.to_mjcf(path)).nsite == 1


def test_malformed_xml_is_refused_naming_the_line(tmp_path):
    refused(osim_file(tmp_path, "</Body>", "</Bodyy>"), r"line 5: not well-formed XML \(mismatched tag\)")


# ---------------------------------------------------------------- calibration files
def calibration(tmp_path: Path, **changes) -> Path:
    camera = {"name": "cam01", "size": [1920, 1080], "matrix": [[1500.0, 0.0, 960.0], [0.0, 1500.0, 540.0], [0.0, 0.0, 1.0]],
              "distortions": [0.0, 0.0, 0.0, 0.0], "rotation": [0.0, 0.0, 0.0], "translation": [0.0, 0.0, 3.0]}
    camera.update(changes)
    path = tmp_path / "calibration.toml"
    path.write_text(tomli_w.dumps({"cam_01": camera}))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"size": [float("inf"), 1080]}, r"'size' must be finite numbers"),
    ({"size": [1e300, 1080]}, r"'size' must be positive whole pixels"),
    ({"size": [True, 1080]}, r"'size' must be numbers, got \[True, 1080\]"),
    ({"matrix": [[-1500.0, 0.0, 960.0], [0.0, 1500.0, 540.0], [0.0, 0.0, 1.0]]}, r"'matrix' must be .* with fx, fy > 0"),
    ({"matrix": [[float("nan"), 0.0, 960.0], [0.0, 1500.0, 540.0], [0.0, 0.0, 1.0]]}, r"'matrix' must be finite numbers"),
    ({"rotation": [0.0, False, 0.0]}, r"'rotation' must be numbers"),
    ({"fisheye": "no"}, r"'fisheye' must be true or false"),
])
def test_calibration_values_are_checked_naming_file_and_camera(tmp_path, changes, message):
    path = calibration(tmp_path, **changes)
    with pytest.raises(InputError, match=re.escape(str(path)) + r": \[cam_01\]: " + message):
        CameraRig.from_toml(path)


def test_calibration_that_is_not_utf8_or_nests_too_deeply_is_refused(tmp_path):
    path = tmp_path / "calibration.toml"
    path.write_bytes(b'[cam_01]\nname = "cam\xff01"\n')
    with pytest.raises(InputError, match=re.escape(str(path)) + r": not UTF-8 text"):
        CameraRig.from_toml(path)
    path.write_bytes(b"[cam_01]\nsize = " + b"[" * 5000 + b"]" * 5000 + b"\n")
    with pytest.raises(InputError, match=re.escape(str(path)) + r": not a calibration \(arrays or tables nested too deeply"):
        CameraRig.from_toml(path)


# ---------------------------------------------------------------- captures and paths
def test_damaged_capture_archives_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "capture.npz"
    Capture(np.ones((1, 2, 3, 2)), np.ones((1, 2, 3)), 30.0, ["a", "b", "c"], ["cam01"]).to_npz(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=re.escape(str(path)) + r": cannot read as \.npz"):
        Capture.from_npz(path)
    np.savez(path, keypoints=np.ones((1, 2, 3, 2)), confidence=np.ones((1, 2, 3)), camera_names=np.array(["cam01"]),
             keypoint_names=np.array(["a", "b", "c"]), fps=np.array([30.0, 60.0]))
    with pytest.raises(InputError, match=re.escape(str(path)) + r": array 'fps' has shape \(2,\); expected one number"):
        Capture.from_npz(path)
    np.savez(path, keypoints=np.ones((1, 2, 3, 2)), confidence=np.ones((1, 2, 3)), camera_names=np.array([1.0]),
             keypoint_names=np.array(["a", "b", "c"]), fps=30.0)
    with pytest.raises(InputError, match=re.escape(str(path)) + r": array 'camera_names' holds float64; expected strings"):
        Capture.from_npz(path)


@pytest.mark.parametrize("read", [read_mot, read_trc, osim_converter.to_mjcf, mjx_biomech.load_model,
                                  CameraRig.from_toml, Capture.from_npz])
def test_missing_files_and_folders_are_refused_naming_the_path(tmp_path, read):
    for path in (tmp_path / "missing.osim", tmp_path):
        with pytest.raises(InputError, match=re.escape(str(path))):
            read(path)


# ---------------------------------------------------------------- writers
def _writers(tmp_path: Path):
    times, names, values = np.arange(3) / 10.0, ("q",), np.zeros((3, 1))
    source = osim_file(tmp_path)
    rig = CameraRig.from_cameras([Camera("c", (64, 48), 50.0, 50.0, 32.0, 24.0, np.zeros(5), np.zeros(3), np.ones(3))])
    capture = Capture(np.ones((1, 2, 3, 2)), np.ones((1, 2, 3)), 30.0, ["a", "b", "c"], ["c"])
    return {
        "mot": lambda path: write_mot(path, times, names, values, (True,)),
        "sto": lambda path: write_sto(path, times, names, values, (True,)),
        "trc": lambda path: write_trc(path, times, names, np.zeros((3, 1, 3))),
        "mjcf": lambda path: osim_converter.to_mjcf(source, path),
        "osim": lambda path: osim_converter.export(mjx_biomech.load_model(source), mjx_biomech.load_model(source).default_params(), path),
        "toml": lambda path: rig.to_toml(path),
        "npz": lambda path: capture.to_npz(path),
    }


@pytest.mark.parametrize("kind", ["mot", "sto", "trc", "mjcf", "osim", "toml", "npz"])
def test_a_writer_that_fails_leaves_the_earlier_file_and_no_temporary_file(tmp_path, monkeypatch, kind):
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / f"result.{kind}"
    path.write_text("earlier")
    write = _writers(tmp_path)[kind]

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("mjx_biomech.io.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write(path)
    assert path.read_text() == "earlier" and [p.name for p in folder.iterdir()] == [path.name]
    monkeypatch.undo()
    write(path)
    assert path.read_bytes() != b"earlier"
