"""Signal handling for a node's console script: stop on the first SIGINT/SIGTERM, ignore the rest."""

from __future__ import annotations

import signal


class StopRequest:
    """SIGINT/SIGTERM handling for :func:`pebal_ros.node.main`: the first signal asks the spin loop to stop, later
    ones (a second Ctrl-C, ``ros2 launch``'s own SIGINT next to the terminal's) are ignored, so a
    shutdown in progress is never interrupted by a KeyboardInterrupt. The handlers stay installed
    until the process ends (unlike ``pebal_ros.bag_record.stop_on_signals``, which restores the
    previous ones after its block): a signal after ``main`` returned would otherwise raise during
    interpreter exit. ``requested`` is a plain attribute, not a ``threading.Event``: a handler
    that takes a lock the interrupted main thread holds would deadlock."""

    POLL_S = 0.1
    """Longest time between a signal and the spin loop noticing it (s)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if not self.requested:
            self.signal_name = signal.Signals(signum).name
            self.requested = True
        # From now on the kernel drops these signals. A Python handler would not survive
        # interpreter finalisation (CPython resets Python-level handlers to SIG_DFL there), so a
        # second Ctrl-C during that window killed the node with status -2; SIG_IGN is kept.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
