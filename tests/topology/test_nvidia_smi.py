"""The `nvidia-smi topo -m` parser on real outputs, pasted variants, and garbled input."""
from __future__ import annotations

from pathlib import Path

import pytest

from holo_jax.errors import HoloError
from holo_jax.topology.nvidia_smi import parse, parse_file
from holo_jax.topology.presets import _CUBE_MESH

FIXTURES = Path(__file__).parent / "fixtures"
A100 = FIXTURES / "01_a100-sxm4-8gpu-8nic-deepep.txt"
DGX1 = FIXTURES / "04_v100-sxm2-dgx1-cubemesh-1nic-oldfmt.txt"
A30 = FIXTURES / "08_a30-4gpu-nvbridge-pairs-1nic-gpunumaid.txt"
L40S = FIXTURES / "12_l40s-8gpu-pcie-1nic-nolegend.txt"
RTX5090 = FIXTURES / "13_rtx5090-2gpu-phb-tabsep-nonic.txt"

# Expected values read off the matrices by hand: (islands, NIC names, per GPU (nearest NIC,
# path), per GPU NUMA affinity).
EXPECTED = {
    A100: (
        [[0, 1, 2, 3, 4, 5, 6, 7]],
        [f"mlx5_{i}" for i in range(8)],
        # GPUs 0 and 1 are both PXB to mlx5_0 and mlx5_1: one rail each.
        [(f"mlx5_{i}", "PXB") for i in range(8)],
        [0, 0, 0, 0, 1, 1, 1, 1],
    ),
    DGX1: (
        [[0, 1, 2, 3, 4, 5, 6, 7]],
        ["mlx5_0"],
        [("mlx5_0", "NODE")] * 2 + [("mlx5_0", "PIX")] * 2 + [("mlx5_0", "SYS")] * 4,
        [None] * 8,
    ),
    A30: (
        [[0, 1], [2, 3]],
        ["mlx5_0"],
        [("mlx5_0", "SYS"), ("mlx5_0", "SYS"), ("mlx5_0", "PXB"), ("mlx5_0", "PIX")],
        [0, 0, 1, 1],
    ),
    L40S: (
        [[i] for i in range(8)],
        ["NIC0"],  # no legend: the NIC keeps its column label
        [("NIC0", "SYS")] * 8,
        [0, 0, 0, 0, 1, 1, 1, 1],
    ),
    RTX5090: ([[0], [1]], [], [(None, None)] * 2, [0, 0]),
}


@pytest.mark.parametrize("path", list(EXPECTED), ids=lambda p: p.name[:2])
def test_reference_outputs(path):
    islands, nics, nearest, numa = EXPECTED[path]
    topo = parse_file(path)
    assert [list(i.gpus) for i in topo.islands] == islands
    assert [n.name for n in topo.nics] == nics
    assert [(g.nearest_nic, g.nic_path) for g in topo.gpus] == nearest
    assert [g.numa_node for g in topo.gpus] == numa
    assert [g.index for g in topo.gpus] == list(range(len(nearest)))


def test_link_counts_and_switch_detection():
    a100 = parse_file(A100)
    assert a100.nvlinks == tuple((a, b, 12) for a in range(8) for b in range(a + 1, 8))
    assert a100.islands[0].switched and a100.islands[0].links_per_gpu(3) == 12
    dgx1 = parse_file(DGX1)
    assert dict(((a, b), n) for a, b, n in dgx1.nvlinks) == _CUBE_MESH
    assert not dgx1.islands[0].switched
    assert [dgx1.islands[0].links_per_gpu(g) for g in range(8)] == [6] * 8  # V100: six NVLinks each
    a30 = parse_file(A30)
    assert a30.nvlinks == ((0, 1, 4), (2, 3, 4))


def test_attribute_columns():
    assert [g.cpu_affinity for g in parse_file(A100).gpus] == ["0-31,64-95"] * 4 + ["32-63,96-127"] * 4
    assert [g.cpu_affinity for g in parse_file(DGX1).gpus] == ["0-11,24-35"] * 4 + ["12-23,36-47"] * 4
    assert [g.cpu_affinity for g in parse_file(RTX5090).gpus] == ["0-63", "0-63"]


def test_terminal_and_markdown_decoration_is_ignored():
    text = A30.read_text()
    lines = text.splitlines()
    # nvidia-smi underlines the header on a terminal; pastes add fences, prompts, CRLF, pipes.
    lines[0] = "\x1b[4m" + lines[0] + "\x1b[0m"
    pasted = "$ nvidia-smi topo -m\n```\n" + "\r\n".join("| " + ln + " |" for ln in lines) + "\n```\n"
    assert parse(pasted).to_dict() == parse(text).to_dict()


def test_tabs_and_spaces_parse_alike():
    text = A100.read_text()
    tabbed = "\n".join("\t".join(line.split("    ")) for line in text.splitlines())
    assert parse(tabbed).to_dict() == parse(text).to_dict()


def test_without_legend_nics_keep_their_labels():
    text = A100.read_text().split("Legend:")[0]
    assert [n.name for n in parse(text).nics] == [f"NIC{i}" for i in range(8)]


def test_old_soc_code_means_sys():
    text = (
        "\tGPU0\tGPU1\tmlx4_0\tCPU Affinity\n"
        "GPU0\t X \tSOC\tSOC\t0-5\n"
        "GPU1\tSOC\t X \tPHB\t6-11\n"
        "mlx4_0\tSOC\tPHB\t X \n"
    )
    topo = parse(text)
    assert [(g.nearest_nic, g.nic_path) for g in topo.gpus] == [("mlx4_0", "SOC"), ("mlx4_0", "PHB")]
    assert [list(i.gpus) for i in topo.islands] == [[0], [1]]


def _replace_line(path: Path, number: int, old: str, new: str) -> str:
    lines = path.read_text().splitlines()
    assert old in lines[number - 1]
    lines[number - 1] = lines[number - 1].replace(old, new, 1)
    return "\n".join(lines)


@pytest.mark.parametrize(
    "text, message",
    [
        (_replace_line(A100, 4, "NV12", "NV?"), "line 4: unknown relation `NV?` in row GPU2, column GPU0"),
        (_replace_line(A100, 4, "NV12", "FOO"), "line 4: unknown relation `FOO`"),
        (_replace_line(A100, 3, "NV12", ""), "line 3: row GPU1 has 17 values but the header has 16 device"),
        (_replace_line(A100, 2, " X ", " NV12 "), "line 2: row GPU0, column GPU0 is `NV12` on the diagonal"),
        (_replace_line(A100, 3, "NV12", "NV6"), "lines 2 and 3: GPU0->GPU1 is NV12 but GPU1->GPU0 is NV6"),
        (_replace_line(A30, 2, "SYS     0-23", "SYS     SYS     0-23"),
         "line 2: row GPU0 has 9 values but the header has 5 device columns and CPU Affinity, NUMA"),
        ("\n".join(A100.read_text().splitlines()[:7]), "no row for GPU6, GPU7, NIC0"),
        ("\n".join(A100.read_text().splitlines()[1:]), "line 1: the matrix starts with a row (GPU0)"),
        (A30.read_text().replace("NIC0: mlx5_0", "NIC3: mlx5_3"), "the NIC legend names NIC3"),
        (A30.read_text().replace("GPU NUMA ID", "GPU NUMA ID   Foo"), "unknown column `Foo`"),
        ("nothing to see here\n", "no `nvidia-smi topo -m` matrix found"),
        ("", "no `nvidia-smi topo -m` matrix found"),
    ],
    ids=["unknown-nv", "unknown-code", "missing-cell", "x-off-diagonal", "asymmetric", "extra-value",
         "truncated", "no-header", "legend-vs-header", "unknown-column", "not-a-matrix", "empty"],
)
def test_garbled_input_is_an_error_naming_the_place(text, message):
    with pytest.raises(HoloError) as err:
        parse(text, source="topo.txt")
    assert message in str(err.value)
    assert str(err.value).startswith("topo.txt")


def test_duplicate_and_unknown_rows():
    lines = A30.read_text().splitlines()
    with pytest.raises(HoloError, match="line 3: row GPU0 appears twice"):
        parse("\n".join([lines[0], lines[1], lines[1], *lines[2:]]))
    with pytest.raises(HoloError, match="line 6: row GPU4 has no column in the header"):
        parse("\n".join([*lines[:5], lines[4].replace("GPU3", "GPU4"), *lines[5:]]))


def test_missing_file_is_an_error():
    with pytest.raises(HoloError, match="cannot read"):
        parse_file(FIXTURES / "does-not-exist.txt")
