"""Optimised HLO text as computations of instructions, and how often each computation runs.

    module = parse(jax.jit(f).lower(*args).compile().as_text())
    for computation, count in executions(module):  # count: runs per execution of the program
        for inst in computation.instructions: ...

Everything that counts a cost per executed instruction (`holo_jax.hlo.flops`,
`holo_jax.hlo.collective_bytes`) walks the call graph here, so loops and branches are counted
by one rule, starting from ENTRY, which runs once:

- `while`: the body runs `known_trip_count` times, the number XLA records in the loop's
  backend config when it can prove it (every `lax.scan`, and `fori_loop` with static bounds);
  the condition runs once more than the body. Under a loop without a known trip count the
  count is unknown (None): a consumer that finds something to count there refuses, since any
  figure would be a guess.
- `conditional`: every branch counts as running each time the conditional runs. Only one does,
  so this is an upper bound (the sum over branches, not the costliest one): which branch runs
  depends on values, not on the program text.
- `call` (`to_apply=`), `fusion` and asynchronous wrappers (`calls=`): once per execution.
- Any other `to_apply=` computation (the combiner of a reduce, all-reduce, scatter, sort, map)
  is applied element by element by its instruction, whose own cost accounts for it: not walked.

A computation reached along several call sites runs the sum of their counts.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterator

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+)(?: .*)? \{$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = (.*)$")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_NAME = r"%?([\w.\-]+)"
_BODY = re.compile(r"\bbody=" + _NAME)
_CONDITION = re.compile(r"\bcondition=" + _NAME)
_TO_APPLY = re.compile(r"\bto_apply=" + _NAME)
_CALLS = re.compile(r"\bcalls=(?:\{([^}]*)\}|" + _NAME + ")")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")
_TRUE_FALSE = re.compile(r"\b(?:true|false)_computation=" + _NAME)
_OPEN, _CLOSE = "([{", ")]}"


class HloTextError(ValueError):
    """The text is not an HLO module this parser can read."""


@dataclasses.dataclass(frozen=True)
class Instruction:
    name: str
    shape: str  # the result shape as printed: `f32[8,256]{1,0}`, or a tuple `(s32[], f32[256]{0})`
    opcode: str  # `dot`, `while`, `all-reduce-start`, ...
    operands: tuple[str, ...]  # operand instruction names, without `%`
    attributes: str  # the text after the operand list: `, lhs_contracting_dims={1}, ...`


@dataclasses.dataclass(frozen=True)
class Computation:
    name: str
    instructions: tuple[Instruction, ...]


@dataclasses.dataclass(frozen=True)
class Module:
    computations: dict[str, Computation]
    entry: str


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one opened at `text[start]`."""
    depth = 0
    for i in range(start, len(text)):
        depth += (text[i] in _OPEN) - (text[i] in _CLOSE)
        if depth == 0:
            return i
    raise HloTextError(f"unbalanced brackets in HLO: {text[:120]}")


def _top_level_split(text: str) -> list[str]:
    """`text` split at the commas outside any brackets (a shape like `f32[8,16]` is one piece)."""
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in _OPEN) - (ch in _CLOSE)
        if ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    return [p.strip() for p in pieces + [text[start:]] if p.strip()]


def _instruction(name: str, rest: str) -> Instruction:
    """Parse `<shape> <opcode>(<operands>)<attributes>`, the right-hand side of one instruction."""
    if rest.startswith("("):  # a tuple shape, which contains spaces
        end = _closing(rest, 0)
        shape, call = rest[: end + 1], rest[end + 2:]
    else:
        shape, _, call = rest.partition(" ")
    paren = call.find("(")
    if paren < 0:
        raise HloTextError(f"no operand list in HLO instruction `{name}`: {rest[:120]}")
    end = _closing(call, paren)
    # An operand prints as `%name`, or as `<shape> %name` in some dialects: the name is the last word.
    operands = tuple(p.split()[-1].lstrip("%") for p in _top_level_split(call[paren + 1: end]))
    return Instruction(name, shape, call[:paren], operands, call[end + 1:])


def parse(hlo_text: str) -> Module:
    """The computations of an HLO module's text (`Compiled.as_text()`) and its ENTRY's name."""
    computations: dict[str, Computation] = {}
    entry, name, body = None, None, []
    for line in hlo_text.splitlines():
        if name is None:
            if m := _COMPUTATION.match(line):
                name, body = m.group(1), []
                entry = name if line.startswith("ENTRY") else entry
        elif line == "}":
            computations[name] = Computation(name, tuple(body))
            name = None
        elif m := _INSTRUCTION.match(line):
            body.append(_instruction(*m.groups()))
    if entry is None:
        raise HloTextError("no ENTRY computation in the HLO text")
    return Module(computations, entry)


def _names(listed: str) -> list[str]:
    return [n.strip().lstrip("%") for n in listed.split(",") if n.strip()]


def callees(inst: Instruction) -> list[tuple[str, int | None]]:
    """The computations `inst` runs, each with its runs per execution of `inst` (None: unknown);
    the rule is the module docstring's."""
    attrs = inst.attributes
    if inst.opcode == "while":
        trips = _TRIP_COUNT.search(attrs)
        n = int(trips.group(1)) if trips else None
        return [(_BODY.search(attrs).group(1), n), (_CONDITION.search(attrs).group(1), None if n is None else n + 1)]
    if inst.opcode == "conditional":
        listed = _BRANCHES.search(attrs)
        return [(b, 1) for b in (_names(listed.group(1)) if listed else _TRUE_FALSE.findall(attrs))]
    found = [] if inst.opcode != "call" else [(c, 1) for c in _TO_APPLY.findall(attrs)]
    for listed, single in _CALLS.findall(attrs):
        found += [(c, 1) for c in (_names(listed) if listed else [single])]
    return found


def execution_counts(module: Module) -> dict[str, int | None]:
    """Runs of each computation reachable from ENTRY per run of the program (None: unknown)."""
    edges = {name: [e for inst in comp.instructions for e in callees(inst)]
             for name, comp in module.computations.items()}
    # Depth-first post-order from ENTRY, reversed: every caller before its callees (HLO call
    # graphs are acyclic), so each computation's count is complete before it is passed on.
    order, seen = [], set()

    def visit(name: str) -> None:
        seen.add(name)
        for callee, _ in edges.get(name, ()):
            if callee not in seen:
                visit(callee)
        order.append(name)

    visit(module.entry)
    counts: dict[str, int | None] = {name: 0 for name in order}
    counts[module.entry] = 1
    for name in reversed(order):
        runs = counts[name]
        for callee, times in edges.get(name, ()):
            if runs == 0 or times == 0:
                continue  # never run, however often a loop inside would have
            if runs is None or times is None or counts[callee] is None:
                counts[callee] = None
            else:
                counts[callee] += runs * times
    return counts


def executions(module: Module) -> Iterator[tuple[Computation, int | None]]:
    """Each computation reachable from ENTRY with its runs per run of the program."""
    for name, count in execution_counts(module).items():
        if name in module.computations:
            yield module.computations[name], count
