"""The package's imports point down the layers: config -> data/models -> methods -> the run
(distiller, teacher) -> a run on disk -> tools -> command line, as in timm or Lightning, where a
registry or a config never imports what it describes. Parsed from the source, lazy imports
included. A method family imports the shared base and the building blocks, never the run or
another family."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cpsc_lite"

#: Lower layers first. A module may import modules of its own layer or of lower ones, never higher.
LAYERS = [
    # foundations: errors, the registries, plain types, settings, files on disk, how a run executes
    {
        "__init__",
        "registry",
        "bundle",
        "compat",
        "config",
        "checkpoint",
        "folders",
        "results",
        "engine",
        "stats",
    },
    # building blocks: model families, dataset loaders, the generator, the losses, processes
    {
        "cifar_models",
        "models",
        "vision_datasets",
        "image_folders",
        "data",
        "generator",
        "losses",
        "distributed",
        "pool",
        "utils",
        "loop",
    },
    # the methods, and what they are judged and shown with
    {
        "methods.base",
        "methods.cpsc",
        "methods.adversarial",
        "methods.inversion",
        "methods.cmi",
        "methods.bounds",
        "methods",
        "diagnostics",
        "viz",
    },
    # a run in memory: the distiller, teacher training
    {"distill", "teacher"},
    # a run on disk
    {"runner"},
    # tools built on runs: whole experiments, the benchmark, costs, reports, the book's runtime
    {"pipelines", "bench", "costs", "reports", "comparisons", "bookcache"},
    # the command line
    {"cli", "commands", "__main__"},
]
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}
#: Registries are leaves (timm's rule): the families register themselves, never the reverse.
LEAVES = {"registry": {"__init__"}, "bundle": set(), "compat": {"__init__"}}
FAMILIES = {m for m in LAYER if m.startswith("methods.") and m != "methods.base"}


def module_name(path: pathlib.Path) -> str:
    """``cpsc_lite/methods/cmi.py`` -> ``methods.cmi``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(base: list, module: str, names) -> set:
    """Modules named by ``from <base>.<module> import names`` (``base``: the package's parts)."""
    target = base + (module.split(".") if module else [])
    found = set()
    if not module:  # from . import x, y: modules or names of the package itself
        for name in names:
            candidate = target + [name]
            is_module = (PACKAGE.joinpath(*candidate).with_suffix(".py")).exists() or (
                PACKAGE.joinpath(*candidate) / "__init__.py"
            ).exists()
            found.add(
                ".".join(candidate) if is_module else (".".join(target) or "__init__")
            )
        return found
    return {".".join(target) or "__init__"}


def package_imports(path: pathlib.Path) -> set:
    """The cpsc_lite modules ``path`` imports (``from . import x``, ``from .x import y``, anywhere in it)."""
    try:
        me = module_name(path)
    except ValueError:  # a probe file outside the package: a top-level module
        me = path.stem
    package = me.split(".")[:-1] if path.name != "__init__.py" else me.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = (
                package[: len(package) - (node.level - 1)]
                if node.level > 1
                else package
            )
            found |= _resolve(base, node.module or "", [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "cpsc_lite"
        ):
            parts = node.module.split(".")[1:]
            found |= _resolve([], ".".join(parts), [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".", 1)[1]
                for a in node.names
                if a.name.startswith("cpsc_lite.")
            )
    found.discard(me)
    return found


GRAPH = {module_name(p): package_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert set(GRAPH) == set(LAYER), (
        f"place new modules in LAYERS: {sorted(set(GRAPH) ^ set(LAYER))}"
    )


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    up = sorted(m for m in GRAPH[module] if LAYER[m] > LAYER[module])
    assert not up, f"{module} (layer {LAYER[module]}) imports higher layer(s): {up}"


def test_leaves_import_nothing_else():
    for module, allowed in LEAVES.items():
        assert GRAPH[module] <= allowed, (
            f"{module} must stay a leaf; it imports {sorted(GRAPH[module] - allowed)}"
        )


def test_no_import_cycles():
    """Not even through lazy imports inside functions: each concept has one home, and homes form a tree."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == "open":
                raise AssertionError(
                    "import cycle: " + " -> ".join(stack[stack.index(n) :] + [n])
                )
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_a_method_family_imports_neither_the_run_nor_another_family():
    for family in sorted(FAMILIES):
        wrong = GRAPH[family] & (FAMILIES | {"methods", "distill", "runner"})
        assert not wrong, (
            f"{family} imports {sorted(wrong)}: give it what it needs through methods.base"
        )


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The parser must not pass by seeing nothing: it finds imports inside functions in every spelling."""
    f = tmp_path / "probe.py"
    f.write_text(
        "from . import CpscError, checkpoint\ndef g():\n    from .cli import main\n"
        "    import cpsc_lite.viz\n    from cpsc_lite.bench import run_bench\n"
    )
    assert package_imports(f) == {"__init__", "checkpoint", "cli", "viz", "bench"}


def test_modules_and_their_functions_stay_readable():
    """No package module over 700 lines, no class or function over 200: one concept, one home,
    small enough to read in one sitting."""
    long_modules, long_defs = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 700:
            long_modules.append(f"{module_name(path)} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 200:
                    long_defs.append(f"{module_name(path)}.{node.name} ({n} lines)")
    assert not long_modules and not long_defs, long_modules + long_defs


def test_nothing_points_outside_the_repository():
    """A user's clone has only the repository: no file may cite notes kept beside it."""
    root = PACKAGE.parent
    found = []
    for pattern in ("*.py", "*.md", "*.yaml", "*.ipynb", "*.sh", "*.toml"):
        for path in root.rglob(pattern):
            if any(
                part in (".git", ".venv", "_build", "node_modules")
                for part in path.parts
            ):
                continue
            text = path.read_text(errors="ignore")
            outside = ("../" + "shared", "METHOD" + ".md", "STYLE" + ".md")
            if any(name in text for name in outside):
                found.append(str(path.relative_to(root)))
    assert not found, found
