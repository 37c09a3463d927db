"""The one training loop, its callbacks, and device/precision/distributed plumbing."""

from dlforge.train.callbacks import BackboneFreeze, Callback, EarlyStopping, GradientFlow
from dlforge.train.trainer import Trainer

__all__ = ["BackboneFreeze", "Callback", "EarlyStopping", "GradientFlow", "Trainer"]
