"""The two reference/stream protocols of holo_jax.drift.measure: disjoint, contiguous, complete."""
import numpy as np
import pytest

from holo_jax.drift.measure import BLOCK_WINDOWS, SEGMENTS, _split


def _runs(indices):
    """Lengths of the runs of consecutive indices."""
    breaks = np.flatnonzero(np.diff(indices) != 1)
    return np.diff(np.r_[0, breaks + 1, len(indices)])


@pytest.mark.parametrize("protocol", ["blocks", "segments"])
def test_split_is_disjoint_ordered_and_whole_windows(protocol):
    n, window = 1000, 8
    ref, held = _split(n, window, np.random.default_rng(3), protocol)
    assert not set(ref) & set(held)
    assert np.all(np.diff(ref) > 0) and np.all(np.diff(held) > 0)  # reading order kept
    assert len(ref) % window == 0 and len(held) % window == 0
    assert abs(len(ref) - len(held)) <= (BLOCK_WINDOWS if protocol == "blocks" else n // window // SEGMENTS + 1) * window


def test_segments_share_far_fewer_edges_than_blocks():
    n, window = 4096, 8
    blocks = _split(n, window, np.random.default_rng(0), "blocks")
    segments = _split(n, window, np.random.default_rng(0), "segments")
    # Segments: each side is at most SEGMENTS // 2 contiguous runs; blocks: many runs of 4 windows.
    assert len(_runs(segments[0])) <= SEGMENTS // 2 and len(_runs(segments[1])) <= SEGMENTS // 2
    assert len(_runs(blocks[0])) > 3 * SEGMENTS
    assert set(_runs(segments[0]) % window) == {0}
