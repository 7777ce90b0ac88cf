"""The gateway's cached queue depths: read in the background, never per request."""

from __future__ import annotations

from services.gateway.backlog import Backlog


def _reader(depths: dict[str, int | None]):
    calls: list[str] = []

    async def depth(service: str) -> int | None:
        calls.append(service)
        return depths[service]

    return depth, calls


async def test_requests_read_the_cached_figures_and_only_a_refresh_asks_the_broker():
    depths = {"policysvc": 0, "keysvc": 0, "auditsvc": 0}
    depth, calls = _reader(depths)
    backlog = Backlog(depth, limit=10, refresh_seconds=1.0)
    await backlog.refresh()
    assert backlog.over_limit() is None and len(calls) == 3
    depths["keysvc"] = 11
    assert [backlog.over_limit() for _ in range(1000)] == [None] * 1000 and len(calls) == 3  # no broker reads
    await backlog.refresh()
    assert backlog.over_limit() == "keysvc" and len(calls) == 6
    depths["keysvc"] = 10  # at the limit is not over it
    await backlog.refresh()
    assert backlog.over_limit() is None


async def test_an_unreadable_depth_or_a_zero_limit_never_refuses():
    depth, _ = _reader({"policysvc": None, "keysvc": 5, "auditsvc": 10**9})
    unreadable = Backlog(depth, limit=10, refresh_seconds=1.0, services=("policysvc",))
    await unreadable.refresh()
    assert unreadable.over_limit() is None
    off = Backlog(depth, limit=0, refresh_seconds=1.0)
    await off.refresh()
    assert off.over_limit() is None
