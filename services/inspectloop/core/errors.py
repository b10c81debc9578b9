"""One root exception and the four kinds every adapter maps its failures to.

Callers decide on the kind, never on the concrete exception: a transient error is retried,
a permanent one dead-lettered, a config error stops the process at start, and an unavailable
backend pauses the work that needs it.
"""

from __future__ import annotations


class InspectloopError(Exception):
    """Root of every error raised on purpose by inspectloop."""


class TransientError(InspectloopError):
    """Worth retrying: the same call may succeed later (timeouts, leader moves, locks)."""


class PermanentError(InspectloopError):
    """Retrying cannot help: the input itself is wrong. Events that raise it go to the DLQ."""


class ConfigError(InspectloopError):
    """The configuration is invalid; raised at start so that a bad deployment fails fast."""


class BackendUnavailableError(TransientError):
    """A backing component (broker, Triton, Prometheus, registry) cannot be reached."""


class RecordTooLargeError(PermanentError):
    """An event exceeds the bus's maximum record size; nothing was written."""


class DecodeError(PermanentError):
    """A record could not be decoded into the event its topic and headers announce."""
