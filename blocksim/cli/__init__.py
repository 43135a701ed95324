"""cli layer."""
from .commands import main  # noqa: F401
