"""policysvc's composition root."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from pymongo import AsyncMongoClient

from shared import commands_policy as c
from shared import commands_volumes as cv
from shared.bus import Bus
from shared.observability import expose, observe
from shared.rpc import Methods, Replies
from shared.service import Running
from shared.store import service_database
from shared.store_replies import ReplyLog

from . import handlers_approvals as approvals
from . import handlers_decide as release
from . import handlers_decisions as decisions
from . import handlers_policies as policies
from . import handlers_posture as posture
from .cache import PolicyCache, TargetCache
from .scheduler import Scheduler, sweep
from .settings import PolicySettings
from .store import PolicyStore


async def start(settings: PolicySettings, *, bus: Bus, client: AsyncMongoClient) -> Running:
    db = service_database(client, "policysvc", prefix=settings.db_prefix)
    store, replies = PolicyStore(db, publish=bus.publish), ReplyLog(db)
    await store.create_indexes()
    await replies.create_indexes()
    await store.outbox.relay()
    probe = observe("policysvc", settings, bus=bus, client=client)
    metrics = probe.metrics
    cache = PolicyCache(store)
    targets = TargetCache(store)
    scheduler = Scheduler(partial(sweep, store=store, targets=targets))
    wake = scheduler.wake
    await bus.listen(["policy.updated", "policy.deleted"], partial(release.forget_tenant_policies, cache=cache))
    await bus.listen(["group.*", "device.*", "approval.granted", "tenant.policy_settings_updated"],
                     partial(release.refresh_targets, targets=targets))
    # A decision is queued for audit before keysvc or the gateway acts on it (audit first).
    await bus.subscribe("policysvc", metrics.timed("work", partial(
        release.dispatch, store=store, targets=targets, cache=cache, publish=metrics.counting(bus.publish_audited),
        wake=wake)))
    await bus.serve("policysvc", metrics.timed_rpc(rpc_methods(store=store, cache=cache, targets=targets, wake=wake,
                                                                replies=replies)))
    running = Running("policysvc")
    running.tasks.append(asyncio.create_task(store.outbox.run()))
    running.tasks.append(asyncio.create_task(scheduler.run()))
    await expose(running, probe, settings)
    return running


# What operators change: each takes effect once per request id (`rpc.Methods`). An agent's heartbeat
# is not recorded: it is the device's latest word, sent every few seconds.
CHANGES = frozenset({"put_policy", "delete_policy", "restore_policy_version", "put_group", "delete_group", "put_settings",
                     "vote", "open_recovery_approval", "clear_quarantine"})


def rpc_methods(*, store: PolicyStore, cache: PolicyCache, targets: TargetCache, wake: Callable[..., None],
                replies: Replies | None = None) -> Methods:
    """Every request/reply method with its params and result models, its dependencies bound."""
    own = {"store": store, "targets": targets}
    methods = Methods(replies)
    for name, handler, params, result in (
        ("put_policy", partial(policies.put_policy, store=store, cache=cache), c.PutPolicyParams, c.PolicyView),
        ("get_policy", partial(policies.get_policy, store=store), c.PolicyRef, c.PolicyView),
        ("list_policies", partial(policies.list_policies, store=store), c.NoParams, c.PolicyList),
        ("delete_policy", partial(policies.delete_policy, store=store, cache=cache), c.PolicyRef, c.PolicyDeleted),
        ("list_policy_versions", partial(policies.list_policy_versions, store=store), c.PolicyRef, c.PolicyVersionList),
        ("get_policy_version", partial(policies.get_policy_version, store=store), c.PolicyVersionRef, c.PolicyVersionView),
        ("restore_policy_version", partial(policies.restore_policy_version, store=store, cache=cache), c.PolicyVersionRef,
         c.RestoredPolicy),
        ("put_group", partial(policies.put_group, **own), c.PutGroupParams, c.GroupView),
        ("get_group", partial(policies.get_group, store=store), c.GroupRef, c.GroupView),
        ("list_groups", partial(policies.list_groups, store=store), c.ListGroups, c.GroupList),
        ("delete_group", partial(policies.delete_group, **own), c.GroupRef, c.GroupDeleted),
        ("get_settings", partial(policies.get_settings, targets=targets), c.NoParams, c.PolicySettings),
        ("put_settings", partial(policies.put_settings, **own), c.PolicySettings, c.PolicySettings),
        ("list_approvals", partial(approvals.list_approvals, store=store), c.ListApprovals, c.ApprovalList),
        ("get_approval", partial(approvals.get_approval, store=store), c.ApprovalRef, c.ApprovalView),
        ("vote", partial(approvals.vote, **own), c.Vote, c.ApprovalView),
        ("open_recovery_approval", partial(approvals.open_recovery_approval, **own), cv.OpenRecoveryApproval,
         c.ApprovalView),
        ("recovery_approval", partial(approvals.recovery_approval, store=store), cv.RecoveryApprovalRef,
         cv.RecoveryApproval),
        ("request_status", partial(decisions.request_status, store=store), c.RequestRef, c.RequestStatus),
        ("get_decision", partial(decisions.get_decision, store=store), c.DecisionRef, c.DecisionDetail),
        ("list_decisions", partial(decisions.list_decisions, store=store), c.ListDecisions, c.DecisionList),
        ("simulate", partial(decisions.simulate, **own, cache=cache), c.Simulate, c.Simulation),
        ("heartbeat", partial(posture.heartbeat, **own, cache=cache, wake=wake), c.Heartbeat, c.HeartbeatAnswer),
        ("clear_quarantine", partial(posture.clear_quarantine, **own), c.ClearQuarantine, c.DeviceStatus),
        ("get_posture", partial(posture.get_posture, store=store), c.DeviceRef, c.Posture),
        ("posture_counts", partial(posture.posture_counts, store=store), c.NoParams, c.PostureCounts),
    ):
        methods.add(name, handler, params=params, result=result, changes=name in CHANGES)
    return methods
