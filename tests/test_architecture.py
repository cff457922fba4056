"""The layout rules of docs/ARCHITECTURE.md that import-linter cannot see: no module imports a
private name of another sub-package or the package root, no private attribute of another
object is touched, no module grows past ~400 lines, and the public API is what __all__ says."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import shardpack

SRC = Path(shardpack.__file__).parent
MAX_MODULE_LINES = 400
STDLIB_PRIVATE = {"os._exit"}  # documented APIs that start with an underscore
# root modules that are not sub-packages: the public error tree and version, the old-path shims
ROOT_MODULES = {"errors", "_version", "_deprecated", "torch", "sharding", "distributed"}


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(["shardpack", *parts]), path))
    return found


def absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize(("module", "path"), modules(), ids=lambda v: str(v))
def test_no_private_name_of_another_subpackage(module: str, path: Path) -> None:
    if module == "shardpack" or subpackage(module) in {"sharding", "distributed"}:
        return  # the package root and the shims re-export on purpose
    tree = ast.parse(path.read_text("utf-8"))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = absolute(module, path, node)
            if not target.startswith("shardpack"):
                continue
            if target == "shardpack":
                problems.append(f"line {node.lineno}: imports the package root")
                continue
            if subpackage(target) == subpackage(module):
                continue
            private = [a.name for a in node.names if is_private(a.name)]
            private += [p for p in target.split(".")[2:] if is_private(p)]
            if private:
                problems.append(f"line {node.lineno}: {target} {private}")
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = node.value
            own = isinstance(owner, ast.Name) and owner.id in {"self", "cls", "other"}
            if not own and ast.unparse(node) not in STDLIB_PRIVATE:
                problems.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not problems, f"{module} reaches into private names: {problems}"


@pytest.mark.parametrize(("module", "path"), modules(), ids=lambda v: str(v))
def test_no_module_is_too_long_to_read(module: str, path: Path) -> None:
    lines = len(path.read_text("utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines: split it by job"


def test_every_public_name_exists_and_the_list_is_sorted() -> None:
    assert shardpack.__all__ == sorted(shardpack.__all__)
    for name in shardpack.__all__:
        assert hasattr(shardpack, name), name
    public = {
        name
        for name, value in vars(shardpack).items()
        if not name.startswith("_") and not getattr(value, "__name__", "").startswith("shardpack.")
    }
    assert public <= set(shardpack.__all__) | {"annotations"}, public - set(shardpack.__all__)


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("shardpack.sharding", "ShardedPacker", shardpack.ShardedPacker),
        ("shardpack.distributed", "pack_distributed", shardpack.pack_distributed),
    ],
)
def test_old_import_paths_work_and_name_the_new_one(old: str, name: str, new: object) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved: use shardpack\.{name}"):
        assert getattr(module, name) is new


PUBLIC_API = [
    "Codec", "CodecError", "CorruptBlockError", "Dataset", "DatasetPacker", "FormatError",
    "InputError", "ManifestError", "ObjectChangedError", "OptionError", "PackOptions", "PackPlan",
    "PackResult", "RemoteError", "RemoteOptions", "SchemaError", "ShardedPacker",
    "ShardpackError", "UnknownCodecError", "Writer", "__version__", "available_codecs",
    "from_hf", "get_codec", "open", "open_dataset", "pack", "pack_distributed", "register_codec",
]  # fmt: skip


def test_the_public_api_is_the_reviewed_list() -> None:
    """Adding or removing a public name is an API change: it changes this list too."""
    assert shardpack.__all__ == PUBLIC_API
    for name in PUBLIC_API:
        assert getattr(shardpack, name) is not None
