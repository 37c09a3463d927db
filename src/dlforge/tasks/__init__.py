"""One module per problem type. Importing this package registers every task."""

from dlforge.tasks import (  # noqa: F401  (registration)
    forecasting,
    image_classification,
    object_detection,
    semantic_segmentation,
    tabular_classification,
    text_classification,
    text_generation,
)
from dlforge.tasks.base import Prepared, Task

__all__ = ["Prepared", "Task"]
