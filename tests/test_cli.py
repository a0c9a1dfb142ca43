"""The ``mjx-biomech model`` commands, run in-process through the CLI entry point."""

import mujoco
import numpy as np
import pytest

import mjx_biomech as mb
from mjx_biomech.cli import main


def test_model_info_lists_coordinates_groups_and_marker_sets(capsys):
    assert main(["model", "info"]) == 0
    out = capsys.readouterr().out
    for expected in ("knee_angle_r", "thigh_r", "blazepose33", "bml_movi_87", "total mass: 75.000 kg"):
        assert expected in out


def test_model_scale_writes_a_person_mujoco_loads(tmp_path, capsys):
    out = tmp_path / "scaled.xml"
    assert main(["model", "scale", "--height", "1.62", "--mass", "58", "--scale", "thigh_r=1.05", "--out", str(out)]) == 0
    scaled = mujoco.MjModel.from_xml_path(str(out))
    assert np.isclose(scaled.body_mass.sum(), 58.0, rtol=1e-6)
    base = mb.load_model()
    tibia_r, tibia_l = base.body_names.index("tibia_r"), base.body_names.index("tibia_l")
    # The knee sits thigh length below the hip: the right thigh is 5 % longer than the left.
    ratio = np.linalg.norm(scaled.body_pos[tibia_r]) / np.linalg.norm(scaled.body_pos[tibia_l])
    assert np.isclose(ratio, 1.05, rtol=1e-5)


def test_model_scale_to_a_height_gives_that_standing_height(tmp_path):
    out = tmp_path / "scaled.xml"
    assert main(["model", "scale", "--height", "1.62", "--out", str(out)]) == 0
    # MuJoCo's XML writer keeps 6 significant digits.
    assert np.isclose(mb.load_model(out).standing_height(), 1.62, rtol=1e-5)


def test_model_scale_writes_a_scaled_myo_sim_model(tmp_path):
    pytest.importorskip("myo_sim", reason="myo-sim is not installed")
    out = tmp_path / "myolegs.xml"
    assert main(["model", "scale", "myo_sim:myolegs", "--scale", "overall=1.1", "--out", str(out)]) == 0
    base = mb.load_model("myo_sim:myolegs").mj_model
    scaled = mujoco.MjModel.from_xml_path(str(out))
    assert scaled.nu == base.nu and scaled.ntendon == base.ntendon and scaled.neq == base.neq
    np.testing.assert_allclose(scaled.actuator_length0, base.actuator_length0 * 1.1, rtol=1e-4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["model", "scale", "--scale", "thigh_r", "--out", "x.xml"], "expected GROUP=VALUE"),
        (["model", "scale", "--scale", "femur=1.1", "--out", "x.xml"], "is not one of"),
        (["model", "scale", "--height", "-1", "--out", "x.xml"], "must be positive"),
        (["model", "info", "no-such-model.xml"], "model file not found"),
    ],
)
def test_model_commands_name_bad_input(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from mjx_biomech.io import write_text_atomic

    umask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "x.txt", "hello")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
