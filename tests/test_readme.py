"""Every command and code block of the README runs as pasted against a live `textq up`.

The README is read in order, as a new user reads it:

- a ```sh block runs in bash, one command at a time (a command goes on over lines ending in a
  backslash or inside an open quote). Where its lines start with `$ `, those are the commands
  and the lines under each are its output as the README shows it; the real output must have
  that shape (the same JSON field names, the same HTTP status, the same leading words).
  Variables a command sets (`JOB=$(...)`) are there for the next, as in one terminal;
- a ```python block runs with this interpreter; ```json blocks are outputs and must not stand
  alone;
- a block that cannot run here says why just before it, in an HTML comment the page does not
  show: `<!-- readme-test: skip (needs GPUs) -->`, or `<!-- readme-test: background (...;
  must print "X") -->` for a server started in another terminal (it runs until the end, by
  which time it must have printed X). Any other block runs, so a new block is tested unless it
  says why not.

Every command must exit 0, and every HTTP answer curl gets must be below 400 unless the README
shows that very error. Commands in skipped blocks and the inline commands of the prose
(`textq ...`, `make ...`, `GET /v1/...`, `TEXTQ_...=...`, `python -m ...`) are checked
against what exists: the command's words and options, the Makefile's targets, the API's
routes, the settings, the modules.

Placeholders are few: the README speaks of `localhost:8000`, a receiver on port 8080 and a
bucket on 8081, and the test serves on free ports instead (SUBSTITUTIONS). A background server
the next commands call at once says so: `ready when it prints "Y"` in its marker.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Match

from tests.e2e.processes import Process, free_port, start, wait_until_ready

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
COMMAND_TIMEOUT_S = 180
BACKGROUND_WAIT_S = 60
# How many blocks say they cannot run here, and why: a new skip is a decision, made here too.
SKIPPED = {
    "installs and starts the server: the README's test starts its own": 1,
    "example paths": 1,
    "output sample": 2,
    "needs Postgres, Redis and GPUs; the test checks each textq command's words and options": 1,
    "needs a CUDA machine": 1,
}
STATUS_MARK = "readme-test-http-status:"
MARKER = re.compile(r"<!-- readme-test: (skip|background) \((.*)\) -->")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    language: str
    text: str
    line: int
    marker: str | None = None  # skip, background
    reason: str = ""

    def where(self) -> str:
        return f"README.md:{self.line} ({self.language or 'plain'} block)"


@dataclass
class Command:
    text: str
    shown: str = ""  # the output the README shows under it, if any


@dataclass
class Shell:
    """One terminal's state across commands: its variables and working directory."""

    env: dict[str, str]
    cwd: Path
    substitutions: dict[str, str]
    background: list[tuple[Process, str, Block]] = field(default_factory=list)
    seconds: list[tuple[float, str]] = field(default_factory=list)  # each command's time


def readme_blocks(text: str) -> list[Block]:
    """Return the fenced blocks of a Markdown text, with the readme-test marker before each."""
    blocks: list[Block] = []
    lines = text.splitlines()
    marker: tuple[str, str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if found := MARKER.search(line):
            marker = (found.group(1), found.group(2))
        elif opening := FENCE.match(line):
            end = index + 1
            while not lines[end].startswith("```"):
                end += 1
            body = "\n".join(lines[index + 1 : end]) + "\n"
            kind, reason = marker or (None, "")
            blocks.append(Block(opening.group(1), body, index + 1, kind, reason))
            marker = None
            index = end
        elif line.strip() and not line.startswith("<!--"):
            marker = None  # a marker stands right before its block
        index += 1
    return blocks


def commands_of(block: Block) -> list[Command]:
    """Split a shell block into its commands, each with the output shown under it."""
    lines = block.text.splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    commands: list[Command] = []
    pending = ""
    for line in lines:
        if prompted and not line.startswith("$ ") and not pending:
            if commands:
                commands[-1].shown += line + "\n"
            continue
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += (line[2:] if prompted and not pending else line) + "\n"
        if not _complete(pending):
            continue
        commands.append(Command(pending.rstrip("\n")))
        pending = ""
    assert not pending, f"{block.where()}: a command never ends: {pending!r}"
    return commands


def _complete(command: str) -> bool:
    if command.rstrip("\n").endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote: the command goes on over the next line
        return False
    return True


def substitute(text: str, substitutions: dict[str, str]) -> str:
    for placeholder, value in substitutions.items():
        text = re.sub(placeholder, value, text)
    return text


def run_shell(command: Command, shell: Shell, block: Block) -> None:
    """Run one command in bash as a terminal would, and check what it printed."""
    env_file = shell.cwd / ".readme-test-env"
    # curl reports each HTTP status on stderr; what it sends and prints is unchanged.
    script = (
        "set -a\n"
        f"curl() {{ command curl -sS -w '%{{stderr}}{STATUS_MARK}%{{http_code}}\\n' \"$@\"; }}\n"
        f"{substitute(command.text, shell.substitutions)}\n"
        "status=$?\n"
        f"env -0 > {shlex.quote(str(env_file))}\n"
        "exit $status\n"
    )
    started = time.monotonic()
    ran = subprocess.run(
        ["bash", "-c", script],
        cwd=shell.cwd,
        env=shell.env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    shell.seconds.append((time.monotonic() - started, command.text.splitlines()[0]))
    statuses = [int(code) for code in re.findall(rf"{STATUS_MARK}(\d+)", ran.stderr)]
    stderr = re.sub(rf"{STATUS_MARK}\d+\n", "", ran.stderr)
    said = f"{block.where()}: `{command.text}`\n--- stdout\n{ran.stdout}\n--- stderr\n{stderr}"
    assert ran.returncode == 0, f"exit status {ran.returncode}\n{said}"
    assert "Traceback" not in stderr and not stderr.startswith("textq:"), said
    expected = _shown_status(command.shown)
    if expected is not None:
        assert statuses and statuses[-1] == expected, f"HTTP {statuses}, shown {expected}\n{said}"
    else:
        assert all(200 <= code < 400 for code in statuses), f"HTTP {statuses}\n{said}"
        assert '"/problems/' not in ran.stdout, said
    if command.shown:
        _check_shape(command.shown, ran.stdout, said)
    shell.env = {
        name: value
        for name, value in (
            item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item
        )
        if name not in ("_", "SHLVL", "PWD", "OLDPWD", "status")
    }


def _shown_status(shown: str) -> int | None:
    if found := re.match(r"HTTP/[\d.]+ (\d{3})", shown):
        return int(found.group(1))
    if '"/problems/' in shown and (found := re.search(r'"status":\s*(\d{3})', shown)):
        return int(found.group(1))
    return None


def json_keys(text: str) -> set[str]:
    """Return the field names (lowercase words) a JSON text, or a sample of one, uses."""
    return set(re.findall(r'"([a-z_]+)"\s*:', text))


def _check_shape(shown: str, actual: str, said: str) -> None:
    if keys := json_keys(shown):
        missing = keys - json_keys(actual)
        assert not missing, f"fields the README shows are missing: {sorted(missing)}\n{said}"
        return
    if shown.startswith("HTTP/"):
        return
    # Text: each line shown starts with the same word as the line printed there.
    printed = [line for line in actual.splitlines() if line.strip()]
    for number, line in enumerate(line for line in shown.splitlines() if line.strip()):
        word = re.match(r"[A-Za-z]+", line)
        assert number < len(printed), f"the README shows more lines\n{said}"
        if word:
            assert printed[number].startswith(word.group(0)), f"line {number + 1}\n{said}"


def run_python(block: Block, shell: Shell, number: int) -> None:
    script = shell.cwd / f"readme_block_{number}.py"
    script.write_text(substitute(block.text, shell.substitutions))
    if block.marker == "background":
        expected = re.search(r'must print "([^"]+)"', block.reason)
        assert expected, f"{block.where()}: a background block says what it must print"
        process = start_python(script, shell)
        shell.background.append((process, expected.group(1), block))
        # A server the next commands call at once says when it listens.
        if ready := re.search(r'ready when it prints "([^"]+)"', block.reason):
            deadline = time.monotonic() + BACKGROUND_WAIT_S
            while ready.group(1) not in process.output():
                assert process.popen.poll() is None, f"{block.where()}\n{process.output()}"
                assert time.monotonic() < deadline, f"{block.where()} never ready"
                time.sleep(0.05)
        return
    ran = subprocess.run(
        [sys.executable, str(script)],
        cwd=shell.cwd,
        env=shell.env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    said = f"{block.where()}\n--- stdout\n{ran.stdout}\n--- stderr\n{ran.stderr}"
    assert ran.returncode == 0, said
    assert "Traceback" not in ran.stderr, said


def start_python(script: Path, shell: Shell) -> Process:
    log = shell.cwd / f"{script.stem}.log"
    with log.open("wb") as handle:
        popen = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=shell.cwd,
            env=shell.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    return Process(name=script.stem, popen=popen, log=log)


def check_textq_command(command: str, where: str) -> None:
    """Fail unless `command` names an existing textq command with options it has."""
    from typer.main import get_command

    from textq.cli import app

    words = shlex.split(command, comments=True)
    assert words[0] == "textq", where
    # Typer may bring a click of its own: groups are what have subcommands.
    current: Any = get_command(app)
    for word in words[1:]:
        if word in getattr(current, "commands", {}):
            current = current.commands[word]
            continue
        break
    assert not hasattr(current, "commands"), f"{where}: `{command}` names no command"
    options = {name for param in current.params for name in param.opts + param.secondary_opts}
    for word in words[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in options | {"--help"}, f"{where}: `{command}`: {word}"


def test_every_block_of_the_readme_runs_as_pasted(tmp_path, model_dirs):
    blocks = readme_blocks(README.read_text())
    skipped: dict[str, int] = {}
    for block in blocks:
        if block.marker == "skip":
            skipped[block.reason] = skipped.get(block.reason, 0) + 1
        assert block.language != "json" or block.marker, f"{block.where()}: show it as output"
    assert skipped == SKIPPED
    for tool in ("bash", "curl", "jq"):
        assert shutil.which(tool), f"the README's examples use {tool}: install it to run them"

    port, receiver_port = free_port(), free_port()
    server_env = {
        "TEXTQ_DATA_DIR": str(tmp_path / "textq-data"),
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
        "TEXTQ_WORKER_METRICS_PORT": str(free_port()),
        "TEXTQ_WEBHOOKS_METRICS_PORT": str(free_port()),
        "TEXTQ_LOG_FORMAT": "text",
    }
    up = start("up", ["up", "--port", str(port)], server_env, tmp_path / "logs", own_group=True)
    work = tmp_path / "work"
    work.mkdir()
    shell = Shell(
        env={
            **os.environ,
            **server_env,
            # `textq` as `make run` installs it, and the server the README's commands reach.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "TEXTQ_URL": f"http://127.0.0.1:{port}",
        },
        cwd=work,
        substitutions={
            r"\blocalhost:8000\b": f"127.0.0.1:{port}",
            r"\b127\.0\.0\.1:8000\b": f"127.0.0.1:{port}",
            r"\b8080\b": str(receiver_port),
            r"\b8081\b": str(free_port()),
        },
    )
    started = time.monotonic()
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", [up], timeout_s=120)
        for number, block in enumerate(blocks):
            if block.marker == "skip":
                if block.language == "sh":
                    for command in commands_of(block):
                        if command.text.startswith("textq "):
                            check_textq_command(command.text, block.where())
                continue
            if block.language == "sh":
                for command in commands_of(block):
                    run_shell(command, shell, block)
            elif block.language == "python":
                run_python(block, shell, number)
            else:
                pytest.fail(f"{block.where()}: no way to run it; mark it if it cannot run")
        for process, expected, block in shell.background:
            deadline = time.monotonic() + BACKGROUND_WAIT_S
            while expected not in process.output() and time.monotonic() < deadline:
                assert process.popen.poll() is None, f"{block.where()}\n{process.output()}"
                time.sleep(0.2)
            assert expected in process.output(), f"{block.where()}\n{process.output()}"
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- textq up\n{up.output()[-6000:]}") from None
    finally:
        for process, _, _ in shell.background:
            process.stop()
        if up.popen.poll() is None:
            os.killpg(up.popen.pid, signal.SIGINT)
        up.stop(sig=None)
    print(f"README: {len(blocks)} blocks in {time.monotonic() - started:.1f} s; slowest:")
    for seconds, text in sorted(shell.seconds, reverse=True)[:8]:
        print(f"  {seconds:5.1f} s  {text}")


INLINE = re.compile(r"`([^`\n]+)`")


def inline_commands() -> list[str]:
    prose = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    return INLINE.findall(prose)


def test_the_inline_commands_of_the_readme_exist():
    from api.app import create_app
    from shared.config import Settings

    app = create_app(Settings())

    def routed(method: str, path: str) -> bool:
        scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
        return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)

    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    checked = 0
    for span in inline_commands():
        where = f"README.md: `{span}`"
        if re.match(r"textq [a-z]", span):
            check_textq_command(span, where)
        elif found := re.fullmatch(r"make ([\w-]+)", span):
            assert found.group(1) in targets, where
        elif found := re.fullmatch(r"(GET|POST|DELETE|PUT|PATCH) (/\S*)", span):
            path = re.sub(r"\{[^}]+\}|<[^>]+>", "x", found.group(2))
            assert routed(found.group(1), path), where
        elif found := re.fullmatch(r"python -m ([\w.]+)(?: .*)?", span):
            module = ROOT / found.group(1).replace(".", "/")
            assert module.with_suffix(".py").is_file() or module.is_dir(), where
        elif found := re.fullmatch(r"TEXTQ_(\w+)=\S*", span):
            assert found.group(1).lower() in Settings.model_fields, where
        else:
            continue
        checked += 1
    assert checked >= 40, f"only {checked} inline commands found: is the pattern still right?"


NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def test_make_demo_models_prints_the_export_lines_the_readme_names(tmp_path, monkeypatch, capsys):
    from tests import model_factory

    recipe = re.search(r"^demo-models:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe and "-m tests.model_factory" in recipe.group(1), "what make demo-models runs"
    monkeypatch.setattr(sys, "argv", ["model_factory", str(tmp_path)])
    model_factory.main()
    exported = re.findall(r"^export (TEXTQ_\w+)=", capsys.readouterr().out, re.M)
    paragraph = next(p for p in README.read_text().split("\n\n") if "`make demo-models`" in p)
    claim = re.search(r"prints\s+(?:the\s+)?(\w+)\s+`export`\s+lines", paragraph)
    assert claim, f"the README says how many lines make demo-models prints:\n{paragraph}"
    assert NUMBERS.get(claim.group(1)) == len(exported), f"{exported}\n{paragraph}"
    assert sorted(re.findall(r"`(TEXTQ_\w+)`", paragraph)) == sorted(exported), paragraph


def test_the_readme_says_how_to_read_a_command_shown_with_its_output_before_the_first():
    text = README.read_text()
    first = next(
        block
        for block in readme_blocks(text)
        if block.language == "sh" and any(line.startswith("$ ") for line in block.text.splitlines())
    )
    before = "\n".join(text.splitlines()[: first.line])
    prose = re.sub(r"```.*?```", "", before, flags=re.S)
    # Pasted whole, such a block runs its output as commands: the reader must know to type
    # only what follows each `$ `.
    explained = [p for p in prose.split("\n\n") if "`$ `" in p]
    assert explained, f"nothing before {first.where()} says how to read a line starting with `$ `"
    assert re.search(r"\boutput\b|\bprints\b", explained[0]), explained[0]
