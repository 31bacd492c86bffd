"""The house rules of the package, checked on the source (``ast``, nothing imported).

Layers, bottom to top; a module imports only from its own layer or those below it:

* ``ops.py`` -- one typed wrapper per compiled op (the extension ``_C``);
* ``runtime/`` -- processes, the dealer, communication;
* ``protocols/`` -- rounds of local kernels and communication (``nn/``, a
  batched MPC inference engine, if there is one, sits beside it);
* ``defenses/`` -- robust rules, their plaintext references, the rule registry;
* beside those, the machine-learning library, with no MPC in it: ``data/``,
  ``models.py``, ``attacks/`` (poisoning of records and updates), ``metrics.py``, and
  ``reporting.py`` (JSON, Markdown tables, plots);
* applications on top: ``serving/`` (aggregation servers), ``fl/`` (the
  federated lab; may use serving), ``train/`` (private training),
  ``integrations/`` (Flower; may use serving and the lab), and the entry
  points ``cli.py``, ``demo.py`` and ``party.py``.

Also: nothing imports a private (underscore) module or name of another
package, nor reaches into one through a module attribute (``order._ranks``);
and no module inside the package imports the package root (``import
pgkernels``, ``from pgkernels import <facade name>``) -- they import the
module that defines what they need.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "pgkernels"
PKG = "pgkernels"

# The root's private modules serve the whole distribution: the compiled
# extension (``_C``, imported for its ops), the CrypTen compatibility shim and
# the one version string.
ROOT_PRIVATE = {"_C", "_compat", "_version"}

_MPC = {"ops", "runtime", "protocols", "nn", "defenses"}
_ML = {"data", "models", "attacks", "metrics", "reporting"}
_LIBRARY = _MPC | _ML

# group -> the groups it may import (besides itself and ROOT_PRIVATE). ``models``
# is a leaf (torch only), so the MPC layers above runtime may read its layer
# types (SafeNet's secure inference recognises the CNN's Flatten).
ALLOWED = {
    "ops": set(),
    "runtime": {"ops"},
    "protocols": {"ops", "runtime", "models"},
    "nn": {"ops", "runtime", "protocols", "models"},
    "defenses": {"ops", "runtime", "protocols", "nn", "models"},
    "data": set(),
    "models": set(),
    "attacks": {"data"},
    "metrics": {"data", "models", "attacks"},
    "reporting": set(),
    "serving": {"ops", "runtime", "protocols", "defenses"},
    "fl": _LIBRARY | {"serving"},
    "train": _LIBRARY,
    "integrations": _LIBRARY | {"serving", "fl"},
    "party": {"ops", "runtime"},
    "cli": _LIBRARY | {"serving", "fl", "train", "integrations", "demo", "party"},
    "demo": _LIBRARY | {"serving", "fl", "train", "integrations"},
    "__init__": {"ops", "runtime", "protocols", "defenses"},  # the root facade: the library's public names
}
APPLICATIONS = {"serving", "fl", "train", "integrations", "cli", "demo", "party"}

# Known violations: none. (While issue 14 was done in parallel branches this
# listed the ones each branch would fix; keep it for a future move done in steps.)
# Keys: (module, kind, what it imports).
KNOWN = {}


def _modules(root):
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), path, is_pkg


def _group(module):
    """The layer of a module: its first component under the package (the root: ``__init__``)."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _exists(root, module):
    """Whether ``module`` (dotted, from the package) is a module or package under ``root``."""
    rel = pathlib.Path(*module.split(".")[1:])
    return ((root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()
            or any(root.glob(str(rel) + ".*.so")))


def _resolve(module, is_pkg, node):
    """The absolute module an ImportFrom names (None outside the package)."""
    if node.level == 0:
        return node.module
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports(module, path, is_pkg):
    """(target module, imported name or None, line, bound local name) for every pgkernels import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == PKG or a.name.startswith(PKG + "."):
                    yield a.name, None, node.lineno, a.asname or a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_pkg, node)
            if target is None or not (target == PKG or target.startswith(PKG + ".")):
                continue
            for a in node.names:
                yield target, a.name, node.lineno, a.asname or a.name


def _violations(root=ROOT):
    """Every violation as (module, kind, "line N: what"); kinds: layer, private, root, unclassified."""
    found = set()
    for module, path, is_pkg in _modules(root):
        group = _group(module)
        if group in ROOT_PRIVATE:
            continue
        if group not in ALLOWED:
            found.add((module, "unclassified", f"{module} belongs to no layer; add {group!r} to ALLOWED"))
            continue
        cross_modules = {}  # local name -> imported module of another package
        for target, name, line, local in _imports(module, path, is_pkg):
            # the module the statement binds or takes a name from
            full = target if name is None else (f"{target}.{name}" if _exists(root, f"{target}.{name}") else target)
            tgroup = _group(full)
            if target == PKG and name is None:
                found.add((module, "root", f"line {line}: import {PKG}"))
                continue
            if target == PKG and full == PKG:
                found.add((module, "root", f"line {line}: from {PKG} import {name} (the facade)"))
                continue
            if tgroup in ROOT_PRIVATE:
                continue
            if tgroup != group and tgroup not in ALLOWED[group]:
                found.add((module, "layer", f"line {line}: {group} imports {full}"))
            if tgroup != group:
                parts = full.split(".")[1:] + ([name] if name and full == target else [])
                if any(_private(p) for p in parts):
                    found.add((module, "private", f"line {line}: {'.'.join([PKG] + parts)}"))
                if full != target or name is None:
                    cross_modules[local] = full
        if not cross_modules:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in cross_modules and _private(node.attr)):
                found.add((module, "private", f"line {node.lineno}: {cross_modules[node.value.id]}.{node.attr}"))
    return found


def _key(v):
    module, kind, detail = v
    return (module, kind, detail.split(": ", 1)[-1])


def test_imports_point_down_and_stay_public():
    found = _violations()
    known = {tuple(k) for k in KNOWN}
    new = sorted(v for v in found if _key(v) not in known)
    gone = sorted(k for k in known if k not in {_key(v) for v in found})
    assert not new, "layering violations:\n" + "\n".join(f"  {m}: [{k}] {d}" for m, k, d in new)
    assert not gone, "fixed, remove from KNOWN:\n" + "\n".join(f"  {k}" for k in gone)


def test_runtime_imports_nothing_above_it():
    bad = [v for v in _violations() if v[0].startswith(PKG + ".runtime") and v[1] == "layer"]
    assert not bad, bad


@pytest.mark.parametrize("group", sorted(APPLICATIONS))
def test_library_never_imports_an_application(group):
    bad = [v for v in _violations() if v[1] == "layer" and _group(v[0]) not in APPLICATIONS
           and f"imports {PKG}.{group}" in v[2]]
    assert not bad, bad


def test_every_module_is_classified():
    assert not [v for v in _violations() if v[1] == "unclassified"]


def test_checker_catches_each_kind(tmp_path):
    """The checker itself: a fake package with one violation of each kind."""
    pkg = tmp_path / PKG
    for d in ("runtime", "protocols", "defenses", "fl"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "protocols" / "_shares.py").write_text("def like(): pass\n")
    (pkg / "protocols" / "order.py").write_text("def _ranks(): pass\n")
    (pkg / "runtime" / "comm.py").write_text("from ..protocols import order\n")           # layer
    (pkg / "defenses" / "robust.py").write_text(
        "from ..protocols import _shares, order\n"                                        # private module
        "import pgkernels\n"                                                               # root
        "x = order._ranks()\n")                                                           # private attribute
    (pkg / "fl" / "lab.py").write_text("from ..protocols.order import _ranks\n"           # private name
                                       "from .. import defenses\n")                       # a submodule: fine
    (pkg / "fl" / "run.py").write_text("from .. import decode\n")                         # the facade
    kinds = {(m, k) for m, k, _ in _violations(pkg)}
    assert kinds == {(f"{PKG}.runtime.comm", "layer"), (f"{PKG}.defenses.robust", "private"),
                     (f"{PKG}.defenses.robust", "root"), (f"{PKG}.fl.lab", "private"), (f"{PKG}.fl.run", "root")}
