"""keysvc's tenant offboarding over the in-memory store: it shreds the tenant's KEKs and wrapped
keys once per offboarding, resumes after a crash, signs a certificate, and every release is refused."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.keysvc import handlers_destruction as h
from services.keysvc import handlers_keys, handlers_release
from services.keysvc.signer import Signer
from shared import commands, events
from shared.certificates import verify_certificate
from shared.rpc import ProblemError

from .keysvc_fakes import TENANT, keysvc, request

PROVIDER = events.Actor(kind="user", id="usr_provider")


def _offboarded(tenant_id: str = TENANT) -> events.TenantLifecycleChanged:
    return events.TenantLifecycleChanged(tenant_id=tenant_id, type="tenant.offboarded", actor=PROVIDER)


async def _tenant_with_keys(k, names=("a", "b", "c")) -> list[str]:
    ids = []
    for name in names:
        view = await handlers_keys.create_key(request("create_key"), commands.CreateKey(name=name), **k.deps)
        ids.append(view.key_id)
    await handlers_keys.rotate_key(request("rotate_key"), commands.RotateKeyCall(key_id=ids[0], rotate=commands.RotateKey()), **k.deps)
    await handlers_keys.create_key(request("create_key", tenant_id="ten_other"), commands.CreateKey(name="x"), **k.deps)
    return ids


def _offboard(k, signer):
    return lambda event: h.offboard_tenant(event, store=k.store, cache=k.cache, hierarchy=k.hierarchy, signer=signer,
                                           outbox=k.outbox)


async def test_offboarding_shreds_every_kek_and_blob_once_and_signs_a_certificate():
    k, signer = keysvc(), Signer(Ed25519PrivateKey.generate())
    await _tenant_with_keys(k)
    offboarded = _offboarded()
    await _offboard(k, signer)(offboarded)
    await _offboard(k, signer)(offboarded)  # a redelivery does nothing more

    assert not [v for (t, v) in k.store.keks if t == TENANT] and [v for (t, v) in k.store.keks if t == "ten_other"]
    assert not [d for d in k.store.versions.values() if d["tenant_id"] == TENANT and d.get("wrapped") is not None]
    heads = [h_ for (t, _), h_ in k.store.heads.items() if t == TENANT]
    assert all(h_["state"] == "destroyed" and h_["latest_material"]["wrapped"] is None for h_ in heads)
    assert k.outbox.types().count("tenant.destroyed") == 1
    done = k.outbox.published[-1][1]
    assert done.causation_id == offboarded.event_id and done.offboarding_id == offboarded.event_id
    assert (done.keys, done.kek_versions, done.wrapped_blobs_shredded) == (3, (1,), 4)
    assert verify_certificate(done.certificate, done.signature, signer.private_key.public_key())
    assert done.certificate["requested_by"] == "usr_provider" and done.certificate["tenant_id"] == TENANT

    view = await h.get_offboarding(request("get_offboarding"), commands.NoParams(), store=k.store)
    assert view.status == "shredded" and view.certificate == done.certificate and view.shredded_at
    with pytest.raises(ProblemError) as exc:
        await h.get_offboarding(request("get_offboarding", tenant_id="ten_other"), commands.NoParams(), store=k.store)
    assert exc.value.problem.status == 404


async def test_a_redelivery_after_a_crash_mid_shred_finishes_the_job_with_the_first_certificate():
    k, signer = keysvc(), Signer(Ed25519PrivateKey.generate())
    await _tenant_with_keys(k)
    offboarded = _offboarded()
    shred = k.store.shred_key_material

    async def crash(*args, **kwargs):
        raise ConnectionError("store went away")

    k.store.shred_key_material = crash  # the KEKs are gone, the blobs not yet
    with pytest.raises(ConnectionError):
        await _offboard(k, signer)(offboarded)
    first = await k.store.find_offboarding(TENANT)
    assert first["status"] == "shredding" and "tenant.destroyed" not in k.outbox.types()

    k.store.shred_key_material = shred
    restarted = k.restarted()
    await _offboard(restarted, signer)(offboarded)
    done = restarted.outbox.published[-1][1]
    assert done.type == "tenant.destroyed" and done.certificate == first["certificate"]
    assert (done.keys, done.kek_versions, done.wrapped_blobs_shredded) == (3, (1,), 4)  # the whole job
    assert not [d for d in k.store.versions.values() if d["tenant_id"] == TENANT and d.get("wrapped") is not None]


async def test_after_offboarding_every_release_is_refused_and_other_events_are_ignored():
    k, signer = keysvc(), Signer(Ed25519PrivateKey.generate())
    key_id = (await _tenant_with_keys(k))[0]
    await _offboard(k, signer)(events.TenantLifecycleChanged(tenant_id=TENANT, type="tenant.suspended", actor=PROVIDER))
    await _offboard(k, signer)(_offboarded("provider"))  # never the provider's own tenant
    assert not k.outbox.types().count("tenant.destroyed") and await k.store.find_offboarding("provider") is None
    await _offboard(k, signer)(_offboarded())

    public = X25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                     serialization.PublicFormat.Raw)
    decided = events.KeyDecided(tenant_id=TENANT, request_id="req_1", device_id="dev_1", key_id=key_id, effect="allow",
                                ephemeral_public_key=base64.b64encode(public).decode())
    outcomes: list[events.Event] = []

    async def publish(event: events.Event) -> None:
        outcomes.append(event)

    await handlers_release.release_key(decided, store=k.store, hierarchy=k.restarted().hierarchy, cache=k.cache,
                                       publish=publish, notify=publish)
    assert [type(o) for o in outcomes] == [events.KeyReleaseRefused], outcomes
    # A key created after (a call that raced the offboarding) gets no fresh KEK.
    with pytest.raises(ProblemError) as exc:
        await handlers_keys.create_key(request("create_key"), commands.CreateKey(name="late"), **k.restarted().deps)
    assert exc.value.problem.status == 409 and not [v for (t, v) in k.store.keks if t == TENANT]
