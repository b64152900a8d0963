"""RFC 6962 tree hashing and proofs against published vectors and a direct reference implementation."""
import hashlib
import random

import pytest

from holo_jax.governance.merkle import (EMPTY_ROOT, CompactTree, consistency_proof, inclusion_proof, leaf_hash,
                                        node_hash, root_from_leaf_hashes, verify_consistency, verify_inclusion)

# Leaf inputs and roots: transparency-dev/merkle testonly (MerkleTreeLeafTestInputs /
# MerkleTreeLeafTestRootHashes, github.com/transparency-dev/merkle/blob/main/testonly/constants.go),
# themselves the constants of certificate-transparency's C++ merkle_tree_test.cc (also in
# google/trillian testonly/compact_merkle_tree.go). Root i is the tree of the first i+1 leaves.
LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
          b"\x50\x51\x52\x53\x54\x55\x56\x57",
          b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"]
ROOTS = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
         "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
         "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
         "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
         "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
         "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
         "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
# Inclusion (index, size, proof) and consistency (size1, size2, proof) vectors: transparency-dev/merkle
# testonly/reference_test.go (TestRefInclusionProof, TestRefConsistencyProof), over the same leaves.
INCLUSION = [
    (0, 1, []),
    (0, 2, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"]),
    (1, 2, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
HASHES = [leaf_hash(x) for x in LEAVES]


def reference_root(leaves):
    """RFC 6962 2.1 MTH, written straight from its recursive definition (the cross-check)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def test_empty_tree_and_domain_separation():
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_from_leaf_hashes([]) == EMPTY_ROOT == CompactTree().root()
    assert leaf_hash(b"") != hashlib.sha256(b"").digest()  # the 0x00 prefix
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    # A leaf whose bytes are an interior node's preimage does not hash like that node.
    assert leaf_hash(a + b) != node_hash(a, b)


@pytest.mark.parametrize("n", range(1, 9))
def test_roots_match_published_vectors(n):
    assert root_from_leaf_hashes(HASHES[:n]).hex() == ROOTS[n - 1]
    tree = CompactTree()
    for h in HASHES[:n]:
        tree.append(h)
    assert tree.root().hex() == ROOTS[n - 1] and tree.size == n


@pytest.mark.parametrize("index, size, proof", INCLUSION)
def test_inclusion_vectors(index, size, proof):
    got = inclusion_proof(HASHES[:size], index)
    assert [p.hex() for p in got] == proof
    assert verify_inclusion(HASHES[index], index, size, got, bytes.fromhex(ROOTS[size - 1]))


@pytest.mark.parametrize("size1, size2, proof", CONSISTENCY)
def test_consistency_vectors(size1, size2, proof):
    got = consistency_proof(HASHES[:size2], size1)
    assert [p.hex() for p in got] == proof
    assert verify_consistency(size1, size2, bytes.fromhex(ROOTS[size1 - 1]), bytes.fromhex(ROOTS[size2 - 1]), got)


def test_every_size_matches_the_recursive_definition():
    rng = random.Random(0)
    leaves = [leaf_hash(rng.randbytes(rng.randint(0, 40))) for _ in range(70)]
    tree = CompactTree()
    for n in range(1, len(leaves) + 1):
        tree.append(leaves[n - 1])
        want = reference_root(leaves[:n])
        assert root_from_leaf_hashes(leaves[:n]) == want == tree.root(), n


def test_all_proofs_verify_up_to_33_leaves():
    leaves = [leaf_hash(bytes([i])) for i in range(33)]
    for n in range(1, 34):
        root = root_from_leaf_hashes(leaves[:n])
        for i in range(n):
            assert verify_inclusion(leaves[i], i, n, inclusion_proof(leaves[:n], i), root), (i, n)
        for m in range(1, n + 1):
            old = root_from_leaf_hashes(leaves[:m])
            assert verify_consistency(m, n, old, root, consistency_proof(leaves[:n], m)), (m, n)


def test_proofs_fail_when_they_should():
    leaves = [leaf_hash(bytes([i])) for i in range(13)]
    n = len(leaves)
    root = root_from_leaf_hashes(leaves)
    other = leaf_hash(b"forged")
    for i in range(n):
        proof = inclusion_proof(leaves, i)
        assert not verify_inclusion(other, i, n, proof, root)                  # wrong leaf
        assert not verify_inclusion(leaves[i], (i + 1) % n, n, proof, root)    # wrong index
        assert not verify_inclusion(leaves[i], i, n, proof, other)             # wrong root
        assert not verify_inclusion(leaves[i], i, n, proof + [other], root)    # extended proof
        if proof:
            assert not verify_inclusion(leaves[i], i, n, proof[:-1], root)     # truncated proof
            for j in range(len(proof)):
                bad = list(proof)
                bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
                assert not verify_inclusion(leaves[i], i, n, bad, root)        # a flipped bit
    assert not verify_inclusion(leaves[0], n, n, [], root) and not verify_inclusion(leaves[0], -1, n, [], root)
    for m in range(1, n):
        old = root_from_leaf_hashes(leaves[:m])
        proof = consistency_proof(leaves, m)
        assert not verify_consistency(m, n, other, root, proof)                # a different old tree
        assert not verify_consistency(m, n, old, other, proof)                 # a different new tree
        if m < n - 1:  # the proof to size n says nothing about the tree of size n-1
            assert not verify_consistency(m, n - 1, old, root_from_leaf_hashes(leaves[:n - 1]), proof)
        assert not verify_consistency(m, n, old, root, proof[:-1])             # truncated
        assert not verify_consistency(m, n, old, root, proof + [other])        # extended
        # The old tree with one record changed is not a prefix of the new one.
        changed = root_from_leaf_hashes([other] + leaves[1:m])
        assert not verify_consistency(m, n, changed, root, proof)
    assert not verify_consistency(0, n, EMPTY_ROOT, root, [])
    assert not verify_consistency(n, n, root, other, [])
    with pytest.raises(ValueError):
        inclusion_proof(leaves, n)
    with pytest.raises(ValueError):
        consistency_proof(leaves, n + 1)
