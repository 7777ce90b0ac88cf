"""policysvc's composition root."""

from __future__ import annotations

import asyncio
from functools import partial

from pymongo import AsyncMongoClient

from shared.bus import Bus
from shared.outbox import Outbox
from shared.rpc import Methods
from shared.service import Running
from shared.store import service_database

from . import handlers
from .approvals import PolicySettings as TenantPolicySettings
from .cache import TargetCache
from .settings import PolicySettings
from .store import PolicyStore


async def start(settings: PolicySettings, *, bus: Bus, client: AsyncMongoClient) -> Running:
    store = PolicyStore(service_database(client, "policysvc", prefix=settings.db_prefix))
    await store.create_indexes()
    cache = handlers.PolicyCache(store)
    targets = TargetCache(store)
    outbox = Outbox(bus.publish, [store.policies.raw, store.groups.raw, store.approvals.raw, store.devices.raw,
                                  store.settings.raw])
    await outbox.create_indexes()
    await outbox.relay()
    scheduler = handlers.Scheduler(partial(_sweep, store=store, targets=targets, outbox=outbox))
    wake = scheduler.wake
    own = {"store": store, "targets": targets, "outbox": outbox}

    methods = Methods()
    methods.add("put_policy", partial(handlers.put_policy, store=store, cache=cache, outbox=outbox))
    methods.add("get_policy", partial(handlers.get_policy, store=store))
    methods.add("list_policies", partial(handlers.list_policies, store=store))
    methods.add("delete_policy", partial(handlers.delete_policy, store=store, cache=cache, outbox=outbox))
    methods.add("list_policy_versions", partial(handlers.list_policy_versions, store=store))
    methods.add("get_policy_version", partial(handlers.get_policy_version, store=store))
    methods.add("restore_policy_version", partial(handlers.restore_policy_version, store=store, cache=cache, outbox=outbox))
    methods.add("put_group", partial(handlers.put_group, **own))
    methods.add("get_group", partial(handlers.get_group, store=store))
    methods.add("list_groups", partial(handlers.list_groups, store=store))
    methods.add("delete_group", partial(handlers.delete_group, **own))
    methods.add("get_settings", partial(handlers.get_settings, targets=targets))
    methods.add("put_settings", partial(handlers.put_settings, **own), TenantPolicySettings)
    methods.add("list_approvals", partial(handlers.list_approvals, store=store))
    methods.add("get_approval", partial(handlers.get_approval, store=store))
    methods.add("vote", partial(handlers.vote, **own))
    methods.add("request_status", partial(handlers.request_status, store=store))
    methods.add("get_decision", partial(handlers.get_decision, store=store))
    methods.add("list_decisions", partial(handlers.list_decisions, store=store))
    methods.add("simulate", partial(handlers.simulate, store=store, cache=cache, targets=targets))
    methods.add("heartbeat", partial(handlers.heartbeat, **own, cache=cache, wake=wake))
    methods.add("clear_quarantine", partial(handlers.clear_quarantine, **own))
    methods.add("get_posture", partial(handlers.get_posture, store=store))

    await bus.listen(["policy.updated", "policy.deleted"], partial(handlers.forget_tenant_policies, cache=cache))
    await bus.listen(["group.*", "device.*", "approval.granted", "tenant.policy_settings_updated"],
                     partial(handlers.refresh_targets, targets=targets))
    await bus.subscribe("policysvc", partial(handlers.dispatch, **own, cache=cache, publish=bus.publish, wake=wake))
    await bus.serve("policysvc", methods)
    running = Running("policysvc")
    running.tasks.append(asyncio.create_task(outbox.run()))
    running.tasks.append(asyncio.create_task(scheduler.run()))
    return running


async def _sweep(now, *, store: PolicyStore, targets: TargetCache, outbox: Outbox):
    return await handlers.sweep(store=store, targets=targets, outbox=outbox, now=now)
