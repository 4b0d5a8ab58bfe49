"""Responses whose bytes stop leaving are cut.

A client that asks for a large image and then stops reading would hold its connection,
the chunk buffered for it and the open image file for ever (deleting the image would
free no disk space). A watch starts when a response has bytes the kernel would not
take yet, and closes the connection once no byte has left for the send timeout.
"""

import logging
from collections.abc import Callable

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

log = logging.getLogger("imagestore.http")


class SendWatch:
    """Watches one response from its first unsent byte until it is all sent
    (``finished()`` and nothing left to write) or the connection closes."""

    def __init__(
        self, stream: IOStream, timeout: float, finished: Callable[[], bool], what: str
    ) -> None:
        self._stream = stream
        self._timeout = timeout
        self._finished = finished
        self._what = what
        self._loop = IOLoop.current()
        self._sent = self._bytes_sent()
        self._progress_at = self._loop.time()
        self._tick = min(timeout / 4, 5.0)
        self._loop.call_later(self._tick, self._check)

    def _bytes_sent(self) -> int:
        # Tornado counts the bytes its stream has written but has no public accessor.
        return int(getattr(self._stream, "_total_write_done_index", 0))

    def _check(self) -> None:
        stream = self._stream
        if stream.closed() or (self._finished() and not stream.writing()):
            return
        now = self._loop.time()
        sent = self._bytes_sent()
        if sent != self._sent or not stream.writing():
            # Bytes left, or none wait (the handler is producing the next ones).
            self._sent, self._progress_at = sent, now
        elif now - self._progress_at >= self._timeout:
            log.info(
                "cut %s: the client took no byte for %.0f s (IMAGESTORE_SEND_TIMEOUT_SECONDS)",
                self._what,
                now - self._progress_at,
            )
            stream.close()
            return
        self._loop.call_later(self._tick, self._check)
