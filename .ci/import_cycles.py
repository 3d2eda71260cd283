#!/usr/bin/env python3
"""Import graph of the files of core/src: prints the cycles among files (exit 1 if any).

An edge A -> B means a `use` in file A names an item of file B (a module's items live in
its mod.rs). Test files are left out. Usage: python3 .ci/import_cycles.py [--dot]
"""
import glob, os, re, sys

ROOT = os.path.join(os.path.dirname(__file__), '..', 'core', 'src')
files = [f for f in glob.glob(os.path.join(ROOT, '**', '*.rs'), recursive=True)
         if not re.search(r'(^|_)tests?\.rs$', os.path.basename(f))]

def module_of(f):
    p = os.path.relpath(f, ROOT)[:-3].split(os.sep)
    return tuple(p[:-1]) if p[-1] in ('mod', 'lib') else tuple(p)

mods = {module_of(f): f for f in files}

def expand(path):
    """`a::{b, c::d}` -> [a::b, a::c::d] (one level of braces is enough here)."""
    path = re.sub(r'\s+', '', path)
    if '{' not in path:
        return [path]
    head, inner = path.split('{', 1)
    inner = inner.rsplit('}', 1)[0]
    out, depth, cur = [], 0, ''
    for ch in inner:
        if ch == ',' and depth == 0:
            out.append(cur); cur = ''
            continue
        depth += ch == '{'
        depth -= ch == '}'
        cur += ch
    out.append(cur)
    return [q for part in out if part for q in expand(head + part)]

edges = {}
for f in files:
    me = module_of(f)
    src = re.sub(r'#\[cfg\(test\)\]\s*mod \w+;', '', open(f).read())
    # Inline test modules are not part of the graph.
    src = re.split(r'#\[cfg\(test\)\]\s*mod \w+ \{', src)[0]
    deps = set()
    for m in re.finditer(r'^\s*(?:pub(?:\([a-z]+\))?\s+)?use\s+([^;]+);', src, re.M):
        for path in expand(m.group(1)):
            parts = path.split('::')
            if parts[0] == 'crate':
                cur, parts = (), parts[1:]
            elif parts[0] in ('super', 'self'):
                cur = me
                while parts and parts[0] in ('super', 'self'):
                    if parts[0] == 'super':
                        cur = cur[:-1]
                    parts = parts[1:]
            elif me + (parts[0],) in mods:
                cur = me
            else:
                continue
            cand = cur + tuple(parts)
            while cand and cand not in mods:
                cand = cand[:-1]
            if cand != me:
                deps.add(cand)
    edges[me] = deps

name = lambda m: '/'.join(m) or 'lib'
if '--dot' in sys.argv:
    print('digraph core {')
    for a, ds in sorted(edges.items()):
        for b in sorted(ds):
            print(f'  "{name(a)}" -> "{name(b)}";')
    print('}')
    sys.exit(0)

# Strongly connected components (Tarjan): every component of more than one file is a cycle.
index, low, stack, on, comps, n = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            comps.append(comp)
sys.setrecursionlimit(10000)
for v in list(edges):
    if v not in index:
        visit(v)
for c in comps:
    print('cycle among:', ', '.join(sorted(name(m) for m in c)))
print(f'{len(files)} files, {sum(len(d) for d in edges.values())} imports, {len(comps)} cycles')
sys.exit(1 if comps else 0)
