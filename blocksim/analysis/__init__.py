"""analysis layer."""
from .notebook import *  # noqa: F401,F403
