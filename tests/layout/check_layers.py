#!/usr/bin/env python3
"""check_layers.py — the include rules of docs/architecture.md, checked on the
sources: who may include whom, and no circle between modules.

Rules (a module is a .c/.h pair; a folder is a layer):
  kernels/            includes only kernels/; nothing in kernels/cpu/ or
                      kernels/cuda/ includes the dispatch kernels/quant.h
  pipeline/formats/   includes only kernels/ and pipeline/formats/
  workers/, schedulers/  include nothing from pipeline/ but pipeline/formats/
  pipeline/cli/       is included by nothing outside pipeline/cli/
and the module graph (x.c and x.h are one node) has no cycle.
Exit 0 when all hold; otherwise one line per violation and exit 1.
"""
import os
import re
import sys

root = os.environ.get("QS_SOURCE_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
root = os.path.abspath(root)
layers = ("kernels", "workers", "schedulers", "pipeline")
inc_re = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

files = []
for top in layers:
    for d, _, names in os.walk(os.path.join(root, top)):
        files += [os.path.relpath(os.path.join(d, n), root) for n in names if n.endswith((".c", ".h", ".cu", ".cuh"))]

edges = {}
for f in sorted(files):
    with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
        edges[f] = [i for i in inc_re.findall(fh.read()) if i.split("/")[0] in layers]

bad = []
for f, incs in edges.items():
    for i in incs:
        if f.startswith("kernels/") and not i.startswith("kernels/"):
            bad.append(f"{f} includes {i}: kernels/ includes only kernels/")
        if re.match(r"kernels/(cpu|cuda)/", f) and i == "kernels/quant.h":
            bad.append(f"{f} includes {i}: a backend must not include the dispatch above it")
        if f.startswith("pipeline/formats/") and not (i.startswith("kernels/") or i.startswith("pipeline/formats/")):
            bad.append(f"{f} includes {i}: formats/ includes only kernels/ and formats/")
        if f.startswith(("workers/", "schedulers/")) and i.startswith("pipeline/") and not i.startswith("pipeline/formats/"):
            bad.append(f"{f} includes {i}: workers/ and schedulers/ use only pipeline/formats/ of pipeline/")
        if i.startswith("pipeline/cli/") and not f.startswith("pipeline/cli/"):
            bad.append(f"{f} includes {i}: nothing outside pipeline/cli/ includes the command line")

# cycles between modules (x.c + x.h = one node)
def node(p):
    return os.path.splitext(p)[0]
graph = {}
for f, incs in edges.items():
    graph.setdefault(node(f), set()).update(node(i) for i in incs if node(i) != node(f))
state, stack = {}, []
def visit(n):
    state[n] = 1
    stack.append(n)
    for m in sorted(graph.get(n, ())):
        if state.get(m) == 1:
            bad.append("include circle: " + " -> ".join(stack[stack.index(m):] + [m]))
        elif m not in state:
            visit(m)
    stack.pop()
    state[n] = 2
for n in sorted(graph):
    if n not in state:
        visit(n)

for b in bad:
    print(b)
print(f"check_layers: {len(files)} files, {sum(map(len, edges.values()))} includes, {len(bad)} violations")
sys.exit(1 if bad else 0)
