#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a cycle.

  python3 .ci/modules.py worker/src operator/src      # one source root per crate

A module's imports are the `crate::NAME` paths in its files (in `use` lines and inline),
comments and `#[cfg(test)] mod tests` blocks aside, and files named `*tests.rs` or in a `tests`
folder (a test module with files of its own) skipped: test code may reach across modules. Prints each cycle (a strongly connected component of two or more
modules) and exits 1 if there is one; `-v` prints every module's imports.
"""
import os
import re
import sys


def imports(root):
    graph = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs") or name.endswith("tests.rs"):
                continue
            if os.path.basename(directory) == "tests":
                continue
            path = os.path.join(directory, name)
            top = os.path.relpath(path, root).split(os.sep)[0].removesuffix(".rs")
            if top in ("lib", "main", "bin"):
                continue
            text = open(path, encoding="utf-8").read()
            text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
            text = re.sub(r"//[^\n]*", "", text)
            edges = graph.setdefault(top, set())
            edges.update(m for m in re.findall(r"crate::([a-z_][a-z0-9_]*)", text) if m != top)
    return graph


def cycles(graph):
    """Strongly connected components of two or more modules (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main():
    roots = [a for a in sys.argv[1:] if a != "-v"]
    if not roots:
        sys.exit("usage: modules.py [-v] SRC_ROOT...")
    failed = False
    for root in roots:
        graph = imports(root)
        if "-v" in sys.argv:
            for module in sorted(graph):
                print(f"{root}: {module} -> {', '.join(sorted(graph[module])) or '-'}")
        for component in cycles(graph):
            failed = True
            print(f"{root}: import cycle among {', '.join(component)}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
