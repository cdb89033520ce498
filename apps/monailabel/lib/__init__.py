"""MONAI Label glue for the project's bundles: the registry of served bundles, their infer and train tasks."""

from .bundles import BUNDLES, BadRequest, BundleEntry, BundleModel, Param
from .infer import BundleSegmentation, DeepIGeoSRefinement
from .train import BundleTrain
