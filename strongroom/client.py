"""Small synchronous JSON client for the gateway's HTTP API, over urllib.request."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 30.0
_USER_AGENT = "strongroom-cli/0.1"
_ACCEPT = "application/json, application/problem+json"
CHANGE_HEADER = "X-Strongroom-Change"


class ApiError(Exception):
    """The gateway answered with an error status, usually as application/problem+json."""

    def __init__(self, status: int, title: str, detail: str = "", *, type_: str = "about:blank",
                 field: str | None = None, change_id: str | None = None, change_digest: str | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.field = field
        self.change_id = change_id  # a 428: the change waiting for a second person (small-team mode)
        self.change_digest = change_digest  # ... and the SHA-256 of its body, for the confirmer to compare


class GatewayUnreachable(Exception):
    """No HTTP answer at all: refused, unresolvable, timed out, TLS failure."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the gateway at {url}: {reason}")
        self.url = url
        self.reason = reason


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # SECURITY: urllib copies the Authorization header onto redirects, even to another host.
    # The API never redirects, so a redirect is reported as an error instead of followed.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def display_url(url: str) -> str:
    """The URL without any user:password part, safe to show in messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def quote_id(value: str) -> str:
    """One path segment: an id can never climb out of its collection (`../tenants`)."""
    return urllib.parse.quote(str(value), safe="")


def _problem_from(status: int, reason: str, content_type: str, raw: bytes) -> ApiError:
    body: Any = None
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
    if isinstance(body, Mapping) and ("title" in body or "detail" in body):
        field = body.get("field")
        return ApiError(
            int(body.get("status") or status),
            str(body.get("title") or reason),
            str(body.get("detail") or ""),
            type_=str(body.get("type") or "about:blank"),
            field=None if field is None else str(field),
            change_id=str(body["change_id"]) if status == 428 and isinstance(body.get("change_id"), str) else None,
            change_digest=str(body.get("body_sha256")) if status == 428 else None,
        )
    # Not problem+json (a proxy page, say): keep a short, single-line excerpt for the operator.
    excerpt = " ".join(raw[:200].decode("utf-8", "replace").split()) if raw else ""
    if "html" in content_type:
        excerpt = ""
    return ApiError(status, reason or "error", excerpt)


class GatewayClient:
    """Calls the gateway with a bearer token and returns decoded JSON bodies.

    The token is kept out of `repr` and of every error message.
    """

    def __init__(self, base_url: str, token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, change_id: str | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        # Only HTTP(S): urllib would otherwise happily open file:// and ftp:// URLs.
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url: not an http(s) URL: {display_url(base_url)!r}")
        self.base_url = base_url.rstrip("/")
        if token is not None and (not token.isprintable() or any(c.isspace() for c in token)):
            # A pasted token with a newline or space would fail deep inside http.client.
            raise ValueError("--token: contains whitespace or control characters")
        self._token = token
        self.timeout = timeout
        # Small-team co-signing: a change a second person confirmed, sent with every change request.
        self.change_id = change_id
        self._opener = urllib.request.build_opener(_NoRedirects())

    def __repr__(self) -> str:
        auth = "with token" if self._token else "without token"
        return f"GatewayClient({display_url(self.base_url)!r}, {auth})"

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def url_for(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        url = self.base_url + path
        if query:
            pairs = [(k, str(v).lower() if isinstance(v, bool) else str(v))
                     for k, v in query.items() if v is not None]
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        return url

    def request(self, method: str, path: str, *, body: Any = None,
                query: Mapping[str, Any] | None = None, auth: bool = True) -> Any:
        """Send one request; return the decoded JSON body, or None for an empty answer."""
        headers = {"Accept": _ACCEPT, "User-Agent": _USER_AGENT}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if auth and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self.change_id and method != "GET":
            headers[CHANGE_HEADER] = self.change_id
        req = urllib.request.Request(self.url_for(path, query), data=data, headers=headers,
                                     method=method)
        try:
            with self._open(req, timeout=self.timeout) as resp:
                raw = resp.read()
                content_type = resp.headers.get("Content-Type", "")
        except TimeoutError:  # while reading the body
            raise GatewayUnreachable(display_url(self.base_url), "timed out") from None
        except (ConnectionError, OSError) as exc:
            raise GatewayUnreachable(display_url(self.base_url), _reason_text(exc)) from None
        if not raw:
            return None
        if "json" not in content_type:
            return raw.decode("utf-8", "replace")
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(502, "Bad Gateway", "the gateway answered with malformed JSON") from None

    def open_stream(self, path: str, *, query: Mapping[str, Any] | None = None, accept: str = "*/*",
                    endless: bool = False) -> Any:
        """GET a streamed body: returns the open response (read it in chunks, then close it).

        An `endless` stream (server-sent events) has no read timeout: it may stay quiet for long."""
        headers = {"Accept": accept, "User-Agent": _USER_AGENT}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(self.url_for(path, query), headers=headers, method="GET")
        return self._open(req, timeout=None if endless else self.timeout)

    def _open(self, req: urllib.request.Request, *, timeout: float | None) -> Any:
        """Opens a request; HTTP errors become ApiError (problem+json), transport errors GatewayUnreachable."""
        try:
            return self._opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raw = exc.read() if exc.fp is not None else b""
            raise _problem_from(exc.code, exc.reason or "", exc.headers.get("Content-Type", ""),
                                raw) from None
        except urllib.error.URLError as exc:
            raise GatewayUnreachable(display_url(self.base_url), _reason_text(exc.reason)) from None
        except TimeoutError:
            raise GatewayUnreachable(display_url(self.base_url), "timed out") from None
        except (ConnectionError, OSError) as exc:
            raise GatewayUnreachable(display_url(self.base_url), _reason_text(exc)) from None

    def get(self, path: str, *, query: Mapping[str, Any] | None = None, auth: bool = True) -> Any:
        return self.request("GET", path, query=query, auth=auth)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body={} if body is None else body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _reason_text(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve host ({reason.strerror or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)
