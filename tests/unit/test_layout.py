"""The package's import direction: deploy and fixes build on models; models never import them."""

from __future__ import annotations

import ast
from pathlib import Path

import anomalib_simsid

PACKAGE = Path(anomalib_simsid.__file__).parent
FORBIDDEN = ("anomalib_simsid.deploy", "anomalib_simsid.fixes")


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            names.add(".".join([*base, node.module] if node.module else base))
    return names


def test_models_import_neither_deploy_nor_fixes() -> None:
    files = sorted((PACKAGE / "models").rglob("*.py"))
    assert len(files) > 10
    offending = {
        str(path.relative_to(PACKAGE)): sorted(
            name for name in _imports(path) if name.startswith(FORBIDDEN) or name == "anomalib_simsid"
        )
        for path in files
    }
    assert {path: names for path, names in offending.items() if names} == {}


def test_the_resolver_sees_relative_imports() -> None:
    """The check above is not vacuous: deploy's imports of models are found."""
    assert any(
        name.startswith("anomalib_simsid.models.simsid.adapters")
        for name in _imports(PACKAGE / "deploy" / "predictor.py")
    )
    assert "anomalib_simsid.models.simsid.adapters.export" in _imports(
        PACKAGE / "models" / "simsid" / "adapters" / "openvino.py"
    )
