#!/usr/bin/env python3
"""Prints the cycles among the top-level modules of each crate (`crate::a` used in
module `b` is an edge b -> a; test code is skipped) and exits 1 if there is one."""
import pathlib
import re
import sys

USE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def non_test(text):
    # Code before the first `#[cfg(test)]` at the start of a line.
    return re.split(r"(?m)^#\[cfg\(test\)\]", text, maxsplit=1)[0]


def graph(src):
    edges = {}
    for path in src.rglob("*.rs"):
        rel = path.relative_to(src)
        if rel.parts[0] in ("lib.rs", "main.rs") or "tests" in rel.parts or rel.name == "tests.rs":
            continue
        module = rel.parts[0].removesuffix(".rs")
        for used in USE.findall(non_test(path.read_text())):
            if used != module:
                edges.setdefault(module, set()).add(used)
    return edges


def cycles(edges):
    found, stack, state = [], [], {}

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


status = 0
for src in sorted(pathlib.Path("crates").glob("*/src")):
    for cycle in cycles(graph(src)):
        print(f"{src.parent.name}: module cycle {' -> '.join(cycle)}")
        status = 1
sys.exit(status)
