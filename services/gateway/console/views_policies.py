"""Policies: the list, one policy's versions, a text diff between two versions (of their canonical
JSON, with difflib) and the dry run of a version over the tenant's recorded requests, with the
device/key pairs it would gain or lose. Every read and the dry run go to policysvc exactly as the
API's views do (`views_policy.simulate` is the API's own)."""

from __future__ import annotations

import difflib
import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from shared.rpc import ProblemError

from .. import views_policy
from ..state import _call
from .names import user_name
from .web import render

RECORDED_DAYS = 7  # the dry run replays this many days of recorded requests


def canonical(document: dict[str, Any]) -> str:
    """A policy document as sorted, indented JSON: the same document always reads the same."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)


def diff_lines(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> list[dict[str, str]]:
    """The unified diff of two documents, each line with its kind (added, removed, hunk, same)."""
    lines = difflib.unified_diff(canonical(old).splitlines(), canonical(new).splitlines(), old_name, new_name,
                                 lineterm="")
    kinds = {"+": "added", "-": "removed", "@": "hunk"}
    return [{"kind": "head" if text.startswith(("+++", "---")) else kinds.get(text[:1], "same"), "text": text}
            for text in lines]


def _number(request: web.Request, name: str) -> int | None:
    text = request.query.get(name, "")
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 10**9:
        raise ProblemError(400, "Bad Request", f"{name} must be a positive integer", name)
    return int(text)


async def policies(request: web.Request) -> web.StreamResponse:
    listed = await _call(request, "policysvc", "list_policies")
    items = [{**p, "by": await user_name(request, p["updated_by"]) if p["updated_by"] else "—"} for p in listed["items"]]
    return render("policies.html", request, {"policies": items})


async def _versions(request: web.Request, policy_id: str) -> list[dict[str, Any]]:
    listed = await _call(request, "policysvc", "list_policy_versions", {"policy_id": policy_id})
    return [{**v, "by": await user_name(request, v["updated_by"]) if v["updated_by"] else "—"} for v in listed["items"]]


def problem_page(request: web.Request, exc: ProblemError) -> web.Response:
    """A refused read (no such policy or version, a bad number) as a page naming what was wrong."""
    return render("problem.html", request, {"error": exc.problem.detail or exc.problem.title}, status=exc.problem.status)


async def policy(request: web.Request) -> web.StreamResponse:
    """The versions, newest first; `?from=&to=` adds their diff (by default the previous and the newest)."""
    policy_id = request.match_info["policy_id"]
    try:
        versions = await _versions(request, policy_id)
        old_no, new_no = _number(request, "from"), _number(request, "to")
    except ProblemError as exc:
        return problem_page(request, exc)
    by_no = {v["version"]: v for v in versions}
    new = by_no.get(new_no or versions[0]["version"]) if versions else None
    old = by_no.get(old_no or (new["version"] - 1 if new else 0))
    diff = diff_lines(old["document"], new["document"], f"version {old['version']}",
                      f"version {new['version']}") if old and new else []
    return render("policy.html", request, {"policy_id": policy_id, "versions": versions, "old": old, "new": new,
                                           "diff": diff})


async def simulate(request: web.Request) -> web.StreamResponse:
    """A version replayed as a candidate over the recorded requests: which requests change, what is gained and lost."""
    policy_id = request.match_info["policy_id"]
    try:
        version = await _call(request, "policysvc", "get_policy_version",
                              {"policy_id": policy_id, "version": _number(request, "version") or 1})
    except ProblemError as exc:
        return problem_page(request, exc)
    error, result = None, None
    try:
        body = views_policy.SimulateBody(policy=version["document"], policy_id=policy_id, recorded_days=RECORDED_DAYS)
        result = await views_policy.simulate(request, body)
    except ValidationError as exc:
        error = f"this version is not a valid candidate: {exc.error_count()} problem(s)"
    except ProblemError as exc:
        error = exc.problem.detail or exc.problem.title
    return render("simulation.html", request, {"policy_id": policy_id, "version": version, "result": result,
                                               "error": error, "days": RECORDED_DAYS})
