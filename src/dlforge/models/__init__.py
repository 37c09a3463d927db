"""Model architectures. Importing this package registers every model in `dlforge.registry`:
classifiers in MODELS, detectors in DETECTORS, segmenters in SEGMENTERS."""

from dlforge.models import backbones, detectors, resnet_small, segmenters, unet, yolo  # noqa: F401  (registration)
from dlforge.models.classifier import Classifier

__all__ = ["Classifier"]
