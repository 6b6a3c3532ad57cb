"""What every DataLoader worker of teacherkit shares, in training and in labelling.

It lives outside :mod:`teacherkit.training` because inference (``label``'s image readers)
must not import the training package.
"""

from __future__ import annotations

import signal


def ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores SIGINT/SIGTERM sent to the process
    group, so the main process can finish its step or batch, save what it must and then
    stop the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop_workers(iterator: object) -> None:
    """Stop the worker processes of a DataLoader iterator now. DataLoader has no public
    call for it: its workers go only when the iterator is collected, which a traceback
    frame (Ctrl-C in a notebook) or a reference cycle can delay to the end of the process,
    and these workers ignore the signals that would otherwise end them."""
    stop = getattr(iterator, "_shutdown_workers", None)
    if stop is not None:
        stop()
