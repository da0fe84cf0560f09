"""What pyproject.toml declares is what the code imports and needs."""

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


DECLARED = {
    canonical(Requirement(line).name): Requirement(line) for line in PROJECT["dependencies"]
}
# Parts of a declared package's own public API.
BUNDLED = {"starlette": "fastapi"}


def imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for path in (ROOT / "src" / "hostplane").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_third_party_import_is_a_declared_dependency() -> None:
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module in sorted(imported_top_level_modules()):
        if module == "hostplane" or module not in distributions:
            continue  # the standard library, or ourselves
        names = {canonical(name) for name in distributions[module]}
        if not names & DECLARED.keys() and BUNDLED.get(module) not in DECLARED:
            missing.append(f"{module} ({', '.join(sorted(names))})")
    assert not missing, f"imported but not declared: {missing}"


def floor(name: str) -> Version:
    [minimum] = [s.version for s in DECLARED[name].specifier if s.operator == ">="]
    return Version(minimum)


def source(pattern: str) -> bool:
    return any(re.search(pattern, path.read_text()) for path in (ROOT / "src").rglob("*.py"))


def test_minimum_versions_cover_the_features_the_code_uses() -> None:
    # Depends(scope=...) arrived in FastAPI 0.121.0.
    if source(r"Depends\([^)]*scope="):
        assert floor("fastapi") >= Version("0.121")
    # websockets.asyncio arrived in 13.0 and became the default in 14.0.
    if source(r"websockets\.asyncio"):
        assert floor("websockets") >= Version("14.0")
    # StripeClient's v1 namespace arrived in stripe 12.5.
    if source(r"\.v1\.checkout"):
        assert floor("stripe") >= Version("12.5")
