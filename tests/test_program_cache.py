"""Traced programs kept across processes (mjx_biomech.program_cache): reused only under the same
key, equal to equinox.filter_jit's results, and plain filter_jit wherever they cannot be keyed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mjx_biomech import load_model, program_cache
from mjx_biomech.fitting.trajectories import markers_along
from mjx_biomech.program_cache import cached_jit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.delenv(program_cache.PROGRAM_CACHE_ENV, raising=False)
    program_cache.enable(tmp_path)
    program_cache.stats.clear()
    yield tmp_path
    program_cache.enable(None)


@pytest.fixture(scope="module")
def model():
    return load_model()


def _coords(model, frames=6, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = model.coordinate_ranges.astype(np.float32).T
    return (lo + (hi - lo) * rng.uniform(0.3, 0.7, (frames, len(lo)))).astype(np.float32)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.jaxprog"))


def test_a_traced_program_is_saved_loaded_and_equal_to_filter_jit(folder, model):
    params, coords = model.default_params(), _coords(model)
    expected = np.asarray(markers_along.plain(model, params, coords, "coco17"))

    first = np.asarray(cached_jit(markers_along.__wrapped__)(model, params, coords, "coco17"))
    assert program_cache.stats["exported"] == 1 and len(_files(folder)) == 1
    np.testing.assert_array_equal(first, expected)

    # A new wrapper (as in a new process: nothing in memory) loads the file and traces nothing.
    again = cached_jit(markers_along.__wrapped__)
    program_cache.stats.clear()
    second = np.asarray(again(model, params, coords, "coco17"))
    assert program_cache.stats == {"loaded": 1}
    np.testing.assert_array_equal(second, expected)
    # Other data of the same shapes: the same program.
    other = _coords(model, seed=1)
    np.testing.assert_array_equal(np.asarray(again(model, params, other, "coco17")),
                                  np.asarray(markers_along.plain(model, params, other, "coco17")))
    assert program_cache.stats == {"loaded": 1, "memory": 1} and len(_files(folder)) == 1


def test_anything_the_trace_depends_on_makes_a_new_program(folder, model, monkeypatch):
    params, coords = model.default_params(), _coords(model)
    cached_jit(markers_along.__wrapped__)(model, params, coords, "coco17")
    tied = model.with_scale_groups(tie_left_right=True)
    fresh = lambda: cached_jit(markers_along.__wrapped__)  # noqa: E731 - nothing in memory
    cases = {
        "another static argument": lambda: fresh()(model, params, coords, "bml_movi_87"),
        "another shape": lambda: fresh()(model, params, _coords(model, frames=7), "coco17"),
        "another dtype": lambda: fresh()(model, params, coords.astype(np.int32), "coco17"),
        "another model": lambda: fresh()(tied, tied.default_params(), coords, "coco17"),
    }
    for case, call in cases.items():
        before = len(_files(folder))
        program_cache.stats.clear()
        call()
        assert program_cache.stats["exported"] == 1 and len(_files(folder)) == before + 1, case
    # An edit of this project's source: every key changes.
    monkeypatch.setattr(program_cache, "_source_digest", lambda: "edited")
    program_cache.stats.clear()
    fresh()(model, params, coords, "coco17")
    assert program_cache.stats == {"exported": 1}


def test_what_cannot_be_keyed_runs_through_filter_jit(folder, model):
    params, coords = model.default_params(), _coords(model)
    # Under a transformation: the gradient goes through plain filter_jit, and equals it.
    loss = lambda f: lambda q: jnp.sum(f(model, params, q, "coco17") ** 2)  # noqa: E731
    np.testing.assert_array_equal(np.asarray(jax.grad(loss(markers_along))(coords)),
                                  np.asarray(jax.grad(loss(markers_along.plain))(coords)))
    assert program_cache.stats == {"fallback: under a transformation": 1} and not _files(folder)

    # A static argument that does not pickle (a lambda): never keyed, never saved.
    program_cache.stats.clear()
    out = _apply(lambda x: x * 3.0, jnp.arange(4.0))
    np.testing.assert_array_equal(np.asarray(out), [0.0, 3.0, 6.0, 9.0])
    (reason,) = program_cache.stats
    assert "arguments do not pickle" in reason and not _files(folder)

    # A module-level function of the caller's own pickles by name, but the key does not cover
    # its code (an edit would not change the key): never keyed either.
    program_cache.stats.clear()
    np.testing.assert_array_equal(np.asarray(_apply(_triple, jnp.arange(4.0))), [0.0, 3.0, 6.0, 9.0])
    (reason,) = program_cache.stats
    assert "_triple of module" in reason and "does not cover" in reason and not _files(folder)


def _triple(x):
    return x * 3.0


@cached_jit
def _apply(f, x):
    return f(x)


def test_a_damaged_file_is_traced_again_and_replaced(folder, model):
    params, coords = model.default_params(), _coords(model)
    expected = np.asarray(markers_along.plain(model, params, coords, "coco17"))
    cached_jit(markers_along.__wrapped__)(model, params, coords, "coco17")  # not the wrapper earlier tests filled
    (path,) = folder.glob("*.jaxprog")
    path.write_bytes(b"not a program")
    program_cache.stats.clear()
    np.testing.assert_array_equal(np.asarray(cached_jit(markers_along.__wrapped__)(model, params, coords, "coco17")), expected)
    assert program_cache.stats == {"exported": 1} and path.stat().st_size > 100


def test_off_saves_nothing(tmp_path, monkeypatch, model):
    params, coords = model.default_params(), _coords(model)
    program_cache.stats.clear()
    program_cache.enable(None)
    markers_along(model, params, coords, "coco17")
    monkeypatch.setenv(program_cache.PROGRAM_CACHE_ENV, "0")
    program_cache.enable(tmp_path)
    assert not program_cache.enabled()
    markers_along(model, params, coords, "coco17")
    assert not program_cache.stats and not list(tmp_path.iterdir())


_NEW_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    from mjx_biomech import program_cache
    from mjx_biomech.capture import synthetic
    from mjx_biomech.capture.projection import project, triangulate_robust
    program_cache.enable(None if sys.argv[1] == "off" else sys.argv[1])
    rig = synthetic.ring_rig(4)
    points = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32) * 0.3 + np.float32([0, 0, 1])
    pixels = np.asarray(project(rig, points))
    found, used = triangulate_robust(rig, pixels, np.ones(pixels.shape[:-1], np.float32))
    print(json.dumps({"stats": dict(program_cache.stats), "found": np.asarray(found).tolist(),
                      "used": np.asarray(used).tolist()}))
""")


def test_a_new_process_runs_a_loaded_linear_algebra_program(tmp_path):
    """triangulate_robust solves with LAPACK; jaxlib sets its LAPACK kernels up only when it
    lowers such a call, and a program loaded from a file is not lowered that way: without the
    set-up the second process crashed (SIGSEGV)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(program_cache.PROGRAM_CACHE_ENV, None)
    runs = []
    for folder in ("off", tmp_path, tmp_path):  # filter_jit, then saving, then loading
        done = subprocess.run([sys.executable, "-c", _NEW_PROCESS, str(folder)], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert runs[0]["stats"] == {} and runs[1]["stats"]["exported"] == 2 and runs[2]["stats"] == {"loaded": 2}
    for run in runs[1:]:  # bit for bit
        assert run["found"] == runs[0]["found"] and run["used"] == runs[0]["used"]


def test_inverse_kinematics_through_the_cache_equals_without(folder, model):
    """MarkerIK compiles a closure over the model and its marker sites (compile_closure): saved,
    then loaded by a new solver, and equal bit for bit to the solve without the cache."""
    from mjx_biomech.capture.marker_trials import MarkerTrial
    from mjx_biomech.fitting.ik import MarkerIK

    names = model.marker_names("coco17")
    truth = _coords(model, frames=4).astype(np.float64)
    with jax.enable_x64(True):
        params = model.default_params(jnp.float64)
        exact = np.asarray(jax.vmap(lambda q: model.markers(q, params, "coco17"))(jnp.asarray(truth)))
    trial = MarkerTrial("walk", np.arange(4) / 30.0, names, exact + 0.001)
    solve = lambda: MarkerIK(model, "coco17", chunk_frames=4).solve(trial).coordinates  # noqa: E731
    program_cache.enable(None)
    expected = solve()
    program_cache.enable(folder)
    saved = solve()
    assert program_cache.stats == {"exported": 1}
    loaded = solve()
    assert program_cache.stats == {"exported": 1, "loaded": 1}
    np.testing.assert_array_equal(saved, expected)
    np.testing.assert_array_equal(loaded, expected)
