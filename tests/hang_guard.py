"""A guard against a hang in a test (far above any normal duration: not a speed assertion)."""
from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def hang_guard(seconds: int, what: str):
    """Raise TimeoutError in the main thread if the block has not ended after ``seconds``."""
    def expire(*_):
        raise TimeoutError(f"hang: {what} did not end within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
