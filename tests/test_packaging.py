"""What the package imports is what it declares: a fresh `pip install vidcap[...]` must not miss a module the
code imports (httpx2 was imported and declared nowhere), nor install one that nothing uses (opencv)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: declared packages that vidcap never imports itself, and why they are needed anyway
USED_INDIRECTLY = {"accelerate": "transformers' tensor-parallel and device maps need it",
                   "tokenizers": "the tiny models' tokenizer is trained with it (fast tokenizers)"}


def declared() -> dict[str, str]:
    """Distribution name (normalized) -> the extra it comes with ('' for the core dependencies)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {_norm(d): "" for d in project["dependencies"]}
    for extra, deps in project["optional-dependencies"].items():
        for d in deps:
            if not d.startswith("vidcap["):
                names.setdefault(_norm(d), extra)
    return names


def _norm(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def imported_distributions() -> dict[str, set[str]]:
    """Distribution -> the vidcap modules that import it (only third-party ones)."""
    owners = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for path in (REPO / "vidcap").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top == "vidcap" or top in sys.stdlib_module_names:
                    continue
                for dist in owners.get(top, [top]):
                    found.setdefault(_norm(dist), set()).add(str(path.relative_to(REPO)))
    return found


def test_every_imported_package_is_declared() -> None:
    missing = {d: sorted(m) for d, m in imported_distributions().items() if d not in declared()}
    assert missing == {}, f"imported but not declared in pyproject.toml: {missing}"


def test_every_declared_package_is_used() -> None:
    used = imported_distributions()
    test_only = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"])
    unused = {d: extra for d, extra in declared().items()
              if d not in used and d not in USED_INDIRECTLY and d not in {_norm(t) for t in test_only}}
    assert unused == {}, f"declared but imported nowhere in vidcap/: {unused}"


def test_make_passes_paths_as_single_words(tmp_path: Path) -> None:
    """The Makefile quotes what users pass (a manifest or run folder with a space or a quote)."""
    out = subprocess.run(["make", "-n", "-o", "setup", "submit", "status", "merge", "MANIFEST=my data's.csv",
                          "MODEL=m", "RUN=runs/a b"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    commands = [line for line in out.replace("\\\n", " ").splitlines() if "/vidcap " in line]
    assert len(commands) == 3, out
    for command in commands:
        argv = subprocess.run(["bash", "-c", "printf '%s\\n' " + command.split("/vidcap ", 1)[1]],
                              capture_output=True, text=True, check=True).stdout.splitlines()
        assert "runs/a b" in argv or "runs/a b/captions.csv" in argv, argv
    first = subprocess.run(["bash", "-c", "printf '%s\\n' " + commands[0].split("/vidcap ", 1)[1]],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert first[:2] == ["submit", "my data's.csv"], first
