"""Parse `nvidia-smi topo -m` text, as users paste it, into a single-host `Topology`.

The format varies across driver versions and pastes: tab- or space-separated; NIC columns
named `NIC0..` (with a "NIC Legend" giving `mlx5_0`) or, on older drivers, by the kernel
name itself; optional `CPU Affinity`, `NUMA Affinity` and `GPU NUMA ID` columns; ANSI
underline codes (nvidia-smi underlines the header on a terminal); markdown fences and pipes.

A matrix that is not square, has an unknown relation code, lacks rows or is asymmetric is
rejected with the line number, never guessed at: a wrong topology silently produces a slow
(or failing) mesh, which is much worse than an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from holo_jax.errors import HoloError
from holo_jax.topology import serialize
from holo_jax.topology.model import PATH_RANK, DeviceSpec, Gpu, Nic, Topology, nearest_nics

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GPU = re.compile(r"GPU(\d+)$")
_NIC_LABEL = re.compile(r"NIC(\d+)$")
# A NIC column named by its kernel device, as drivers before the NIC legend printed it.
_NIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*$")
_RELATION = re.compile(r"(?:X|NV([1-9]\d*)|PIX|PXB|PHB|NODE|SYS|SOC)$")
_LEGEND_NIC = re.compile(r"(NIC\d+)\s*:\s*(\S+)$")
# Trailing attribute columns, in the words nvidia-smi uses for them.
_ATTRIBUTES = (("CPU", "Affinity"), ("NUMA", "Affinity"), ("GPU", "NUMA", "ID"))


@dataclass(frozen=True)
class _Line:
    number: int  # 1-based, in the text as given
    tokens: list[str]


_Rows = dict[str, tuple[_Line, list[str]]]  # row label -> (its line, its values)


def parse(text: str, *, source: str = "nvidia-smi topo -m", host: str = "localhost") -> Topology:
    """A one-host `Topology` from `nvidia-smi topo -m` output; HoloError if it is garbled."""
    lines = [_Line(i + 1, _clean(raw).split()) for i, raw in enumerate(text.splitlines())]
    header_at = next((i for i, ln in enumerate(lines) if ln.tokens and _GPU.match(ln.tokens[0])), None)
    if header_at is None:
        raise HoloError(f"{source}: no `nvidia-smi topo -m` matrix found (expected a header line starting with GPU0).")
    header = lines[header_at]
    if len(header.tokens) > 1 and _RELATION.match(header.tokens[1]):
        raise HoloError(
            f"{source}, line {header.number}: the matrix starts with a row ({header.tokens[0]}) instead of the "
            f"header line of column names; paste the whole `nvidia-smi topo -m` output."
        )
    labels, attributes = _header(header, source)

    rows: _Rows = {}
    end = header_at + 1  # index of the first line after the matrix
    for ln in lines[header_at + 1:]:
        label = ln.tokens[0] if ln.tokens else None
        if label is None and not rows:
            end += 1  # blank lines between the header and the first row
            continue
        if label is None or not (label in labels or _GPU.match(label) or _NIC_LABEL.match(label)):
            break
        if label not in labels:
            raise HoloError(f"{source}, line {ln.number}: row {label} has no column in the header (line {header.number}).")
        if label in rows:
            raise HoloError(f"{source}, line {ln.number}: row {label} appears twice.")
        rows[label] = (ln, _row(ln, labels, attributes, source))
        end += 1
    missing = [lab for lab in labels if lab not in rows]
    if missing:
        raise HoloError(
            f"{source}: the matrix has no row for {', '.join(missing)} (it ends at line {lines[end - 1].number}; "
            f"truncated input?); paste the whole `nvidia-smi topo -m` output."
        )
    relation = {(a, labels[j]): tokens[j] for a, (_, tokens) in rows.items() for j in range(len(labels))}
    _check_symmetric(relation, labels, rows, source)
    legend = _nic_legend(lines[end:], labels, source)
    return _topology(labels, attributes, rows, relation, legend, source, host)


def parse_file(path: str | Path) -> Topology:
    path = Path(path)
    # Strictly decoded: a replacement character in a NIC name would silently give a wrong NIC.
    return parse(serialize.read_text(path, "`nvidia-smi topo -m` file"), source=str(path))


def _clean(raw: str) -> str:
    """Drop terminal colour codes and markdown decoration that pastes pick up."""
    line = _ANSI.sub("", raw).replace("\xa0", " ").replace("|", " ")
    stripped = line.strip()
    if stripped.startswith(("```", "~~~")) or re.fullmatch(r"[-+=:\s]+", stripped or "x"):
        return ""  # code fence, or a markdown table's |---|---| separator
    return line


def _header(line: _Line, source: str) -> tuple[list[str], list[str]]:
    tokens, labels, attributes = line.tokens, [], []
    i = 0
    while i < len(tokens):
        phrase = next((p for p in _ATTRIBUTES if tuple(tokens[i:i + len(p)]) == p), None)
        if phrase is not None:
            attributes.append(" ".join(phrase))
            i += len(phrase)
            continue
        token = tokens[i]
        if attributes or not (_GPU.match(token) or _NIC_NAME.match(token)):
            raise HoloError(
                f"{source}, line {line.number}: unknown column `{token}` in the header; expected GPU#, NIC# or "
                f"NIC names, then CPU Affinity / NUMA Affinity / GPU NUMA ID."
            )
        if token in labels:
            raise HoloError(f"{source}, line {line.number}: column {token} appears twice in the header.")
        labels.append(token)
        i += 1
    return labels, attributes


def _row(ln: _Line, labels: list[str], attributes: list[str], source: str) -> list[str]:
    label, values = ln.tokens[0], ln.tokens[1:]
    n = len(labels)
    # GPU rows carry one value per attribute column; NIC rows none (or, in some versions, all).
    expected = [n + len(attributes)] if _GPU.match(label) else sorted({n, n + len(attributes)})
    if len(values) not in expected:
        columns = f"{n} device columns" + (f" and {', '.join(attributes)}" if attributes else "")
        raise HoloError(
            f"{source}, line {ln.number}: row {label} has {len(values)} values but the header has {columns} "
            f"({' or '.join(map(str, expected))} values); a cell is missing or extra (truncated or garbled line?)."
        )
    for j, code in enumerate(values[:n]):
        if not _RELATION.match(code):
            raise HoloError(
                f"{source}, line {ln.number}: unknown relation `{code}` in row {label}, column {labels[j]}; "
                f"expected X, NV#, PIX, PXB, PHB, NODE or SYS."
            )
        if (code == "X") != (labels[j] == label):
            where = "on" if labels[j] == label else "off"
            raise HoloError(
                f"{source}, line {ln.number}: row {label}, column {labels[j]} is `{code}` {where} the diagonal; "
                f"only a device's own column is X."
            )
    return values


def _check_symmetric(relation: dict[tuple[str, str], str], labels: list[str], rows: _Rows, source: str) -> None:
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            ab, ba = relation[a, b], relation[b, a]
            if PATH_RANK.get(ab, ab) != PATH_RANK.get(ba, ba):  # SOC and SYS are the same path
                raise HoloError(
                    f"{source}, lines {rows[a][0].number} and {rows[b][0].number}: {a}->{b} is {ab} but "
                    f"{b}->{a} is {ba}; the matrix must be symmetric (garbled paste?)."
                )


def _nic_legend(lines: list[_Line], labels: list[str], source: str) -> dict[str, str]:
    legend: dict[str, str] = {}
    in_legend = False
    for ln in lines:
        text = " ".join(ln.tokens)
        if text == "NIC Legend:":
            in_legend = True
            continue
        match = _LEGEND_NIC.match(text) if in_legend else None
        if match is None:
            continue
        label, name = match.groups()
        if label not in labels:
            raise HoloError(
                f"{source}, line {ln.number}: the NIC legend names {label}, which is not a column of the matrix "
                f"(truncated header?)."
            )
        legend[label] = name
    unnamed = [lab for lab in labels if _NIC_LABEL.match(lab) and lab not in legend]
    if legend and unnamed:
        # nvidia-smi names every NIC# column in its legend, so a partial legend is a cut-off paste.
        raise HoloError(f"{source}: the NIC legend does not name {', '.join(unnamed)} (truncated input?); paste the "
                        f"whole `nvidia-smi topo -m` output.")
    return legend


def _topology(labels: list[str], attributes: list[str], rows: _Rows, relation: dict[tuple[str, str], str],
              legend: dict[str, str], source: str, host: str) -> Topology:
    gpu_labels = [lab for lab in labels if _GPU.match(lab)]
    nic_labels = [lab for lab in labels if not _GPU.match(lab)]
    nic_name = {lab: legend.get(lab, lab) for lab in nic_labels}
    index = {lab: int(_GPU.match(lab).group(1)) for lab in gpu_labels}

    nvlinks = []
    for i, a in enumerate(gpu_labels):
        for b in gpu_labels[i + 1:]:
            match = _RELATION.match(relation[a, b])
            if match.group(1):
                lo, hi = sorted((index[a], index[b]))
                nvlinks.append((lo, hi, int(match.group(1))))

    paths = {
        (index[g], nic_name[n]): relation[g, n]
        for g in gpu_labels for n in nic_labels if relation[g, n] in PATH_RANK
    }
    nearest = nearest_nics([index[g] for g in gpu_labels], [nic_name[n] for n in nic_labels], paths)

    gpus = []
    for lab in gpu_labels:
        attrs = dict(zip(attributes, rows[lab][1][len(labels):]))
        nic, path = nearest.get(index[lab], (None, None))
        gpus.append(Gpu(
            index=index[lab],
            host=0,
            numa_node=_int_or_none(attrs.get("NUMA Affinity")),
            cpu_affinity=_none_if_na(attrs.get("CPU Affinity")),
            nearest_nic=nic,
            nic_path=path,
        ))
    return Topology(
        hosts=(host,),
        gpus=tuple(gpus),
        nics=tuple(Nic(name=nic_name[n], host=0) for n in nic_labels),
        nvlinks=tuple(sorted(nvlinks)),
        device=DeviceSpec(kind="unknown GPU"),
        source=source,
    )


def _none_if_na(value: str | None) -> str | None:
    return None if value in (None, "N/A") else value


def _int_or_none(value: str | None) -> int | None:
    value = _none_if_na(value)
    # A GPU attached to CPUs of several NUMA nodes prints a range ("0-1"); no single node then.
    return int(value) if value is not None and value.isdigit() else None
