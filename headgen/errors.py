"""User-facing errors.

Every mistake a user can make (a bad key in a recipe, a missing model, an empty prompt, ...)
raises a :class:`HeadgenError`. The command line prints its message without a traceback
(unless ``--verbose``) and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HeadgenError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""


class ConfigError(HeadgenError):
    """A recipe, fragment or override is invalid."""


class RegistryError(ConfigError):
    """An unknown registered name, or a clash between two registrations."""


class ResumeError(HeadgenError):
    """A run directory cannot be resumed or re-exported."""


class ModelNotFoundError(HeadgenError):
    """A pretrained model is required but cannot be found."""


class NonFiniteLossError(HeadgenError):
    """The optimisation produced NaN/Inf; the last good checkpoint is kept."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened to ``limit`` characters (its type when empty)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
