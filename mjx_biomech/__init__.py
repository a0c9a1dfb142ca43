"""mjx-biomech: scalable, differentiable body models in MJX and their bridges to OpenSim and RL.

The public API on one screen (docs/architecture.md has the layout behind it):

- body: :func:`load_model`, :class:`BiomechModel`, :class:`BodyParams`, :class:`Kinematics`,
  :func:`sample_coordinates`;
- capture: :class:`Camera`, :class:`CameraRig`, :class:`Capture`, :class:`MarkerTrial`;
- fitting: :func:`fit` (multi-camera 2D keypoints) → :class:`FitResult`; :func:`solve_ik`
  (3D markers, a given body) → :class:`IKResult`; :func:`fit_markers` (3D markers → scaled body
  and joint angles);
- errors: :class:`InputError`, the one exception for bad input.

The capture and fitting names are imported on first use, so ``import mjx_biomech`` stays light.
"""

import importlib

from mjx_biomech.body.kinematics import Kinematics
from mjx_biomech.body.loading import load_model
from mjx_biomech.body.model import BiomechModel, sample_coordinates
from mjx_biomech.body.params import BodyParams
from mjx_biomech.errors import InputError

# name -> module that defines it
_LAZY = {
    "Camera": "mjx_biomech.capture.cameras",
    "CameraRig": "mjx_biomech.capture.cameras",
    "Capture": "mjx_biomech.capture.captures",
    "MarkerTrial": "mjx_biomech.capture.marker_trials",
    "fit": "mjx_biomech.fitting.fit",
    "FitResult": "mjx_biomech.analysis.results",
    "solve_ik": "mjx_biomech.fitting.ik",
    "IKResult": "mjx_biomech.fitting.ik",
    "fit_markers": "mjx_biomech.fitting.markers",
}

__all__ = ["BiomechModel", "BodyParams", "InputError", "Kinematics", "load_model", "sample_coordinates", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mjx_biomech' has no attribute {name!r}")
