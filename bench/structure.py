"""The shape of the code: package import arrows, the longest functions, the widest signatures.

    .venv/bin/python bench/structure.py [--root .] [--top 5]

Packages are stacked arc_data <- trainer <- tuning <- cluster; an arrow runs *upward* when a lower
package imports a higher one. Function length counts lines from `def` to the last line of the
body (docstrings included); width counts parameters other than self/cls. The last line is JSON.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

ORDER = ("arc_data", "trainer", "tuning", "cluster")


def _imports(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & set(ORDER)


def _functions(tree: ast.AST, rel: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            params = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [
                p.arg for p in (a.vararg, a.kwarg) if p is not None]
            params = [p for p in params if p not in ("self", "cls")]
            yield f"{rel}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1, len(params)


def measure(root: Path, top: int) -> dict:
    arrows: dict[tuple[str, str], int] = {}
    funcs = []
    for pkg in ORDER:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = str(path.relative_to(root))
            tree = ast.parse(path.read_text())
            for target in _imports(tree) - {pkg}:
                arrows[(pkg, target)] = arrows.get((pkg, target), 0) + 1
            funcs += list(_functions(tree, rel))
    upward = sorted(f"{a}->{b}" for a, b in arrows if ORDER.index(b) > ORDER.index(a))
    longest = sorted(funcs, key=lambda f: -f[1])[:top]
    widest = sorted(funcs, key=lambda f: -f[2])[:top]
    return {"arrows": sorted(f"{a}->{b}" for a, b in arrows), "upward": upward,
            "longest": [(name, n) for name, n, _ in longest], "widest": [(name, w) for name, _, w in widest],
            "functions": len(funcs), "over_60_lines": sum(n > 60 for _, n, _ in funcs),
            "over_8_params": sum(w > 8 for _, _, w in funcs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    m = measure(Path(args.root), args.top)
    print(f"package arrows ({len(m['arrows'])}): {', '.join(m['arrows'])}")
    print(f"upward arrows ({len(m['upward'])}): {', '.join(m['upward']) or 'none'}")
    print(f"functions: {m['functions']}, longer than 60 lines: {m['over_60_lines']}, "
          f"more than 8 parameters: {m['over_8_params']}")
    print("longest:  " + "; ".join(f"{name} ({n} lines)" for name, n in m["longest"]))
    print("widest:   " + "; ".join(f"{name} ({w} params)" for name, w in m["widest"]))
    print(json.dumps({"bench": "structure", "date": time.strftime("%Y-%m-%d"), "package_arrows": len(m["arrows"]),
                      "upward_arrows": len(m["upward"]), "functions": m["functions"],
                      "over_60_lines": m["over_60_lines"], "over_8_params": m["over_8_params"],
                      "longest_lines": m["longest"][0][1], "widest_params": m["widest"][0][1]}))


if __name__ == "__main__":
    main()
