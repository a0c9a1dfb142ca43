"""The population fit split over several devices gives the one-device fit.

XLA's device count is fixed when jax starts, so the split fit runs in a child Python process
started with ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (this file, run as a
script); it writes its result and the shardings it saw to an ``.npz`` that the test compares
with the same fit on this process's one CPU device.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MARKERS = "halpe26"
STEPS = 4


def _population(model, people: int):
    """``people`` synthetic people of their own proportions and markers, each seen by 4 cameras
    (with its own noise) taking the same 0.3 s walk at 20 fps."""
    from mjx_biomech.capture import synthetic

    rig = synthetic.ring_rig(n_cameras=4)
    times, coords = synthetic.walking(model, duration=0.3, fps=20.0, seed=100)
    subjects = []
    for s in range(people):
        person = synthetic.person(model, seed=200 + s, marker_set=MARKERS, offset_range_m=(0.0, 0.005))
        subjects.append((synthetic.capture(model, person, times, coords, rig, MARKERS, seed=300 + s, name=f"s{s}"), rig))
    return subjects


def _arrays(result) -> dict:
    return {
        "loss_history": result.loss_history, "base_offsets": result.base_offsets, "coords": result.coords,
        "scales": np.stack([np.asarray(p.scales) for p in result.params]),
        "offsets": np.stack([np.asarray(p.offsets) for p in result.params]),
    }


def _split_fit(out: Path, people: int, batch_size: int) -> None:
    """The child process: the fit over all (forced) devices, recording the shardings of the
    variables every step received and returned."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import mjx_biomech
    from mjx_biomech.fitting import population
    from mjx_biomech.fitting.solvers import adam

    model = mjx_biomech.load_model()
    seen = []
    step = adam.step

    def spy(loss, opt, v, *args):
        out = step(loss, opt, v, *args)
        for w in (v, out[0]):
            seen.append([len(w.control.sharding.device_set), len(w.offsets.sharding.device_set),
                         len(w.log_scales.sharding.device_set), int(w.base.sharding.is_fully_replicated),
                         int(w.control.sharding.spec == jax.sharding.PartitionSpec(population.SUBJECTS))])
        return out

    adam.step = spy
    result = population.fit_population(model, _population(model, people), MARKERS, steps=STEPS, batch_size=batch_size)
    np.savez(out, devices=jax.device_count(), seen=np.asarray(seen), **_arrays(result))


@pytest.fixture(scope="module")
def model():
    import mjx_biomech

    return mjx_biomech.load_model()


def _assert_split_matches_one_device(model, tmp_path, people: int, batch_size: int) -> None:
    import jax

    from mjx_biomech.fitting.population import fit_population

    out = tmp_path / "split.npz"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    # The child fits while this process does the same on one device.
    child = subprocess.Popen([sys.executable, __file__, str(out), str(people), str(batch_size)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        one = _arrays(fit_population(model, _population(model, people), MARKERS, steps=STEPS, batch_size=batch_size,
                                     devices=jax.devices()[:1]))
        _, err = child.communicate(timeout=600)
    finally:
        child.kill()
    assert child.returncode == 0, err[-4000:]
    split = dict(np.load(out))
    # The child saw 2 devices, and every step got and gave back per-subject variables split
    # over both (along the subject axis) and the base replicated.
    assert split["devices"] == 2
    assert split["seen"].shape == (2 * STEPS, 5)
    assert np.all(split["seen"] == [2, 2, 2, 1, 1])
    # Same minibatches, same steps: only the order of the sums over subjects differs (each
    # device sums its share, then the shares are added), which moves a float64 sum by ~1e-16
    # relative (measured: 1.4e-16 on the loss curve, the variables identical). 1e-12 leaves
    # room for AdamW's per-component normalisation over the steps and still catches a wrong
    # subject, step or padding, any of which moves the loss curve by far more than 1e-6.
    np.testing.assert_allclose(split["loss_history"], one["loss_history"], rtol=1e-12, atol=0)
    for name in ("base_offsets", "offsets"):  # metres
        np.testing.assert_allclose(split[name], one[name], rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(split["scales"], one["scales"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(split["coords"], one["coords"], rtol=0, atol=1e-12)  # rad / m
    assert np.any(split["base_offsets"] != 0)  # the base was learned, so the comparison means something


def test_population_fit_split_over_two_devices_matches_one_device_with_padding(model, tmp_path):
    """5 people and minibatches of 3 on 2 devices: the population is padded to 6 subjects and
    each minibatch to 4 places, the padding left out of the loss."""
    _assert_split_matches_one_device(model, tmp_path, people=5, batch_size=3)


@pytest.mark.slow
def test_population_fit_split_evenly_over_two_devices_matches_one_device(model, tmp_path):
    _assert_split_matches_one_device(model, tmp_path, people=4, batch_size=2)


def test_population_devices_are_checked(model):
    import jax

    from mjx_biomech.errors import InputError
    from mjx_biomech.fitting.population import fit_population, subject_mesh

    assert subject_mesh().devices.size == jax.device_count()
    with pytest.raises(InputError, match="devices: expected at least one"):
        subject_mesh([])
    with pytest.raises(InputError, match="devices: expected jax.Device"):
        subject_mesh(["cpu"])
    with pytest.raises(InputError, match="devices: each device may appear once"):
        subject_mesh(jax.devices() * 2)
    with pytest.raises(InputError, match="devices: expected jax.Device"):
        fit_population(model, _population(model, 2), MARKERS, steps=1, batch_size=1, devices=[0])


if __name__ == "__main__":
    _split_fit(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
