"""Smoke run of an installed mjx-biomech wheel (``.ci/smoke_wheel.sh`` builds it, installs it with
``[all]`` into a fresh virtualenv and runs this file there, from a folder outside the repository).

Checks that the installed package, not a source tree, is imported; that the bundled model is
package data found through ``importlib.resources`` and no top-level ``assets`` is installed; then
runs ``mjx-biomech model info``, ``mjx-biomech demo --quick`` with few steps, ``mjx-biomech
validate`` on a model built through the OpenSim API, ``gymnasium.make`` + ``check_env``, brax's
``get_environment`` (reset and one step) and MyoSuite's ``make_env``. Exits non-zero on the first
failure; prints each step's wall time.

Usage: python smoke_wheel.py [--demo-steps N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib import metadata, resources
from pathlib import Path

# Same bound as tests/test_osim.py's validate tests.
VALIDATE_TOLERANCE_M = 1e-6


def step(name: str):
    def wrap(fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            print(f"== {name}", flush=True)
            result = fn(*args, **kwargs)
            print(f"== {name}: ok ({time.perf_counter() - start:.1f} s)", flush=True)
            return result

        return run

    return wrap


def cli(*args: str) -> str:
    exe = Path(sys.executable).with_name("mjx-biomech")
    done = subprocess.run([str(exe), *args], capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"mjx-biomech {' '.join(args)} exited {done.returncode}")
    return done.stdout


@step("installed package, not a source tree")
def check_install() -> None:
    import converters
    import env_registry
    import mjx_biomech

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for module in (mjx_biomech, converters, env_registry):
        where = Path(module.__file__).resolve()
        print(f"{module.__name__}: {where}")
        if site not in where.parents:
            raise SystemExit(f"{module.__name__} imported from {where}, not from {site}")
    dist = metadata.distribution("mjx-biomech")
    if any(Path(str(p)).suffix == ".pth" or "__editable__" in str(p) for p in dist.files or ()):
        raise SystemExit("mjx-biomech is an editable install")
    top_level = sorted({Path(str(p)).parts[0] for p in dist.files or () if not str(p).startswith(("mjx_biomech-", "../"))})
    print("top-level names installed:", " ".join(top_level))
    if (site / "assets").exists() or "assets" in top_level:
        raise SystemExit(f"a top-level 'assets' is installed in {site}")
    print(f"Python {sys.version.split()[0]}; mjx-biomech {dist.version}; requires-python {dist.metadata['Requires-Python']}")


@step("bundled model through importlib.resources")
def check_package_data() -> None:
    import mjx_biomech
    from mjx_biomech.body.loading import bundled_model_path

    resource = resources.files("mjx_biomech") / "data" / "fullbody.xml"
    if not resource.is_file():
        raise SystemExit(f"package data missing: {resource}")
    if Path(str(resource)).resolve() != bundled_model_path().resolve():
        raise SystemExit(f"bundled_model_path() {bundled_model_path()} is not the package data {resource}")
    model = mjx_biomech.load_model()
    if not model.marker_sets:
        raise SystemExit("the bundled model has no marker sets")
    print(f"{resource}: {len(model.coordinate_names)} coordinates, marker sets {', '.join(model.marker_sets)}")


@step("mjx-biomech model info")
def model_info() -> None:
    cli("model", "info")


@step("mjx-biomech demo --quick")
def demo(out: Path, steps: int) -> None:
    cli("demo", "--quick", "--steps", str(steps), "--out", str(out))
    written = sorted(p.name for p in out.iterdir())
    print("demo wrote:", " ".join(written))
    if not any(name.endswith(".mot") for name in written) and not any(out.rglob("*.mot")):
        raise SystemExit(f"demo wrote no .mot under {out}")


def build_osim(path: Path) -> None:
    """A body on a pin joint with a marker, built with the OpenSim API."""
    import opensim as osim

    model = osim.Model()
    model.setName("pendulum")
    body = osim.Body("arm", 2.0, osim.Vec3(0, -0.25, 0), osim.Inertia(0.01, 0.002, 0.01))
    model.addBody(body)
    joint = osim.PinJoint("shoulder", model.getGround(), osim.Vec3(0.1, 1.0, -0.05), osim.Vec3(0, 0, 0),
                          body, osim.Vec3(0, 0.02, 0), osim.Vec3(0.2, 0, 0))
    coordinate = joint.updCoordinate()
    coordinate.setName("shoulder_angle")
    coordinate.setRangeMin(-1.5)
    coordinate.setRangeMax(2.0)
    model.addJoint(joint)
    model.addMarker(osim.Marker("hand", body, osim.Vec3(0.03, -0.5, 0.01)))
    model.finalizeConnections()
    model.initSystem()
    model.printToXML(str(path))


@step("mjx-biomech validate on a model built through the OpenSim API")
def validate(folder: Path) -> None:
    path = folder / "pendulum.osim"
    build_osim(path)
    last = cli("validate", str(path), "--poses", "20").strip().splitlines()[-1]
    if not last.startswith("max_error_m="):
        raise SystemExit(f"validate's last line is {last!r}")
    error = float(last.split("=", 1)[1])
    if not error <= VALIDATE_TOLERANCE_M:
        raise SystemExit(f"validate: max_error_m={error} > {VALIDATE_TOLERANCE_M}")


@step('gymnasium.make("mjx_biomech/GaitImitation-v0") + check_env')
def gymnasium_env() -> None:
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    import env_registry

    env = gymnasium.make(env_registry.GYM_ID, reference="synthetic:1", future_frames=1)
    check_env(env.unwrapped, skip_render_check=True)
    print(f"observation {env.observation_space.shape}, action {env.action_space.shape}")


@step("brax get_environment: reset and one step")
def brax_env() -> None:
    import jax
    import jax.numpy as jnp
    from brax import envs

    import env_registry

    env = envs.get_environment(env_registry.BRAX_NAME, reference="synthetic:1", future_frames=1)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    state = jax.jit(env.step)(state, jnp.zeros(env.action_size))
    if state.obs.shape != (env.observation_size,) or not bool(jnp.isfinite(state.reward)):
        raise SystemExit(f"brax step: obs {state.obs.shape}, reward {state.reward}")
    print(f"{type(env).__name__}: observation {env.observation_size}, action {env.action_size}, reward {float(state.reward):.4f}")


@step("MyoSuite make_env")
def myosuite_env() -> None:
    import numpy as np
    from myosuite.core.registry import make_env

    import env_registry

    env = make_env(env_registry.MYOSUITE_ID, reference="synthetic:1", future_frames=1)
    env.reset(seed=0)
    _, reward, *_ = env.step(np.zeros(env.action_space.shape))
    if not np.isfinite(reward):
        raise SystemExit(f"MyoSuite step reward {reward}")


def main() -> None:
    parser = argparse.ArgumentParser(description="smoke run of an installed mjx-biomech wheel, from outside the repository")
    parser.add_argument("--demo-steps", type=int, default=100, help="optimiser steps of the quick demo (default 100)")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mjx_biomech_smoke_") as tmp:
        folder = Path(tmp)
        os.chdir(folder)
        check_install()
        check_package_data()
        model_info()
        demo(folder / "demo_output", args.demo_steps)
        validate(folder)
        gymnasium_env()
        brax_env()
        myosuite_env()
    print(f"smoke: all passed in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
