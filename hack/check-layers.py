#!/usr/bin/env python3
"""No import cycles in the crate: between its top-level modules, and between
the files of each directory module (a child may not use its parent's items).
And clap only in the front doors: `src/cmd/` and `main.rs` (a file below
them that names clap outside a comment fails the check).

usage: hack/check-layers.py [SRC]    (default dst-load-controller/src)
Prints each cycle and exits 1; prints the layers (bottom first) otherwise.
"""
import os
import re
import sys


def refs(text, prefix):
    """Names used right after `prefix::` (crate:: or super::), brace groups included."""
    out = set()
    for m in re.finditer(rf"\b{prefix}::(\{{|[A-Za-z_][A-Za-z0-9_]*)", text):
        if m.group(1) == "{":
            group = text[m.end() - 1:]
            depth, names, expect = 0, set(), True
            for tok in re.finditer(r"[{},]|::|[A-Za-z_][A-Za-z0-9_]*", group):
                t = tok.group(0)
                if t == "{":
                    depth += 1
                    expect = depth == 1
                elif t == "}":
                    depth -= 1
                    if depth == 0:
                        break
                elif t == "," and depth == 1:
                    expect = True
                elif depth == 1 and expect and t not in ("::", ","):
                    names.add(t)
                    expect = False
            out |= names
        else:
            out.add(m.group(1))
    return out


def strip_tests(text):
    return re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]


def graph(src):
    top, local = {}, {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            text = strip_tests(open(path).read())
            module = rel[0]
            top.setdefault(module, set()).update(
                n for n in refs(text, "crate") if n != module
                and (os.path.exists(os.path.join(src, n + ".rs")) or os.path.isdir(os.path.join(src, n))))
            if len(rel) == 2:  # a file of a directory module
                d, name = rel
                node = local.setdefault(d, {}).setdefault(name, set())
                for n in refs(text, "super"):
                    node.add(n if os.path.exists(os.path.join(src, d, n + ".rs")) else "mod")
                node.discard(name)
    return top, local


def cycles(g):
    found, state = [], {}

    def visit(n, path):
        state[n] = 1
        for d in sorted(g.get(n, ())):
            if state.get(d) == 1:
                found.append(path[path.index(d):] + [d] if d in path else [n, d])
            elif d not in state:
                visit(d, path + [d])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    return found


def layers(g):
    done, out = set(), []
    while len(done) < len(g):
        layer = sorted(n for n in g if n not in done and g[n] <= done | (g[n] - set(g)))
        if not layer:
            break
        out.append(layer)
        done |= set(layer)
    return out


def clap_users(src):
    """Files outside cmd/ and main.rs whose code (comments aside) names clap."""
    out = set()
    for root, _, files in os.walk(src):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), src).replace(os.sep, "/")
            if not f.endswith(".rs") or rel == "main.rs" or rel.startswith("cmd/"):
                continue
            code = re.sub(r"//[^\n]*", "", open(os.path.join(root, f)).read())
            if re.search(r"\bclap\b", code):
                out.add(rel)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dst-load-controller", "src")
    top, local = graph(src)
    bad = [("crate", c) for c in cycles(top)]
    users = clap_users(src)
    for rel in sorted(users):
        print(f"[check-layers] {rel} uses clap: flags belong in src/cmd/", file=sys.stderr)
    if users:
        sys.exit(1)
    for d, g in sorted(local.items()):
        # mod.rs declares its children: a child using the parent's items is a cycle.
        bad += [(d, [n, "mod"]) for n, deps in sorted(g.items()) if n != "mod" and "mod" in deps]
        bad += [(d, c) for c in cycles({k: v - {"mod"} for k, v in g.items()})]
    if bad:
        for where, c in bad:
            print(f"[check-layers] cycle in {where}: {' -> '.join(c)}", file=sys.stderr)
        sys.exit(1)
    for i, layer in enumerate(layers(top)):
        print(f"  layer {i}: {', '.join(layer)}")
    print("  clap: only in src/cmd/ and main.rs")


if __name__ == "__main__":
    main()
