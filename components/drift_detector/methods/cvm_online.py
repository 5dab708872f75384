"""Online Cramér-von Mises (``cvm_online``): scoring a stream against the reference.

Every record advances the stream; after each one the windows of ``window_sizes`` records that end
there are compared with the reference (alibi-detect's ``CVMDriftOnline.score``, for many windows at
once). The thresholds the statistics are compared with are configured once, at fit time
(:mod:`.cvm_thresholds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .base import DriftResult
from .refgrid import RefGrid


def cvm_normaliser(n: int, ws: int) -> tuple[float, float, float]:
    """(prod, mu, sd) of the CvM normalisation (Anderson 1962, eqs. 3 and 14), as alibi-detect uses."""
    mu = 1 / 6 + 1 / (6 * (n + ws))
    var_num = (n + ws + 1) * (4 * n * ws * (n + ws) - 3 * (n * n + ws * ws) - 2 * n * ws)
    var_denom = 45 * (n + ws) * (n + ws) * 4 * n * ws
    prod = n * ws / ((n + ws) * (n + ws))
    return prod, mu, math.sqrt(var_num / var_denom)


@dataclass(frozen=True)
class CvmRef:
    """Per-feature functions of the reference that the CvM statistic needs, as lookup tables.

    With ``a_i = F_ref(r_i)``, the reference half of the statistic expands to
    ``sum a_i^2 - (2/ws) sum_w G(w) + (1/ws^2) sum_{w,w'} H(max(w, w'))`` where
    ``G(x) = sum_{r_i >= x} a_i`` and ``H(x) = #{r_i >= x}``; both depend on ``x`` only through
    ``#ref < x``, so a searchsorted per record replaces alibi-detect's n_ref x window comparisons.
    """

    ref_sorted: np.ndarray  # (d, n): each feature's reference values, ascending
    run_end: np.ndarray  # (d, n): #ref <= ref_sorted[f, p] (where the run of equal values ends)
    g_suffix: np.ndarray  # (d, n + 1): G for each possible "#ref < x"
    sum_a2: np.ndarray  # (d,)
    grid: RefGrid | None  # counts below a record without a search (None: a clustered reference)

    @classmethod
    def build(cls, reference: np.ndarray) -> CvmRef:
        n, d = reference.shape
        ref_sorted = np.sort(np.ascontiguousarray(reference.T), axis=1)  # contiguous rows for searchsorted
        run_end = np.empty((d, n), dtype=np.intp)
        for j in range(d):
            run_end[j] = np.searchsorted(ref_sorted[j], ref_sorted[j], side="right")
        a = run_end / n
        g_suffix = np.zeros((d, n + 1))
        g_suffix[:, :n] = np.cumsum(a[:, ::-1], axis=1)[:, ::-1]
        return cls(ref_sorted=ref_sorted, run_end=run_end, g_suffix=g_suffix, sum_a2=(a * a).sum(axis=1),
                   grid=RefGrid.build(ref_sorted))


@dataclass(frozen=True)
class CvmSegment:
    """Per-record lookups of a stretch of the stream, shared by all window sizes."""

    values: np.ndarray  # (L, d) the records
    h: np.ndarray  # (L, d) H(x) = #ref >= x
    cdf: np.ndarray  # (L, d) L(x) = F_ref(x) = #ref <= x / n
    g: np.ndarray  # (L, d) G(x)
    # Per window size, the pair sums of pair_max_sums over #ref < x and, only where some record
    # equals a reference value, over #ref <= x (else None: the same).
    pairs: dict[int, tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]]
    # Repeated values: for each pair of consecutive occurrences of one value in a feature, the
    # feature and both positions (empty when the stretch has no repeated value).
    tie_feature: np.ndarray
    tie_first: np.ndarray
    tie_second: np.ndarray


def cvm_segment(ref: CvmRef, seg: np.ndarray, window_sizes: Sequence[int]) -> CvmSegment:
    """The per-record lookups of the stretch ``seg`` ``(L, d)`` that every window size shares."""
    d, n = ref.ref_sorted.shape
    values = np.ascontiguousarray(seg.T)  # (d, L): features as contiguous rows
    counted = _counts_without_repeats(ref, seg, values) if ref.grid is not None else None
    if counted is not None:  # the common stretch: no order needed, no tie pairs
        below, at_most = counted
        repeated = np.zeros((d, 0), dtype=bool)
        order = np.empty((d, 0), dtype=np.intp)
    else:
        below, at_most, repeated, order = _counts_by_search(ref, values)
    below_t = np.ascontiguousarray(below.T)
    pairs_below = pair_max_sums(below_t, window_sizes)
    pairs_at_most = (
        pair_max_sums(np.ascontiguousarray(at_most.T), window_sizes) if at_most is not below else {}
    )
    tie_feature, tie_at = np.nonzero(repeated)
    return CvmSegment(
        values=seg,
        h=(n - below_t).astype(np.float64),
        cdf=np.ascontiguousarray((at_most / n).T),
        # A flat take: the same values as take_along_axis, without its index broadcasting.
        g=np.ascontiguousarray(ref.g_suffix.ravel().take(below + (np.arange(d) * (n + 1))[:, None]).T),
        pairs={ws: (pairs_below[ws], pairs_at_most.get(ws)) for ws in pairs_below},
        tie_feature=tie_feature,
        tie_first=order[tie_feature, tie_at],
        tie_second=order[tie_feature, tie_at + 1],
    )


def _counts_without_repeats(ref: CvmRef, seg: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``#ref < x`` and ``#ref <= x`` ``(d, L)`` of every record from the reference's grid, or ``None``
    when some feature of the stretch repeats a value (its tie pairs need the sort order).

    Sorting the values alone (along the stream of the C-ordered stretch) is several times cheaper than
    the argsort, gathers and scatters that put searched counts back in stream order; the grid counts
    in stream order directly.
    """
    ordered = np.sort(seg, axis=0)
    if (ordered[1:] == ordered[:-1]).any():
        return None
    below, at_most = ref.grid.counts(values)  # type: ignore[union-attr]
    if np.array_equal(below, at_most):
        at_most = below  # no record equals a reference value: one set of pair sums serves both
    return below, at_most


def _counts_by_search(ref: CvmRef, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``#ref < x``, ``#ref <= x``, the repeated-value marks of the sorted rows and the sort order, by
    one sort and one search per feature (any stretch, any reference)."""
    d, n = ref.ref_sorted.shape
    # One sort per feature serves twice: sorted needles make searchsorted about 2x cheaper, and equal
    # neighbours in sorted order are the repeated values. numpy's default argsort is several times
    # faster than a stable one (SIMD where the CPU has it: 0.16 against 0.95 ms per window on
    # AVX-512), and only the order among equal values differs; the tie pairs below need the earlier
    # position first, so only a feature that has a repeated value is sorted again, stably.
    order = np.argsort(values, axis=1)
    ordered = np.take_along_axis(values, order, axis=1)
    repeated = ordered[:, 1:] == ordered[:, :-1]
    if repeated.any():
        tied_rows = np.flatnonzero(repeated.any(axis=1))
        order[tied_rows] = np.argsort(values[tied_rows], axis=1, kind="stable")
    below_sorted = np.empty(ordered.shape, dtype=np.intp)
    for j in range(d):
        below_sorted[j] = np.searchsorted(ref.ref_sorted[j], ordered[j], side="left")
    below = np.empty_like(below_sorted)  # #ref < x
    np.put_along_axis(below, order, below_sorted, axis=1)
    # "#ref <= x" is "#ref < x" unless x is a reference value: then where its run of equal values ends.
    at = np.minimum(below_sorted, n - 1)
    in_ref = np.take_along_axis(ref.ref_sorted, at, axis=1) == ordered
    at_most = below
    if in_ref.any():
        at_most = np.empty_like(below_sorted)
        at_most_sorted = np.where(in_ref, np.take_along_axis(ref.run_end, at, axis=1), below_sorted)
        np.put_along_axis(at_most, order, at_most_sorted, axis=1)
    return below, at_most, repeated, order


def pair_max_sums(keys: np.ndarray, window_sizes: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Sums of ``max(keys[i], keys[k])`` over the pairs ``i < k`` less than ``ws`` apart, per record
    and per window size ``ws``: ``(later, earlier)``, where ``later[k]`` sums the pairs whose later
    member is ``k`` and ``earlier[i]`` those whose earlier member is ``i``. ``keys`` are non-negative
    integers along axis 0 (the stream), any number of columns.

    The pairs of the window ``[s, e]`` are then ``sum(later[:e + 1]) - sum(earlier[:s])``: the pairs
    that end by ``e`` minus those that start before ``s`` (which all end before ``e``). Pairs are
    visited by lag ``k - i``, one vectorised maximum over the whole stretch per lag, O(L x ws) flat
    integer operations (``keys`` is contiguous along the lag axis) instead of sorting every window;
    the lags of a smaller window size are a prefix of a larger one's, so all sizes share the loop.
    """
    sizes = sorted({int(w) for w in window_sizes})
    m = keys.shape[0]
    top = int(keys.max()) if keys.size else 0
    # A record's sum has at most ws - 1 terms: int32 (twice the SIMD lanes of int64) nearly always.
    acc = np.int32 if (sizes[-1] - 1) * top < np.iinfo(np.int32).max else np.int64
    later, earlier = np.zeros(keys.shape, dtype=acc), np.zeros(keys.shape, dtype=acc)
    # Counts below a reference of at most 65,535 values fit uint16, twice the lanes of int32 again:
    # the pairs are summed in uint16 for as many lags as cannot overflow it (13 at 5,000 reference
    # values), then added up in ``acc``: 0.81 -> 0.59 ms per window of 1,000 x 20, sizes 20 and 100.
    narrow = top <= np.iinfo(np.uint16).max
    if narrow:
        block = max(1, np.iinfo(np.uint16).max // max(top, 1))
        keys = keys.astype(np.uint16, copy=False)
        part_later, part_earlier = np.empty(keys.shape, np.uint16), np.empty(keys.shape, np.uint16)
    else:
        block = m
        keys = keys.astype(acc, copy=False)
        part_later, part_earlier = later, earlier
    buf = np.empty_like(keys)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    done, pending = 1, 0  # lags 1 .. done - 1 are summed; ``pending`` of them only in the parts
    for ws in sizes:
        for lag in range(done, min(ws, m)):  # no pair is m or more apart
            pair = buf[: m - lag]
            np.maximum(keys[:-lag], keys[lag:], out=pair)
            if narrow and pending == 0:  # a block's first lag sets the parts instead of clearing them
                part_later[lag:] = pair
                part_later[:lag] = 0
                part_earlier[:-lag] = pair
                part_earlier[-lag:] = 0
            else:
                part_later[lag:] += pair
                part_earlier[:-lag] += pair
            pending += 1
            if narrow and pending == block:
                later += part_later
                earlier += part_earlier
                pending = 0
        if narrow and pending:
            later += part_later
            earlier += part_earlier
            pending = 0
        done = max(done, ws)
        out[ws] = (later, earlier) if ws == sizes[-1] else (later.copy(), earlier.copy())
    return out


def cvm_window_stats(ref: CvmRef, seg: CvmSegment, first_end: int, n_ends: int, ws: int) -> np.ndarray:
    """Normalised CvM statistic ``(n_ends, d)`` of the windows of ``ws`` records ending at segment
    positions ``first_end .. first_end + n_ends - 1``.

    Exactly the quantity alibi-detect's ``CVMDriftOnline.score`` computes (sum of squared CDF
    differences over the reference and window points, ties included), for many windows at once.
    With ``H``, ``L`` and ``G`` of :class:`CvmRef` and ``c_w = #window values <= w``:

        reference half = sum a_i^2 - (2/ws) sum_w G(w) + (1/ws^2) sum_{w,w'} H(max(w, w'))
        window half    = sum_w L(w)^2 - (2/ws) sum_w L(w) c_w + (1/ws^2) sum_w c_w^2

    Without repeated values in the window, ``c`` is the rank (``sum c^2 = sum j^2``) and both pair
    sums are over the larger member of each pair: a pair of distinct records contributes
    ``(2/ws^2) H - (2/ws) L`` of its larger one, which is ``2n/ws^2 - (2/ws^2) max(#ref < x)
    - (2/(ws n)) max(#ref <= x)`` (both counts rise with ``x``), so integer pair sums of the two
    counts (:func:`pair_max_sums`) give it; every record adds ``H/ws^2 - (2/ws) L`` on its own. The
    window sums come from one running sum over the stretch: each record's terms, minus, ``ws`` records
    later, its terms again and the pairs it opened. Windows that do hold a repeated value of a feature
    are scored for that feature from the sorted window instead (:func:`_cvm_tied_window_stats`),
    where ``c`` counts ties.
    """
    n = ref.ref_sorted.shape[1]
    hi = first_end + n_ends
    inv_ws, inv_ws2 = 1.0 / ws, 1.0 / (ws * ws)
    h, cdf = seg.h[:hi], seg.cdf[:hi]
    record = cdf * cdf + inv_ws2 * h - (2.0 * inv_ws) * (seg.g[:hi] + cdf)
    (later, earlier), at_most = seg.pairs[ws]
    if at_most is None:  # the two counts are equal: one sum, both coefficients
        running = record - (2.0 * inv_ws2 + 2.0 / (ws * n)) * later[:hi]
        opened = record[: hi - ws] - (2.0 * inv_ws2 + 2.0 / (ws * n)) * earlier[: hi - ws]
    else:
        running = record - (2.0 * inv_ws2) * later[:hi] - (2.0 / (ws * n)) * at_most[0][:hi]
        opened = (
            record[: hi - ws]
            - (2.0 * inv_ws2) * earlier[: hi - ws]
            - (2.0 / (ws * n)) * at_most[1][: hi - ws]
        )
    running[ws:] -= opened
    n_pairs, sum_j2 = ws * (ws - 1) / 2, ws * (ws + 1) * (2 * ws + 1) / 6
    constant = ref.sum_a2 + (n_pairs * 2.0 * n + sum_j2) * inv_ws2
    raw = np.cumsum(running, axis=0)[first_end:hi] + constant
    tied = _tied_windows(seg, first_end - ws + 1, n_ends, ws)
    if tied is not None:
        starts, features = tied
        raw[starts, features] = _cvm_tied_window_stats(ref, seg, first_end - ws + 1 + starts, features, ws)
    prod, mu, sd = cvm_normaliser(n, ws)
    return (raw * prod - mu) / sd


def _tied_windows(seg: CvmSegment, lo: int, n_windows: int, ws: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(window index, feature) of the windows starting at ``lo .. lo + n_windows - 1`` that hold a
    repeated value of that feature, or ``None``. A window holds one iff it holds two consecutive
    occurrences of it: the windows starting in ``[second - ws + 1, first]``."""
    if seg.tie_first.size == 0:
        return None
    close = seg.tie_second - seg.tie_first < ws
    first = np.minimum(seg.tie_first[close], lo + n_windows - 1) - lo
    begin = np.maximum(seg.tie_second[close] - ws + 1, lo) - lo
    feature = seg.tie_feature[close]
    keep = begin <= first
    if not keep.any():
        return None
    marks = np.zeros((n_windows + 1, seg.values.shape[1]), dtype=np.int64)
    np.add.at(marks, (begin[keep], feature[keep]), 1)
    np.add.at(marks, (first[keep] + 1, feature[keep]), -1)
    return np.nonzero(np.cumsum(marks[:-1], axis=0) > 0)


def _cvm_tied_window_stats(
    ref: CvmRef, seg: CvmSegment, starts: np.ndarray, features: np.ndarray, ws: int
) -> np.ndarray:
    """Raw CvM statistic of single (window start, feature) pairs, from the sorted window: the general
    formula of :func:`cvm_window_stats`, with ``c`` the count of window values ``<=`` each value."""
    rows = starts[:, None] + np.arange(ws)
    cols = features[:, None]
    order = np.argsort(seg.values[rows, cols], axis=1, kind="stable")
    rows = np.take_along_axis(rows, order, axis=1)
    sorted_values = seg.values[rows, cols]
    hs, ls = seg.h[rows, cols], seg.cdf[rows, cols]
    j = np.arange(1, ws + 1, dtype=np.float64)
    pair_h = hs @ (2.0 * j - 1.0)  # sum over window pairs of H(max): 2j-1 pairs have the j-th as max
    # c_j = 1 + the last position of the j-th value's tie group
    end_group = np.ones(rows.shape, dtype=bool)
    end_group[:, :-1] = sorted_values[:, 1:] != sorted_values[:, :-1]
    pos = np.broadcast_to(np.arange(ws), rows.shape)
    c = np.minimum.accumulate(np.where(end_group, pos, ws - 1)[:, ::-1], axis=1)[:, ::-1] + 1.0
    ref_part = ref.sum_a2[features] - (2.0 / ws) * seg.g[rows, cols].sum(axis=1) + pair_h / (ws * ws)
    win_part = (ls * ls).sum(axis=1) - (2.0 / ws) * (ls * c).sum(axis=1) + (c * c).sum(axis=1) / (ws * ws)
    return ref_part + win_part


def online_result(names: Sequence[str], stats: np.ndarray, thr: np.ndarray) -> DriftResult:
    """The :class:`DriftResult` of a stretch: ``stats`` ``(records, features)`` and each record's threshold."""
    nan = float("nan")
    per_t = np.fmax.reduce(stats, axis=1)  # max over features, ignoring windows not yet full
    margin = per_t - thr
    finite = np.isfinite(margin)
    if not finite.any():
        return DriftResult(
            drift=False, p_value=nan, statistic=nan, threshold=nan,
            feature_p_values=dict.fromkeys(names, nan),
            feature_statistics=dict.fromkeys(names, nan),
        )  # fmt: skip
    at = int(np.flatnonzero(finite)[np.argmax(margin[finite])])
    return DriftResult(
        drift=bool((margin[finite] > 0).any()),
        p_value=nan,
        statistic=float(per_t[at]),
        threshold=float(thr[at]),
        feature_p_values=dict.fromkeys(names, nan),
        feature_statistics={n: float(v) for n, v in zip(names, stats[at], strict=True)},
    )
