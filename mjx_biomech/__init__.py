"""mjx-biomech: scalable, differentiable body models in MJX and their bridges to OpenSim and RL."""

from mjx_biomech.body.kinematics import Kinematics
from mjx_biomech.body.loading import load_model
from mjx_biomech.body.model import BiomechModel, sample_coordinates
from mjx_biomech.body.params import BodyParams

__all__ = ["BiomechModel", "BodyParams", "Kinematics", "load_model", "sample_coordinates"]
__version__ = "0.1.0"
