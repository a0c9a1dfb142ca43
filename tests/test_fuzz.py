"""Malformed input never escapes as anything but InputError, and never hangs.

A seeded generator mutates valid seed files of every reader (.mot/.sto, .trc, .osim through
``converters.osim.to_mjcf`` and ``mjx_biomech.load_model``, calibration .toml, capture .npz,
OpenSim IK/scale setups and marker sets) and passes bad paths; each case runs in-process under a
time limit (``signal.setitimer``). The default run covers 2,000 cases, the ``slow`` one 10,000,
split by reader family (the shares in ``_readers``).
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import signal
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import tomli_w

import mjx_biomech
from converters import opensim_setup
from converters.mot import read_mot, write_mot
from converters.osim import to_mjcf
from converters.trc import read_trc, write_trc
from mjx_biomech.capture.cameras import CameraRig
from mjx_biomech.capture.captures import Capture
from mjx_biomech.errors import InputError

CASE_LIMIT_S = 10.0

# Cell and element values that readers get wrong: non-finite, huge, tiny, signed zeros, Python-only
# number syntax, wrong types, several values where one belongs, and nothing at all.
TOKENS = ("nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e19", "-1e19", "1e309", "-1e309", "1e-320", "0", "-0",
          "-1", "1e300", "abc", "", " ", "1 2", "1 2 3 4 5 6 7", "true", "false", "0x10", "1_000", "\u0663", "9" * 400,
          "2147483648", "9223372036854775808", "\t", "..", "/", "/ground", "::", "&amp;", "Unassigned")
BAD_BYTES = (b"\xff", b"\xc3\x28", b"\x00", b"\xed\xa0\x80", b"\r", b"\x1b")

OSIM = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="40600">
<Model name="fuzz">
<Ground name="ground"><components><PhysicalOffsetFrame name="g_off"><socket_parent>..</socket_parent>
<translation>0 0.1 0</translation><orientation>0 0 0.2</orientation></PhysicalOffsetFrame></components></Ground>
<gravity>0 -9.80665 0</gravity>
<BodySet name="bodyset"><objects>
<Body name="a"><mass>2</mass><mass_center>0 0.1 0</mass_center><inertia>0.1 0.1 0.1 0 0 0</inertia>
<attached_geometry><Sphere name="s"><radius>0.05</radius></Sphere><Cylinder name="c"><radius>0.02</radius>
<half_height>0.1</half_height></Cylinder><Mesh name="m"><mesh_file>bone.vtp</mesh_file></Mesh></attached_geometry>
<components><PhysicalOffsetFrame name="a_off"><socket_parent>..</socket_parent><translation>0 -0.3 0</translation>
<orientation>0.1 0 0</orientation></PhysicalOffsetFrame></components></Body>
<Body name="b"><mass>1</mass><mass_center>0 0 0</mass_center><inertia>0.01 0.02 0.015 0 0 0</inertia></Body>
<Body name="p"><mass>0.5</mass><inertia>0 0 0 0 0 0</inertia></Body>
</objects></BodySet>
<JointSet name="jointset"><objects>
<CustomJoint name="j1"><socket_parent_frame>ground_offset</socket_parent_frame><socket_child_frame>a_offset</socket_child_frame>
<coordinates><Coordinate name="q1"><default_value>0.1</default_value><range>-1 1</range><clamped>true</clamped>
<locked>false</locked></Coordinate><Coordinate name="q2"><range>-0.5 0.5</range></Coordinate></coordinates>
<frames><PhysicalOffsetFrame name="ground_offset"><socket_parent>/ground</socket_parent><translation>0 1 0</translation>
<orientation>0 0 0</orientation></PhysicalOffsetFrame><PhysicalOffsetFrame name="a_offset">
<socket_parent>/bodyset/a</socket_parent><translation>0 0.2 0</translation><orientation>0 0.3 0</orientation>
</PhysicalOffsetFrame></frames>
<SpatialTransform>
<TransformAxis name="rotation1"><coordinates>q1</coordinates><axis>0 0 1</axis>
<LinearFunction name="function"><coefficients>1 0</coefficients></LinearFunction></TransformAxis>
<TransformAxis name="rotation2"><coordinates>q2</coordinates><axis>1 0 0</axis><MultiplierFunction name="function">
<function><SimmSpline><x>-1 0 1</x><y>-0.5 0 0.7</y></SimmSpline></function><scale>0.5</scale></MultiplierFunction>
</TransformAxis>
<TransformAxis name="rotation3"><coordinates></coordinates><axis>0 1 0</axis><Constant name="function"><value>0</value>
</Constant></TransformAxis>
<TransformAxis name="translation1"><coordinates>q1</coordinates><axis>1 0 0</axis><PolynomialFunction name="function">
<coefficients>0.01 0.02 0</coefficients></PolynomialFunction></TransformAxis>
<TransformAxis name="translation2"><coordinates></coordinates><axis>0 1 0</axis><Constant name="function">
<value>0.01</value></Constant></TransformAxis>
<TransformAxis name="translation3"><coordinates>q2</coordinates><axis>0 0 1</axis>
<PiecewiseLinearFunction name="function"><x>-1 1</x><y>0 0.01</y></PiecewiseLinearFunction></TransformAxis>
</SpatialTransform></CustomJoint>
<PinJoint name="j2"><socket_parent_frame>/bodyset/a/a_off</socket_parent_frame><socket_child_frame>/bodyset/b</socket_child_frame>
<coordinates><Coordinate name="q3"><range>-2 2</range></Coordinate></coordinates></PinJoint>
<SliderJoint name="j3"><socket_parent_frame>/bodyset/b</socket_parent_frame><socket_child_frame>/bodyset/p</socket_child_frame>
<coordinates><Coordinate name="q4"><range>-0.1 0.1</range></Coordinate></coordinates></SliderJoint>
</objects></JointSet>
<ConstraintSet name="constraintset"><objects><CoordinateCouplerConstraint name="c">
<coupled_coordinates_function><LinearFunction><coefficients>0.5 0</coefficients></LinearFunction>
</coupled_coordinates_function><independent_coordinate_names>q1</independent_coordinate_names>
<dependent_coordinate_name>q2</dependent_coordinate_name></CoordinateCouplerConstraint>
<PointOnLineConstraint name="pol"><isEnforced>true</isEnforced></PointOnLineConstraint></objects></ConstraintSet>
<MarkerSet name="markerset"><objects><Marker name="m1"><socket_parent_frame>/bodyset/a</socket_parent_frame>
<location>0.1 0 0</location></Marker><Marker name="m2"><socket_parent_frame>/bodyset/b</socket_parent_frame>
<location>0 -0.1 0</location></Marker></objects></MarkerSet>
<ForceSet name="forceset"><objects><HuntCrossleyForce name="f"><HuntCrossleyForce::ContactParametersSet name="cp">
<objects><HuntCrossleyForce::ContactParameters><geometry>cs floor</geometry></HuntCrossleyForce::ContactParameters>
</objects></HuntCrossleyForce::ContactParametersSet></HuntCrossleyForce></objects></ForceSet>
<ContactGeometrySet name="contactgeometryset"><objects><ContactSphere name="cs"><socket_frame>/bodyset/b</socket_frame>
<location>0 0 0</location><radius>0.03</radius></ContactSphere><ContactHalfSpace name="floor">
<socket_frame>/ground</socket_frame><orientation>0 0 -1.5707963267948966</orientation></ContactHalfSpace></objects>
</ContactGeometrySet>
</Model></OpenSimDocument>
"""

IK_SETUP = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="40000"><InverseKinematicsTool name="ik"><model_file>m.osim</model_file>
<constraint_weight>Inf</constraint_weight><accuracy>1e-05</accuracy><IKTaskSet><objects>
<IKMarkerTask name="m1"><apply>true</apply><weight>1</weight></IKMarkerTask>
<IKCoordinateTask name="q1"><apply>true</apply><weight>0.5</weight><value_type>manual_value</value_type><value>0.1</value>
</IKCoordinateTask></objects></IKTaskSet><marker_file>walk.trc</marker_file><time_range>0 1</time_range>
<output_motion_file>ik.mot</output_motion_file></InverseKinematicsTool></OpenSimDocument>
"""

SCALE_SETUP = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="30000"><ScaleTool name="s"><mass>72.6</mass><GenericModelMaker>
<model_file>m.osim</model_file><marker_set_file>markers.xml</marker_set_file></GenericModelMaker><ModelScaler>
<preserve_mass_distribution>true</preserve_mass_distribution><marker_file>static.trc</marker_file>
<time_range>1 2</time_range></ModelScaler><MarkerPlacer><IKTaskSet><objects><IKMarkerTask name="m1"><weight>2</weight>
</IKMarkerTask></objects></IKTaskSet><time_range>1 2</time_range></MarkerPlacer></ScaleTool></OpenSimDocument>
"""

MARKER_SET = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="30000"><MarkerSet><objects><Marker name="m1"><body>a</body><location>0.1 0 0</location>
<fixed>false</fixed></Marker><Marker name="m2"><socket_parent_frame>/bodyset/b</socket_parent_frame>
<location>0 -0.1 0</location></Marker></objects></MarkerSet></OpenSimDocument>
"""


def _seed_mot(folder: Path) -> bytes:
    times = np.arange(6) / 50.0
    values = np.random.default_rng(0).normal(size=(6, 3))
    path = write_mot(folder / "seed.mot", times, ("q1", "q2", "tx"), values, (True, True, False))
    return path.read_bytes()


def _seed_trc(folder: Path) -> bytes:
    positions = np.random.default_rng(1).normal(size=(5, 2, 3))
    positions[2, 1] = np.nan
    path = write_trc(folder / "seed.trc", np.arange(5) / 100.0, ("m1", "m2"), positions, units="mm")
    return path.read_bytes()


def _calibration(rng: random.Random) -> dict:
    def camera(name):
        return {"name": name, "size": [1920, 1080], "matrix": [[1500.0, 0.0, 960.0], [0.0, 1500.0, 540.0], [0.0, 0.0, 1.0]],
                "distortions": [0.01, -0.02, 0.0, 0.0], "rotation": [0.1, 0.2, 0.3], "translation": [0.1, 0.2, 3.0],
                "fisheye": False}

    return {"cam_01": camera("cam01"), "cam_02": camera("cam02"), "metadata": {"adjusted": False, "error": 0.0}}


WEIRD_VALUES = (float("inf"), float("-inf"), float("nan"), True, False, -1, 0, 2**63 - 1, "str", [], [[1.0]], {},
                [float("inf"), 1080], [True, 1080], [1.0, 2.0, 3.0], -1500.0)


# ---------------------------------------------------------------- mutations
def _mutate_text(data: bytes, rng: random.Random) -> bytes:
    """One random text mutation: a token into a cell/element, a deleted, repeated, moved or cut
    span, or bytes that are not UTF-8."""
    kind = rng.randrange(8)
    if kind <= 2:  # replace a number-like or word-like run
        runs = [m.span() for m in re.finditer(rb"[^\s<>\t/\"=]+", data)]
        if runs:
            a, b = rng.choice(runs)
            return data[:a] + rng.choice(TOKENS).encode() + data[b:]
    if kind == 3 and data:  # delete a span
        a = rng.randrange(len(data))
        return data[:a] + data[a + rng.randrange(1, 200):]
    if kind == 4:  # repeat a line
        lines = data.split(b"\n")
        i = rng.randrange(len(lines))
        lines.insert(i, lines[rng.randrange(len(lines))])
        return b"\n".join(lines)
    if kind == 5:  # swap two lines
        lines = data.split(b"\n")
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines)
    if kind == 6 and data:  # cut
        return data[: rng.randrange(len(data))]
    a = rng.randrange(len(data) + 1)
    return data[:a] + rng.choice(BAD_BYTES) + data[a:]


def _nest(kind: str, depth: int) -> str:
    if kind == "frames":
        inner = "".join(f'<components><PhysicalOffsetFrame name="f{i}"><socket_parent>..</socket_parent>' for i in range(depth))
        return inner + "</PhysicalOffsetFrame></components>" * depth
    fn = '<Constant name="function"><value>0.1</value></Constant>'
    for _ in range(depth):
        fn = f'<MultiplierFunction name="function"><function>{fn}</function><scale>1.01</scale></MultiplierFunction>'
    return fn


def _mutate_osim(rng: random.Random) -> bytes:
    text = OSIM
    kind = rng.randrange(10)
    if kind == 0:  # a frame whose parent is itself, or a cycle of two
        text = text.replace("<socket_parent>..</socket_parent>\n<translation>0 -0.3 0",
                            rng.choice(["<socket_parent>/bodyset/a/a_off</socket_parent>\n<translation>0 -0.3 0",
                                        "<socket_parent>.</socket_parent>\n<translation>0 -0.3 0"]))
    elif kind == 1:  # deep nesting
        depth = rng.choice([5, 150, 199, 200, 201, 1200, 3000])
        if rng.random() < 0.5:
            text = text.replace("<Body name=\"b\">", f"<Body name=\"b\">{_nest('frames', depth)}")
        else:
            text = text.replace('<Constant name="function"><value>0.01</value>\n</Constant>', _nest("functions", depth))
    elif kind == 2:
        text = text.replace('Version="40600"', f'Version="{rng.choice(TOKENS)}"')
    elif kind == 3:  # a joint whose child is an ancestor (a loop in the tree)
        text = text.replace("<socket_child_frame>/bodyset/p</socket_child_frame>",
                            rng.choice(["<socket_child_frame>/bodyset/a</socket_child_frame>",
                                        "<socket_child_frame>/bodyset/b</socket_child_frame>"]))
    data = text.encode()
    for _ in range(rng.randrange(0 if kind < 4 else 1, 4)):
        data = _mutate_text(data, rng)
    return data


def _mutate_toml(rng: random.Random) -> bytes:
    doc = _calibration(rng)
    kind = rng.randrange(4)
    if kind <= 1:
        camera = doc[rng.choice(["cam_01", "cam_02"])]
        key = rng.choice(list(camera))
        if rng.random() < 0.2:
            del camera[key]
        else:
            camera[key] = rng.choice(WEIRD_VALUES)
        try:
            return tomli_w.dumps(doc).encode()
        except (TypeError, ValueError):
            return b"not = toml = at all"
    if kind == 2:
        depth = rng.choice([10, 1000, 5000])
        return tomli_w.dumps(doc).encode() + b"\n[cam_03]\nsize = " + b"[" * depth + b"]" * depth + b"\n"
    data = tomli_w.dumps(doc).encode()
    for _ in range(rng.randrange(1, 4)):
        data = _mutate_text(data, rng)
    return data


def _mutate_npz(rng: random.Random) -> bytes:
    arrays = {"keypoints": np.random.default_rng(rng.randrange(1000)).uniform(0, 500, size=(2, 4, 3, 2)),
              "confidence": np.full((2, 4, 3), 0.9), "camera_names": np.array(["cam01", "cam02"]),
              "keypoint_names": np.array(["nose", "lhip", "rhip"]), "fps": np.float64(30.0), "start_time": np.float64(0.0)}
    kind = rng.randrange(3)
    if kind <= 1:
        key = rng.choice(list(arrays))
        arrays[key] = rng.choice([
            np.array(rng.choice([np.inf, np.nan, -1.0, 0.0, 1e308])), np.array("text"), np.array([1, 2]),
            np.zeros((2, 4, 3)), np.zeros((2, 4, 3, 2), complex), np.array([[b"a", b"b"]]), np.array(True),
            np.array(["cam01", "cam01"]), np.zeros(0), np.array([["a"], ["b"]]), np.array([None], dtype=object),
        ])
        if rng.random() < 0.2:
            del arrays[key]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    if kind == 2:
        for _ in range(rng.randrange(1, 4)):
            a = rng.randrange(len(data) + 1)
            data = rng.choice([data[:a], data[:a] + bytes([rng.randrange(256)]) + data[a + 1:]])
    return data


def _xml_case(seed: str):
    def make(rng: random.Random) -> bytes:
        data = seed.encode()
        for _ in range(rng.randrange(1, 4)):
            data = _mutate_text(data, rng)
        return data

    return make


def _text_case(seed: bytes):
    def make(rng: random.Random) -> bytes:
        data = seed
        for _ in range(rng.randrange(1, 5)):
            data = _mutate_text(data, rng)
        return data

    return make


def _load_osim(path):
    mjx_biomech.load_model(path)


# ---------------------------------------------------------------- running the cases
@contextlib.contextmanager
def _time_limit(seconds: float):
    def stop(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _readers(folder: Path) -> dict:
    """family -> [(name, suffix, share of the cases, make(rng) -> bytes, read(path))]."""
    return {
        "mot": [("mot", ".mot", 0.16, _text_case(_seed_mot(folder)), read_mot)],
        "trc": [("trc", ".trc", 0.16, _text_case(_seed_trc(folder)), read_trc)],
        "osim": [("osim to_mjcf", ".osim", 0.26, _mutate_osim, to_mjcf),
                 ("osim load_model", ".osim", 0.03, _mutate_osim, _load_osim)],
        "calibration": [("calibration", ".toml", 0.15, _mutate_toml, CameraRig.from_toml)],
        "capture": [("capture", ".npz", 0.12, _mutate_npz, Capture.from_npz)],
        "setup": [("ik setup", ".xml", 0.04, _xml_case(IK_SETUP), opensim_setup.read_ik_setup),
                  ("scale setup", ".xml", 0.04, _xml_case(SCALE_SETUP), opensim_setup.read_scale_setup),
                  ("marker set", ".xml", 0.04, _xml_case(MARKER_SET), opensim_setup.read_marker_set)],
    }


FAMILIES = ("mot", "trc", "osim", "calibration", "capture", "setup")


def fuzz(folder: Path, family: str, total: int, seed: int) -> list[str]:
    """Run ``family``'s share of ``total`` generated inputs; the description of every one that
    escaped as something other than InputError or hung."""
    rng = random.Random(f"{seed}-{family}")
    readers = _readers(folder)[family]
    weights = [share for _, _, share, _, _ in readers]
    failures = []
    (folder / "a_folder").mkdir(exist_ok=True)
    for case in range(round(total * sum(weights))):
        name, suffix, _, make, read = rng.choices(readers, weights)[0]
        if rng.random() < 0.01:  # a path that is a folder, or nothing
            path = folder / rng.choice(["a_folder", f"missing{suffix}"])
        else:
            path = folder / f"case{case}{suffix}"
            path.write_bytes(make(rng))
        try:
            with _time_limit(CASE_LIMIT_S), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read(path)
        except InputError:
            pass
        except Exception as e:  # noqa: BLE001 - anything else is the finding (TimeoutError: a hang)
            head = path.read_bytes()[:300] if path.is_file() else b"<no file>"
            failures.append(f"case {case} ({name}, {path.name}): {type(e).__name__}: {e}\n"
                            f"{''.join(traceback.format_tb(e.__traceback__)[-2:])}  input starts {head!r}")
        if path.is_file():
            path.unlink()
    return failures


@pytest.mark.parametrize("family", FAMILIES)
def test_two_thousand_malformed_inputs_raise_only_input_error_and_none_hangs(tmp_path, family):
    failures = fuzz(tmp_path, family, 2000, seed=11)
    assert not failures, f"{len(failures)} inputs escaped:\n" + "\n".join(failures[:10])


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_ten_thousand_malformed_inputs_raise_only_input_error_and_none_hangs(tmp_path, family):
    failures = fuzz(tmp_path, family, 10000, seed=12)
    assert not failures, f"{len(failures)} inputs escaped:\n" + "\n".join(failures[:10])
