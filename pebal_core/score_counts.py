"""Per-distinct-score pixel counts: the sufficient statistic behind exact pixel-level anomaly metrics.

AUROC, AP and every FPR@95TPR variant depend on the pixels only through, for each distinct
score value, how many anomalous (positive) and inlier (negative) pixels carry it. This module
accumulates exactly those counts image by image, without ever holding or sorting the pooled
pixels of a dataset (the reference implementations concatenate and argsort billions of scores).

Keys
    A score is mapped to an unsigned integer *key* whose order is the order of the scores
    (IEEE-754 bit pattern with the sign handled, :func:`score_keys`): float16/float32 scores give
    ``uint32`` keys, float64 (and integer) scores ``uint64`` keys. ``-0.0`` and ``+0.0`` share a
    key, as they compare equal; NaN and infinities are rejected (scikit-learn rejects them too).

Cells
    Counts are kept per *cell* = ``key >> shift``. With ``shift == 0`` (exact mode) a cell is one
    distinct score. Streaming mode raises ``shift`` whenever the number of occupied cells exceeds
    ``max_cells``, merging neighbouring scores into one cell, so memory stays bounded whatever
    the number of images. Each cell remembers its smallest key (``rep``) and whether it holds
    more than one distinct key (``multi``); only ``multi`` cells can make a metric inexact, and
    :mod:`pebal_core.metrics` turns them into a certified error bound.

Storage (exact mode, ``uint32`` keys)
    Occupied key ranges of 4096 keys ("blocks") that hold many distinct scores are stored as dense
    count rows (updated with one fancy-indexed add per image); the remaining scores live in a
    sorted sparse list merged with :func:`numpy.searchsorted`. Real score maps occupy a few
    thousand blocks densely, so an image costs one in-cache sort of its own pixels plus
    vectorised adds.

The result of accumulation is a :class:`PositiveTable`: one row per cell that contains an
anomalous pixel, in descending score order, with the inlier counts needed around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_BITS = 12
BLOCK = 1 << BLOCK_BITS
PROMOTE_CELLS = BLOCK // 8
"""A block becomes a dense row once it holds this many distinct cells (a dense row, two uint32
counts per key, then costs at most about 3x the sparse representation of the same block)."""

_F32_FINITE = (np.uint32(0x00800000), np.uint32(0xFF7FFFFF))  # keys of -max and +max float32
_F64_FINITE = (np.uint64(0x0010000000000000), np.uint64(0xFFEFFFFFFFFFFFFF))


def key_dtype_for(scores: np.ndarray) -> np.dtype:
    """``uint32`` for float16/float32 scores, ``uint64`` for everything else (float64, integers)."""
    return np.dtype(np.uint32) if scores.dtype in (np.float16, np.float32) else np.dtype(np.uint64)


def score_keys(scores: np.ndarray, key_dtype: np.dtype | None = None) -> np.ndarray:
    """Order-preserving unsigned integer keys of ``scores`` (flattened).

    ``a < b`` if and only if ``key(a) < key(b)``; ``a == b`` if and only if the keys are equal
    (``-0.0 == +0.0``). ``key_dtype`` ``uint32`` requires scores representable in float32
    (float16/float32 input); ``uint64`` converts to float64 first (exact for float32 and for
    integers up to 2**53).
    """
    scores = np.asarray(scores)
    kd = key_dtype_for(scores) if key_dtype is None else np.dtype(key_dtype)
    if kd == np.uint32:
        if scores.dtype not in (np.float16, np.float32):
            raise ValueError(f"{scores.dtype} scores cannot use 32-bit keys without rounding")
        f = np.add(scores.ravel(), np.float32(0), dtype=np.float32)  # copy; turns -0.0 into +0.0
        bits, top = f.view(np.uint32), np.uint32(0x80000000)
    else:
        f = np.add(scores.ravel(), 0.0, dtype=np.float64)
        bits, top = f.view(np.uint64), np.uint64(0x8000000000000000)
    # negative floats: invert every bit; non-negative floats: set the sign bit
    sign = bits >> (bits.dtype.itemsize * 8 - 1)
    flip = np.negative(sign, dtype=bits.dtype) | top
    return np.bitwise_xor(bits, flip, out=bits)


def keys_to_scores(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`score_keys`: float32 for ``uint32`` keys, float64 for ``uint64`` keys."""
    keys = np.asarray(keys)
    nbits = keys.dtype.itemsize * 8
    top = keys.dtype.type(1 << (nbits - 1))
    was_negative = (keys >> (nbits - 1)) == 0
    bits = np.where(was_negative, ~keys, keys ^ top).astype(keys.dtype)
    return bits.view(np.float32 if nbits == 32 else np.float64)


def check_finite_keys(sorted_keys: np.ndarray) -> None:
    """Raise ``ValueError`` if sorted keys (ascending) contain NaN or an infinity."""
    if sorted_keys.size == 0:
        return
    lo, hi = _F32_FINITE if sorted_keys.dtype == np.uint32 else _F64_FINITE
    if sorted_keys[0] < lo or sorted_keys[-1] > hi:
        raise ValueError("scores contain NaN or infinite values; anomaly scores must be finite")


def run_lengths(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, lengths)`` of the runs of equal values in a sorted 1-D array."""
    n = sorted_values.size
    if n == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.int64)
    change = np.empty(n, bool)
    change[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    lengths = np.diff(starts, append=n).astype(np.int64)
    return starts, lengths


@dataclass
class PositiveTable:
    """Everything the pixel metrics need, one row per score cell holding an anomalous pixel.

    Rows are in **descending** score order. For row ``k``: ``pos[k]`` anomalous and ``neg_eq[k]``
    inlier pixels share the cell, ``neg_gt[k]`` inlier pixels score strictly higher (in higher
    cells), ``value[k]`` is the smallest score in the cell, ``multi[k]`` says whether the cell
    merged several distinct scores (streaming mode only; such rows are not exact).
    """

    value: np.ndarray
    pos: np.ndarray
    neg_eq: np.ndarray
    neg_gt: np.ndarray
    multi: np.ndarray
    n_pos: int
    n_neg: int


class _Cells:
    """Sorted unique cells with counts (the sparse store): parallel arrays, merged by searchsorted."""

    def __init__(self, key_dtype: np.dtype, track_rep: bool) -> None:
        self.cell = np.zeros(0, key_dtype)
        self.pos = np.zeros(0, np.int64)
        self.neg = np.zeros(0, np.int64)
        self.rep = np.zeros(0, key_dtype) if track_rep else None
        self.multi = np.zeros(0, bool) if track_rep else None

    def __len__(self) -> int:
        return self.cell.size

    def arrays(self) -> list[np.ndarray]:
        out = [self.cell, self.pos, self.neg]
        if self.rep is not None:
            out += [self.rep, self.multi]
        return out

    def set_arrays(self, arrays: list[np.ndarray]) -> None:
        self.cell, self.pos, self.neg = arrays[:3]
        if self.rep is not None:
            self.rep, self.multi = arrays[3:]

    def merge(self, other: list[np.ndarray]) -> None:
        """Add a sorted-unique run ``[cell, pos, neg(, rep, multi)]`` into this store."""
        cell = other[0]
        if cell.size == 0:
            return
        if self.cell.size == 0:
            self.set_arrays([a.copy() for a in other])
            return
        idx = np.searchsorted(self.cell, cell)
        hit = idx < self.cell.size
        hit[hit] = self.cell[idx[hit]] == cell[hit]
        at = idx[hit]
        self.pos[at] += other[1][hit]
        self.neg[at] += other[2][hit]
        if self.rep is not None:
            rep_new = other[3][hit]
            self.multi[at] |= other[4][hit] | (self.rep[at] != rep_new)
            self.rep[at] = np.minimum(self.rep[at], rep_new)
        new = ~hit
        if new.any():
            where = idx[new]
            self.set_arrays(
                [np.insert(mine, where, theirs[new]) for mine, theirs in zip(self.arrays(), other, strict=True)]
            )


def _combine_runs(runs: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Several sorted-unique runs ``[cell, pos, neg(, rep, multi)]`` -> one, counts summed."""
    cat = [np.concatenate(col) for col in zip(*runs, strict=True)]
    order = np.argsort(cat[0], kind="stable")
    cat = [a[order] for a in cat]
    starts, _ = run_lengths(cat[0])
    out = [cat[0][starts], np.add.reduceat(cat[1], starts), np.add.reduceat(cat[2], starts)]
    if len(cat) > 3:
        rep, multi = cat[3], cat[4]
        lo, hi = np.minimum.reduceat(rep, starts), np.maximum.reduceat(rep, starts)
        out += [lo, np.logical_or.reduceat(multi, starts) | (lo != hi)]
    return out


class ScoreCounts:
    """Counts of anomalous / inlier pixels per score cell, accumulated image by image.

    Args:
        max_cells: ``None`` for exact counting (one cell per distinct score; memory grows with
            the number of distinct scores). An integer bounds the number of stored cells:
            whenever it is exceeded, neighbouring scores are merged (``shift`` grows by one bit
            at a time) until at most half of ``max_cells`` remain. Results stay exact while the
            number of distinct scores does not exceed ``max_cells``.
    """

    def __init__(self, max_cells: int | None = None) -> None:
        if max_cells is not None and max_cells < 16:
            raise ValueError(f"max_cells must be at least 16, got {max_cells}")
        self.max_cells = max_cells
        self.shift = 0
        self.key_dtype: np.dtype | None = None
        self.n_pos = 0
        self.n_neg = 0
        self._sparse: _Cells | None = None
        self._pending: list[list[np.ndarray]] = []  # sorted-unique runs not yet merged into _sparse
        self._pending_size = 0
        self._dense = False
        self._since_promotion = 0

    # ------------------------------------------------------------------ adding
    def add_keys(self, keys: np.ndarray, positive: bool) -> None:
        """Count the pixels with these keys (any order) as anomalous (``positive``) or inlier."""
        if keys.size == 0:
            return
        if self.key_dtype is None:
            self._init_storage(keys.dtype)
        elif keys.dtype != self.key_dtype:
            raise ValueError(f"keys are {keys.dtype} but this accumulator holds {self.key_dtype} keys")
        keys = np.sort(keys)
        check_finite_keys(keys)
        if positive:
            self.n_pos += keys.size
        else:
            self.n_neg += keys.size
        run = self._run(keys, positive)
        if self._dense:
            self._guard_dense_overflow()
            run = self._add_dense(run, positive)
        if run[0].size:
            self._pending.append(run)
            self._pending_size += run[0].size
        # exact: merge when pending reaches a quarter of the store (amortised O(1) per cell);
        # streaming: pending may hold up to half the cell budget (memory stays <= 1.5 x max_cells)
        limit = max(len(self._sparse) // 4, 1 << 16) if self.max_cells is None else self.max_cells // 2
        if self._pending_size >= limit:
            self._flush()

    def _flush(self) -> None:
        """Merge the pending runs into the sparse store (then promote busy blocks / coarsen)."""
        if not self._pending:
            return
        run = self._pending[0] if len(self._pending) == 1 else _combine_runs(self._pending)
        self._pending, self._pending_size = [], 0
        self._sparse.merge(run)
        self._since_promotion += run[0].size
        if self._dense and self._since_promotion > max(len(self._sparse) // 2, PROMOTE_CELLS):
            self._promote_sparse_blocks()
        if self.max_cells is not None and len(self._sparse) > self.max_cells:
            self._coarsen()

    def _init_storage(self, key_dtype: np.dtype) -> None:
        self.key_dtype = np.dtype(key_dtype)
        self._sparse = _Cells(self.key_dtype, track_rep=False)
        self._dense = self.max_cells is None and self.key_dtype == np.uint32
        if self._dense:
            # dense row of each block; row 0 is a scratch row that absorbs the (ignored) adds of
            # cells in sparse blocks, so an image's cells are scattered without splitting them first
            self._slot_of_block = np.zeros(1 << (32 - BLOCK_BITS), np.int64)
            self._block_of_slot = np.zeros(0, np.int64)  # block of rows 1, 2, ...
            # uint32 while no count can reach 2**32 (see _guard_dense_overflow), halving memory traffic
            self._d_pos = np.zeros((1, BLOCK), np.uint32)
            self._d_neg = np.zeros((1, BLOCK), np.uint32)

    def _run(self, keys: np.ndarray, positive: bool) -> list[np.ndarray]:
        """Sorted keys -> sorted unique cells with counts (and rep/multi once coarsened)."""
        cells = keys >> keys.dtype.type(self.shift) if self.shift else keys
        starts, lengths = run_lengths(cells)
        zeros = np.zeros(starts.size, np.int64)
        run = [cells[starts], lengths, zeros] if positive else [cells[starts], zeros, lengths]
        if self._sparse.rep is not None:
            last = np.append(starts[1:], keys.size) - 1
            run += [keys[starts], keys[last] != keys[starts]]
        return run

    # ------------------------------------------------------------------ dense rows (exact, uint32)
    def _grow_dense(self, blocks: np.ndarray) -> None:
        n_old = self._block_of_slot.size + 1  # rows in use, scratch row included
        n_new = n_old + blocks.size
        cap = self._d_pos.shape[0]
        if n_new > cap:
            cap = max(n_new, 2 * cap, 64)
            for name in ("_d_pos", "_d_neg"):
                grown = np.zeros((cap, BLOCK), getattr(self, name).dtype)
                grown[:n_old] = getattr(self, name)[:n_old]
                setattr(self, name, grown)
        self._slot_of_block[blocks] = np.arange(n_old, n_new)
        self._block_of_slot = np.concatenate([self._block_of_slot, blocks.astype(np.int64)])

    def _guard_dense_overflow(self) -> None:
        """A count never exceeds the number of pixels added; widen to int64 before 2**32 is possible."""
        if self._d_pos.dtype == np.uint32 and self.n_pos + self.n_neg >= np.iinfo(np.uint32).max:
            self._d_pos = self._d_pos.astype(np.int64)
            self._d_neg = self._d_neg.astype(np.int64)

    def _scatter_dense(self, run: list[np.ndarray], slot: np.ndarray, columns: tuple[int, ...]) -> None:
        """Add ``run``'s count columns (1 = pos, 2 = neg) to the dense rows ``slot`` (one per cell)."""
        flat = slot * BLOCK + (run[0] & np.uint32(BLOCK - 1))
        for col in columns:
            target = (self._d_pos if col == 1 else self._d_neg).reshape(-1)
            target[flat] += run[col].astype(target.dtype)

    def _add_dense(self, run: list[np.ndarray], positive: bool) -> list[np.ndarray]:
        """Add the cells of dense blocks (promoting busy new blocks); return the sparse rest."""
        block = run[0] >> np.uint32(BLOCK_BITS)
        slot = self._slot_of_block[block]
        rest = np.flatnonzero(slot == 0)
        if rest.size:
            starts, lengths = run_lengths(block[rest])
            busy = block[rest][starts[lengths >= PROMOTE_CELLS]]
            if busy.size:
                self._make_dense(busy)
                slot = self._slot_of_block[block]
                rest = np.flatnonzero(slot == 0)
        if rest.size < slot.size:
            self._scatter_dense(run, slot, (1,) if positive else (2,))  # sparse cells land in row 0
        return [a[rest] for a in run]

    def _promote_sparse_blocks(self) -> None:
        self._since_promotion = 0
        sp = self._sparse
        if len(sp) < PROMOTE_CELLS:
            return
        block = sp.cell >> np.uint32(BLOCK_BITS)
        starts, lengths = run_lengths(block)
        busy = block[starts[lengths >= PROMOTE_CELLS]]
        if busy.size:
            self._make_dense(busy)

    def _make_dense(self, blocks: np.ndarray) -> None:
        """Turn sparse blocks into dense rows, moving every cell they already hold (pending
        runs included), so that each block lives in exactly one of the two stores."""
        if self._pending:
            pending, self._pending, self._pending_size = self._pending, [], 0
            self._sparse.merge(pending[0] if len(pending) == 1 else _combine_runs(pending))
        self._grow_dense(blocks)
        sp = self._sparse
        slot = self._slot_of_block[sp.cell >> np.uint32(BLOCK_BITS)]
        move = slot > 0
        if move.any():
            self._scatter_dense([a[move] for a in sp.arrays()], slot[move], (1, 2))
            sp.set_arrays([a[~move] for a in sp.arrays()])

    # ------------------------------------------------------------------ streaming
    def _coarsen(self) -> None:
        """Merge neighbouring cells (one more key bit per step) until at most max_cells/2 remain."""
        sp = self._sparse
        if sp.rep is None:  # first coarsening: every cell so far is one distinct key
            sp.rep = sp.cell.copy()
            sp.multi = np.zeros(sp.cell.size, bool)
        target = self.max_cells // 2
        cell, pos, neg, rep, multi = sp.arrays()
        while cell.size > target:
            self.shift += 1
            cell = cell >> cell.dtype.type(1)
            starts, _ = run_lengths(cell)
            ends = np.append(starts[1:], cell.size) - 1
            cell = cell[starts]
            pos = np.add.reduceat(pos, starts)
            neg = np.add.reduceat(neg, starts)
            multi = np.logical_or.reduceat(multi, starts) | (rep[starts] != rep[ends])
            rep = rep[starts]  # cells stay sorted, so the first rep is the smallest key
        sp.set_arrays([cell, pos, neg, rep, multi])

    # ------------------------------------------------------------------ results
    @property
    def n_cells(self) -> int:
        """Cells currently stored (dense rows count all their 4096 slots)."""
        dense = self._block_of_slot.size * BLOCK if self._dense else 0
        return dense + (len(self._sparse) if self._sparse is not None else 0)

    @property
    def is_exact(self) -> bool:
        """True while every cell holds a single distinct score."""
        sp = self._sparse
        return sp is None or sp.multi is None or not sp.multi.any()

    def positive_table(self) -> PositiveTable:
        """The accumulated counts as a :class:`PositiveTable` (descending scores)."""
        empty_keys = np.zeros(0, self.key_dtype or np.uint32)
        self._flush()
        sp = self._sparse
        if sp is None:
            z = np.zeros(0, np.int64)
            return PositiveTable(keys_to_scores(empty_keys).astype(np.float64), z, z, z, np.zeros(0, bool), 0, 0)
        s_negcum = np.concatenate([[0], np.cumsum(sp.neg)])  # negatives in sparse cells before index i
        parts = []  # (cell, pos, neg_eq, neg_less, multi, rep)
        d_blocks = d_base = None
        if self._dense and self._block_of_slot.size:
            n = self._block_of_slot.size
            order = np.argsort(self._block_of_slot)
            d_blocks = self._block_of_slot[order]
            order = order + 1  # rows (row 0 is the scratch row)
            row_tot = self._d_neg[order].sum(axis=1, dtype=np.int64)
            d_base = np.concatenate([[0], np.cumsum(row_tot)])  # dense negatives in blocks before position i
            for lo in range(0, n, 256):
                rows = order[lo : lo + 256]
                dpos, dneg = self._d_pos[rows].astype(np.int64), self._d_neg[rows].astype(np.int64)
                r, c = np.nonzero(dpos)
                if r.size == 0:
                    continue
                within = np.cumsum(dneg, axis=1)[r, c] - dneg[r, c]
                cell = (d_blocks[lo + r].astype(np.uint64) * BLOCK + c).astype(np.uint32)
                less = d_base[lo + r] + within + s_negcum[np.searchsorted(sp.cell, cell)]
                parts.append((cell, dpos[r, c], dneg[r, c], less, np.zeros(r.size, bool), cell))
        has_pos = sp.pos > 0
        if has_pos.any():
            cell = sp.cell[has_pos]
            less = s_negcum[:-1][has_pos]
            if d_blocks is not None:
                less = less + d_base[np.searchsorted(d_blocks, (cell >> np.uint32(BLOCK_BITS)).astype(np.int64))]
            multi = sp.multi[has_pos] if sp.multi is not None else np.zeros(cell.size, bool)
            rep = sp.rep[has_pos] if sp.rep is not None else cell
            parts.append((cell, sp.pos[has_pos], sp.neg[has_pos], less, multi, rep))
        if not parts:
            z = np.zeros(0, np.int64)
            return PositiveTable(np.zeros(0), z, z, z, np.zeros(0, bool), self.n_pos, self.n_neg)
        cell, pos, neg_eq, less, multi, rep = (np.concatenate(x) for x in zip(*parts, strict=True))
        order = np.argsort(cell, kind="stable")[::-1]
        neg_eq, less = neg_eq[order], less[order]
        return PositiveTable(
            value=keys_to_scores(rep[order]).astype(np.float64),
            pos=pos[order].astype(np.int64),
            neg_eq=neg_eq.astype(np.int64),
            neg_gt=(self.n_neg - less - neg_eq).astype(np.int64),
            multi=multi[order],
            n_pos=self.n_pos,
            n_neg=self.n_neg,
        )
