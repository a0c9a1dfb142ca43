"""How people's proportions vary: the priors a fit puts on segment scales, and what it warns about.

A scale group (other than ``overall``, which the data set freely: a person's size) scales a
segment relative to the body scaled to the person's size. Adults' segment proportions vary by
a few percent: in the ANSUR II survey (US Army, 2012) segment lengths vary by about 5 % (one
standard deviation) and breadths such as hip breadth by about 6 %, part of it shared with
stature. :data:`GROUP_SD` takes those spreads as the standard deviation of a group's log scale,
by the name of the group or its first body; a group none matches gets :data:`DEFAULT_SD`.

- A group's log scale costs nothing within ``PLAUSIBLE_SD`` standard deviations of 1 and grows
  linearly (as a residual; its square is the cost) beyond, so an ordinary person is fitted
  without bias and an implausible one (a pelvis 40 % wider than the body's size implies) is
  pulled back. Every group other than ``overall`` is held inside ``BOUNDS`` by a smooth
  saturation, whatever the data say.
- The two groups of a left/right pair (``thigh_r``/``thigh_l``, by name) are tied softly: their
  ratio is free within ``ASYMMETRY_FREE`` and costs beyond, in units of ``ASYMMETRY_SD``.
- :func:`warnings` (used by the fit's report) names any group beyond ``WARN_SD``, any pair more
  asymmetric than ``WARN_ASYMMETRY``.
"""

from __future__ import annotations

import math

import numpy as np

from mjx_biomech.capture.captures import mirror_pairs

# Standard deviation of a group's log scale, by a word in the group's (or its first body's) name.
GROUP_SD = (
    ("pelvis", 0.06), ("hip", 0.06),
    ("thigh", 0.05), ("femur", 0.05), ("leg", 0.05), ("shank", 0.05), ("tibia", 0.05), ("foot", 0.05),
    ("calcn", 0.05), ("arm", 0.05), ("humerus", 0.05), ("ulna", 0.05), ("radius", 0.05), ("hand", 0.05),
    ("torso", 0.05), ("thorax", 0.05), ("lumbar", 0.05), ("head", 0.04), ("neck", 0.05),
)  # fmt: skip
DEFAULT_SD = 0.05
PLAUSIBLE_SD = 2.0
WARN_SD = 2.5
BOUNDS = (0.6, 1.6)
ASYMMETRY_FREE = 0.03
ASYMMETRY_SD = 0.02
WARN_ASYMMETRY = 0.10


def group_sd(model) -> np.ndarray:
    """(P,) the standard deviation of each scale group's log scale; NaN for ``overall``."""
    out = np.full(len(model.scale_param_names), np.nan)
    groups = {g.name: g for g in getattr(model, "scale_groups", ())}
    for i, name in enumerate(model.scale_param_names):
        if name == "overall":
            continue
        group = groups.get(name)
        words = (name.lower(), group.bodies[0].lower() if group is not None and group.bodies else "")
        out[i] = next((sd for key, sd in GROUP_SD if any(key in w for w in words)), DEFAULT_SD)
    return out


def mirror_groups(model) -> np.ndarray:
    """(K, 2) indices of the scale groups that mirror each other by name (``thigh_r``/``thigh_l``)."""
    return mirror_pairs(model.scale_param_names)


def _squeeze_constants() -> tuple[float, float, float]:
    """(middle, half width) of ``log BOUNDS`` and the shift that makes 0 map to 0."""
    lo, hi = (math.log(b) for b in BOUNDS)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    return mid, half, half * math.atanh(mid / half)


def bounded_log_scales(z, bounded, xp=np):
    """Log scales from unconstrained ``z`` (P,): where ``bounded`` (P,) bool, squeezed smoothly
    into ``log BOUNDS`` (0 stays 0, slope about 1 near it, saturating at the bounds); elsewhere
    ``z``."""
    mid, half, shift = _squeeze_constants()
    return xp.where(xp.asarray(bounded), mid + half * xp.tanh((z - shift) / half), z)


def warnings(model, scales) -> list[str]:
    """Sentences about implausible ``scales`` (P,): groups beyond ``WARN_SD`` standard deviations,
    left/right pairs more asymmetric than ``WARN_ASYMMETRY``."""
    scales = np.asarray(scales, float)
    names = model.scale_param_names
    sd = group_sd(model)
    out = []
    for i, name in enumerate(names):
        if np.isfinite(sd[i]) and abs(math.log(scales[i])) > WARN_SD * sd[i]:
            out.append(f"scale group {name!r} is {scales[i]:.3f}: {abs(math.log(scales[i])) / sd[i]:.1f} standard deviations "
                       f"from the population's proportions (SD {100 * sd[i]:.0f} %); check its keypoints")
    for a, b in mirror_groups(model):
        ratio = max(scales[a], scales[b]) / min(scales[a], scales[b])
        if ratio - 1 > WARN_ASYMMETRY:
            out.append(f"scale groups {names[a]!r} ({scales[a]:.3f}) and {names[b]!r} ({scales[b]:.3f}) differ by "
                       f"{100 * (ratio - 1):.0f} % (more than {100 * WARN_ASYMMETRY:.0f} %); check the detector's left/right labels")
    return out
