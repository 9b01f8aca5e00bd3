"""The package's imports point down the layers (../shared/STYLE.md): config -> data/models ->
method -> engine/runner -> tools -> command line. Parsed from the source, lazy imports included."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cpsc_lite"

#: Lower layers first. A module may import modules of its own layer or of lower ones, never higher.
LAYERS = [
    # foundations: errors, the registries, plain types, settings, files on disk, how a run executes
    {"__init__", "registry", "bundle", "config", "checkpoint", "results", "engine"},
    # building blocks: model families, dataset loaders, the generator, the losses, processes
    {
        "cifar_models",
        "models",
        "vision_datasets",
        "data",
        "generator",
        "losses",
        "distributed",
        "utils",
    },
    # the method and what it is judged and shown with
    {"distill", "teacher", "diagnostics", "viz"},
    # a run on disk
    {"runner"},
    # tools built on runs: the benchmark and the book's runtime
    {"bench", "bookcache"},
    # the command line
    {"cli", "__main__"},
]
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}
#: Registries are leaves (timm's rule): the families register themselves, never the reverse.
LEAVES = {"registry": {"__init__"}, "bundle": set()}


def package_imports(path: pathlib.Path) -> set:
    """The cpsc_lite modules ``path`` imports (``from . import x``, ``from .x import y``, anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import CpscError, checkpoint
                found.update(
                    a.name if (PACKAGE / f"{a.name}.py").exists() else "__init__"
                    for a in node.names
                )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "cpsc_lite"
        ):
            parts = node.module.split(".")
            found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[1]
                for a in node.names
                if a.name.startswith("cpsc_lite.")
            )
    found.discard(path.stem)
    return found


GRAPH = {p.stem: package_imports(p) for p in sorted(PACKAGE.glob("*.py"))}


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


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The parser must not pass by seeing nothing: it finds imports inside functions in every spelling."""
    f = tmp_path / "probe.py"
    f.write_text(
        "from . import CpscError, checkpoint\ndef g():\n    from .cli import main\n"
        "    import cpsc_lite.viz\n    from cpsc_lite.bench import run_bench\n"
    )
    assert package_imports(f) == {"__init__", "checkpoint", "cli", "viz", "bench"}
