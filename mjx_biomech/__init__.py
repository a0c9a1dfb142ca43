"""mjx-biomech: scalable, differentiable body models in MJX and their bridges to OpenSim and RL."""

from mjx_biomech.kinematics import Kinematics
from mjx_biomech.model import BiomechModel, load_model, sample_coordinates
from mjx_biomech.params import BodyParams

__all__ = ["BiomechModel", "BodyParams", "Kinematics", "load_model", "sample_coordinates"]
__version__ = "0.1.0"
