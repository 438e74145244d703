"""Errors that reach the user as a single line naming the culprit."""


class EditPersistError(Exception):
    """Base class: the message is shown to the user as-is, without a traceback."""


class ConfigError(EditPersistError):
    """A config value is invalid; the message starts with the config key."""


class InputError(EditPersistError):
    """An input file or directory is missing or malformed; the message starts with its path."""


class TrainingError(EditPersistError):
    """Training diverged or ran out of memory; the message says what to change."""
