"""The bounded in-memory buffer between predictions and the Kafka shipper.

Predictions append and never wait: when the buffer is full the oldest entries make room and are
counted as dropped. The shipper thread takes batches from the other end. One lock guards both ends;
it is held for a few list operations only.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoggedRequest:
    """One answered request: what the inference log needs to write one record per row."""

    request_id: str
    timestamp: float
    rows: list[list[Any]]
    predictions: list[Any]


class InferenceBuffer:
    """Holds at most ``capacity`` records (rows), in whole requests; drops the oldest requests first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._entries: deque[LoggedRequest] = deque()
        self._records = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Records (not requests) waiting to be shipped."""
        return self._records

    def put(self, entry: LoggedRequest) -> int:
        """Append ``entry``; returns how many records were dropped to make room (0 almost always).

        A request with more rows than the whole buffer keeps its newest ``capacity`` rows.
        """
        dropped = 0
        rows = len(entry.rows)
        if rows > self.capacity:
            dropped = rows - self.capacity
            entry = LoggedRequest(entry.request_id, entry.timestamp, entry.rows[-self.capacity:],
                                  entry.predictions[-self.capacity:])
            rows = self.capacity
        with self._lock:
            while self._records + rows > self.capacity:
                oldest = self._entries.popleft()
                self._records -= len(oldest.rows)
                dropped += len(oldest.rows)
            self._entries.append(entry)
            self._records += rows
        return dropped

    def take(self, max_records: int) -> list[LoggedRequest]:
        """Remove and return the oldest requests, up to ``max_records`` records (at least one request)."""
        taken: list[LoggedRequest] = []
        count = 0
        with self._lock:
            while self._entries and (not taken or count + len(self._entries[0].rows) <= max_records):
                entry = self._entries.popleft()
                taken.append(entry)
                count += len(entry.rows)
            self._records -= count
        return taken
