"""The operator commands that act on a deployment itself, not through the gateway's API:
`strongroom config docs`, `keys init`, `admin teardown` and `health --service`."""

from __future__ import annotations

import sys
from pathlib import Path

from shared import runtime
from shared.config import CommonSettings

EXIT_OK, EXIT_FAILED = 0, 1


def config_docs() -> int:
    from .config_docs import render

    sys.stdout.write(render())
    return EXIT_OK


def keys_init(directory: str, *, uid: int | None, gid: int | None) -> int:
    from .deployment_keys import KeysExist, init_keys

    try:
        created = init_keys(Path(directory), uid=uid, gid=gid)
    except KeysExist as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("# Created (mode 0400); point each service at its files:")
    for spec, path in created:
        print(f"{spec.variable}={path.resolve()}  # {spec.what}")
    print("Keep an offline copy of root.key and root_key_passphrase: without both, every wrapped key is lost.",
          file=sys.stderr)
    return EXIT_OK


def teardown(prefix: str, *, yes: bool, amqp_url: str | None) -> int:
    from .serve import instance_name
    from .teardown import survey

    url = amqp_url or CommonSettings().amqp_url
    found = runtime.run(survey(url, prefix, delete=yes, connection_name=f"strongroom-admin@{instance_name()}"))
    present = [item for item in found if item.existed]
    for item in present:
        held = f" ({item.messages} messages)" if item.kind == "queue" else ""
        print(f"{'deleted' if yes else 'would delete'} {item.kind} {item.name}{held}")
    if not present:
        print(f"nothing to delete: no queue or exchange of prefix {prefix!r}")
        return EXIT_OK
    if not yes:
        print("nothing deleted: pass --yes to delete these (their messages are lost)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def service_health(service: str, *, max_age: float) -> int:
    from . import heartbeat
    from .config_docs import SERVICE_SETTINGS  # the settings classes alone: a probe runs often

    path = heartbeat.heartbeat_path(service, SERVICE_SETTINGS[service]().heartbeat_file)
    alive, why = heartbeat.check(path, max_age=max_age)
    print(why, file=sys.stdout if alive else sys.stderr)
    return EXIT_OK if alive else EXIT_FAILED
