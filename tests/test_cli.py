"""The ``mjx-biomech`` commands, run in-process through the CLI entry point: the model commands'
results, and one error format for bad input to every command."""

import sys

import mujoco
import numpy as np
import pytest

import mjx_biomech as mb
from mjx_biomech import program_cache
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


def test_compilation_cache_is_on_by_default_and_configurable(monkeypatch, tmp_path, capsys):
    import jax

    from mjx_biomech import cli

    monkeypatch.setenv("MJX_BIOMECH_CACHE_DIR", str(tmp_path / "env"))
    assert cli.default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("MJX_BIOMECH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cli.default_cache_dir() == tmp_path / "xdg" / "mjx_biomech" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(cli.Path, "home", lambda: tmp_path / "home")
    assert cli.default_cache_dir() == tmp_path / "home" / ".cache" / "mjx_biomech" / "jax"

    # The flags, else MJX_BIOMECH_COMPILE_CACHE, else the subcommand's default (on but for batch).
    monkeypatch.delenv(cli.COMPILE_CACHE_ENV)  # the test session's own "0" (conftest.py)
    assert cli.compile_cache_wanted() and not cli.compile_cache_wanted(default=False)
    assert not cli.compile_cache_wanted(compile_cache=False)
    for off in ("0", "false", "No", "off"):
        monkeypatch.setenv(cli.COMPILE_CACHE_ENV, off)
        assert not cli.compile_cache_wanted()
        assert cli.compile_cache_wanted(cache_dir="somewhere") and cli.compile_cache_wanted(compile_cache=True)
    for on in ("1", "true", "YES", "on"):
        monkeypatch.setenv(cli.COMPILE_CACHE_ENV, on)
        assert cli.compile_cache_wanted(default=False) and not cli.compile_cache_wanted(compile_cache=False)

    # What main() asks for, recorded instead of switching this process's cache; each command fails
    # on its missing input before it compiles anything.
    calls = []
    monkeypatch.setattr(cli, "enable_compilation_cache", lambda folder=None, enabled=True: calls.append((folder, enabled)))
    monkeypatch.chdir(tmp_path)
    bad_fit = ["fit", "--calibration", "no.toml", "--keypoints", "no.npz", "--marker-set", "coco17", "--out", "o"]
    bad_batch = ["batch", "no-such-study.toml", "--out", "o"]
    cases = [(None, bad_fit, [(None, True)]),
             (None, ["ik", "no-such.osim", "no.trc"], [(None, True)]),
             (None, [*bad_fit, "--no-compile-cache"], [(None, False)]),
             ("0", bad_fit, []),
             ("0", [*bad_fit, "--cache-dir", "mine"], [("mine", True)]),
             ("0", [*bad_fit, "--compile-cache"], [(None, True)]),
             (None, bad_batch, []),
             (None, [*bad_batch, "--compile-cache"], [(None, True)]),
             ("1", bad_batch, [(None, True)])]
    for env, argv, expected in cases:
        if env is None:
            monkeypatch.delenv(cli.COMPILE_CACHE_ENV, raising=False)
        else:
            monkeypatch.setenv(cli.COMPILE_CACHE_ENV, env)
        calls.clear()
        assert cli.main(argv) == 2, argv
        assert calls == expected, (env, argv)
    assert "error" in capsys.readouterr().err

    # What enable_compilation_cache sets: the folder, every program cached; JAX's own folder
    # (JAX_COMPILATION_CACHE_DIR) kept unless one is given; off turns JAX's cache off.
    monkeypatch.undo()
    updates, quieted = [], []
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.append((name, value)))
    monkeypatch.setattr(cli, "_quiet_cpu_cache_loads", lambda: quieted.append(True))
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    cli.enable_compilation_cache(tmp_path / "chosen")
    assert ("jax_compilation_cache_dir", str(tmp_path / "chosen")) in updates
    assert program_cache.folder() == tmp_path / "chosen" / "programs"  # the traced programs beside
    assert ("jax_persistent_cache_min_compile_time_secs", 0.0) in updates and quieted
    updates.clear()
    from jax._src import config as jax_config

    with jax_config.compilation_cache_dir(str(tmp_path / "users")):  # as JAX_COMPILATION_CACHE_DIR sets it
        cli.enable_compilation_cache()
    assert updates and not any(name == "jax_compilation_cache_dir" for name, _ in updates)
    assert program_cache.folder() == tmp_path / "users" / "programs"
    updates.clear()
    cli.enable_compilation_cache(enabled=False)
    assert updates == [("jax_enable_compilation_cache", False)] and program_cache.folder() is None

    # Every compiling subcommand takes the flags and its help says the default and the folder.
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdgcache")  # no hyphen where argparse might wrap the line
    monkeypatch.delenv("MJX_BIOMECH_CACHE_DIR", raising=False)
    for command in ("ik", "scale", "fit", "demo", "batch"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "--cache-dir" in out and "--no-compile-cache" in out, command
        cache_help = out.rsplit("--cache-dir DIR", 1)[1]
        assert "(default: /xdgcache/mjx_biomech/jax;" in cache_help and "(default: None)" not in cache_help, command
        assert ("(default: off:" if command == "batch" else "(default: on;") in cache_help, command


# Runs the command line in a fresh process and prints, last, JAX's compilation-cache events.
_COUNTING_CLI = """
import collections, json, sys
from jax import monitoring
events = collections.Counter()
monitoring.register_event_listener(lambda name, **kwargs: events.update([name]))
from mjx_biomech.cli import main
code = main(sys.argv[1:])
print("cache events " + json.dumps(events))
sys.exit(code)
"""


def test_a_second_run_loads_its_compiled_programs_from_the_cache(tmp_path):
    """``mjx-biomech ik`` twice on the same trial, each in a new process, with the cache at its
    defaults (on; the folder from MJX_BIOMECH_CACHE_DIR): the first run writes its programs, compiled
    and traced, the second loads every one of them, writes none, and computes the same angles."""
    import json
    import os
    import subprocess

    from study_data import MARKER_SET, load_legs, write_marker_subject

    model = load_legs(tmp_path)
    trial = write_marker_subject(tmp_path / "k1", model, seed=20)["trials"][0]
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MJX_BIOMECH_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR", "TF_CPP_MIN_LOG_LEVEL",
                        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    env["MJX_BIOMECH_CACHE_DIR"] = str(cache)

    def run(out):
        argv = ["ik", str(tmp_path / "legs.xml"), trial, "--marker-set", MARKER_SET, "--out", str(tmp_path / out)]
        done = subprocess.run([sys.executable, "-c", _COUNTING_CLI, *argv], env=env, capture_output=True, text=True,
                              check=False, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        (line,) = [line for line in done.stdout.splitlines() if line.startswith("cache events ")]
        return json.loads(line.removeprefix("cache events ")), done.stderr

    def saved():  # JAX's compiled programs, and the traced ones (mjx_biomech.program_cache) in programs/
        return (sorted(p.name for p in cache.iterdir() if p.is_file()),
                sorted(p.name for p in (cache / "programs").glob("*.jaxprog")))

    first, _ = run("first")
    written, traced = saved()
    assert first.get("/jax/compilation_cache/cache_misses", 0) > 0 and written and traced
    second, err = run("second")
    assert second.get("/jax/compilation_cache/cache_hits", 0) >= len(written)
    assert second.get("/jax/compilation_cache/cache_misses", 0) == 0
    assert saved() == (written, traced)
    # XLA:CPU's spurious machine-mismatch errors on loading (jax-ml/jax#38445) are kept out of the log.
    assert "cpu_aot_loader" not in err
    assert (tmp_path / "first" / "walk.mot").read_text() == (tmp_path / "second" / "walk.mot").read_text()
