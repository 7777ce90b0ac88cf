"""policysvc's operator operations on policies, their versions, groups and tenant settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared import commands_policy as c
from shared import events, rpc
from shared.commands import PutPolicy
from shared.store import DuplicateKeyError, stored_now

from .cache import PolicyCache, TargetCache
from .groups import parse_group
from .handling import event_fields, policy_problem
from .rules import PolicyError, parse_policy
from .store import PolicyStore


def _view(head: dict[str, Any]) -> c.PolicyView:
    return c.PolicyView(
        policy_id=head["policy_id"], version=head["version"], name=head["name"],
        updated_at=head["updated_at"].isoformat(), updated_by=head.get("updated_by"), document=head["document"],
    )


async def put_policy(
    request: rpc.RpcRequest, params: c.PutPolicyParams, *, store: PolicyStore, cache: PolicyCache
) -> c.PolicyView:
    """Creates a policy (no policy_id) or a new version of one; validates before storing anything."""
    document = params.policy.model_dump()
    policy_id = params.policy_id or rpc.derived_id(request, "pol_")  # a redelivery finds the policy it made
    current = await store.head(request.tenant_id, policy_id) if params.policy_id else None
    if params.policy_id and current is None:
        raise rpc.NotFound("policy", "policy_id")
    if current is not None and _made_by(current, request):
        return _view(current)
    version = (current["version"] if current else 0) + 1
    try:
        parse_policy(document, policy_id=policy_id, version=version)
    except PolicyError as exc:
        raise rpc.ProblemError(422, "Unprocessable Content", f"{exc.path}: {exc.message}", exc.path or None) from None
    head = {
        "policy_id": policy_id, "version": version, "name": params.policy.name, "document": document,
        "updated_at": stored_now(), "updated_by": request.actor.id, "deleted": False,
        "changed_by_request": request.request_id,
    }
    event = events.PolicyUpdated(**event_fields(request), policy_id=policy_id, policy_version=version,
                                 name=params.policy.name, document=document)
    try:
        saved = await store.put_version(request.tenant_id, head, version - 1, event)
    except DuplicateKeyError:
        saved = None
    if not saved:
        earlier = await store.head(request.tenant_id, policy_id)
        if earlier is not None and _made_by(earlier, request):  # this request's first delivery stored it
            return _view(earlier)
        if saved is None:
            raise rpc.ProblemError(409, "Conflict", f"a policy named {params.policy.name!r} exists", "name")
        raise rpc.ProblemError(409, "Conflict", "the policy changed concurrently; retry")
    cache.drop(request.tenant_id)
    await store.publish_staged("policies", request.tenant_id, event)
    return _view(head)


def _made_by(doc: dict[str, Any], request: rpc.RpcRequest) -> bool:
    """Whether `request` made the policy's or group's latest version: its redelivery answers with it as it is."""
    return doc.get("changed_by_request") == request.request_id


async def get_policy(request: rpc.RpcRequest, params: c.PolicyRef, *, store: PolicyStore) -> c.PolicyView:
    head = await store.head(request.tenant_id, params.policy_id)
    if head is None:
        raise rpc.NotFound("policy", "policy_id")
    return _view(head)


async def list_policies(request: rpc.RpcRequest, params: c.NoParams, *, store: PolicyStore) -> c.PolicyList:
    return c.PolicyList(items=[_view(h) for h in await store.active_policies(request.tenant_id)])


async def delete_policy(
    request: rpc.RpcRequest, params: c.PolicyRef, *, store: PolicyStore, cache: PolicyCache
) -> c.PolicyDeleted:
    event = events.PolicyDeleted(**event_fields(request), policy_id=params.policy_id)
    if not await store.delete_policy(request.tenant_id, params.policy_id, now=datetime.now(UTC), event=event):
        raise rpc.NotFound("policy", "policy_id")
    cache.drop(request.tenant_id)
    await store.publish_staged("policies", request.tenant_id, event)
    return c.PolicyDeleted(policy_id=params.policy_id, deleted=True)


# --- policy versions -----------------------------------------------------------------------


def _version_view(doc: dict[str, Any], *, current: bool | None = None) -> c.PolicyVersionView:
    return c.PolicyVersionView(
        policy_id=doc["policy_id"], version=doc["version"], name=doc["name"], updated_at=doc["updated_at"].isoformat(),
        updated_by=doc.get("updated_by"), restored_from=doc.get("restored_from"), document=doc["document"],
        current=current,
    )


async def list_policy_versions(request: rpc.RpcRequest, params: c.PolicyRef, *, store: PolicyStore) -> c.PolicyVersionList:
    docs = await store.policy_versions(request.tenant_id, params.policy_id)
    if not docs:
        raise rpc.NotFound("policy", "policy_id")
    current = await store.current_version(request.tenant_id, params.policy_id)
    return c.PolicyVersionList(items=[_version_view(d, current=d["version"] == current) for d in docs])


async def get_policy_version(
    request: rpc.RpcRequest, params: c.PolicyVersionRef, *, store: PolicyStore
) -> c.PolicyVersionView:
    doc = await store.policy_version(request.tenant_id, params.policy_id, params.version)
    if doc is None:
        raise rpc.NotFound("policy version", "version")
    return _version_view(doc)


async def restore_policy_version(
    request: rpc.RpcRequest, params: c.PolicyVersionRef, *, store: PolicyStore, cache: PolicyCache
) -> c.RestoredPolicy:
    """Makes an older version's document the policy's newest version (history is never rewritten)."""
    old = await get_policy_version(request, params, store=store)
    again = c.PutPolicyParams(policy_id=old.policy_id, policy=PutPolicy.model_validate(old.document))
    restored = await put_policy(request, again, store=store, cache=cache)
    await store.mark_restored(request.tenant_id, old.policy_id, restored.version, restored_from=old.version)
    return c.RestoredPolicy(**restored.model_dump(), restored_from=old.version)


# --- groups ----------------------------------------------------------------------------------


def _group_view(doc: dict[str, Any]) -> c.GroupView:
    return c.GroupView(group_id=doc["group_id"], version=doc["version"], **doc["document"],
                       updated_at=doc["updated_at"].isoformat(), updated_by=doc.get("updated_by"))


async def put_group(
    request: rpc.RpcRequest, params: c.PutGroupParams, *, store: PolicyStore, targets: TargetCache
) -> c.GroupView:
    """Creates a group (no group_id) or replaces one; validated in full before anything is stored."""
    document = params.group
    group_id = params.group_id or rpc.derived_id(request, "grp_")  # a redelivery finds the group it made
    try:
        group = parse_group(document, group_id=group_id)
    except PolicyError as exc:
        raise policy_problem(exc) from None
    current = None
    if params.group_id:
        current = await store.live_group(request.tenant_id, group_id)
        if current is None:
            raise rpc.NotFound("group", "group_id")
        if _made_by(current, request):
            return _group_view(current)
        if current["document"]["kind"] != group.kind:
            raise rpc.ProblemError(422, "Unprocessable Content", "kind: a group's kind cannot change", "kind")
    version = (current["version"] if current else 0) + 1
    event = events.GroupUpdated(**event_fields(request), group_id=group_id, kind=group.kind, name=group.name,
                                group_version=version, document=document)
    doc = {"group_id": group_id, "name": group.name, "version": version, "document": document,
           "updated_at": stored_now(), "updated_by": request.actor.id, "deleted": False,
           "changed_by_request": request.request_id}
    try:
        if current is None:
            await store.insert_group(request.tenant_id, doc, event)
            saved = True
        else:
            saved = await store.replace_group(request.tenant_id, group_id, expected_version=current["version"], doc=doc,
                                              event=event)
    except DuplicateKeyError:
        saved = None
    if not saved:
        earlier = await store.live_group(request.tenant_id, group_id)
        if earlier is not None and _made_by(earlier, request):  # this request's first delivery stored it
            return _group_view(earlier)
        if saved is None:
            raise rpc.ProblemError(409, "Conflict", f"a group named {group.name!r} exists", "name")
        raise rpc.ProblemError(409, "Conflict", "the group changed concurrently; retry")
    targets.drop_groups(request.tenant_id)
    await store.publish_staged("groups", request.tenant_id, event)
    return _group_view(doc)


async def get_group(request: rpc.RpcRequest, params: c.GroupRef, *, store: PolicyStore) -> c.GroupView:
    doc = await store.live_group(request.tenant_id, params.group_id)
    if doc is None:
        raise rpc.NotFound("group", "group_id")
    return _group_view(doc)


async def list_groups(request: rpc.RpcRequest, params: c.ListGroups, *, store: PolicyStore) -> c.GroupList:
    kind = params.kind if params.kind in ("device", "key") else None
    return c.GroupList(items=[_group_view(d) for d in await store.live_groups(request.tenant_id, kind=kind)])


async def delete_group(
    request: rpc.RpcRequest, params: c.GroupRef, *, store: PolicyStore, targets: TargetCache
) -> c.GroupDeleted:
    group_id = params.group_id
    doc = await store.live_group(request.tenant_id, group_id)
    if doc is None:
        raise rpc.NotFound("group", "group_id")
    event = events.GroupDeleted(**event_fields(request), group_id=group_id, kind=doc["document"]["kind"], name=doc["name"])
    # The name is freed for reuse: a deleted group keeps its id, not its unique name.
    freed = f"{doc['name']}#deleted#{group_id}"
    if not await store.delete_group(request.tenant_id, group_id, freed_name=freed, now=datetime.now(UTC), event=event):
        raise rpc.NotFound("group", "group_id")
    targets.drop_groups(request.tenant_id)
    await store.publish_staged("groups", request.tenant_id, event)
    return c.GroupDeleted(group_id=group_id, deleted=True)


# --- tenant settings -------------------------------------------------------------------------


async def get_settings(request: rpc.RpcRequest, params: c.NoParams, *, targets: TargetCache) -> c.PolicySettings:
    return await targets.settings(request.tenant_id)


async def put_settings(
    request: rpc.RpcRequest, settings: c.PolicySettings, *, store: PolicyStore, targets: TargetCache
) -> c.PolicySettings:
    event = events.PolicySettingsUpdated(**event_fields(request), settings=settings.model_dump())
    await store.put_settings(request.tenant_id, settings.model_dump(), by=request.actor.id, event=event)
    targets.drop_settings(request.tenant_id)
    await store.publish_staged("settings", request.tenant_id, event)
    return settings
