"""`strongroom-agent volume …`: LUKS2 volumes whose Strongroom keyslot opens with a data key
released under policy (format, bind, unlock, rotate, reencrypt, erase, status).

Exit codes beyond the agent's (0 ok, 1 error, 2 usage, 3 denied, 4 approval pending):
5 no such device, 6 not a LUKS2 volume, 7 the passphrase or key opens no slot,
8 the gateway is unreachable, 9 the volume is not in a state that allows the command (not
bound, already bound, a rotation or reencryption unfinished). A refused command changes nothing.
Security invariant: passphrases (derived, recovery or given) are never printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent import luks, volume_ops
from agent.client import AgentClient, ApprovalPending, KeyDenied, ReleasedKey, ServiceUnavailable
from agent.identity import AgentIdentity
from agent.luks import LuksError
from agent.volumes import VolumeStateError

EXIT_NO_DEVICE, EXIT_NOT_LUKS2, EXIT_BAD_PASSPHRASE, EXIT_UNREACHABLE, EXIT_STATE = 5, 6, 7, 8, 9
_LUKS_EXITS = {LuksError.NO_DEVICE: EXIT_NO_DEVICE, LuksError.NOT_LUKS2: EXIT_NOT_LUKS2,
               LuksError.BAD_PASSPHRASE: EXIT_BAD_PASSPHRASE, LuksError.FAILED: 1}


def register(commands: argparse._SubParsersAction, facts_options: argparse.ArgumentParser) -> None:
    """Add the `volume` command and its subcommands to the agent's parser."""
    volume = commands.add_parser("volume", help="LUKS2 volumes unlocked by keys released under policy")
    sub = volume.add_subparsers(dest="volume_command", metavar="SUBCOMMAND", required=True)
    keyed = argparse.ArgumentParser(add_help=False, parents=[facts_options])
    keyed.add_argument("--wait-for-approval", metavar="S", type=float, default=0.0,
                       help="wait up to S seconds for an operator approval (default: exit 4 at once)")

    fmt = sub.add_parser("format", parents=[keyed], help="create a new LUKS2 volume (destroys DEVICE's contents)")
    fmt.add_argument("device", metavar="DEVICE")
    fmt.add_argument("--key-id", metavar="K", required=True)
    fmt.add_argument("--recovery", action="store_true",
                     help="also add a generated recovery passphrase in its own slot, escrowed in Strongroom")
    fmt.add_argument("--force", action="store_true", help="format even if DEVICE already holds a LUKS volume")

    bind = sub.add_parser("bind", parents=[keyed], help="add a Strongroom keyslot to an existing LUKS2 volume")
    bind.add_argument("device", metavar="DEVICE")
    bind.add_argument("--key-id", metavar="K", required=True)
    bind.add_argument("--passphrase-file", metavar="F",
                      help="an existing passphrase, the whole file as cryptsetup --key-file reads it "
                      "(default: one line from stdin)")

    unlock = sub.add_parser("unlock", parents=[keyed], help="open the volume with its Strongroom key")
    unlock.add_argument("device", metavar="DEVICE")
    unlock.add_argument("name", metavar="NAME", nargs="?", help="mapping name (default strongroom-<LUKS UUID>)")
    unlock.add_argument("--check", action="store_true", help="only check that the key opens the slot; map nothing")

    sub.add_parser("rotate", parents=[keyed], help="move the keyslot to the key's latest version (no data rewritten)"
                   ).add_argument("device", metavar="DEVICE")

    reenc = sub.add_parser("reencrypt", parents=[keyed],
                           help="re-encrypt the data under a new volume key (offline), or resume an interrupted run")
    reenc.add_argument("device", metavar="DEVICE")
    reenc.add_argument("--resilience", choices=("checksum", "journal", "none"), default="checksum")
    reenc.add_argument("--hotzone-size", metavar="SIZE", help="cryptsetup's hotzone size, e.g. 64k")
    reenc.add_argument("--yes", action="store_true", help="do not ask before dropping non-Strongroom keyslots")

    erase = sub.add_parser("erase", help="wipe every keyslot (luksErase): the data is gone for good")
    erase.add_argument("device", metavar="DEVICE")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    status = sub.add_parser("status", parents=[keyed], help="slots, token, key version and whether a newer one exists")
    status.add_argument("device", metavar="DEVICE")
    status.add_argument("--output", choices=("text", "json"), default="text")
    volume.set_defaults(handler=run_volume)


async def run_volume(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run one volume subcommand; its own failures map to exit codes 5-9, the rest to the agent's."""
    try:
        return await _COMMANDS[args.volume_command](args, environ)
    except LuksError as exc:
        _error(str(exc))
        return _LUKS_EXITS[exc.kind]
    except VolumeStateError as exc:
        _error(str(exc))
        return EXIT_STATE
    except ServiceUnavailable as exc:
        _error(f"gateway unreachable, nothing changed: {exc}")
        return EXIT_UNREACHABLE


class _Gateway:
    """The key source and volume registry of one agent: its gateway client and its facts."""

    def __init__(self, client: AgentClient, facts: Mapping[str, Any], wait: float) -> None:
        self.client, self.facts, self.wait = client, facts, wait

    async def __call__(self, key_id: str, key_version: int | None, volume: Mapping[str, str] | None) -> ReleasedKey:
        return await self.client.request_key(key_id, facts=self.facts, key_version=key_version, volume=volume,
                                             wait_for_approval_seconds=self.wait)

    async def register(self, **kwargs: Any) -> dict[str, Any]:
        from agent.volumes_api import register_volume

        return await register_volume(self.client, **kwargs)

    async def escrow(self, *, volume_id: str, passphrase: bytes) -> None:
        from agent.volumes_api import escrow_recovery

        await escrow_recovery(self.client, volume_id=volume_id, passphrase=passphrase)


class _Session:
    """An open gateway client for the duration of a command."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self.args, self.environ = args, environ

    async def __aenter__(self) -> tuple[_Gateway, AgentIdentity]:
        from agent import cli  # the agent's entry point: state directory, evidence options, facts

        identity = AgentIdentity.load(cli.state_dir(self.args, self.environ))
        facts = await cli._gather_facts(self.args, self.environ, identity.device_id)
        self.client = AgentClient(identity, timeout_seconds=self.args.timeout, **cli._cloud(self.args, self.environ))
        await self.client.__aenter__()
        return _Gateway(self.client, facts, self.args.wait_for_approval), identity

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()


async def _format(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    async with _Session(args, environ) as (gateway, identity):
        out = await volume_ops.format_volume(args.device, key_id=args.key_id, keys=gateway, registry=gateway,
                                             gateway_url=identity.gateway_url, recovery=args.recovery, force=args.force)
    _print_json({**out, "recovery_escrowed": args.recovery})
    return 0


async def _bind(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    await asyncio.to_thread(luks.require_luks2, args.device)
    existing = await asyncio.to_thread(_read_passphrase, args.passphrase_file)
    async with _Session(args, environ) as (gateway, identity):
        out = await volume_ops.bind_volume(args.device, key_id=args.key_id, existing=existing, keys=gateway,
                                           registry=gateway, gateway_url=identity.gateway_url)
    _print_json(out)
    return 0


def _read_passphrase(path: str | None) -> bytes:
    if path is not None:
        return Path(path).read_bytes()
    if sys.stdin.isatty():
        return getpass.getpass("Existing passphrase: ").encode()
    return sys.stdin.buffer.readline().rstrip(b"\r\n")


async def _unlock(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    await volume_ops.load_token(args.device)  # a missing or unbound device costs no key release
    async with _Session(args, environ) as (gateway, _):
        out = await volume_ops.unlock_volume(args.device, keys=gateway, name=args.name, check=args.check)
    _print_json(out)
    return 0


async def _rotate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    await volume_ops.load_token(args.device)
    async with _Session(args, environ) as (gateway, _):
        out = await volume_ops.rotate_volume(args.device, keys=gateway)
    _print_json(out)
    return 0


async def _reencrypt(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    metadata, _, token, _ = await volume_ops.load_token(args.device)
    dropped = volume_ops.dropped_by_reencrypt(metadata, token)
    if dropped and not luks.reencrypt_interrupted(metadata) and not args.yes:
        print(f"Reencryption keeps only the Strongroom slot {token.keyslot} (and re-adds the recovery slot); "
              f"keyslot(s) {', '.join(map(str, dropped))} will be dropped.", file=sys.stderr)
        if not await asyncio.to_thread(_confirm, "Type YES to continue: ", "YES"):
            _error("not confirmed; nothing changed")
            return 1
    async with _Session(args, environ) as (gateway, _):
        out = await volume_ops.reencrypt_volume(args.device, keys=gateway, registry=gateway,
                                                resilience=args.resilience, hotzone_size=args.hotzone_size,
                                                progress=_show_progress)
    print(file=sys.stderr)
    _print_json(out)
    return 0


def _show_progress(record: Mapping[str, Any]) -> None:
    try:
        done, size = int(record["device_bytes"]), int(record["device_size"])
        speed = int(record.get("speed", 0))
    except (KeyError, ValueError):
        return
    percent = 100 * done // size if size else 100
    print(f"\rreencrypt: {percent:3d}% ({done / 2**20:.1f} of {size / 2**20:.1f} MiB, {speed / 2**20:.1f} MiB/s)",
          end="", file=sys.stderr, flush=True)


async def _erase(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    await asyncio.to_thread(luks.require_luks2, args.device)
    if not args.yes:
        prompt = f"This destroys every keyslot of {args.device}; its data can never be read again. Type ERASE: "
        if not await asyncio.to_thread(_confirm, prompt, "ERASE"):
            _error("not confirmed; nothing changed")
            return 1
    _print_json(await volume_ops.erase_volume(args.device))
    return 0


def _confirm(prompt: str, expected: str) -> bool:
    print(prompt, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip() == expected


async def _status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    await asyncio.to_thread(luks.require_luks2, args.device)
    metadata = await asyncio.to_thread(luks.dump, args.device)
    luks_uuid = await asyncio.to_thread(luks.luks_uuid, args.device)
    out = volume_ops.describe(metadata, luks_uuid, args.device)
    if out["key_id"] is not None:
        out["server"] = await _server_view(args, environ, out, luks_uuid)
    if args.output == "json":
        _print_json(out)
    else:
        _print_status(out)
    return 0


async def _server_view(args: argparse.Namespace, environ: Mapping[str, str], local: Mapping[str, Any],
                       luks_uuid: str) -> dict[str, Any]:
    """The key's latest version as released to this device now, or why the server did not say."""
    context = {"volume_id": local["volume_id"], "luks_uuid": luks_uuid} if local["volume_id"] else None
    try:
        async with _Session(args, environ) as (gateway, _):
            released = await gateway(local["key_id"], None, context)
    except ServiceUnavailable as exc:
        return {"reachable": False, "error": str(exc)}
    except KeyDenied as exc:
        return {"reachable": True, "denied": str(exc), "reasons": exc.reasons}
    except ApprovalPending as exc:
        return {"reachable": True, "approval_pending": exc.request_id}
    return {"reachable": True, "latest_version": released.key_version,
            "newer_version_available": released.key_version > local["key_version"]}


def _print_status(out: Mapping[str, Any]) -> None:
    lines = [f"device:      {out['device']}", f"LUKS UUID:   {out['luks_uuid']}"]
    for slot in out["keyslots"]:
        lines.append(f"keyslot {slot['keyslot']:>2}: {slot['role']} ({slot['kdf']})")
    if out["key_id"] is None:
        lines.append("token:       none (not bound to Strongroom)")
    else:
        lines += [f"key:         {out['key_id']} version {out['key_version']}", f"volume id:   {out['volume_id']}"]
        server = out["server"]
        if not server["reachable"]:
            lines.append(f"server:      unreachable ({server['error']}); local state shown")
        elif "latest_version" in server:
            newer = "a newer version exists: run volume rotate" if server["newer_version_available"] else "up to date"
            lines.append(f"server:      latest version {server['latest_version']}, {newer}")
        elif "denied" in server:
            lines.append(f"server:      key denied by policy ({server['denied']})")
        else:
            lines.append(f"server:      approval pending (request {server['approval_pending']})")
    if out["rotation_in_progress"]:
        lines.append("journal:     a keyslot rotation is unfinished: run volume rotate")
    if out["reencryption_interrupted"]:
        lines.append("journal:     reencryption interrupted: run volume reencrypt to resume")
    print("\n".join(lines))


def _print_json(document: Mapping[str, Any]) -> None:
    print(json.dumps(document, indent=2, sort_keys=True))


def _error(message: str) -> None:
    print(f"strongroom-agent: error: {message}", file=sys.stderr)


_COMMANDS = {"format": _format, "bind": _bind, "unlock": _unlock, "rotate": _rotate, "reencrypt": _reencrypt,
             "erase": _erase, "status": _status}
