"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs (SHA-256).

Leaf and interior hashes are domain-separated (RFC 6962 2.1): a leaf is SHA-256(0x00 || data), a
node SHA-256(0x01 || left || right), so no leaf can pose as a subtree. A tree of n leaves splits at
k, the largest power of two below n. Proof shapes and the verification algorithms follow RFC 9162
2.1.3 and 2.1.4 (the "PATH" and "SUBPROOF" definitions of RFC 6962 2.1.1-2.1.2), and are checked
against the transparency-dev/merkle reference vectors in tests/governance/test_merkle.py.

`CompactTree` keeps only the roots of the perfect subtrees a log of n leaves decomposes into
(at most log2 n hashes, the "compact range" of transparency-dev/merkle), so appending a record
and reading the current root cost O(log n), whatever the log's length.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(leaves: Sequence[bytes]) -> bytes:
    """MTH of the tree whose leaf hashes are `leaves`, bottom-up in O(n): pair neighbours level by
    level; an odd last node is carried up unchanged, which yields RFC 6962's left-heavy shape."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class CompactTree:
    """An append-only tree's perfect-subtree roots, largest (leftmost) first."""

    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        self._peaks.append(leaf)
        self.size += 1
        # Like a binary increment: each trailing zero bit of the new size merges two equal-sized subtrees.
        n = self.size
        while n % 2 == 0:
            right = self._peaks.pop()
            left = self._peaks.pop()
            self._peaks.append(node_hash(left, right))
            n //= 2

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        acc = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            acc = node_hash(peak, acc)
        return acc


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[0:n]) of RFC 6962 2.1.1, from the leaf's sibling upwards."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of {n} leaves")
    return _path(list(leaves), index)


def _path(leaves: list[bytes], m: int) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return _path(leaves[:k], m) + [root_from_leaf_hashes(leaves[k:])]
    return _path(leaves[k:], m - k) + [root_from_leaf_hashes(leaves[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does `proof` show leaf hash `leaf` at `index` of the tree of `size` with `root`?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[0:n]) of RFC 6962 2.1.2: that the tree of `old_size` leaves is a prefix of this one."""
    n = len(leaves)
    if not 0 < old_size <= n:
        raise ValueError(f"no consistency proof from size {old_size} to size {n}")
    return _subproof(list(leaves), old_size, True)


def _subproof(leaves: list[bytes], m: int, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root_from_leaf_hashes(leaves)]
    k = _split(n)
    if m <= k:
        return _subproof(leaves[:k], m, complete) + [root_from_leaf_hashes(leaves[k:])]
    return _subproof(leaves[k:], m - k, False) + [root_from_leaf_hashes(leaves[:k])]


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: is the tree (old_size, old_root) a prefix of (new_size, new_root)?"""
    if old_size == new_size:
        return not proof and old_root == new_root
    if not 0 < old_size < new_size or not proof:
        return False
    proof = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node of the path
        proof.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
