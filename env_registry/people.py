"""The people of a reference on the simulated body: their :class:`~mjx_biomech.BodyParams`, their
statically scaled MuJoCo models, and the MJX model fields that differ between them.

The simulated body (:mod:`.body`) is a model with joints deleted and welded segments fused into
their parents, so its scale groups are the source model's restricted to the bodies left (the
lower body keeps ``overall``, ``pelvis``, ``thigh_r/l`` and ``leg_r/l``; the trunk, head and arms,
fused into the pelvis, scale with it). A person described on another model (a fit's) is mapped
onto these groups by name (:func:`params_from_scales`), and their marker sites are carried over
as offsets in the fused bodies' frames (:func:`marker_offsets`).

Parameters of N people are one :class:`BodyParams` whose fields have a leading axis:
``scales`` (N, P) and ``offsets`` (N, S, 3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import mujoco
import numpy as np

from mjx_biomech.body.params import BodyParams
from mjx_biomech.errors import InputError

from .body import Body


def identity(body: Body, num: int) -> BodyParams:
    """``num`` people with the simulated body's own dimensions (scales 1, offsets 0)."""
    p, s = len(body.model.scale_param_names), len(body.model.site_names)
    return BodyParams(np.ones((num, p)), np.zeros((num, s, 3)))


def stack(people: list[BodyParams]) -> BodyParams:
    """One :class:`BodyParams` with a leading axis from a list of single people."""
    return BodyParams(
        np.stack([np.asarray(p.scales, float) for p in people]), np.stack([np.asarray(p.offsets, float) for p in people])
    )


def person(params: BodyParams, n) -> BodyParams:
    """The person at index ``n`` of stacked ``params`` (an index array: those people, stacked)."""
    return BodyParams(np.asarray(params.scales)[n], np.asarray(params.offsets)[n])


def check(body: Body, params: BodyParams, num: int, source: str) -> BodyParams:
    """``params`` as float arrays, checked to hold ``num`` people of ``body`` with positive scales."""
    scales, offsets = np.asarray(params.scales, float), np.asarray(params.offsets, float)
    p, s = len(body.model.scale_param_names), len(body.model.site_names)
    if scales.shape != (num, p) or offsets.shape != (num, s, 3):
        raise InputError(
            f"{source}: person parameters have scales {scales.shape} and offsets {offsets.shape}; expected ({num}, {p}) "
            f"(scales {list(body.model.scale_param_names)}) and ({num}, {s}, 3) for {num} trajectories"
        )
    if not (np.all(np.isfinite(scales) & (scales > 0)) and np.all(np.isfinite(offsets))):
        raise InputError(f"{source}: person scales must be positive and offsets finite")
    return BodyParams(scales, offsets)


def params_from_scales(body: Body, values: Mapping[str, float], source: str) -> BodyParams:
    """The person whose scale parameters, named as on their own model, are ``values``.

    Each parameter of the simulated body takes the value of the same name, else of its side-less
    name (``thigh`` for ``thigh_r``, from a model with left and right tied); a per-axis group
    (``thigh.x``, ``.y``, ``.z``) counts by the geometric mean of its three values; a parameter
    with none of these stays 1. Values of groups the simulated body has fused away (e.g.
    ``torso``) are not used. Raises :class:`InputError` naming ``source`` and the scale that is
    not a positive number.
    """
    out = []
    for name in body.model.scale_param_names:
        v = 1.0
        for key in dict.fromkeys((name, name[:-2] if name.endswith(("_r", "_l")) else name)):
            trio = [values.get(f"{key}.{axis}") for axis in "xyz"]
            if key in values or None not in trio:
                v = values[key] if key in values else _geometric_mean(trio, source, key)
                break
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise InputError(f"{source}: scale {name!r} is {v!r}; expected a number") from None
        if not (np.isfinite(v) and v > 0):
            raise InputError(f"{source}: scale {name!r} is {v}; expected a positive number")
        out.append(v)
    return BodyParams(np.asarray(out), np.zeros((len(body.model.site_names), 3)))


def _geometric_mean(trio, source: str, key: str) -> float:
    try:
        values = np.asarray(trio, float)
    except (TypeError, ValueError):
        raise InputError(f"{source}: scales {key}.x/.y/.z are {trio}; expected numbers") from None
    return float(np.prod(values)) ** (1 / 3)


def marker_offsets(body: Body, params: BodyParams, person_model: mujoco.MjModel) -> np.ndarray:
    """(S, 3) m: offsets that put each site of the simulated body, scaled by ``params``, where
    the person's own statically scaled model (``person_model``, e.g. a fit's ``model_scaled.xml``)
    has the site of the same name, in the frame of the simulated body's segment of that name,
    at the reference pose ``qpos0`` (where deleted joints were welded). Sites or segments the
    person's model lacks get 0."""
    m = body.mj_model
    d = mujoco.MjData(person_model)
    mujoco.mj_kinematics(person_model, d)
    bscale = np.asarray(body.model.body_scales(params.scales), float)
    out = np.zeros((m.nsite, 3))
    sites = {person_model.site(i).name: i for i in range(person_model.nsite)}
    segments = {person_model.body(i).name: i for i in range(person_model.nbody)}
    for i in range(m.nsite):
        b = int(m.site_bodyid[i])
        ps, pb = sites.get(m.site(i).name), segments.get(m.body(b).name)
        if ps is None or pb is None:
            continue
        local = d.xmat[pb].reshape(3, 3).T @ (d.site_xpos[ps] - d.xpos[pb])
        out[i] = local - m.site_pos[i] * bscale[b]
    return out


def is_identity(params: BodyParams) -> bool:
    """Whether ``params`` (one person) is the simulated body itself."""
    return bool(np.all(np.asarray(params.scales) == 1) and not np.any(np.asarray(params.offsets)))


def heights(body: Body, params: BodyParams) -> np.ndarray:
    """(N,) standing height (m) of each person's simulated body (:meth:`BiomechModel.standing_height`)."""
    people = (person(params, n) for n in range(len(np.asarray(params.scales))))
    return np.array([body.height if is_identity(p) else body.model.standing_height(p) for p in people])


class PersonModels:
    """Each person's statically scaled simulation model (``body.model.to_mujoco``), compiled once
    per distinct person and kept."""

    def __init__(self, body: Body):
        self.body = body
        self._models: dict[bytes, mujoco.MjModel] = {}

    def __call__(self, params: BodyParams) -> mujoco.MjModel:
        """The MjModel of one person (``params`` without a leading axis); the simulated body
        itself for the identity."""
        if is_identity(params):
            return self.body.mj_model
        scales, offsets = np.asarray(params.scales, float), np.asarray(params.offsets, float)
        key = scales.tobytes() + offsets.tobytes()
        if key not in self._models:
            self._models[key] = self.body.model.to_mujoco(BodyParams(scales, offsets))
        return self._models[key]


def mjx_fields(body: Body, sys, params: BodyParams) -> dict[str, jax.Array]:
    """The fields of the simulated body's ``mjx.Model`` ``sys`` that differ between the people
    ``params`` (N people), each stacked (N, ...): the core's dynamic MJX scaling
    (:func:`mjx_biomech.body.mjx_model.scaled_mjx_model`: scaled geometry and mass, and the
    constants MuJoCo derives from them) evaluated once per person. An episode's model is ``sys``
    with these fields at its person's index, so every person runs in the one compiled step."""
    from mjx_biomech.body.mjx_model import scaled_mjx_model

    num = len(np.asarray(params.scales))
    if all(is_identity(person(params, n)) for n in range(num)):
        return {}
    models = [scaled_mjx_model(body.model, person(params, n)) for n in range(num)]
    out = {}
    for field in dataclasses.fields(sys):
        base = getattr(sys, field.name)
        if not isinstance(base, jax.Array):
            continue
        values = np.stack([np.asarray(getattr(mx, field.name)) for mx in models])
        if not np.all(values == np.asarray(base)):
            out[field.name] = jax.numpy.asarray(values, base.dtype)
    return out
