"""The domain errors every layer raises; the CLI turns them into one clear line and exit 2."""


class RecsError(Exception):
    """Base of all errors that deserve a message rather than a traceback."""


class InputError(RecsError):
    """Bad input from the user: a malformed extract, an unknown id, a wrong flag combination."""


class ModelFileError(RecsError):
    """A file that is not a model file of ours, or one from an incompatible version."""


class NotPublishedError(RecsError):
    """Redis holds no published model (or no list) for what was asked."""
