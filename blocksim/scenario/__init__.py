"""scenario layer."""
from .document import *  # noqa: F401,F403
from .document import __all__  # noqa: F401
