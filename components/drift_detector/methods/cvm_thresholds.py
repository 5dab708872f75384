"""Thresholds of the online Cramér-von Mises detector: the expensive part of fitting ``cvm_online``.

Simulated null streams, ranked against the reference, give the statistic's law at every step; each
step keeps only the upper tail it needs (:class:`UpperTail`), so memory does not grow with the number
of streams.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .cvm_online import cvm_normaliser, pair_max_sums

#: Stream length simulated per bootstrap is 2 * max(window_sizes) - 1 (as in alibi-detect): after that
#: the thresholds no longer depend on time.
DEFAULT_N_BOOTSTRAPS = 50_000


def min_bootstraps(beta: float, steps: int) -> int:
    """The fewest streams whose ``1 - beta`` quantile is defined at every one of ``steps`` steps."""
    # Each step keeps the streams at or below the (1 - beta) quantile, and the quantile of N samples
    # is only defined for N >= 1 / beta: enough must survive all steps (2% slack for the rounding).
    return math.ceil((1 / beta + 1) / (1 - beta) ** steps * 1.02)


def null_ref_counts(rng: np.random.Generator, n_ref: int, t_max: int, b: int) -> np.ndarray:
    """``(t_max, b)`` int32: for ``b`` simulated null streams of ``t_max`` records, how many of
    ``n_ref`` reference values lie below each record, reference and stream drawn from one continuous law.

    Only ranks matter, and the ranks of the ``n_ref + t_max`` values are a uniformly random order:
    the records' places in the merged order are a uniformly random sequence of distinct integers in
    ``[0, n_ref + t_max)``, and the count below a record is its place minus the number of records
    placed before it. Distinct integers come from drawing with repetition and keeping each stream's
    first ``t_max`` distinct values in drawing order, which is drawing without replacement.
    """
    total = n_ref + t_max
    width = t_max + 8 + 4 * t_max * t_max // total  # about 4x the expected number of repeats
    # 16-bit integers sort by radix in numpy's stable sort, 4x faster than 64-bit ones.
    small = np.int16 if max(total, width) <= np.iinfo(np.int16).max else np.int64
    out = np.empty((b, t_max), dtype=np.int32)
    todo = np.arange(b)
    while todo.size:
        draws = rng.integers(0, total, size=(todo.size, width), dtype=small)
        by_value = np.argsort(draws, axis=1, kind="stable")  # stable: a value's first draw sorts first
        values = np.take_along_axis(draws, by_value, axis=1)
        first = np.ones(draws.shape, dtype=bool)
        first[:, 1:] = values[:, 1:] != values[:, :-1]
        # draw index of each value's first draw (width for repeats); the t_max earliest are the stream
        first_draw = np.where(first, by_value, width).astype(small)
        stream = np.argsort(first_draw, axis=1, kind="stable")[:, :t_max]  # positions in value order
        cut = np.take_along_axis(first_draw, stream[:, -1:], axis=1)
        taken = first_draw <= cut
        below = values - (np.cumsum(taken, axis=1, dtype=np.int32) - 1)  # taken values sorted before
        enough = cut[:, 0] < width
        out[todo[enough]] = np.take_along_axis(below, stream, axis=1)[enough]
        todo = todo[~enough]  # rare: too many repeats; draw those streams again
    return np.ascontiguousarray(out.T)


def null_stream_stats(below: np.ndarray, n: int, window_sizes: Sequence[int]) -> np.ndarray:
    """Normalised CvM statistic ``(t_max, b)`` of simulated null streams, maximum over the window
    sizes, ``nan`` until the smallest window is full; ``below`` from :func:`null_ref_counts`.

    The formula of :func:`cvm_window_stats` for continuous data (no ties, ``a_i = i/n``): with
    ``b`` the reference count below a record, ``H = n - b``, ``L = b/n`` and
    ``G = (n(n+1)/2 - b(b+1)/2)/n``, every pair's ``min(psi)`` is
    ``2n/ws^2 - kappa max(b)`` with ``kappa = 2/ws^2 + 2/(ws n)``, so the pair sums are integer sums
    of ``max(b)`` (:func:`pair_max_sums`). Window sums come from one running sum: the record's terms
    minus those of the record ``ws`` earlier.
    """
    t_max, b = below.shape
    sizes = sorted(int(w) for w in window_sizes)
    fb = below.astype(np.float64)
    cdf = fb / n
    g_plus_cdf = (n * (n + 1) / 2 - fb * (fb + 1) / 2) / n + cdf
    cdf2 = cdf * cdf
    out = np.full((t_max, b), np.nan)
    pair_sums = pair_max_sums(below, sizes)
    for ws in sizes:
        later, earlier = pair_sums[ws]
        kappa = 2.0 / (ws * ws) + 2.0 / (ws * n)
        # per record: its diagonal terms and -kappa x the pairs it closes (as the later member)
        record = cdf2 + (n - fb) / (ws * ws) - (2.0 / ws) * g_plus_cdf
        closing = record - kappa * later
        # ... minus, ws records on, its diagonal terms and the pairs it opens (as the earlier member)
        closing[ws:] -= record[:-ws] - kappa * earlier[:-ws]
        constant = (n + 1) * (2 * n + 1) / (6 * n)  # sum of a_i^2 = (i/n)^2, i = 1..n
        constant += ws * (ws - 1) / 2 * (2.0 * n / (ws * ws)) + (ws + 1) * (2 * ws + 1) / (6 * ws)
        raw = np.cumsum(closing, axis=0)[ws - 1 :] + constant  # windows ending at ws - 1 .. t_max - 1
        prod, mu, sd = cvm_normaliser(n, ws)
        part = out[ws - 1 :]
        np.fmax(part, (raw * prod - mu) / sd, out=part)
    return out


class UpperTail:
    """The largest ``keep`` simulated statistics per time step, with the stream each came from.

    At a time step the threshold is an upper quantile of the streams still alive, and a stream dies
    when it exceeds a threshold, so both only ever look at the top of each step's column: keeping the
    top ``keep`` per step (enough for the quantile's order statistics plus every stream that can have
    died before) replaces a ``n_bootstraps x t_max`` matrix. Batches of streams are offered; those
    above the current cut-off of their step wait in a buffer that is merged in when it fills.
    """

    def __init__(self, steps: int, keep: int, buffer: int = 1 << 18) -> None:
        self.values = np.full((steps, keep), -np.inf)
        self.streams = np.full((steps, keep), -1, dtype=np.int32)  # over 2**31 streams would take days
        self._cutoff = np.full((steps, 1), -np.inf)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._n_pending = 0
        self._buffer = buffer

    def add(self, stats: np.ndarray, first_stream: int) -> None:
        """Offer ``stats`` ``(steps, b)`` of streams ``first_stream .. first_stream + b - 1``."""
        step, column = np.nonzero(stats > self._cutoff)
        self._pending.append((step, stats[step, column], column + first_stream))
        self._n_pending += step.size
        if self._n_pending >= self._buffer:
            self.merge()

    def merge(self) -> None:
        """Fold the waiting candidates into the per-step top ``keep``."""
        if not self._pending:
            return
        steps, keep = self.values.shape
        step = np.concatenate([p[0] for p in self._pending])
        value = np.concatenate([p[1] for p in self._pending])
        stream = np.concatenate([p[2] for p in self._pending])
        self._pending, self._n_pending = [], 0
        # One row per step: the kept values, then that step's candidates, padded with -inf.
        by_step = np.argsort(step, kind="stable")
        counts = np.bincount(step, minlength=steps)
        column = keep + np.arange(step.size) - np.repeat(np.cumsum(counts) - counts, counts)
        values = np.full((steps, keep + int(counts.max())), -np.inf)
        streams = np.full(values.shape, -1, dtype=self.streams.dtype)
        values[:, :keep], streams[:, :keep] = self.values, self.streams
        values[step[by_step], column] = value[by_step]
        streams[step[by_step], column] = stream[by_step]
        top = np.argpartition(values, values.shape[1] - keep, axis=1)[:, -keep:]
        self.values = np.take_along_axis(values, top, axis=1)
        self.streams = np.take_along_axis(streams, top, axis=1)
        self._cutoff = self.values.min(axis=1, keepdims=True)

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """Merge what waits; return values and streams per step, largest first."""
        self.merge()
        order = np.argsort(-self.values, axis=1, kind="stable")
        return np.take_along_axis(self.values, order, axis=1), np.take_along_axis(self.streams, order, axis=1)


def simulate_thresholds(
    n_ref: int,
    window_sizes: Sequence[int],
    ert: float,
    n_features: int,
    n_bootstraps: int,
    seed: int | None,
    batch_size: int = 1_000,
) -> np.ndarray:
    """Thresholds of the online CvM detector per time step, by the procedure of alibi-detect's
    ``CVMDriftOnline._configure_thresholds`` (Ross & Adams 2012): simulate null streams, take the
    maximum statistic over window sizes, and at each step the (1 - beta) quantile over the streams
    that have not yet alarmed, with ``beta = 1 - (1 - 1/ert) ** (1 / n_features)``.

    The statistic only depends on ranks, so instead of drawing n_ref reference values per stream (and
    comparing all pairs, alibi-detect's O((n_ref + t)^2) per stream) we draw the ranks of the
    stream's records among the reference (:func:`null_ref_counts`): the same joint law at O(t ws)
    per stream (:func:`null_stream_stats`), so fitting a 5,000-row reference takes seconds.

    Memory does not grow with ``n_bootstraps`` (a full ``n_bootstraps x t_max`` matrix, as
    alibi-detect keeps, is 3.3 GB at the defaults below): streams are simulated ``batch_size`` at a
    time (~15 MB of work arrays per 1,000 streams of 199 records) and each step keeps only its upper
    tail (:class:`UpperTail`), ``(steps + 1) x (ceil(n_bootstraps x beta) + 3)`` values, beyond which
    a stream can be neither a threshold's order statistic nor dead. At the defaults (ert 10,000,
    20 features, window sizes (20, 100): beta 5.1e-6, 2.06 million streams, 181 steps) that is
    2,534 values per step, 5.5 MB. The tail only approaches the full matrix when most streams die
    before the last step (small ert with long windows), where alibi-detect's matrix is as large.
    """
    rng = np.random.default_rng(seed)
    ws_arr = sorted(int(w) for w in window_sizes)
    max_ws, min_ws = ws_arr[-1], ws_arr[0]
    t_max = 2 * max_ws - 1
    first_step = min_ws - 1
    steps = t_max - first_step
    beta = 1 - (1 - 1 / ert) ** (1 / n_features)
    needed = min_bootstraps(beta, steps)
    if n_bootstraps < needed:
        raise ValueError(
            f"n_bootstraps={n_bootstraps} is too few to estimate the {1 - beta:.6g} quantile that "
            f"ert={ert} with {n_features} features needs; use at least {needed} (10x that is better)"
        )
    # Per step at most n_alive * beta + 1 streams lie above the quantile's lower order statistic:
    # that bounds both the rank the quantile reads from the top and the deaths of every step.
    per_step = math.ceil(n_bootstraps * beta) + 3
    tail = UpperTail(steps, min(n_bootstraps, (steps + 1) * per_step))
    for start in range(0, n_bootstraps, batch_size):
        b = min(batch_size, n_bootstraps - start)
        stats = null_stream_stats(null_ref_counts(rng, n_ref, t_max, b), n_ref, ws_arr)
        tail.add(stats[first_step:], start)
    values, streams = tail.sorted()
    return thresholds_from_tail(values, streams, n_bootstraps, 1 - beta, first_step, t_max)


def thresholds_from_tail(
    values: np.ndarray, streams: np.ndarray, n_streams: int, q: float, first_step: int, t_max: int
) -> np.ndarray:
    """Step by step, the ``q`` quantile of the alive streams' statistics (numpy's default "linear",
    Hyndman-Fan type 7, as alibi-detect), then every stream above it dies. ``values`` and ``streams``
    are each step's upper tail, largest first (:meth:`UpperTail.sorted`)."""
    thresholds = np.full(t_max, np.nan)
    dead = np.zeros(n_streams, dtype=bool)
    alive = n_streams
    for step in range(values.shape[0]):
        if not (1 / alive <= 1 - q <= (alive - 1) / alive):
            raise ValueError(
                f"n_bootstraps={n_streams} ran out of streams at step {first_step + step}; raise it"
            )
        living = ~dead[streams[step]]
        top = values[step][living]  # every alive stream not in it is <= top[-1]
        # np.quantile(alive values, q) interpolates between the order statistics at floor((n-1)q)
        # and the next; both are in the tail. The 2-point quantile does numpy's own interpolation.
        virtual = (alive - 1) * q
        lower = math.floor(virtual)
        from_top = alive - 1 - lower  # index of the lower order statistic in top (>= 1 by the check)
        if from_top >= top.size:  # cannot happen with the keep of simulate_thresholds
            raise RuntimeError(f"upper tail too short at step {first_step + step}: {top.size} <= {from_top}")
        threshold = float(np.quantile(np.array([top[from_top], top[from_top - 1]]), virtual - lower))
        died = top > threshold
        dead[streams[step][living][died]] = True
        alive -= int(died.sum())
        thresholds[first_step + step] = threshold
    return thresholds

