#!/usr/bin/env python3
"""Checks the layering habits of src/ that the compiler does not (issue #13):

* no import cycle between files: file A "uses" file B when A names an item that B defines
  (through `use`, a path in the code, or a re-export that leads there); a parent `mod.rs` and a
  child that use each other's items count as a cycle too;
* no function longer than MAX_FN_LINES lines (the `fn` line to its closing brace);
* `#![forbid(unsafe_code)]` in every file that has no `unsafe` block.

Prints each finding and exits 1 if there is one; `--graph` prints the file graph as well.
A textual reader, not a compiler: it understands the code style of this repository.
"""
import os
import re
import sys

MAX_FN_LINES = 80
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_files():
    """Maps module path ('crate::server::auth') to its file, for lib.rs's tree."""
    mods = {}

    def walk(path, modpath):
        mods[modpath] = path
        text = strip(open(path).read())
        here = os.path.dirname(path)
        if not (path.endswith("mod.rs") or path.endswith("lib.rs")):
            here = os.path.join(here, os.path.basename(path)[:-3])
        for m in re.finditer(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+(" + IDENT + r")\s*;", text, re.M):
            name = m.group(1)
            for cand in (os.path.join(here, name + ".rs"), os.path.join(here, name, "mod.rs")):
                if os.path.exists(cand):
                    walk(cand, modpath + "::" + name)
                    break

    walk(os.path.join(ROOT, "lib.rs"), "crate")
    return mods


def strip(text):
    """Blanks comments, string and char literals (keeping line breaks) so that paths and
    braces in them do not count."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            j = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if j < 0 else j + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and (text[i + 1 : i + 2] == "\\" or text[i + 2 : i + 3] == "'"):
            j = text.find("'", i + 2)
            out.append("' '")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def without_inline_modules(text):
    """Drops `mod name { ... }` blocks (unit tests): their `super` is the file itself."""
    while True:
        m = re.search(r"\bmod\s+" + IDENT + r"\s*\{", text)
        if not m:
            return text
        depth, j = 0, m.end() - 1
        while j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                break
            j += 1
        text = text[: m.start()] + text[j + 1 :]


def expand_use(tree):
    """'a::{b, c::{d, e}}' -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def rec(prefix, s):
        i = s.find("{")
        if i < 0:
            out.append(prefix + s)
            return
        head, body = s[:i], s[i + 1 : s.rfind("}")]
        depth, start = 0, 0
        for j, ch in enumerate(body + ","):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                part = body[start:j]
                if part:
                    rec(prefix + head, part)
                start = j + 1

    rec("", tree)
    return [re.sub(r"\bas" + IDENT + "$", "", p) for p in out]


def absolute(path, modpath, local_mods):
    parts = path.split("::")
    base = modpath.split("::")
    if parts[0] == "crate":
        return path
    if parts[0] == "self":
        return "::".join(base + parts[1:])
    if parts[0] == "super":
        while parts and parts[0] == "super":
            base = base[:-1]
            parts = parts[1:]
        return "::".join(base + parts)
    if parts[0] in local_mods:
        return "::".join(base + parts)
    return None


def main():
    mods = module_files()
    texts = {m: without_inline_modules(strip(open(f).read())) for m, f in mods.items()}
    # re-exports: module -> {name: absolute path}
    reexports = {}
    uses = {}
    for m, text in texts.items():
        local = set(re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+(" + IDENT + r")\s*;", text, re.M))
        re_m, paths = {}, []
        for u in re.finditer(r"^\s*(pub(?:\([a-z]+\))?\s+)?use\s+([^;]+);", text, re.M):
            for p in expand_use(u.group(2)):
                a = absolute(p, m, local)
                if a is None:
                    continue
                if u.group(1):
                    name = re.search(r"as(" + IDENT + ")$", re.sub(r"\s", "", u.group(2)))
                    re_m[a.split("::")[-1]] = a
                paths.append(a)
        body = re.sub(r"^\s*(pub(?:\([a-z]+\))?\s+)?use\s+[^;]+;", "", text, flags=re.M)
        for p in re.findall(r"\b((?:crate|super|self|" + "|".join(local or {"_none_"}) + r")(?:::" + IDENT + r")+)", body):
            a = absolute(p, m, local)
            if a:
                paths.append(a)
        reexports[m] = re_m
        uses[m] = paths

    def resolve(path, depth=0):
        """The module that defines the item `path` names."""
        parts = path.split("::")
        for n in range(len(parts), 0, -1):
            prefix = "::".join(parts[:n])
            if prefix in mods:
                if n < len(parts) and depth < 8:
                    name = parts[n]
                    target = reexports.get(prefix, {}).get(name)
                    if target and target != path:
                        return resolve(target + ("::" + "::".join(parts[n + 1 :]) if n + 1 < len(parts) else ""), depth + 1)
                return prefix
        return None

    edges = {m: set() for m in mods}
    for m, paths in uses.items():
        for p in paths:
            t = resolve(p)
            if t and t != m and not (t == "crate" and p == "crate"):
                # a module naming its own child module only (not an item in it) is no use
                if p == t and t.startswith(m + "::"):
                    continue
                edges[m].add(t)

    problems = []
    for scc in sccs(edges):
        if len(scc) > 1:
            problems.append("import cycle: " + " <-> ".join(sorted(short(mods[m]) for m in scc)))
    unsafe_files = {f for f in mods.values() if UNSAFE.search(strip(open(f).read()))}
    for m, f in sorted(mods.items()):
        problems += long_functions(f)
        raw = open(f).read()
        # A parent module may not forbid what a child needs: its subtree counts.
        subtree = [g for n, g in mods.items() if n == m or n.startswith(m + "::")]
        if not any(g in unsafe_files for g in subtree) and "forbid(unsafe_code)" not in raw:
            problems.append(f"{short(f)}: no unsafe block, but no #![forbid(unsafe_code)]")
        for line in unsafe_lines(f):
            problems.append(line)
    if "--graph" in sys.argv:
        for m in sorted(edges):
            print(short(mods[m]), "->", ", ".join(sorted(short(mods[t]) for t in edges[m])))
    for p in problems:
        print(p)
    print(f"layers: {len(mods)} files, {sum(len(e) for e in edges.values())} edges, {len(problems)} problems")
    return 1 if problems else 0


UNSAFE = re.compile(r"\bunsafe\s*(\{|fn\b|impl\b)")


def unsafe_lines(path):
    """An unsafe block needs a `// SAFETY:` comment within the six lines above it."""
    lines = open(path).read().split("\n")
    clean = strip(open(path).read()).split("\n")
    out = []
    for i, line in enumerate(clean):
        if UNSAFE.search(line) and not any("SAFETY" in l for l in lines[max(0, i - 6) : i + 1]):
            out.append(f"{short(path)}:{i + 1}: unsafe block without a SAFETY note")
    return out


def short(path):
    return os.path.relpath(path, os.path.join(ROOT, ".."))


def long_functions(path):
    lines = open(path).read().split("\n")
    clean = strip(open(path).read()).split("\n")
    out = []
    i = 0
    while i < len(clean):
        m = re.match(r"\s*(?:pub(?:\([a-z]+\))?\s+)?(?:const\s+)?(?:unsafe\s+)?fn\s+(" + IDENT + ")", clean[i])
        if m:
            depth, started, j = 0, False, i
            while j < len(clean):
                for ch in clean[j]:
                    if ch == "{":
                        depth += 1
                        started = True
                    elif ch == "}":
                        depth -= 1
                if started and depth == 0:
                    break
                if not started and clean[j].rstrip().endswith(";"):
                    break
                j += 1
            n = j - i + 1
            if started and n > MAX_FN_LINES:
                out.append(f"{short(path)}:{i + 1}: fn {m.group(1)} is {n} lines (> {MAX_FN_LINES})")
        i += 1
    return out


def sccs(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
