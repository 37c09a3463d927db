"""Model architectures. Importing this package registers every model in `dlforge.registry`:
classifiers in MODELS, detectors in DETECTORS, segmenters in SEGMENTERS,
forecasters in FORECASTERS."""

from dlforge.models import (  # noqa: F401  (registration)
    backbones,
    detectors,
    recurrent,
    resnet_small,
    segmenters,
    unet,
    yolo,
)
from dlforge.models.classifier import Classifier

__all__ = ["Classifier"]
