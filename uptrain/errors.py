"""The one base class of errors that are the user's to fix (a config, a file, a missing extra).

The ``uptrain`` command prints such an error as one paragraph and exits with status 2;
any other exception keeps its traceback (it is a bug).
"""


class UserError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work, found before anything slow runs."""
