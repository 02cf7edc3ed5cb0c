"""The import graph between the project's top-level packages, checked against the layers.

    python -m bench.imports          # prints unit -> units it imports, and any breach
    python -m bench.imports --may A B   # may module A import module B? (exit 0 or 1)

Every import counts, at module level or inside a function. The layers, bottom up:

    contract                      imports nothing of ours
    export, client, server        contract only (side by side: none imports another)
    model_repository              server.frontdoor (its model.py is the front door's)
    bench, tests                  anything below; tests never import bench, and a test
                                  module imports no other test module (only tests.helpers
                                  and tests.triggers)

Inside server, one package per process (server/__init__.py), each with what it may import:

    server.common                 contract
    server.frontdoor              contract, server.common
    server.onnxruntime_backend    contract, server.common
    server.sagemaker              contract, server.common
    server.launcher               contract, server.common, server.sagemaker

Also reported: import cycles between modules, wherever they are. Exit code 1 on any breach.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("contract", "export", "client", "server", "model_repository", "bench", "tests")
# What each unit may import beside itself: a unit is a top-level package, or one of server's
# packages (one per process, server/__init__.py); a name allows that unit and all below it.
ALLOWED: dict[str, set[str]] = {
    "contract": set(),
    "export": {"contract"},
    "client": {"contract"},
    "server": {"contract"},  # server/__init__.py
    "server.common": {"contract"},
    "server.frontdoor": {"contract", "server.common"},
    "server.onnxruntime_backend": {"contract", "server.common"},
    "server.sagemaker": {"contract", "server.common"},
    "server.launcher": {"contract", "server.common", "server.sagemaker"},
    "server.__main__": {"server.launcher"},
    "model_repository": {"server.frontdoor"},  # the file Triton loads imports the front door
    "bench": {"contract", "export", "client", "server"},
    "tests": {"contract", "export", "client", "server"},
}
SHARED_TEST_MODULES = {"tests", "tests.helpers", "tests.triggers", "tests.conftest"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module of ours this file imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


def graph() -> dict[str, set[str]]:
    """module -> modules of ours it imports (only names that are modules or packages)."""
    files = {
        _module_name(p): p
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if ".venv" not in p.parts
    }
    edges = {}
    for module, path in files.items():
        targets = set()
        for name in imports_of(path):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        edges[module] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                found.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def unit(module: str) -> str:
    """The unit of ALLOWED a module belongs to: the longest one that is its name's prefix."""
    parts = module.split(".")
    for size in (2, 1):
        name = ".".join(parts[:size])
        if name in ALLOWED:
            return name
    return parts[0]


def _allowed(module: str, target: str) -> bool:
    mine, theirs = unit(module), unit(target)
    return mine == theirs or any(
        theirs == name or theirs.startswith(name + ".") for name in ALLOWED[mine]
    )


def breaches(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if not _allowed(module, target):
                out.append(f"{module} imports {target}: {unit(module)} may not import it")
            if unit(module) == unit(target) == "tests" and target not in SHARED_TEST_MODULES:
                out.append(f"{module} imports {target}: a test imports only tests.helpers")
    out += [" -> ".join(cycle) + ": an import cycle" for cycle in cycles(edges)]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--may"] and len(argv) == 3:  # python -m bench.imports --may A B
        allowed = _allowed(argv[1], argv[2])
        print(f"{argv[1]} may {'' if allowed else 'not '}import {argv[2]}")
        return 0 if allowed else 1
    edges = graph()
    units: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            if unit(target) != unit(module):
                units[unit(module)].add(unit(target))
    for name in ALLOWED:
        print(f"{name:27} -> {', '.join(sorted(units[name])) or '(nothing of ours)'}")
    problems = breaches(edges)
    for problem in problems:
        print(f"BREACH {problem}")
    print("layers respected, no cycles" if not problems else f"{len(problems)} breach(es)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
