"""The heartbeat file `strongroom serve` keeps and `strongroom health --service` judges."""

from __future__ import annotations

import asyncio
import time

from launch import heartbeat


def test_a_fresh_beat_is_alive_an_old_one_stale_and_a_torn_one_unreadable(tmp_path):
    path = tmp_path / "keysvc.heartbeat"
    heartbeat.write(path, {"service": "keysvc", "instance": "h:1", "at": time.time()})
    alive, why = heartbeat.check(path)
    assert alive and "keysvc h:1 alive" in why
    heartbeat.write(path, {"service": "keysvc", "instance": "h:1", "at": time.time() - 45})
    alive, why = heartbeat.check(path)
    assert not alive and "45 s ago" in why
    assert heartbeat.check(path, max_age=60)[0]
    path.write_text('{"service": "keysvc", "at": ')
    assert heartbeat.check(path) == (False, f"unreadable heartbeat at {path}: JSONDecodeError")
    assert not heartbeat.check(tmp_path / "absent")[0]


async def test_beats_only_while_connected(tmp_path):
    path, connected = tmp_path / "beat", [False]
    task = asyncio.create_task(heartbeat.beat(path, {"service": "policysvc"}, lambda: connected[0]))
    await asyncio.sleep(0.05)
    assert not path.exists()
    task.cancel()
    connected[0] = True
    task = asyncio.create_task(heartbeat.beat(path, {"service": "policysvc"}, lambda: connected[0]))
    for _ in range(200):
        if path.exists():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    assert heartbeat.check(path)[0]
