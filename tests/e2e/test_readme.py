"""The README's commands, run exactly as written against a real `strongroom dev`.

Convention for the README (every shell command a reader is shown must be run by a test):
- Commands live only in ```console blocks (no ```bash/```sh blocks). A command line starts with
  `$ `; a line starting with `> ` continues the command above it (heredoc bodies, long lines);
  any other non-blank line is output the command must print (checked as a substring).
- The line just above each ```console fence is `<!-- readme-test: SUITE -->`. A suite is a group
  of blocks run in README order, in one bash process, in a fresh directory with a fresh HOME and
  only this installation on the PATH; each command must exit 0. Set variables and `cd`s carry
  over within a suite, so a suite may rely on the environment its own blocks tell the user to set.
- `strongroom dev ...` runs until stopped: the runner starts it exactly as written in the
  background (with STRONGROOM_DEV_PORT set to a free port, so tests never collide on 8400) and
  waits for its `Next:` line before the next command.
- SUITES below names, for each suite, the test module that runs it. A new README section (volumes,
  clevis, files, console, the agent service) either joins an existing suite or gets its own: add
  its name here with its test module, which runs it with `readme.run(readme.suite("NAME"), ...)`
  (see `test_demo_walkthrough`). `test_every_readme_command_is_assigned_to_a_test` fails for a
  console block without a registered suite, or a module that does not name its suite.
- The `install` suite cannot run inside the tests (it installs the project and runs the whole
  suite): `test_install_commands_are_what_ci_runs` checks it against `.ci/run` instead, and the
  `strongroom dev --demo` that ends its first command is the server the `demo` suite starts.
"""

from __future__ import annotations

import json
import stat

from shared.embedded_mongo import free_port

from . import readme

# Suite name -> the test module (repository path) that runs its commands.
SUITES = {
    "install": "tests/e2e/test_readme.py",
    "demo": "tests/e2e/test_readme.py",
    "ceremony": "tests/e2e/test_readme.py",
}


def test_every_readme_command_is_assigned_to_a_test():
    blocks = readme.blocks()
    shell = [b for b in blocks if b.language in ("bash", "sh", "shell", "zsh")]
    assert not shell, f"shell commands outside ```console blocks at README lines {[b.line for b in shell]}"
    console = [b for b in blocks if b.language == "console"]
    assert console and all(b.commands for b in console)
    unassigned = [b.line for b in console if b.suite not in SUITES]
    assert not unassigned, f"console blocks without a registered readme-test suite at README lines {unassigned}"
    for name, module in SUITES.items():
        assert f'"{name}"' in (readme.ROOT / module).read_text(encoding="utf-8"), f"{module} does not run suite {name}"
    # Nothing in a console block escapes the extraction: every line is a command, a continuation or output.
    assert sum(len(b.commands) for b in console) == sum(len(readme.suite(s)) for s in SUITES)


def test_install_commands_are_what_ci_runs():
    """The first command installs as CI does and starts the demo; the second runs CI's test command."""
    install, tests = readme.suite("install")
    ci = (readme.ROOT / ".ci" / "run").read_text(encoding="utf-8")
    *setup, server = install.text.split(" && ")
    assert setup[0] == "python3 -m venv .venv" and setup[0] in ci
    assert setup[1] == ". .venv/bin/activate" and setup[1] in ci
    assert setup[2] == "pip install -e '.[embedded,test]'" and "pip install --quiet -e '.[embedded,test]'" in ci
    assert server == "strongroom dev --demo"
    activate, run_tests = tests.text.split(" && ")
    assert activate == ". .venv/bin/activate"
    assert run_tests == "bash scripts/test" and ci.rstrip().splitlines()[-1] == run_tests


def _run_suite(name: str, tmp_path, commands: list[readme.Command]) -> list[readme.Outcome]:
    home = tmp_path / "home"
    home.mkdir()
    env = readme.clean_env(home, STRONGROOM_DEV_PORT=str(free_port()))
    outcomes = readme.run(commands, cwd=tmp_path, env=env)
    for outcome in outcomes:
        assert outcome.code == 0, readme.describe(outcome)
        for line in outcome.command.expected:
            assert line in outcome.output, f"expected {line!r}:\n{readme.describe(outcome)}"
    assert len(outcomes) == len(commands), f"suite {name} stopped early"
    return outcomes


def test_demo_walkthrough(tmp_path):
    """`strongroom dev --demo` (the tail of the first install command), then the demo's blocks."""
    server = readme.Command(readme.suite("install")[0].text.split(" && ")[-1], readme.suite("install")[0].line)
    commands = [server, *readme.suite("demo")]
    outcomes = _run_suite("demo", tmp_path, commands)
    banner = outcomes[0].output
    assert "DEMO MODE" in banner and "credentials.json" in banner
    demo = tmp_path / "dev-data" / "demo"
    for secret in (demo / "credentials.json", tmp_path / "dev-data" / "demo.env", demo / "totp" / "carol"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    people = json.loads((demo / "credentials.json").read_text())["people"]
    assert {p["username"] for p in people} == {"ann", "dave", "carol", "sam", "paula", "otto"}
    # The first released key took these commands after installing and starting (report them).
    first_key = next(i for i, c in enumerate(commands) if "request-key" in c.text)
    print(f"first released key: command {first_key + 1} of the README, counting install+start as one")


def test_full_ceremony(tmp_path):
    _run_suite("ceremony", tmp_path, readme.suite("ceremony"))
    # Each login kept its session in a 0600 profile file, never printed it.
    profiles = sorted((tmp_path / "home" / ".config" / "strongroom" / "profiles").glob("*.json"))
    assert [p.stem for p in profiles] == ["ann", "carol", "dave", "root", "sam"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in profiles)
