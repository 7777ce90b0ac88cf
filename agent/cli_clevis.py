"""`strongroom-agent clevis ...`: the commands behind the Clevis pin `strongroom` (``agent/clevis.py``).

``clevis encrypt`` and ``clevis decrypt`` are what the installed pins `clevis-encrypt-strongroom`
and `clevis-decrypt-strongroom` exec; they follow Debian Clevis's pin conventions: ``--summary``
prints the summary (encrypt, exit 0) or exits 2 (decrypt), a terminal on stdin prints the usage
and exits 2, a bad config or JWE exits 1 with a message in Clevis's style. A key denied by policy
exits 3, as every agent command does. ``clevis install`` writes both pins into a directory.

Security invariant: the plaintext and the JWE travel on stdin and stdout only, never in argv, a
file or a message.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from agent import clevis
from agent.client import ReleasedKey
from agent.identity import AgentIdentity

EXIT_USAGE = 2
DEFAULT_PREFIX = "/usr/local"

Release = Callable[[argparse.Namespace, Mapping[str, str], str, int | None], Awaitable[ReleasedKey]]
StateDir = Callable[[argparse.Namespace, Mapping[str, str]], Path]


def add_clevis_commands(
    commands: argparse._SubParsersAction, facts_options: argparse.ArgumentParser, *, release: Release,
    state_dir: StateDir,
) -> None:
    """Register `clevis encrypt|decrypt|install`; `release` asks for a key under policy as the agent does."""
    group = commands.add_parser("clevis", help="the Clevis pin 'strongroom' (LUKS unlock at boot)")
    actions = group.add_subparsers(dest="clevis_command", metavar="ACTION", required=True)

    encrypt = actions.add_parser("encrypt", parents=[facts_options],
                                 help="clevis-encrypt-strongroom: PLAINTEXT on stdin, compact JWE on stdout")
    encrypt.add_argument("config", metavar="CONFIG", nargs="?", help="pin config JSON: url, key_id[, key_version, home]")
    encrypt.add_argument("-y", dest="yes", action="store_true", help="accepted for 'clevis luks bind -y'")
    encrypt.add_argument("--summary", action="store_true", help="print the pin's one-line summary")
    encrypt.set_defaults(handler=_encrypt, release=release, state_dir=state_dir)

    decrypt = actions.add_parser("decrypt", parents=[facts_options],
                                 help="clevis-decrypt-strongroom: compact JWE on stdin, PLAINTEXT on stdout")
    decrypt.add_argument("--summary", action="store_true", help=argparse.SUPPRESS)
    decrypt.set_defaults(handler=_decrypt, release=release, state_dir=state_dir)

    install = actions.add_parser("install", help="write clevis-encrypt-strongroom and clevis-decrypt-strongroom")
    where = install.add_mutually_exclusive_group()
    where.add_argument("--prefix", metavar="DIR", help=f"install into DIR/bin (default {DEFAULT_PREFIX})")
    where.add_argument("--bin-dir", metavar="DIR", help="install into DIR itself")
    install.add_argument("--agent", metavar="PATH",
                         help="the agent the pins run (default: this strongroom-agent, by absolute path)")
    install.set_defaults(handler=_install)


async def _encrypt(args: argparse.Namespace, environ: Mapping[str, str]) -> int | None:
    if args.summary:
        print(clevis.SUMMARY)
        return None
    if sys.stdin.isatty():
        print(clevis.ENCRYPT_USAGE, file=sys.stderr)
        return EXIT_USAGE
    config = clevis.parse_config(args.config or "")
    args.home = args.home or config.home
    identity = AgentIdentity.load(args.state_dir(args, environ))
    if not clevis.same_gateway(config.url, identity.gateway_url):
        raise clevis.ClevisError(
            f"The 'url' property is {config.url} but this agent is enrolled with {identity.gateway_url}!")
    plaintext = sys.stdin.buffer.read()
    released = await args.release(args, environ, config.key_id, config.key_version)
    token = clevis.seal(plaintext, clevis.new_binding(config, key_version=released.key_version), released.key)
    sys.stdout.write(token)
    sys.stdout.flush()
    return None


async def _decrypt(args: argparse.Namespace, environ: Mapping[str, str]) -> int | None:
    if args.summary:
        return EXIT_USAGE  # as Clevis's decrypt pins do, so `clevis` lists only the encrypt side
    if sys.stdin.isatty():
        print(clevis.DECRYPT_USAGE, file=sys.stderr)
        return EXIT_USAGE
    raw = sys.stdin.buffer.read(clevis.MAX_JWE_CHARS + 1)
    if not raw.isascii():
        raise clevis.ClevisError("JWE is not in compact form!")
    token = raw.decode("ascii")
    binding = clevis.read_binding(token)
    # An explicit --home wins; else the directory bound at encryption; else $STRONGROOM_AGENT_HOME.
    args.home = args.home or binding.home
    released = await args.release(args, environ, binding.key_id, binding.key_version)
    plaintext = clevis.unseal(token, binding, released.key)
    sys.stdout.buffer.write(plaintext)
    sys.stdout.buffer.flush()
    return None


async def _install(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    bin_dir = Path(args.bin_dir) if args.bin_dir else Path(args.prefix or DEFAULT_PREFIX) / "bin"
    agent = args.agent or _this_agent()
    written = clevis.install_pins(bin_dir, agent)
    print(json.dumps({"agent": agent, "installed": [str(path) for path in written]}, sort_keys=True))


def _this_agent() -> str:
    """The running `strongroom-agent` by absolute path, so the pins work whatever PATH Clevis has."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == clevis.DEFAULT_AGENT and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    return shutil.which(clevis.DEFAULT_AGENT) or clevis.DEFAULT_AGENT
