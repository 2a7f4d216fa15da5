from .clip import *  # noqa: F403
