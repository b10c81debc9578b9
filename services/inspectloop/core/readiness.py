"""Waiting for something to be ready, with a deadline: a TCP port that accepts connections, or
any check that eventually returns a value.

Services use it at start (a gateway waiting for its Serve replicas' ports), the harness for the
components it runs, and tests for effects they wait on: one way to wait, never a bare sleep.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

from inspectloop.core.errors import BackendUnavailableError, ConfigError

LOOPBACK = "127.0.0.1"
DEFAULT_POLL_INTERVAL_S = 0.2

T = TypeVar("T")


def is_port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = DEFAULT_POLL_INTERVAL_S,
) -> T:
    """Call ``check`` until it returns something other than None/False, or the deadline passes.

    Exceptions from ``check`` count as "not yet" (a component that is still starting refuses
    connections); the last one is reported if the deadline passes. :class:`ConfigError` is the
    exception: a bad argument never gets better, so it propagates at once. Returns the value;
    raises :class:`BackendUnavailableError` naming ``what`` when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
        except ConfigError:
            raise
        except Exception as exc:  # any failure of a readiness probe means "not ready yet"
            last_error = exc
        else:
            if result is not None and result is not False:
                return result
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error is not None else ""
            raise BackendUnavailableError(f"{what} did not happen within {timeout:g} s{detail}")
        time.sleep(interval)
