"""Authentication cost at the gateway: the per-request credential check (session and API token,
cached as in steady state) plus the role-and-scope check, in microseconds per request; and the
login rate with Argon2id at the production cost from `GatewaySettings`.

Run: python bench/auth_bench.py [requests] [--login-seconds 4]   (default 20000 requests; about 15 s in all,
embedded store)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.gateway.accounts.passwords import Hasher
from services.gateway.auth import SESSION_PREFIX, TokenAuthenticator
from services.gateway.settings import GatewaySettings
from services.gateway.store import GatewayStore
from shared.crypto import tokens
from shared.embedded_mongo import EmbeddedMongo
from shared.store import connect


async def _unpublished(event) -> None:
    """The bench stages no events."""


async def request_overhead(url: str, n: int) -> None:
    client = connect(url)
    gateway_store = GatewayStore(client["authbench_gateway"], publish=_unpublished)
    await gateway_store.create_indexes()
    store = gateway_store.accounts
    now = datetime.now(UTC)
    await store.tenants.insert("ten_b", {"name": "bench", "kind": "customer", "status": "active", "settings": {}})
    await store.users.insert("ten_b", {"user_id": "usr_b", "username": "b", "account": "person", "status": "active",
                                       "roles": ["key_custodian", "security_officer"], "pending": []})
    session, pat = tokens.new_token(SESSION_PREFIX), tokens.new_token("sr_pat")
    await store.sessions.insert("ten_b", {"session_id": "ses_b", "digest": tokens.digest(session), "user_id": "usr_b",
                                          "auth": "password+totp", "mfa": True, "created_at": now, "last_seen": now,
                                          "ended_at": None})
    await store.tokens.insert("ten_b", {"token_id": "tok_b", "digest": tokens.digest(pat), "user_id": "usr_b",
                                        "scopes": ["keys.read", "keys.manage"], "revoked": False, "mfa": True,
                                        "created_at": now, "expires_at": now + timedelta(days=1)})
    auth = TokenAuthenticator(store, bootstrap_digest=tokens.digest("sr_boot_x"))
    for name, credential in (("session", session), ("personal token", pat)):
        principal = await auth.resolve(credential)  # first use reads the store; then cached
        start = time.perf_counter()
        for _ in range(n):
            principal = await auth.resolve(credential)
            assert principal.may("keys.manage")
        per = (time.perf_counter() - start) / n * 1e6
        print(f"  {name:15s} credential + role/scope check: {per:6.1f} us/request (cached)")
    start = time.perf_counter()
    for _ in range(200):
        auth.forget_user("ten_b", "usr_b")
        auth.forget("tok_b")
        await auth.resolve(pat)
    print(f"  personal token, cold (store reads): {(time.perf_counter() - start) / 200 * 1e6:8.1f} us/request")
    await client.drop_database("authbench_gateway")
    await client.close()


def login_rate(seconds: float = 4.0) -> None:
    s = GatewaySettings()
    hasher = Hasher(time_cost=s.password_time_cost, memory_kib=s.password_memory_kib, parallelism=s.password_parallelism)
    encoded = hasher.hash("vault-door-orchid-7291")
    print(f"  Argon2id t={s.password_time_cost} m={s.password_memory_kib} KiB p={s.password_parallelism}")
    for workers in (1, s.password_hash_concurrency):
        done, deadline = 0, time.perf_counter() + seconds
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            while time.perf_counter() < deadline:
                list(pool.map(lambda _: hasher.verify(encoded, "vault-door-orchid-7291"), range(workers)))
                done += workers
        elapsed = time.perf_counter() - start
        print(f"  {workers} concurrent: {done / elapsed:6.1f} logins/s, {elapsed / done * workers * 1000:6.1f} ms per verify")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requests", type=int, nargs="?", default=20000, help="credential checks per kind (default 20000)")
    parser.add_argument("--login-seconds", type=float, default=4.0, help="seconds per login-rate figure (default 4)")
    args = parser.parse_args()
    print("authenticated request overhead:")
    with EmbeddedMongo(":memory:") as server:
        asyncio.run(request_overhead(server.url, args.requests))
    print("login rate (password verification only):")
    login_rate(args.login_seconds)


if __name__ == "__main__":
    main()
