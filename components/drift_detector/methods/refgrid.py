"""Counting reference values below a point without a binary search per point: ``ks`` and
``cvm_online`` both need, for a window's points, how many reference values lie below (and at) each.

``np.searchsorted`` costs about 30 ns a point (a binary search over 5,000 values); :class:`RefGrid`
cuts each feature's reference range into equal cells once, so a point's cell bounds its count at
once, and counting it exactly only compares the few reference values of that cell.
"""

from __future__ import annotations

import numpy as np


class RefGrid:
    """Equal cells over each feature's reference range, and how many reference values lie below each.

    ``cell(x) = clip(floor((x - lo) * scale), 0, cells - 1)`` never decreases as ``x`` grows (each float
    operation is monotone), so every reference value in a lower cell than ``x`` is below ``x`` and
    every one in a higher cell above it: ``#ref < x`` and ``#ref <= x`` both lie in
    ``[starts[cell], starts[cell + 1]]``, whatever the rounding. ``ref_padded`` is the reference rows,
    each followed by ``probe`` infinities (``probe``: the power of two above ``occupancy``, the most
    values one cell holds), so the ``probe`` values from a cell's start are sorted and all after the
    cell's own are above ``x``: a branch-free binary search of ``log2(probe)`` flat steps counts them.
    """

    __slots__ = ("cells", "lo", "n_ref", "occupancy", "probe", "ref_padded", "row_starts", "scale", "starts")

    #: More values than this in one cell (a reference with clusters or repeats): no grid, binary searches.
    MAX_OCCUPANCY = 32

    def __init__(self, lo: np.ndarray, scale: np.ndarray, cells: int, n_ref: int) -> None:
        self.lo, self.scale, self.cells, self.n_ref = lo, scale, cells, n_ref
        self.row_starts = (np.arange(lo.shape[0]) * (cells + 1))[:, None]
        self.starts = np.empty(0, dtype=np.int64)
        self.occupancy = self.probe = 0
        self.ref_padded = np.empty(0)

    @classmethod
    def build(cls, ref_rows: np.ndarray) -> RefGrid | None:
        """The grid of ``ref_rows`` ``(d, n_ref)`` (ascending rows), or ``None`` where it would not pay."""
        d, n1 = ref_rows.shape
        lo = ref_rows[:, :1].copy()
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            span = ref_rows[:, -1:] - lo
            cells = max(64, min(4 * n1, (1 << 22) // d))  # about 4 per reference value, 16 MiB at most
            scale = cells / span
        if not (np.isfinite(span).all() and (span > 0).all() and np.isfinite(scale).all()):
            return None  # a constant feature, or a range beyond the floats
        grid = cls(lo, scale, cells, n1)
        ref_cells = grid.cell(ref_rows)
        starts = np.empty((d, cells + 1), dtype=np.int32 if n1 < 2**31 else np.int64)
        edges = np.arange(cells + 1)
        for j in range(d):
            starts[j] = np.searchsorted(ref_cells[j], edges, side="left")
        occupancy = int(np.diff(starts, axis=1).max())
        if occupancy > cls.MAX_OCCUPANCY:
            return None
        probe = 1 << occupancy.bit_length()  # > occupancy: a count of 0 .. occupancy fits in its steps
        padded = np.full((d, n1 + probe), np.inf)
        padded[:, :n1] = ref_rows
        grid.starts, grid.occupancy, grid.probe, grid.ref_padded = starts.ravel(), occupancy, probe, padded.ravel()
        return grid

    def cell(self, rows: np.ndarray) -> np.ndarray:
        """The cell of every value of ``rows`` ``(d, n)`` in its feature's grid."""
        with np.errstate(over="ignore", invalid="ignore"):
            t = (rows - self.lo) * self.scale
        np.floor(t, out=t)
        np.clip(t, 0, self.cells - 1, out=t)  # also the infinities of values far outside the range
        return t.astype(np.intp)

    def bounds(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` ``(d, n)``: ``low <= #ref < x <= #ref <= x <= high`` for every value of ``rows``."""
        flat = self.cell(rows)
        flat += self.row_starts
        low = self.starts.take(flat)
        flat += 1
        return low, self.starts.take(flat)

    def count(self, features: np.ndarray, values: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``#ref < x`` and ``#ref <= x`` of the points ``values`` of ``features`` (flat arrays), given
        their ``low`` bound from :meth:`bounds`."""
        low = low.astype(np.int64)
        base = low + features * (self.n_ref + self.probe)
        left = self._search(base, values, np.less)
        if (self.ref_padded.take(base + left) == values).any():  # some x is a reference value
            right = self._search(base, values, np.less_equal)
        else:  # the first value not below x is above it: none is equal
            right = left
        return low + left, low + right

    def _search(self, base: np.ndarray, values: np.ndarray, before: np.ufunc) -> np.ndarray:
        """How many of the ``probe`` values from each ``base`` come ``before`` their ``x`` (binary
        lifting: at most ``probe - 1``, which bounds every cell's count)."""
        at = base.copy()
        step = self.probe // 2
        while step:
            at += step * before(self.ref_padded.take(at + (step - 1)), values)
            step //= 2
        return at - base

    def counts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``#ref < x`` and ``#ref <= x`` ``(d, n)`` of every value of ``rows`` ``(d, n)``."""
        low, _ = self.bounds(rows)
        features = np.broadcast_to(np.arange(rows.shape[0])[:, None], rows.shape)
        return self.count(features, rows, low)
