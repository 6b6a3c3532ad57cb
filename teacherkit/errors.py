"""Errors a user can act on. The CLI prints their message (no traceback unless
``--verbose``) and exits with their ``exit_code``."""

from __future__ import annotations


class TeacherkitError(Exception):
    """Base of errors caused by input, configuration or environment, not by a bug."""

    exit_code = 2


class DataError(TeacherkitError):
    """A dataset file cannot be read or used; the message names the file and place."""

    exit_code = 2


class OutputExistsError(TeacherkitError):
    """An output exists and no flag allows replacing it."""

    exit_code = 2
