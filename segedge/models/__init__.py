"""The model zoo: importing this package registers every family."""

from segedge.models import bisenet, unet  # noqa: F401
