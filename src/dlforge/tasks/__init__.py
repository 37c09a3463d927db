"""One module per problem type. Importing this package registers every task."""

from dlforge.tasks import image_classification  # noqa: F401  (registration)
from dlforge.tasks.base import Prepared, Task

__all__ = ["Prepared", "Task"]
