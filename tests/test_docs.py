"""The README and the manual in docs/ keep their promises: the manual builds without a broken link, every
command they show exists, every test file and pytest selection they cite is there, and the README's Python
example runs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from freshloop.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _text() -> str:
    return "\n".join(p.read_text() for p in PAGES)


def test_the_manual_builds_without_a_broken_link(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "site" / "walk" / "index.html").exists()


def test_the_readme_links_to_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)#]+)\)", readme) if "://" not in t]
    assert len(targets) >= 8
    assert [t for t in targets if not (ROOT / t).exists()] == []


def _commands() -> set[tuple[str, ...]]:
    group = typer.main.get_command(app)
    names: set[tuple[str, ...]] = set()
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        names.add((name,))
        for sub in getattr(cmd, "commands", {}):
            names.add((name, sub))
    return names


def test_every_command_shown_exists() -> None:
    """Each ``freshloop ...`` line of a shell block, and each `freshloop ...` named in the text, is a command
    of the CLI (a group's subcommand included)."""
    known = _commands()
    shown: list[tuple[str, ...]] = []
    text = _text()
    for block in _blocks(text, "bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True) if "freshloop " in line else []
            for i, w in enumerate(words):
                if w.endswith("freshloop") and i + 1 < len(words):
                    shown.append(tuple(words[i + 1:i + 3]))
    shown += [tuple(m.split()) for m in re.findall(r"`freshloop ([a-z]+(?: [a-z]+)?)", text)]
    assert len(shown) >= 25
    groups = {n[0] for n in known if len(n) == 2}  # remote, quarantine: their subcommand must exist too
    unknown = {s for s in shown if (s if s[0] in groups and len(s) == 2 else s[:1]) not in known}
    assert unknown == set(), unknown


@pytest.mark.slow
def test_every_test_file_and_selection_cited_exists() -> None:
    text = _text()
    files = set(re.findall(r"tests/(test_[a-z_0-9]+\.py)", text))
    assert len(files) >= 10 and [f for f in files if not (ROOT / "tests" / f).exists()] == []
    selections = set(re.findall(r'`pytest -k "?([^`"]+)"?`', text))
    assert len(selections) >= 3
    for expr in selections:
        res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              "-k", expr, str(ROOT / "tests")], capture_output=True, text=True, timeout=300,
                             cwd=ROOT)
        selected = sum(int(n) for n in re.findall(r"^tests/\S+: (\d+)$", res.stdout, flags=re.M))
        assert res.returncode == 0 and selected > 0, (expr, res.stdout[-500:])


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path: Path) -> None:
    (example,) = _blocks((ROOT / "README.md").read_text(), "python")
    (tmp_path / "rainfall.yaml").write_text((ROOT / "examples" / "rainfall.yaml").read_text())
    code = example.replace("examples/rainfall.yaml", "rainfall.yaml")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    first, second = res.stdout.splitlines()[:2]
    assert first == "bootstrap: no champion yet; 730 labeled rows → serving version 1"
    assert second.startswith("[") and len(second.strip("[]").split()) == 5
    assert (tmp_path / ".freshloop").is_dir()
