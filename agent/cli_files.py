"""`strongroom-agent encrypt`, `decrypt` and `rotate`: files, directory trees and streams.

IN or OUT `-` means stdin or stdout. A directory IN is copied to a new directory OUT with the same
relative paths and modes, every file encrypted (or decrypted); symlinks and other special files are
never followed or read, and refuse the tree unless `--skip-special` says to leave them out. OUT
appears only once every file is written (decrypted: authenticated). `rotate` rewrites files under
the latest version of their key, crash-safe (see agent/rotation.py).

The key release (`release`, from agent/cli.py) is the only network step; everything that can be
checked locally is checked first, so a typo costs no release and no audit record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from agent.client import KeyNotActive, KeyNotFound, ReleasedKey
from agent.fileformat import (
    FileFormatError,
    decrypt_stream,
    encrypt_stream,
    open_source,
    read_header,
)
from agent.filetree import Scan, TreeError, scan, transform_tree
from agent.rotation import NOT_ENCRYPTED, find_encrypted, rotate
from shared.argtypes import positive_int as _positive_int

Release = Callable[[argparse.Namespace, Mapping[str, str], str, int | None], Awaitable[ReleasedKey]]
STDIO = "-"


class FileUsageError(Exception):
    """Arguments that cannot be used together for files; exit code 2, nothing done."""


def add_file_commands(commands: Any, parents: list[argparse.ArgumentParser], release: Release,
                 write_atomically: Callable[[Path, Callable[[BinaryIO], None]], None]) -> None:
    """Register encrypt, decrypt and rotate on the agent's subcommand parser."""

    def bind(handler):
        async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
            await handler(args, environ, release=release, write_atomically=write_atomically)
        return run

    skip = {"action": "store_true",
            "help": "leave symlinks and other non-regular files out of a directory (default: refuse the tree)"}
    encrypt = commands.add_parser(
        "encrypt", parents=parents,
        help="encrypt a file, a directory tree or stdin (-) with a released data key; OUT - is stdout",
    )
    encrypt.add_argument("--key-id", metavar="K", required=True)
    encrypt.add_argument("--key-version", metavar="N", type=_positive_int, help="version to use (default: latest)")
    encrypt.add_argument("--skip-special", **skip)
    encrypt.add_argument("input", metavar="IN", help="a file, a directory, or - for stdin")
    encrypt.add_argument("output", metavar="OUT", help="the file or (new) directory to write, or - for stdout")
    encrypt.set_defaults(handler=bind(_encrypt))

    decrypt = commands.add_parser(
        "decrypt", parents=parents,
        help="decrypt a file or directory tree; OUT appears only if everything authenticates (- streams to stdout)",
    )
    decrypt.add_argument("--skip-special", **skip)
    decrypt.add_argument("input", metavar="IN", help="an encrypted file, a directory of them, or - for stdin")
    decrypt.add_argument("output", metavar="OUT", help="the file or (new) directory to write, or - for stdout")
    decrypt.set_defaults(handler=bind(_decrypt))

    rotate_cmd = commands.add_parser(
        "rotate", parents=parents,
        help="rewrite encrypted files (a file or a tree) under the latest version of their key; safe to re-run",
    )
    rotate_cmd.add_argument("path", metavar="PATH", help="an encrypted file, or a directory of them (rewritten in place)")
    rotate_cmd.set_defaults(handler=bind(_rotate))


async def _encrypt(args, environ, *, release: Release, write_atomically) -> None:
    if args.input != STDIO and await asyncio.to_thread(os.path.isdir, args.input):
        await _encrypt_tree(args, environ, release)
        return
    if args.input == STDIO:
        src = sys.stdin.buffer
    else:
        # Opened before the request, so a missing file costs no key release (and no audit record).
        src = await asyncio.to_thread(open_source, args.input)
    try:
        released = await release(args, environ, args.key_id, args.key_version)

        def write(dst: BinaryIO) -> None:
            encrypt_stream(src, dst, key=released.key, key_id=released.key_id, key_version=released.key_version)

        await asyncio.to_thread(_write_output, args.output, write, write_atomically)
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    _report({**metadata(released), "input": args.input, "output": args.output}, args.output)


async def _decrypt(args, environ, *, release: Release, write_atomically) -> None:
    if args.input != STDIO and await asyncio.to_thread(os.path.isdir, args.input):
        await _decrypt_tree(args, environ, release)
        return
    src = sys.stdin.buffer if args.input == STDIO else await asyncio.to_thread(open_source, args.input)
    try:
        try:
            header = await asyncio.to_thread(read_header, src)
        except FileFormatError as exc:
            raise FileFormatError(f"cannot decrypt {args.input}: {exc}") from None
        released = await release(args, environ, header.key_id, header.key_version)

        def write(dst: BinaryIO) -> None:
            decrypt_stream(src, dst, key=released.key, header=header)

        try:
            await asyncio.to_thread(_write_output, args.output, write, write_atomically)
        except FileFormatError as exc:
            if args.output == STDIO:
                raise FileFormatError(f"cannot decrypt {args.input}: {exc}; the output already written to stdout "
                                      "is not authentic: discard it") from None
            raise FileFormatError(f"cannot decrypt {args.input}: {exc}; {args.output} was not written") from None
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    _report({**metadata(released), "input": args.input, "output": args.output}, args.output)


def _write_output(output: str, write: Callable[[BinaryIO], None], write_atomically) -> None:
    if output == STDIO:
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        write_atomically(Path(output), write)


async def _encrypt_tree(args, environ, release: Release) -> None:
    if args.output == STDIO:
        raise FileUsageError("a directory cannot be written to stdout; give a new directory as OUT")
    plan = await asyncio.to_thread(_plan, args.input, args.skip_special)
    released = await release(args, environ, args.key_id, args.key_version)

    def seal(_rel: str, src: BinaryIO, dst: BinaryIO) -> None:
        encrypt_stream(src, dst, key=released.key, key_id=released.key_id, key_version=released.key_version)

    await asyncio.to_thread(transform_tree, args.input, args.output, plan, seal)
    _report({**metadata(released), **_tree_summary(args, plan)}, args.output)


async def _decrypt_tree(args, environ, release: Release) -> None:
    if args.output == STDIO:
        raise FileUsageError("a directory cannot be written to stdout; give a new directory as OUT")
    plan = await asyncio.to_thread(_plan, args.input, args.skip_special)
    target = await asyncio.to_thread(find_encrypted, args.input)
    if plain := [s.rel for s in target.skipped if s.reason == NOT_ENCRYPTED]:
        raise TreeError(f"cannot decrypt {args.input}: not Strongroom encrypted files: {', '.join(plain)}")
    keys: dict[tuple[str, int], bytes] = {}
    released_list = []
    for pair in sorted({(h.key_id, h.key_version) for _, h in target.files}):
        released = await release(args, environ, *pair)
        keys[pair] = released.key
        released_list.append(metadata(released))

    def open_file(rel: str, src: BinaryIO, dst: BinaryIO) -> None:
        try:
            header = read_header(src)
            key = keys.get((header.key_id, header.key_version))
            if key is None:
                raise FileFormatError(f"key {header.key_id} version {header.key_version} was not released")
            decrypt_stream(src, dst, key=key, header=header)
        except FileFormatError as exc:
            raise FileFormatError(f"cannot decrypt {rel}: {exc}; {args.output} was not written") from None

    await asyncio.to_thread(transform_tree, args.input, args.output, plan, open_file)
    _report({"keys": released_list, **_tree_summary(args, plan)}, args.output)


async def _rotate(args, environ, *, release: Release, write_atomically) -> None:
    target = await asyncio.to_thread(find_encrypted, args.path)
    keys: dict[tuple[str, int], bytes] = {}
    targets: dict[str, int] = {}
    refused: dict[tuple[str, int], str] = {}
    for key_id in sorted({h.key_id for _, h in target.files}):
        latest = await release(args, environ, key_id, None)
        targets[key_id] = latest.key_version
        keys[(key_id, latest.key_version)] = latest.key
    for key_id, version in sorted(target.needed(targets) - set(keys)):
        try:
            keys[(key_id, version)] = (await release(args, environ, key_id, version)).key
        except (KeyNotActive, KeyNotFound) as exc:  # e.g. below min_decryption_version: those files stay
            refused[(key_id, version)] = str(exc)
    report = await asyncio.to_thread(rotate, target, targets=targets, keys=keys, refused=refused)
    _report({
        "path": args.path,
        "key_versions": targets,
        "rotated": report.rotated,
        "already_current": report.current,
        "failed": [{"path": rel, "reason": reason} for rel, reason in report.failed],
        "recovered": report.recovered,
        "skipped": [{"path": s.rel, "reason": s.reason} for s in target.skipped],
    }, None)
    if report.failed:
        raise FileFormatError(f"{len(report.failed)} file(s) could not be rotated; see \"failed\" above")


def _plan(root: str, skip_special: bool) -> Scan:
    plan = scan(root)
    if (special := plan.special) and not skip_special:
        shown = "; ".join(f"{s.rel}: {s.reason}" for s in special[:5])
        more = f" (and {len(special) - 5} more)" if len(special) > 5 else ""
        raise TreeError(f"{root} holds entries that are not regular files or directories: {shown}{more}; "
                        "pass --skip-special to leave them out")
    return plan


def _tree_summary(args, plan: Scan) -> dict[str, Any]:
    return {"input": args.input, "output": args.output, "files": len(plan.files),
            "directories": sum(1 for e in plan.entries if e.is_dir),
            "skipped": [{"path": s.rel, "reason": s.reason} for s in plan.skipped]}


def metadata(released: ReleasedKey) -> dict[str, Any]:
    """What a key release may show: ids and version, never the key."""
    return {"request_id": released.request_id, "key_id": released.key_id, "key_version": released.key_version,
            "algorithm": released.algorithm}


def _report(document: Mapping[str, Any], output: str | None) -> None:
    # When the data itself goes to stdout, the summary goes to stderr so it cannot corrupt it.
    print(json.dumps(document, indent=2, sort_keys=True), file=sys.stderr if output == STDIO else sys.stdout)
