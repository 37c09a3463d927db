"""Model architectures. Importing this package registers every model in `dlforge.registry.MODELS`."""

from dlforge.models import backbones, resnet_small  # noqa: F401  (registration)
from dlforge.models.classifier import Classifier

__all__ = ["Classifier"]
