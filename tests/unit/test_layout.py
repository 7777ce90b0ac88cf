"""The layout rules of issue 12, checked by parsing the source with `ast` (nothing is imported).

Imports: no service package imports another; `shared/` imports no service; nothing else outside
the services, the launcher package (`LAUNCHER`), `tests/` and `bench/` imports a service: that is
`agent/` and the operator CLI, including imports inside functions and `importlib.import_module`.
Nor does `shared/` name a service in a string, except `shared/topology.py`, where queues are declared.

Sizes: no module outside `tests/` and `bench/` over `MAX_MODULE_LINES`; no function (sync or
async, methods and nested functions each counted on their own) over `MAX_FUNCTION_LINES`.

Queries live in stores. Outside store modules (`store.py`, `store_*.py`, `*_store.py`, except
in-memory twins, whose names contain "memory"), the `STORAGE_PLUMBING` allowlist, `tests/` and
`bench/`, the source holds:
- no call of a MongoDB collection/database method (`MONGO_METHODS`) on something (`x.find_one(...)`).
  The method names are specific to PyMongo except `find`, which `str`, `bytes` and
  ElementTree's `Element` also have; a `.find(...)` call counts unless its receiver or its
  first argument is a string literal (`text.find(":")`, `root.find("saml:Issuer", NS)`), since a
  collection's `find` takes a filter document, never a string. A `create_indexes()` call without
  arguments is a store's own set-up method (PyMongo's takes the list of indexes), so it passes;
- no string literal that is a MongoDB operator or field path: "$" then a lowercase letter
  ("$set", "$in", "$tenant_id"), except the JSON Schema keywords in `JSON_SCHEMA_KEYWORDS`
  ("$ref", "$defs", ...) that the OpenAPI document uses. Strings such as "^a$" or "$1" do not
  start with "$" and a lowercase letter, so regular expressions and format strings pass.

Typed internal calls: every `.add(...)` on a service's `Methods` table (a name bound to
`Methods()`, a parameter annotated `Methods`, or a name `methods`) passes a params model and a
result model, by keyword (`params=`, `result=`) or by position, and neither is `None`.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "policysvc", "keysvc", "auditsvc")
# The one package that composes services in one process (`strongroom dev`, `strongroom serve` and
# what they share); only it, besides the services themselves, tests and benchmarks, imports services.
LAUNCHER = "launch"
# Imports and queries are free here: tests and benchmarks exercise every layer.
FREE = ("tests", "bench")
# Clients speak HTTP only: they hold no store client at all (their `.command()` builds a CLI verb).
CLIENTS = ("agent", "strongroom")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80

# Shared storage plumbing outside the store modules: adapters every service's stores build on.
STORAGE_PLUMBING = {
    "shared/outbox.py",         # writes and drains each service's outbox field in its own documents
    "shared/group_insert.py",   # group commit: concurrent inserts share one insert_many
    "shared/group_read.py",     # grouped point reads: concurrent lookups share one find with $in
    "shared/embedded_mongo.py",  # starts the embedded store for dev and tests; pings it until ready
}
MONGO_METHODS = frozenset({
    "find", "find_one", "find_raw_batches", "insert_one", "insert_many", "update_one", "update_many",
    "replace_one", "delete_one", "delete_many", "aggregate", "aggregate_raw_batches", "count_documents",
    "estimated_document_count", "bulk_write", "find_one_and_update", "find_one_and_replace",
    "find_one_and_delete", "create_index", "create_indexes", "drop_index", "drop_indexes", "list_indexes",
    "index_information", "distinct", "create_collection", "drop_collection", "drop_database",
    "list_collection_names", "list_database_names", "command",
})
MONGO_OPERATOR = re.compile(r"\$[a-z]")
JSON_SCHEMA_KEYWORDS = frozenset({
    "$ref", "$defs", "$schema", "$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary",
})
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "dev-data", "build", "dist", "venv"})


@cache
def _sources() -> tuple[str, ...]:
    """Every Python file of the project, as a POSIX path relative to the repository root."""
    found = []
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        found += [Path(directory, f).relative_to(ROOT).as_posix() for f in files if f.endswith(".py")]
    return tuple(sorted(found))


@cache
def _tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)


def _under(path: str, *folders: str) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def _report(rule: str, violations: list[str]) -> str:
    return f"{rule}: {len(violations)} violation(s)\n  " + "\n  ".join(sorted(violations))


# --- imports ----------------------------------------------------------------------------


def _module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything a module imports, anywhere in it, relative ones resolved."""
    module = _module_name(path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:  # `from services import keysvc` imports a service too
                yield node.lineno, f"{base}.{alias.name}"
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and _called_name(node) in {"import_module", "__import__"}):
            yield node.lineno, node.args[0].value


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _service_of_module(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" and parts[1] in SERVICES else None


def _service_of_path(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "services" and parts[1] in SERVICES else None


def _service_imports(paths: list[str]) -> Iterator[tuple[str, int, str, str]]:
    """(path, line, imported name, service) for each import of a service package in `paths`."""
    for path in paths:
        seen = set()
        for line, name in _imports(path):
            service = _service_of_module(name)
            if service is not None and (line, service) not in seen:
                seen.add((line, service))
                yield path, line, name, service


def test_no_service_imports_another_service():
    paths = [p for p in _sources() if _service_of_path(p)]
    violations = [f"{path}:{line} ({_service_of_path(path)}) imports {name}"
                  for path, line, name, service in _service_imports(paths) if service != _service_of_path(path)]
    assert not violations, _report("a service imports another service", violations)


def test_shared_imports_no_service():
    paths = [p for p in _sources() if _under(p, "shared")]
    violations = [f"{path}:{line} imports {name}" for path, line, name, _ in _service_imports(paths)]
    assert not violations, _report("shared/ imports a service", violations)


def test_shared_names_no_service_outside_topology():
    service_name = re.compile(rf"({'|'.join(SERVICES)})(\.|$)")  # a queue name or routing key
    violations = [
        f"{path}:{node.lineno} names {node.value!r}"
        for path in _sources() if _under(path, "shared") and path != "shared/topology.py"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and service_name.match(node.value)
    ]
    assert not violations, _report("shared/ names a service outside topology.py", violations)


def test_clients_import_no_service():
    """agent/, the operator CLI and anything else outside the services and the launcher."""
    paths = [p for p in _sources() if not _under(p, "services", "shared", LAUNCHER, *FREE)]
    violations = [f"{path}:{line} imports {name}" for path, line, name, _ in _service_imports(paths)]
    assert not violations, _report(f"a client imports a service (only {LAUNCHER}/ composes services)", violations)


# --- sizes ------------------------------------------------------------------------------


def test_modules_are_at_most_450_lines():
    violations = []
    for path in _sources():
        if not _under(path, *FREE):
            lines = len((ROOT / path).read_text(encoding="utf-8").splitlines())
            if lines > MAX_MODULE_LINES:
                violations.append(f"{path}: {lines} lines")
    assert not violations, _report(f"modules over {MAX_MODULE_LINES} lines", violations)


def test_functions_are_at_most_80_lines():
    """Tests included: a test too long to read is split like any other function. Benchmarks are not."""
    violations = []
    for path in _sources():
        if _under(path, "bench"):
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    violations.append(f"{path}:{node.lineno} {node.name}(): {lines} lines")
    assert not violations, _report(f"functions over {MAX_FUNCTION_LINES} lines", violations)


# --- queries live in stores -------------------------------------------------------------


def _is_store_module(path: str) -> bool:
    name = path.rsplit("/", 1)[-1].removesuffix(".py")
    is_store = name == "store" or name.startswith("store_") or name.endswith("_store")
    return is_store and "memory" not in name  # in-memory twins hold plain dicts, no operators


def _is_string(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str | bytes))


def _is_mongo_call(node: ast.Call) -> bool:
    if not isinstance(node.func, ast.Attribute) or node.func.attr not in MONGO_METHODS:
        return False
    if node.func.attr == "find":  # str.find, bytes.find and Element.find take a string first
        return not _is_string(node.func.value) and not (node.args and _is_string(node.args[0]))
    if node.func.attr == "create_indexes":  # `store.create_indexes()`: the store's own set-up method
        return bool(node.args or node.keywords)
    return True


def _query_violations(path: str) -> Iterator[str]:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call) and _is_mongo_call(node):
            yield f"{path}:{node.lineno} calls .{node.func.attr}()"
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and MONGO_OPERATOR.match(node.value)
              and node.value not in JSON_SCHEMA_KEYWORDS):
            yield f"{path}:{node.lineno} uses {node.value!r}"


def test_storage_plumbing_allowlist_is_current():
    missing = sorted(p for p in STORAGE_PLUMBING if not (ROOT / p).is_file())
    assert not missing, f"STORAGE_PLUMBING names files that do not exist: {missing}"


def test_queries_live_in_stores():
    violations = []
    for path in _sources():
        if not (_under(path, *FREE, *CLIENTS) or _is_store_module(path) or path in STORAGE_PLUMBING):
            violations += _query_violations(path)
    assert not violations, _report("MongoDB calls or operators outside store modules", violations)


def test_clients_hold_no_store_client():
    paths = [p for p in _sources() if _under(p, *CLIENTS)]
    violations = [f"{path}:{line} imports {name}" for path in paths for line, name in _imports(path)
                  if name.split(".")[0] in ("pymongo", "motor", "bson")]
    assert not violations, _report("a client imports a MongoDB driver", violations)


def test_the_query_heuristics():
    """The rule's own guard against false positives and misses."""
    def hits(source: str) -> list[str]:
        return [ast.unparse(n) for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call) and _is_mongo_call(n)]

    assert hits("text.find(':')\nroot.find(f'{ns}:x')\n'abc'.find(x)\nre.match(p, s)\nd.update(x)\nstore.create_indexes()") == []
    assert hits("store.keys.find(t, {})\nc.find()\nc.distinct('tenant_id')\nc.update_one(q, u)\nc.create_indexes(ix)") == [
        "store.keys.find(t, {})", "c.find()", "c.distinct('tenant_id')", "c.update_one(q, u)", "c.create_indexes(ix)"]
    assert [s for s in ("$set", "$in", "$tenant_id", "^a$", "$1", "$ref", "$", "US$") if
            MONGO_OPERATOR.match(s) and s not in JSON_SCHEMA_KEYWORDS] == ["$set", "$in", "$tenant_id"]


# --- typed internal calls ---------------------------------------------------------------


def _methods_tables(tree: ast.Module) -> set[str]:
    """Names that hold a `Methods` table in a module: assigned `Methods()`, annotated, or `methods`."""
    names = {"methods"}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and _called_name(node.value) == "Methods"):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.arg) and node.annotation is not None and "Methods" in ast.unparse(node.annotation):
            names.add(node.arg)
    return names


def _declared(call: ast.Call, keyword: str, position: int) -> bool:
    value = next((k.value for k in call.keywords if k.arg == keyword), None)
    if value is None and len(call.args) > position:
        value = call.args[position]
    return value is not None and not (isinstance(value, ast.Constant) and value.value is None)


def _registrations(path: str) -> Iterator[ast.Call]:
    tree = _tree(path)
    tables = _methods_tables(tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add"
                and isinstance(node.func.value, ast.Name) and node.func.value.id in tables):
            yield node


def test_every_rpc_method_declares_params_and_result_models():
    violations, found = [], set()
    for path in _sources():
        if not _service_of_path(path):
            continue
        for call in _registrations(path):
            found.add(_service_of_path(path))
            missing = [k for k, i in (("params", 2), ("result", 3)) if not _declared(call, k, i)]
            if missing:
                name = ast.unparse(call.args[0]) if call.args else "?"
                violations.append(f"{path}:{call.lineno} {name} lacks {' and '.join(missing)}")
    assert {"policysvc", "keysvc", "auditsvc"} <= found, f"no Methods registrations found in some services: {found}"
    assert not violations, _report("RPC methods without params and result models", violations)
