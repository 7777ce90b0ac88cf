"""keysvc's typed contracts: every RPC method declares params and result models, results carry only
the keys a handler set, and the key lifecycle is declared once and used by the edge as is."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.keysvc import app
from services.keysvc.handlers_root import Custody
from services.keysvc.settings import KeySettings
from services.keysvc.signer import Signer
from shared import commands
from shared import commands_custody as cc
from shared.key_states import ACTIONS, OPERATOR_ACTIONS, STATES, KeyState
from shared.rpc import Methods

from .keysvc_fakes import keysvc


class _Bus:
    async def publish(self, event) -> None:
        return None


def test_every_method_keysvc_registers_declares_its_params_and_result():
    k = keysvc()
    signer = Signer(Ed25519PrivateKey.generate())
    parts = app.Parts(KeySettings(), k.store, k.hierarchy, k.cache, k.outbox, signer, Custody(hierarchy=k.hierarchy))
    methods = Methods()
    app._key_methods(methods, parts)
    app._destruction_methods(methods, parts)
    app._root_methods(methods, parts, _Bus())
    contracts = methods.contracts()
    assert set(contracts) == {
        "create_key", "get_key", "get_release", "list_keys", "change_key_state", "rotate_key",
        "set_min_decryption_version", "get_custody_settings", "put_custody_settings", "get_dependencies",
        "schedule_destruction", "approve_destruction", "cancel_destruction", "get_destruction",
        "get_destruction_certificate", "get_offboarding", "custody_status", "init_custody", "enrol_custodian_key", "list_custodian_keys", "my_share", "transport_key", "unseal",
        "rekey_root", "verify_rekey", "cancel_rekey", "rotate_kek", "kek_status", "import_params", "import_key",
        "export_key", "signing_key",
    }
    assert [name for name, (params, result) in contracts.items() if params is None or result is None] == []


def test_a_result_carries_exactly_the_keys_its_handler_set():
    verified = cc.RekeyVerified(verified=False, submitted=1, needed=2)
    assert verified.model_dump() == {"verified": False, "submitted": 1, "needed": 2}
    status = cc.KekStatus(kek_version=None, rotation=None)
    assert status.model_dump_json() == '{"kek_version":null,"rotation":null}'


def test_the_lifecycle_is_declared_once_and_the_edge_accepts_what_operators_may_ask():
    assert set(STATES) == set(KeyState)
    for rule in STATES.values():
        assert set(rule.transitions) <= set(ACTIONS)
        assert rule.releasable == (rule.refusal == "")
        assert not (rule.destroyed and (rule.releasable or rule.rotatable or rule.decrypts))
    assert all(ACTIONS[a].alias_of in ACTIONS for a in ACTIONS if ACTIONS[a].alias_of)
    schema = commands.ChangeKeyState.model_json_schema()["properties"]["action"]
    assert tuple(schema["enum"]) == OPERATOR_ACTIONS and "destroy" not in OPERATOR_ACTIONS
