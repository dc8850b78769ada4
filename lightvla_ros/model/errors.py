"""Errors that tell the user what is wrong and how to fix it (never a bare traceback from deep inside torch)."""


class LightVLAError(Exception):
    """Base class for every error this package raises on purpose."""


class CheckpointError(LightVLAError):
    """A checkpoint folder is missing files, has corrupt files, or does not match the expected layout."""


class InputError(LightVLAError, ValueError):
    """An observation (images, instruction, robot state) or a call argument cannot be used."""
