"""The one base class of errors that are the user's to fix (a config, a file, a missing extra).

The ``uptrain`` command prints such an error as one paragraph and exits with status 2;
any other exception keeps its traceback (it is a bug).
"""


class UserError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work, found before anything slow runs."""


def instantiate_as(node, expected: type, where: str, kind: str, **kwargs):
    """``hydra.utils.instantiate(node, **kwargs)`` checked to give an ``expected`` instance: a
    ConfigError raised by the constructor passes through, any other failure (an import error, a
    wrong argument) becomes a ConfigError naming ``where``, and so does an object of another type
    (``kind`` names the expected class for the message)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    try:
        obj = instantiate(node, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - hydra wraps import and constructor errors
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        shown = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node
        raise ConfigError(f"{where}: cannot instantiate {shown} ({exc})") from None
    if not isinstance(obj, expected):
        raise ConfigError(f"{where}: {type(obj).__name__} is not a {kind}")
    return obj


class DataFormatError(UserError, ValueError):
    """A data file that cannot be read as its format (a collection, qrels, a run, a click log, a QA
    set): the message names the file (and the line) and what was expected."""
