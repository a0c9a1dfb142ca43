"""Is the fitted body one a person could have? Warnings for a fit's report and summary.

- segment proportions and left/right asymmetry (:func:`mjx_biomech.fitting.anthropometry.warnings`);
- the hip joint centres against the hip keypoints: where the marker set has keypoints at the
  joint centres of the root body's two mirrored children (the hips of a pelvis), the distance
  between the model's joint centres is compared with the median distance between those
  keypoints triangulated from the detections. Detectors place hip keypoints at or lateral to
  the joint centres (towards the greater trochanters), so joint centres wider apart than
  ``HIP_WIDTH_RANGE[1]`` times the keypoints' distance, or closer than ``HIP_WIDTH_RANGE[0]``
  times it, are anatomically implausible: a wrong pelvis scale absorbed by marker offsets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mjx_biomech.capture.captures import mirror_pairs
from mjx_biomech.capture.projection import triangulate_robust
from mjx_biomech.fitting import anthropometry

HIP_WIDTH_RANGE = (0.8, 1.1)
# A keypoint closer than this (m) to its body's origin marks that body's joint centre.
_AT_JOINT_M = 0.05


def hip_keypoints(model, marker_set: str) -> tuple[int, int] | None:
    """Indices (into the marker set) of a mirrored pair of keypoints at the joint centres of two
    children of the root body (the hips), or None."""
    m = model.mj_model
    ids = model.marker_site_ids(marker_set)
    root = int(np.flatnonzero(m.body_parentid == 0)[1]) if m.nbody > 1 else 0
    for a, b in mirror_pairs(model.marker_names(marker_set)):
        bodies = m.site_bodyid[ids[[a, b]]]
        if (np.all(m.body_parentid[bodies] == root) and bodies[0] != bodies[1]
                and np.all(np.linalg.norm(m.site_pos[ids[[a, b]]], axis=1) < _AT_JOINT_M)):
            return int(a), int(b)
    return None


def hip_width_warning(result) -> str | None:
    """A sentence when the model's hip joint centres are implausibly far from or near to each
    other for the triangulated hip keypoints (see the module docstring); None otherwise or when
    the marker set has no hip keypoints."""
    model, marker_set = result.model, result.marker_set
    pair = hip_keypoints(model, marker_set)
    if pair is None:
        return None
    ids = model.marker_site_ids(marker_set)
    bodies = model.mj_model.site_bodyid[ids[list(pair)]]
    kin = jax.jit(model.forward)(jnp.asarray(model.neutral_coordinates()), result.params)  # one program, not op by op
    joints = float(np.linalg.norm(np.asarray(kin.xpos)[bodies[0]] - np.asarray(kin.xpos)[bodies[1]]))
    widths = []
    for trial in result.trials:
        cap = trial.scored
        pts, _ = triangulate_robust(result.rig, cap.keypoints[:, :, list(pair)], cap.confidence[:, :, list(pair)])
        d = np.linalg.norm(np.asarray(pts)[:, 0] - np.asarray(pts)[:, 1], axis=-1)
        widths.append(d[np.isfinite(d)])
    widths = np.concatenate(widths)
    if widths.size == 0:
        return None
    keypoints = float(np.median(widths))
    ratio = joints / keypoints
    if HIP_WIDTH_RANGE[0] <= ratio <= HIP_WIDTH_RANGE[1]:
        return None
    names = model.marker_names(marker_set)
    return (f"hip joint centres {joints:.3f} m apart but keypoints {names[pair[0]]!r}/{names[pair[1]]!r} "
            f"{keypoints:.3f} m apart (ratio {ratio:.2f}, expected {HIP_WIDTH_RANGE[0]}–{HIP_WIDTH_RANGE[1]}); "
            "the pelvis scale is implausible")


def body_warnings(result) -> list[str]:
    """Every plausibility warning of a fit (:class:`~mjx_biomech.analysis.results.FitResult`)."""
    out = anthropometry.warnings(result.model, np.asarray(result.params.scales))
    hips = hip_width_warning(result)
    return out + ([hips] if hips else [])
