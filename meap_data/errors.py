"""Errors that reach the user as one line naming the input and the fix, and the exit
code of each kind of failure (README "Command line")."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

EXIT_BAD_INPUT = 2  # bad input or usage: the message says what to change
EXIT_CORRUPT = 3  # a dataset or shard that is damaged, or not what its manifest says
EXIT_BUSY = 4  # another run holds the output directory
EXIT_INTERNAL = 70  # a bug (sysexits' EX_SOFTWARE); MEAP_DATA_DEBUG=1 shows the traceback
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # the reader of our output went away, e.g. `| head` (128 + SIGPIPE)
EXIT_TERMINATED = 143  # SIGTERM (128 + 15): `kill`, a job scheduler's or container's stop


class MeapDataError(Exception):
    """A user-facing error: the CLI prints ``error: <message>`` and exits :attr:`exit_code`."""

    exit_code = EXIT_BAD_INPUT


class DatasetIncompleteError(MeapDataError):
    """A dataset directory without a manifest: still being written, or a crashed run."""


class CorruptDatasetError(MeapDataError):
    """A dataset, shard or manifest that is damaged or does not match its manifest."""

    exit_code = EXIT_CORRUPT


class ChecksumError(CorruptDatasetError):
    """A shard whose bytes do not match the manifest's sha256."""


class BusyError(MeapDataError):
    """Another run is writing the same output directory."""

    exit_code = EXIT_BUSY


_INTERRUPTED = threading.Event()
_STOPPED_BY: list[int] = []  # the signal that stopped the command
#: How a command stopped by each signal ends: (exit code, the one error line).
_STOPS = {signal.SIGINT: (EXIT_INTERRUPTED, "error: interrupted"),
          signal.SIGTERM: (EXIT_TERMINATED, "error: terminated")}


def interrupted() -> bool:
    """Whether Ctrl-C or SIGTERM stopped :func:`run_command` (libraries such as Beam wrap
    the KeyboardInterrupt in their own errors and log it; this tells it apart)."""
    return _INTERRUPTED.is_set()


def _on_stop_signal(signum, frame):
    # SIGTERM takes the same way out as Ctrl-C: the KeyboardInterrupt unwinds through
    # every `finally`, so the output lock goes and partial shards are deleted.
    if not _STOPPED_BY:
        _STOPPED_BY.append(signum)
    _INTERRUPTED.set()
    raise KeyboardInterrupt


def _stopped() -> int:
    """Print the stop's one line; its exit code."""
    code, line = _STOPS.get(_STOPPED_BY[0] if _STOPPED_BY else signal.SIGINT)
    print(line, file=sys.stderr)
    return code


def run_command(command: Callable[[], int]) -> int:
    """Run a CLI command: its exit code, or one ``error: ...`` line on stderr and the
    code of the failure, never a traceback (unless ``MEAP_DATA_DEBUG=1``)."""
    if threading.current_thread() is threading.main_thread():
        for signum in _STOPS:
            signal.signal(signum, _on_stop_signal)
    try:
        return command()
    except MeapDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return _stopped()
    except BrokenPipeError:
        # Quietly, as `cat | head` does; stdout is gone, so point it somewhere harmless
        # before the interpreter flushes it again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if interrupted():  # a KeyboardInterrupt that a library wrapped on its way up
            return _stopped()
        if os.environ.get("MEAP_DATA_DEBUG"):
            raise
        print(f"error: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(a bug in meap-data; rerun with MEAP_DATA_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL
