"""The README's shell commands as tests run them: extraction and a runner (convention in test_readme.py).

A suite's commands run in order, exactly as written, in one bash process started in a fresh
directory with a fresh HOME; `strongroom dev ...` (which runs until stopped) is started in the
background there and waited for (its `Next:` line) before the next command runs.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!--\s*readme-test:\s*([a-z0-9-]+)\s*-->$")
FENCE = re.compile(r"^```(\w*)\s*$")
SERVER = re.compile(r"^strongroom dev(\s|$)")  # runs until stopped: started in the background
READY_SECONDS = 180  # the demo's preparation hashes a dozen passwords with Argon2id


@dataclass
class Command:
    text: str  # exactly as written, continuation lines included
    line: int  # in the README
    expected: list[str] = field(default_factory=list)  # output lines shown after it

    @property
    def is_server(self) -> bool:
        return bool(SERVER.match(self.text))


@dataclass
class Block:
    language: str
    suite: str | None  # from the `<!-- readme-test: SUITE -->` line just above the fence
    line: int
    commands: list[Command]


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README, with its suite and (in console blocks) its commands."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(above)
        start, i = i, i + 1
        body: list[tuple[int, str]] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        found.append(Block(fence.group(1), marker.group(1) if marker else None, start + 1, _commands(body)))
    return found


def _commands(body: list[tuple[int, str]]) -> list[Command]:
    commands: list[Command] = []
    for number, line in body:
        if line.startswith("$ "):
            commands.append(Command(line[2:], number))
        elif line.startswith("> ") or line == ">":
            if not commands:
                raise ValueError(f"README line {number}: a continuation line before any command")
            commands[-1].text += "\n" + line[2:]
        elif line.strip() and commands:
            commands[-1].expected.append(line.strip())
    return commands


def suite(name: str) -> list[Command]:
    """The commands of every console block marked for this suite, in README order."""
    return [c for b in blocks() if b.language == "console" and b.suite == name for c in b.commands]


@dataclass
class Outcome:
    command: Command
    code: int
    output: str


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """What a user's fresh shell has: this installation's commands on the PATH, nothing of ours."""
    # Root's PATH on Debian (cryptsetup lives in /usr/sbin), this installation's commands first.
    system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env = {"HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{system}",
           "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT), **extra}
    return env


def run(commands: list[Command], *, cwd: Path, env: dict[str, str]) -> list[Outcome]:
    """Runs the commands in order in one bash process; stops at the first that fails."""
    work = cwd / ".readme-run"
    work.mkdir()
    script = ["set -u"]
    for n, command in enumerate(commands):
        out, rc = work / f"{n}.out", work / f"{n}.rc"
        if command.is_server:
            log, pid = work / "server.log", work / "server.pid"
            script += [f"{command.text} > {log} 2>&1 < /dev/null &", f"echo $! > {pid}",
                       f"for _ in $(seq {READY_SECONDS * 2}); do grep -q '^Next:' {log} && break; "
                       f"kill -0 $(cat {pid}) 2>/dev/null || break; sleep 0.5; done",
                       f"grep -q '^Next:' {log}; echo $? > {rc}; cp {log} {out}"]
        else:
            script += ["SECONDS=0; {", command.text, f"}} > {out} 2>&1 < /dev/null",
                       f"echo $? > {rc}; echo $SECONDS > {work / f'{n}.seconds'}"]
        script.append(f'[ "$(cat {rc})" = 0 ] || exit 1')
    (work / "script.sh").write_text("\n".join(script) + "\n", encoding="utf-8")
    try:
        subprocess.run(["bash", str(work / "script.sh")], cwd=cwd, env=env, timeout=900, check=False)
    finally:
        stop_server(work)
    outcomes = []
    for n, command in enumerate(commands):
        if not (work / f"{n}.rc").exists():
            break
        outcomes.append(Outcome(command, int((work / f"{n}.rc").read_text().strip() or 1),
                                (work / f"{n}.out").read_text(encoding="utf-8", errors="replace")))
    return outcomes


def stop_server(work: Path) -> None:
    """Stops the `strongroom dev` a suite started (it stops its store on SIGTERM)."""
    pid_file = work / "server.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def describe(outcome: Outcome) -> str:
    return (f"README line {outcome.command.line}: {shlex.quote(outcome.command.text)} exited {outcome.code}\n"
            f"{outcome.output[-3000:]}")
