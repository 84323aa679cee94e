"""The code's layout rules, checked from the source with ``ast`` (nothing is imported).

- Functions short enough to see whole: none over ``MAX_LINES`` lines in the library packages
  and ``recs/``.
- Layers: ``store/`` knows neither the trainer nor Kafka consumers; ``trainer/`` knows no
  Kafka; no library module imports the command-line layer (the CLI, the demo, the embedded
  stack, the HTTP server), not even inside a function.
- No import cycle between the top-level packages, counting module-level imports only (the
  ones that run when a package is imported); and none between files, counting every import
  (inside functions too).
- No private name (``_x``) imported from another file of the project, and none read off an
  imported project module (``module._x``).
- ``trainer/``'s packages each import only those below them in ``TRAINER_ORDER`` (or
  themselves): a new package must be placed in the order.
- No source file over ``MAX_FILE_LINES`` lines outside ``tests/`` and ``benchmarks/``.
- ``trainer/`` sends no Redis command itself (it reaches Redis through ``store/``): no call
  of a Redis command method on a name that holds a client or a pipeline (``client``, ``pipe``,
  ``redis``: the names this code base gives them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "consumers", "trainer", "store", "recs")
LIBRARY = ("consumers", "trainer", "store")
MAX_LINES = 60
MAX_FILE_LINES = 400
SOURCE_SUFFIXES = (".py", ".js", ".css", ".html", ".sh", ".lua")
OUTSIDE_LIMIT = ("tests", "benchmarks", ".venv", "build", "out", "data")

# The command-line layer: imported by tests, benchmarks and each other, never by a library
# module. Prefixes: "recs.serve" covers recs.serve_kafka, recs.serve_page, ...
COMMAND_LINE = ("recs.cli", "recs.demo", "recs.localstack",
                "recs.serve", "recs.catalogue")


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)


def _none(found: list[str], heading: str) -> None:
    assert not found, heading + ":\n  " + "\n  ".join(found)


def _module_name(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(rel) for rel, _ in _sources()}


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """Every function and method, nested ones too, with its dotted name."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = prefix + child.name
            if not isinstance(child, ast.ClassDef):
                yield name, child
            yield from _functions(child, name + ".")
        else:
            yield from _functions(child, prefix)


def _imported(rel: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement names (``from recs import cli`` names recs.cli)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing module's package
        package = _module_name(rel).split(".")
        if not rel.endswith("__init__.py"):
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    named = [f"{base}.{alias.name}" for alias in node.names]
    return [name for name in named if name in MODULES] or [base]


def _imports(rel: str, tree: ast.Module, *, module_level: bool) -> Iterator[tuple[int, str]]:
    """(line, module) of each import; ``module_level``: only those that run on import
    (not inside a function, not under ``if TYPE_CHECKING:``)."""

    def walk(nodes) -> Iterator[tuple[int, str]]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield from ((node.lineno, name) for name in _imported(rel, node))
            elif module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif module_level and _type_checking(node):
                yield from walk(node.orelse)
            else:
                yield from walk(ast.iter_child_nodes(node))

    return walk(tree.body)


def _type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is(name: str, prefixes: tuple[str, ...]) -> bool:
    """``name`` is one of ``prefixes`` or inside it; a ``recs.serve`` prefix also covers
    ``recs.serve_page`` (the same file-name family)."""
    return any(name == p or name.startswith(p + ".") or
               (p.startswith("recs.") and name.startswith(p + "_")) for p in prefixes)


def _node(name: str) -> str:
    """The package a module belongs to in the package graph."""
    return name.split(".")[0]


# -- (a) function length ----------------------------------------------------------------------

def test_no_function_is_over_60_lines():
    too_long = []
    for rel, tree in _sources():
        for name, fn in _functions(tree):
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_LINES:
                too_long.append(f"{rel}:{fn.lineno} {name} ({lines} lines)")
    assert not too_long, (f"functions over {MAX_LINES} lines (split them into steps):\n  "
                          + "\n  ".join(too_long))


def test_the_function_length_check_sees_methods_and_nested_functions():
    tree = ast.parse("class A:\n    def m(self):\n        def inner():\n"
                     "            pass\n        return 1\n\ndef f():\n    pass\n")
    found = {name: fn.end_lineno - fn.lineno + 1 for name, fn in _functions(tree)}
    assert found == {"A.m": 4, "A.m.inner": 2, "f": 2}


# -- (b) layers -------------------------------------------------------------------------------

FORBIDDEN = {
    # package: (imports it must not make, why)
    "core": (("store", "trainer", "consumers", "recs"),
             "core/ holds the basics every layer shares and imports none of them"),
    "store": (("trainer", "consumers", "confluent_kafka", *COMMAND_LINE),
              "store/ knows no ALS math, no Kafka and no command line"),
    "trainer": (("consumers", "confluent_kafka", *COMMAND_LINE),
                "trainer/ knows no Kafka and no command line"),
    "consumers": (COMMAND_LINE, "no library module imports the command-line layer"),
}


def _layer_violations(sources) -> list[str]:
    found = []
    for rel, tree in sources:
        rule = FORBIDDEN.get(rel.split("/")[0])
        if rule is None:
            continue
        forbidden, why = rule
        for line, name in _imports(rel, tree, module_level=False):
            if _is(name, forbidden):
                found.append(f"{rel}:{line} imports {name} ({why})")
    return found


def test_each_layer_imports_only_what_it_may():
    _none(_layer_violations(_sources()), "layering broken")


def test_the_layer_check_sees_imports_inside_functions_and_from_imports():
    tree = ast.parse("def f():\n    from recs import cli\n    import recs.serve_page\n"
                     "from ..consumers.consume import StreamConsumer\n"
                     "from core.errors import InputError\n")
    found = _layer_violations([("store/x.py", tree)])
    assert [v.split(" (")[0] for v in found] == [
        "store/x.py:2 imports recs.cli", "store/x.py:3 imports recs.serve_page",
        "store/x.py:4 imports consumers.consume"]


# -- (c) no package cycle ---------------------------------------------------------------------

def _package_graph(sources) -> dict[str, set[str]]:
    nodes = set(PACKAGES)
    graph: dict[str, set[str]] = {}
    for rel, tree in sources:
        here = _node(_module_name(rel))
        for _, name in _imports(rel, tree, module_level=True):
            there = _node(name)
            if there in nodes and there != here:
                graph.setdefault(here, set()).add(there)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first node repeated at the end), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_top_level_packages_import_each_other_without_a_cycle():
    graph = _package_graph(_sources())
    cycle = _cycle(graph)
    edges = ", ".join(f"{a} -> {b}" for a in sorted(graph) for b in sorted(graph[a]))
    assert cycle is None, f"package import cycle {' -> '.join(cycle)} (graph: {edges})"


def test_the_cycle_check_finds_a_cycle_and_builds_the_package_graph():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}}) is None
    trainer = ast.parse("from core.errors import InputError\nimport core.options\n"
                        "def f():\n    import recs.cli\n")
    recs = ast.parse("from trainer import config\n")
    graph = _package_graph([("trainer/x.py", trainer), ("recs/cli.py", recs)])
    assert graph == {"trainer": {"core"}, "recs": {"trainer"}}


# -- (d) no cycle between files -------------------------------------------------------------

def _module_graph(sources) -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in the file."""
    graph: dict[str, set[str]] = {}
    for rel, tree in sources:
        here = _module_name(rel)
        for _, name in _imports(rel, tree, module_level=False):
            if name in MODULES and name != here:
                graph.setdefault(here, set()).add(name)
    return graph


def test_no_import_cycle_between_files():
    cycle = _cycle(_module_graph(_sources()))
    assert cycle is None, f"import cycle between files: {' -> '.join(cycle)}"


def test_the_file_cycle_check_sees_imports_inside_functions():
    a = ast.parse("from trainer.pipeline import publish\n")
    b = ast.parse("def f():\n    from trainer.pipeline.retrain import train_language\n")
    graph = _module_graph([("trainer/pipeline/retrain.py", a), ("trainer/pipeline/publish.py", b)])
    assert _cycle(graph) == ["trainer.pipeline.publish", "trainer.pipeline.retrain",
                             "trainer.pipeline.publish"]


# -- (e) no private name across files ---------------------------------------------------------

def _private_imports(sources) -> list[str]:
    found = []
    for rel, tree in sources:
        modules = set()  # names this file binds to project modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                for name in _imported(rel, node):
                    if name in MODULES and name.split(".")[-1] in {a.name for a in node.names}:
                        alias = next(a for a in node.names if a.name == name.split(".")[-1])
                        modules.add(alias.asname or alias.name)
                if _imported(rel, node)[0].split(".")[0] in PACKAGES:
                    found += [f"{rel}:{node.lineno} imports {a.name}" for a in node.names
                              if _private(a.name)]
            elif isinstance(node, ast.Import):
                modules.update(a.asname for a in node.names if a.asname
                               and a.name.split(".")[0] in PACKAGES)
        found += [f"{rel}:{node.lineno} reads {node.value.id}.{node.attr}"
                  for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                  and isinstance(node.value, ast.Name) and node.value.id in modules
                  and _private(node.attr)]
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_crosses_files():
    _none(_private_imports(_sources()), "private names used across files")


def test_the_private_name_check_sees_from_imports_and_module_attributes():
    tree = ast.parse("from store.snapshot import _parse_ints, read_views\n"
                     "from trainer.models import ease as ease_module\n"
                     "import trainer.pipeline.retrain as retrain\n"
                     "x = ease_module._cache, retrain._steps, retrain.train_language\n"
                     "from numpy import _private_thing\n")
    found = [f.split(" ", 1)[1] for f in _private_imports([("trainer/x.py", tree)])]
    assert sorted(found) == ["imports _parse_ints", "reads ease_module._cache",
                             "reads retrain._steps"]


# -- (f) trainer's packages, each above the ones it imports --------------------------------

TRAINER_ORDER = {"trainer": 0, "trainer.data": 1, "trainer.models": 2, "trainer.scoring": 3,
                 "trainer.quality": 3, "trainer.pipeline": 4, "trainer.commands": 5}
"""Lowest first; a package imports only those of a lower number (``trainer`` is config.py
and settings.py; scoring and quality are siblings: neither imports the other)."""


def _trainer_unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else "trainer"


def _upward_imports(sources) -> list[str]:
    found = []
    for rel, tree in sources:
        here = _module_name(rel)
        if not here.startswith("trainer."):
            continue
        unit = _trainer_unit(here)
        if unit not in TRAINER_ORDER:
            found.append(f"{rel}: package {unit} is not in TRAINER_ORDER")
            continue
        for line, name in _imports(rel, tree, module_level=False):
            there = _trainer_unit(name) if name.startswith("trainer.") else None
            if there is None or there == unit:
                continue
            if TRAINER_ORDER.get(there, 99) >= TRAINER_ORDER[unit]:
                found.append(f"{rel}:{line} imports {name} ({unit} is not above {there})")
    return found


def test_each_trainer_package_imports_only_those_below_it():
    _none(_upward_imports(_sources()), "trainer/ imports up or sideways")


def test_the_order_check_refuses_up_sideways_and_unplaced_packages():
    up = ast.parse("from trainer.pipeline.retrain import train_language\n")
    side = ast.parse("def f():\n    from trainer.quality.choose import fit_model\n")
    down = ast.parse("from trainer.models.rank import top_n\nfrom trainer.config import X\n")
    found = _upward_imports([("trainer/models/als.py", up), ("trainer/scoring/lists.py", side),
                             ("trainer/scoring/search.py", down),
                             ("trainer/extra/thing.py", down)])
    assert [f.split(" (")[0].split(": ")[0] for f in found] == [
        "trainer/models/als.py:1 imports trainer.pipeline.retrain",
        "trainer/scoring/lists.py:2 imports trainer.quality.choose",
        "trainer/extra/thing.py"]


# -- (g) file length ------------------------------------------------------------------------

def _long_files(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (not path.is_file() or path.suffix not in SOURCE_SUFFIXES
                or rel.parts[0] in OUTSIDE_LIMIT or rel.parts[0].startswith(".")):
            continue
        lines = len(path.read_text(encoding="utf-8", errors="replace").splitlines())
        if lines > MAX_FILE_LINES:
            found.append(f"{rel.as_posix()} ({lines} lines)")
    return found


def test_no_source_file_is_over_400_lines():
    _none(_long_files(ROOT), f"files over {MAX_FILE_LINES} lines (split them)")


def test_the_file_length_check_counts_lines_and_skips_tests(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "pkg" / "long.py").write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    (tmp_path / "pkg" / "short.py").write_text("x = 1\n" * MAX_FILE_LINES)
    (tmp_path / "tests" / "long.py").write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    assert _long_files(tmp_path) == [f"pkg/long.py ({MAX_FILE_LINES + 1} lines)"]


# -- (h) the trainer reaches Redis only through store/ ------------------------------------------

REDIS_HOLDERS = ("client", "pipe", "redis")
REDIS_METHODS = {"pipeline", "register_script", "execute", "get", "set", "exists", "delete",
                 "hget", "hgetall", "hset", "hmget", "smembers", "sscan", "sscan_iter",
                 "zadd", "zrange", "zscore", "zscan_iter", "eval", "evalsha", "scan"}


def _redis_calls(sources) -> list[str]:
    found = []
    for rel, tree in sources:
        if not rel.startswith("trainer/"):
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in REDIS_METHODS):
                continue
            holder = node.func.value
            name = holder.id if isinstance(holder, ast.Name) else getattr(holder, "attr", "")
            if name in REDIS_HOLDERS:
                found.append(f"{rel}:{node.lineno} calls {name}.{node.func.attr}")
    return found


def test_the_trainer_sends_no_redis_command_itself():
    _none(_redis_calls(_sources()), "trainer/ talks to Redis past store/")


def test_the_redis_check_sees_the_clients_and_pipelines_of_the_trainer():
    tree = ast.parse("pipe = client.pipeline(transaction=False)\npipe.execute()\n"
                     "reader.redis.exists(key)\nclient.register_script(S)\n"
                     "settings.get('x')\nclient.close()\n")
    found = [f.split(" ", 1)[1] for f in _redis_calls([("trainer/x.py", tree),
                                                        ("store/y.py", tree)])]
    assert found == ["calls client.pipeline", "calls pipe.execute", "calls redis.exists",
                     "calls client.register_script"]
