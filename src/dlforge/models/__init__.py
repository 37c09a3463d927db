"""Model architectures. Importing this package registers every model in `dlforge.registry`:
classifiers in MODELS, detectors in DETECTORS, segmenters in SEGMENTERS,
forecasters in FORECASTERS, text models in TEXT_MODELS."""

from dlforge.models import (  # noqa: F401  (registration)
    backbones,
    detectors,
    hf,
    recurrent,
    resnet_small,
    segmenters,
    tabular,
    transformer,
    unet,
    yolo,
)
from dlforge.models.classifier import Classifier

__all__ = ["Classifier"]
