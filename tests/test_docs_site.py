"""The documentation site cannot rot: it builds with ``mkdocs build --strict`` (a broken link, a
missing anchor or a page outside the navigation fails), every command's help ends with the page
it belongs to, the README stays short with its two set-up commands, and the reference pages name
what the code requires."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
from click.testing import CliRunner

from fedtiny.cli import main
from fedtiny.docs_pages import PAGES, docs_line, page_for

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_mkdocs_build_strict(tmp_path):
    # run from an empty folder, so that `fedtiny` is the installed package (mkdocs-click imports it)
    # and not the checkout's top-level folder of the same name
    r = subprocess.run([sys.executable, "-c", "from mkdocs.__main__ import cli; cli()", "build", "--strict",
                        "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    hint = "\n(a page under docs/ must be in mkdocs.yml's nav; links and #anchors must resolve)"
    assert r.returncode == 0, out + hint
    assert "WARNING" not in out, out + hint
    commands = (tmp_path / "site" / "reference" / "commands" / "index.html").read_text()
    for name in main.list_commands(None):                 # the generated reference has every command
        assert f"fedtiny {name}" in commands, name
    protocol = (tmp_path / "site" / "reference" / "protocol" / "index.html").read_text()
    assert "@ready" in protocol                            # firmware/PROTOCOL.md, included


def _walk(cmd: click.Command, path: list[str], ctx: click.Context):
    """Every command under ``cmd`` as (path words, command), ``cmd`` first."""
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            yield from _walk(sub, path + [name], click.Context(sub, parent=ctx, info_name=name))


def _nav_pages() -> set[str]:
    return set(re.findall(r":\s*([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE))


def test_every_command_help_ends_with_its_docs_page():
    nav = _nav_pages()
    problems = []
    for path, cmd in _walk(main, [], click.Context(main, info_name="fedtiny")):
        where = " ".join(["fedtiny", *path])
        page = page_for(" ".join(path))
        if page is None:
            problems.append(f"'{where}' has no docs page: add \"{' '.join(path)}\": \"SECTION/PAGE.md\" to PAGES in "
                            f"fedtiny/docs_pages.py (a page under docs/ that is in mkdocs.yml's nav)")
            continue
        if not (DOCS / page).is_file():
            problems.append(f"'{where}': its page docs/{page} does not exist (PAGES in fedtiny/docs_pages.py)")
        elif page not in nav:
            problems.append(f"'{where}': its page {page} is not in mkdocs.yml's nav")
        r = CliRunner().invoke(main, [*path, "--help"])
        lines = [ln.strip() for ln in r.output.splitlines() if ln.strip()]
        if r.exit_code != 0 or not lines or lines[-1] != docs_line(page):
            problems.append(f"'{where} --help' does not end with '{docs_line(page)}' (last line: "
                            f"{lines[-1] if lines else None!r})")
    assert not problems, "\n".join(problems)
    assert all((DOCS / p).is_file() for p in PAGES.values())


def test_a_command_without_a_page_is_named_with_what_to_add():
    assert page_for("data check") == PAGES["data"]          # a subcommand belongs to its group's page
    assert page_for("no-such-command") is None               # named by the walk above, with what to add
    assert page_for("") == PAGES[""]


def test_readme_is_short_and_keeps_its_two_set_up_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    demo = 'git clone REPO fedtiny && cd fedtiny && pip install -e . && fedtiny demo'
    tests = 'git clone REPO fedtiny && cd fedtiny && pip install -e ".[test]" && python -m pytest -q'
    assert f"\n    {demo}\n" in text and f"\n    {tests}\n" in text
    ci = (ROOT / ".ci" / "run").read_text()                 # CI runs the same install and test command
    assert 'pip install -q -e ".[test]" && python3 -m pytest -q' in ci


def test_board_file_reference_names_every_required_field():
    from fedtiny.codegen import boards

    text = (DOCS / "reference" / "board-file.md").read_text()
    fields = [*boards.REQUIRED, *boards.REQUIRED_PIO, *boards.REQUIRED_BUDGET, *boards.REQUIRED_TOOLCHAIN,
              *boards.REQUIRED_QEMU]
    missing = [f for f in fields if f"`{f}`" not in text]
    assert not missing, f"docs/reference/board-file.md does not describe: {missing}"


def test_every_package_is_justified_in_the_docs():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + [r for extra in meta["optional-dependencies"].values() for r in extra]
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in reqs}
    text = (DOCS / "reference" / "dependencies.md").read_text().lower()
    missing = sorted(n for n in names if f"`{n}" not in text)
    assert not missing, f"docs/reference/dependencies.md does not justify: {missing}"


def _fedtiny_lines(text: str) -> list[str]:
    """Every ``fedtiny ...`` command line of a Markdown text's code (indented blocks, fences and
    ``$``-prompted lines), with backslash continuations joined."""
    text = re.sub(r"\\\n\s*", " ", text)
    return [m.group(1) for m in re.finditer(r"^(?:    |\t)?\s*(?:\$ )?(fedtiny [^\n#]*)", text, re.MULTILINE)]


def test_every_documented_command_and_option_exists():
    """The README's and the docs' command lines (code blocks and inline code) name commands and
    options the CLI has."""
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    bad = []
    for page in pages:
        code = "\n".join(re.findall(r"```\w*\n(.*?)```", page.read_text(), re.DOTALL))
        code += "\n" + "\n".join(ln for ln in page.read_text().splitlines() if ln.startswith(("    ", "\t")))
        code += "\n" + "\n".join(re.findall(r"`(fedtiny [^`]*)`", " ".join(page.read_text().split())))
        for line in _fedtiny_lines(code):
            words = line.replace("[", " ").replace("]", " ").split()[1:]
            cmd, ctx, path = main, click.Context(main, info_name="fedtiny"), ["fedtiny"]
            while words and isinstance(cmd, click.Group) and not words[0].startswith("-"):
                sub = cmd.get_command(ctx, words[0])
                if sub is None:
                    break
                path.append(words.pop(0))
                cmd, ctx = sub, click.Context(sub, parent=ctx, info_name=path[-1])
            known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
            for w in words:
                opt = w.split("=")[0].split("|")[0]
                if re.fullmatch(r"--[a-z][\w-]*", opt) and opt not in known:
                    bad.append(f"{page.relative_to(ROOT)}: '{' '.join(path)}' has no option {opt}: {line.strip()[:90]}")
    assert not bad, "\n".join(bad)
