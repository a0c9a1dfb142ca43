"""The ``mjx-biomech`` commands, run in-process through the CLI entry point: the model commands'
results, and one error format for bad input to every command."""

import sys

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


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``mjx-biomech argv``, argparse's own exits included."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["model", "info", "no-such-model.xml"], "no-such-model.xml: model file not found"),
        (["model", "scale", "--scale", "thigh_r", "--out", "x.xml"], "--scale 'thigh_r': expected GROUP=VALUE"),
        (["model", "scale", "--scale", "femur=1.1", "--out", "x.xml"], "--scale: scale 'femur' is not one of"),
        (["model", "scale", "--scale", "thigh_r=-1", "--out", "x.xml"], "the scale must be a positive number"),
        (["model", "scale", "--height", "-1", "--out", "x.xml"], "--height -1.0: must be positive"),
        (["validate", "no-such-model.osim"], "no-such-model.osim"),
        (["validate", "no-such-model.osim", "--poses", "0"], "--poses 0: expected at least one random pose"),
        (["demo", "--steps", "many"], "argument --steps: invalid int value: 'many'"),
        (["fit", "--calibration", "no-such-calibration.toml", "--keypoints", "walk.npz", "--marker-set", "coco17",
          "--out", "fit"], "no-such-calibration.toml"),
        (["train", "--out", "policy", "--steps", "0"], "--steps: expected a positive number of environment steps"),
        (["evaluate", "no-such-policy"], "POLICY: no-such-policy not found"),
    ],
)
def test_every_command_reports_bad_input_as_one_line_on_stderr(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(f"mjx-biomech {argv[0]}") and ": error: " in err and message in err


def test_an_unknown_command_is_one_line_on_stderr(capsys):
    code, out, err = run_cli(["no-such-command"], capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("mjx-biomech: error: argument COMMAND: invalid choice: 'no-such-command'")


def test_a_missing_optional_package_is_one_line_on_stderr(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "opensim", None)
    code, out, err = run_cli(["validate", "model.osim"], capsys)
    assert code == 2 and out == ""
    assert err == "mjx-biomech validate: error: needs the optional package 'opensim', which is not installed\n"


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


def test_compilation_cache_is_opt_in_and_configurable(monkeypatch, tmp_path, capsys):
    import jax

    from mjx_biomech.cli import default_cache_dir, enable_compilation_cache

    monkeypatch.setenv("MJX_BIOMECH_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("MJX_BIOMECH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mjx_biomech" / "jax"
    # Record what would be set instead of switching the process's cache.
    updates = []
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.append((name, value)))
    enable_compilation_cache(tmp_path / "off", enabled=False)
    assert updates == []
    enable_compilation_cache(tmp_path / "chosen")
    assert ("jax_compilation_cache_dir", str(tmp_path / "chosen")) in updates
    # Every compiling subcommand takes the flags.
    for command in ("ik", "scale", "fit", "demo"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "--cache-dir" in out and "--no-compile-cache" in out, command
