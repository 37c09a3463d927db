"""The one training loop, its callbacks, and device/precision/distributed plumbing."""

from dlforge.training.callbacks import BackboneFreeze, Callback, EarlyStopping, GradientFlow
from dlforge.training.trainer import Trainer

__all__ = ["BackboneFreeze", "Callback", "EarlyStopping", "GradientFlow", "Trainer"]
