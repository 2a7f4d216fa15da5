"""Dassl's ``dassl.utils``: everything is re-exported flat, as trainers import it that way."""

from .crash import *  # noqa: F401,F403
from .logger import *  # noqa: F401,F403
from .meters import *  # noqa: F401,F403
from .registry import *  # noqa: F401,F403
from .tools import *  # noqa: F401,F403
from .torchtools import *  # noqa: F401,F403
from .weight_init import *  # noqa: F401,F403
