"""Trilevel fit: base-model marker placement learned over a synthetic population."""

import jax.numpy as jnp
import numpy as np
import pytest

import mjx_biomech
from mjx_biomech.capture import synthetic
from mjx_biomech.errors import InputError
from mjx_biomech.fitting.population import fit_population

MARKERS = "bml_movi_87"
PEOPLE = 6


@pytest.fixture(scope="module")
def model():
    return mjx_biomech.load_model()


@pytest.fixture(scope="module")
def population(model):
    """Six people whose markers all sit 2 cm off the base model the same way (heels excepted),
    plus up to 5 mm of their own."""
    rng = np.random.default_rng(7)
    names = model.marker_names(MARKERS)
    ids = model.marker_site_ids(MARKERS)
    shift = rng.normal(size=(len(ids), 3))
    shift *= 0.02 / np.linalg.norm(shift, axis=1, keepdims=True)
    shift[[i for i, n in enumerate(names) if "hee" in n]] = 0.0
    rig = synthetic.ring_rig()
    subjects, truth = [], []
    for s in range(PEOPLE):
        times, coords = synthetic.walking(model, duration=1.0, fps=30.0, seed=100 + s)
        person = synthetic.person(model, seed=200 + s, marker_set=MARKERS, offset_range_m=(0.0, 0.005))
        offsets = np.asarray(person.offsets).copy()
        offsets[ids] += shift
        person = person.replace(offsets=jnp.asarray(offsets))
        cap = synthetic.capture(model, person, times, coords, rig, MARKERS, seed=300 + s, name=f"s{s}")
        subjects.append((cap, rig))
        truth.append(offsets[ids])
    return subjects, np.stack(truth), shift


def _marker_error_mm(result, truth, model):
    ids = model.marker_site_ids(MARKERS)
    est = np.stack([np.asarray(p.offsets)[ids] for p in result.params])
    return float(np.mean(np.linalg.norm(est - truth, axis=-1)) * 1000)


@pytest.mark.slow
def test_learning_the_base_markers_over_a_population_halves_the_marker_error(model, population):
    subjects, truth, shift = population
    pooled = fit_population(model, subjects, MARKERS, steps=2500, batch_size=3, offset_weight=100.0)
    names = model.marker_names(MARKERS)
    free = np.array(["hee" not in n for n in names])
    # Markers on the arms are left out of the measure: a common shift of forearm and hand
    # markers trades against arm rotation, pronation and wrist angles, which differ per subject.
    bodies = [model.body_names[b] for b in model.mj_model.site_bodyid[model.marker_site_ids(MARKERS)]]
    trunk_legs = free & ~np.array([b.startswith(("humerus", "ulna", "radius", "hand")) for b in bodies])
    # The base model's markers start 2 cm off (the common displacement); learning halves that.
    before = np.mean(np.linalg.norm(shift[trunk_legs], axis=1))
    after = np.mean(np.linalg.norm(pooled.base_offsets[trunk_legs] - shift[trunk_legs], axis=1))
    assert before == pytest.approx(0.02)
    assert after <= 0.5 * before
    # Anchored heels stay where the model has them; every subject's markers moved towards the truth.
    assert np.all(pooled.base_offsets[~free] == 0)
    assert _marker_error_mm(pooled, truth, model) < 0.75 * np.mean(np.linalg.norm(truth, axis=-1)) * 1000
    assert pooled.loss_history[-1] < 0.1 * pooled.loss_history[0]


def test_population_arguments_are_checked(model, population):
    subjects, _, _ = population
    with pytest.raises(InputError, match="batch_size: expected 1 <= batch_size < 6"):
        fit_population(model, subjects, MARKERS, batch_size=6, steps=1)
    with pytest.raises(InputError, match="not keypoints of marker set"):
        fit_population(model, subjects, MARKERS, anchored=["left_heel"], steps=1)
    short = subjects[1][0].slice(0.0, 0.5)
    with pytest.raises(InputError, match=r"subjects\[1\]: 8 cameras, 15 frames"):
        fit_population(model, [subjects[0], (short, subjects[1][1])] + subjects[2:], MARKERS, steps=1)
