"""Helper processes die with the process that started them.

A killed `dentvlm shard` or `dentvlm fit` (SIGKILL, or SIGTERM before Python can clean up) would
otherwise leave its image workers or DataLoader workers running, holding memory, until they notice on
their own (minutes, if ever). On Linux the kernel can signal a child when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere these functions do nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1
_parent_at_fork: int | None = None
_installed = False


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel kill this process when its parent exits; exit now if the parent is already gone.

    Args:
        parent: The parent's pid as the parent saw it (to catch a parent that died before this ran).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (unusual libc): the old behaviour, nothing worse
        return
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _remember_parent() -> None:
    global _parent_at_fork
    # The kernel signals when the forking *thread* exits: only forks from the main thread qualify.
    _parent_at_fork = os.getpid() if threading.current_thread() is threading.main_thread() else None


def _child_after_fork() -> None:
    if _parent_at_fork is not None:
        die_with_parent(_parent_at_fork)


def children_die_with_this_process() -> None:
    """Make every process forked from now on (e.g. DataLoader workers) die with this one."""
    global _installed
    if not _installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_remember_parent, after_in_child=_child_after_fork)
        _installed = True
