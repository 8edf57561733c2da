"""Exact similarity search over a database of any size, in memory-bounded blocks.

Why blocks and not one matrix product: a revisited Oxford query set against the 1M distractors is
70 x 1M scores (fine), but GLDv2 is 1,129 x 762k and a class-level probe on a big classification
set is 50k x 1.3M, which no machine holds. The search therefore walks **query blocks** (as many
full score rows as fit in ``memory_mb``) and, inside each, **database chunks** of ``chunk`` rows
read straight from the memory-mapped feature file (``read_rows``: file reads, not page faults, so
the resident set does not grow with the database either). Every caller gets whole score rows, so
what it computes from them (ranks of the labelled images, the top k) is exactly what one big
matrix product would give.

Scores are accumulated in float64: float32 products change in the last bits with the chunk shape
(BLAS picks other kernels), which can swap two near-identical database images; in float64 the
difference is ~1e-13, far below any real gap, so the result is the same whatever the chunk size.
Ties rank by the lower database index (what a stable sort of ``-scores`` gives).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

DEFAULT_CHUNK = 16384
DEFAULT_MEMORY_MB = 256


def read_rows(array: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` as a fresh in-memory array. For an ``np.memmap`` (a cache entry) the rows
    are read with a file read at their offset: slicing the map would leave its pages in this
    process's resident set, which then grows with the database."""
    import os

    stop = min(stop, len(array))
    path = getattr(array, "filename", None) if isinstance(array, np.memmap) else None
    try:  # the map's whole file (not a view of it; a freshly committed entry's map may name its old staging path)
        whole = bool(path) and array.ndim == 2 and array.flags.c_contiguous and os.path.getsize(path) == array.offset + array.nbytes
    except OSError:
        whole = False
    if whole:
        row_bytes = array.shape[1] * array.dtype.itemsize
        with open(path, "rb") as f:
            f.seek(array.offset + start * row_bytes)
            data = np.fromfile(f, dtype=array.dtype, count=(stop - start) * array.shape[1])
        return data.reshape(stop - start, array.shape[1])
    return np.array(array[start:stop])


def query_block_size(n_queries: int, n_database: int, memory_mb: float) -> int:
    """How many full float64 score rows fit in half of ``memory_mb`` (at least one)."""
    per_row = 8 * max(n_database, 1) * 2  # the row and its sorted copy
    return int(max(1, min(n_queries, (memory_mb * 2**20 / 2) // per_row)))


def chunk_rows(chunk: int, dim: int, memory_mb: float) -> int:
    """Database rows per chunk: at most ``chunk``, and few enough that the chunk's float64 copies
    (read, normalised, whitened, compared: about four) fit in the other half of ``memory_mb``."""
    return int(max(64, min(chunk, (memory_mb * 2**20 / 2) // (8 * 4 * max(dim, 1)))))


def score_blocks(queries: np.ndarray, database: np.ndarray | list[np.ndarray], *, transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 chunk: int = DEFAULT_CHUNK, memory_mb: float = DEFAULT_MEMORY_MB, desc: str = "search") -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first query index, scores)`` with ``scores[i, j]`` = similarity of query
    ``first + i`` to database row ``j`` (float64, every database row).

    ``database``: one array or several (the database's parts in order, e.g. the 5k images then the
    1M distractors), never concatenated. ``transform`` maps a chunk of raw database rows to the
    vectors that are compared (L2 normalisation, whitening): applied chunk by chunk, so a whitened
    copy of a big database never exists. ``queries`` are already transformed.
    """
    from .progress import progress

    parts = database if isinstance(database, (list, tuple)) else [database]
    n_db = int(sum(len(p) for p in parts))
    queries = np.asarray(queries, dtype=np.float64)
    block = query_block_size(len(queries), n_db, memory_mb)
    starts = list(range(0, len(queries), block))
    for q0 in progress(starts, desc=desc, total=len(starts)):
        q = queries[q0:q0 + block]
        scores = np.empty((len(q), n_db), dtype=np.float64)
        offset = 0
        for part in parts:
            step = chunk_rows(chunk, part.shape[1] if part.ndim == 2 else 1, memory_mb)
            for s in range(0, len(part), step):
                rows = read_rows(part, s, s + step)
                rows = transform(rows) if transform is not None else rows
                scores[:, offset + s:offset + s + len(rows)] = q @ np.asarray(rows, dtype=np.float64).T
            offset += len(part)
        yield q0, scores


def ranks_in_row(row: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each database index in ``targets`` within the full ranking of ``row``
    (descending score, ties by lower index): the number of rows scoring higher, plus the rows of
    equal score and lower index."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return np.zeros(0, dtype=np.int64)
    ordered = np.sort(row)
    values = row[targets]
    above = len(row) - np.searchsorted(ordered, values, side="right")
    equal = np.searchsorted(ordered, values, side="right") - np.searchsorted(ordered, values, side="left")
    ranks = above.astype(np.int64)
    for i in np.nonzero(equal > 1)[0]:  # exact ties are rare: count the tied rows before the target
        ranks[i] += int(np.count_nonzero(row[:targets[i]] == values[i]))
    return ranks


def top_k_row(row: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best database indices of ``row``, best first (ties by lower index), without sorting
    the whole row."""
    k = min(k, len(row))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    threshold = np.partition(row, len(row) - k)[len(row) - k]  # the k-th largest value
    above = np.nonzero(row > threshold)[0]
    tied = np.nonzero(row == threshold)[0][:k - len(above)]  # lower indices first
    chosen = np.concatenate([above, tied])
    return chosen[np.lexsort((chosen, -row[chosen]))]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
