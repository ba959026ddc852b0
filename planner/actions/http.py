"""The `http` action: one HTTP request with httpx."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import json
import logging
import re
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .base import ActionContext, ActionResult, builtin_schema

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_TIMEOUT", "MAX_BODY", "HttpAction", "aclose_clients"]

DEFAULT_TIMEOUT = 30.0
# Largest response body read (after any Content-Encoding is undone): the body is kept in
# memory and in the state store, and a server may send one without end.
MAX_BODY = 64 * 1024 * 1024
# Longest excerpt of a response body quoted in an error message.
_ERROR_EXCERPT = 200

# The masking of the run whose request is under way (in its task), for httpx's log: it
# logs each request's URL at INFO, which a host that shows INFO logs would show whole.
_mask: contextvars.ContextVar[Callable[[str], str]] = contextvars.ContextVar(
    "planctl_http_mask", default=str)


class _Masked(logging.Filter):
    """Masks the run's secrets in what httpx logs during a request of the `http` action."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask = _mask.get()
        if mask is not str:
            record.msg, record.args = mask(record.getMessage()), None
        return True


_MASKED = _Masked()

# One pooled client per event loop: connections cannot be shared across loops.
_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def _client() -> httpx.AsyncClient:
    import httpx  # lazily: validating a plan must not pay for importing httpx

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        for old in [old for old in _clients if old.is_closed()]:
            del _clients[old]  # its loop is gone, so it cannot be closed properly anymore
        # No connection cap: the executor's max_parallel already bounds concurrency, and
        # a cap would turn a burst of polls into pool timeouts.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
        client = _clients[loop] = httpx.AsyncClient(limits=limits)
    return client


async def aclose_clients() -> None:
    """Close the client of the running event loop; the executor calls this before it ends."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not standard JSON")


class HttpAction:
    """Send one request; ok when the status is the expected one (by default any 2xx).

    Always sends ``Idempotency-Key`` (the command's key) unless the plan set that header.
    Data: ``status``, ``headers`` (lower-case names), ``text``, and ``json`` when the body
    parses as standard JSON. Request headers never appear in the result: they may carry
    secrets.
    Connection errors, timeouts (of the whole request) and a body larger than ``MAX_BODY``
    give ``ok=False``, never an exception.
    """

    name = "http"
    schema: Mapping[str, Any] = builtin_schema("http")
    capabilities: frozenset[str] = frozenset()

    async def run(self, args: Any, context: ActionContext) -> ActionResult:
        import httpx

        method = str(args.get("method", "GET")).upper()
        url = str(args["url"])
        shown, host, port = _url_parts(url)
        where = f"{method} {shown}"
        # Checked here: out of range, the connection code raises an ExceptionGroup.
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            return ActionResult(False, {}, f"{where}: invalid port")
        headers = {str(k): str(v) for k, v in (args.get("headers") or {}).items()}
        for name, value in headers.items():
            problem = _header_problem(name, value)
            if problem:
                return ActionResult(False, {}, f"{where}: invalid request: {problem}")
        if not any(k.lower() == "idempotency-key" for k in headers):
            headers["Idempotency-Key"] = context.idempotency_key
        body: dict[str, Any] = {}
        if "json" in args:
            body["json"] = args["json"]
        elif "body" in args:
            body["content"] = str(args["body"]).encode("utf-8")
        timeout = context.timeout or DEFAULT_TIMEOUT
        logger = logging.getLogger("httpx")
        if _MASKED not in logger.filters:  # (again: a host's logging.config may drop it)
            logger.addFilter(_MASKED)
        masking = _mask.set(context.mask)
        try:
            # httpx's timeout bounds each wait (connect, each read), not the whole request:
            # a server trickling its body would never time out.
            async with asyncio.timeout(timeout):
                async with _client().stream(
                    method, url, headers=headers, timeout=timeout, **body
                ) as response:
                    content = await _read_body(response)
        except (httpx.TimeoutException, TimeoutError):
            message = f"timed out after {timeout:g}s: {where}"
            return ActionResult(False, {"timed_out": True}, message)
        except httpx.ConnectError as exc:
            return ActionResult(False, {}, _connect_error(exc, shown, host))
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            text = _as_written(_reason(exc), host)
            return ActionResult(False, {}, f"{where}: {type(exc).__name__}: {text}")
        except ExceptionGroup as exc:  # what the connection code did not wrap
            text = "; ".join(_as_written(str(e), host) for e in exc.exceptions)
            return ActionResult(False, {}, f"{where}: {text}")
        except (TypeError, ValueError) as exc:  # e.g. a json value that cannot be encoded
            return ActionResult(False, {}, f"{where}: invalid request: {exc}")
        finally:
            _mask.reset(masking)

        head: dict[str, Any] = {
            "status": response.status_code,
            "headers": {k.lower(): v for k, v in response.headers.items()},
        }
        if content is None:
            limit = f"{MAX_BODY // 1024**2} MiB"
            return ActionResult(False, head, f"{where}: response body larger than {limit}")
        text = content.decode(response.encoding or "utf-8", errors="replace")
        data: dict[str, Any] = {**head, "text": text}
        if text.strip():
            # Standard JSON only (Python's parser also takes NaN and Infinity, which the
            # state store cannot write); a body nested too deeply to parse is text only.
            with contextlib.suppress(ValueError, RecursionError):
                data["json"] = json.loads(text, parse_constant=_not_json)
        expected = args.get("status")
        if expected is None:
            ok = 200 <= response.status_code < 300
        else:
            ok = response.status_code in (expected if isinstance(expected, list) else [expected])
        if ok:
            return ActionResult(True, data)
        message = f"HTTP {response.status_code} {response.reason_phrase} from {where}"
        if expected is not None:
            message += f" (expected {expected})"
        excerpt = " ".join(context.mask(text).split())  # masked before it is cut
        if excerpt:
            if len(excerpt) > _ERROR_EXCERPT:
                excerpt = excerpt[: _ERROR_EXCERPT - 3] + "..."
            message += f": {excerpt}"
        return ActionResult(False, data, message)


async def _read_body(response: httpx.Response) -> bytes | None:
    """The body of ``response``, or None when it is larger than ``MAX_BODY`` (the rest is
    not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# What HTTP/1.1 (h11) takes: a name is a token; a value has no NUL, no line break nor
# other whitespace but spaces and tabs, and none of those at either end.
_HEADER_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_HEADER_VALUE = re.compile(r"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?", re.ASCII)


def _header_problem(name: str, value: str) -> str | None:
    """Why the header ``name: value`` cannot be sent, in words that never quote the value
    (httpx's own errors quote it escaped, which the masking of secrets would not
    recognise), or None."""
    if not _HEADER_NAME.fullmatch(name):
        return f"header name {name!r} is not valid"
    if not value.isascii():
        return f"header {name}: the value has a character that is not ASCII"
    if _HEADER_VALUE.fullmatch(value):
        return None
    if value != value.strip(" \t"):
        return f"header {name}: the value starts or ends with a space or tab"
    return (f"header {name}: the value holds a line break or another character a header"
            " cannot (a secret read with its trailing newline?)")


def _reason(exc: BaseException) -> str:
    """The message of ``exc``, or of the first exception behind it that has one: httpx's
    ReadError for a connection reset mid-body says nothing, its cause does."""
    cause: BaseException | None = exc
    while cause is not None:
        if str(cause):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return "no reason given"


def _connect_error(exc: BaseException, shown: str, host: str) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return f"connection refused: {shown}"
        if isinstance(cause, socket.gaierror):
            reason = _as_written(str(cause.strerror or cause), host)
            return f"cannot resolve host {host or shown}: {reason}"
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect: {shown}: {_as_written(str(exc), host)}"


def _url_parts(url: str) -> tuple[str, str, str]:
    """What an error may show of ``url`` (without user info, query or fragment, which often
    carry credentials), its host and its port, all as written: ``urlsplit`` and httpx
    lower-case the scheme and host and drop tabs, and a secret so re-spelled in a message
    would not be recognised, hence not masked."""
    head, _, query = url.partition("#")[0].partition("?")
    more = "?..." if query else ""
    scheme, slashes, rest = head.partition("://")
    if not slashes:
        return head + more, "", ""
    authority, slash, path = rest.partition("/")
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):  # an IPv6 address: [::1]:8080
        host, _, port = authority[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = authority.partition(":")
    return f"{scheme}://{authority}{slash}{path}{more}", host, port


def _as_written(text: str, host: str) -> str:
    """``text``, an exception's message, with ``host`` spelled as the URL wrote it (the
    resolver, TLS and httpx see it lower-cased)."""
    if not host:
        return text
    return re.sub(re.escape(host), lambda _: host, text, flags=re.IGNORECASE)


ACTION = HttpAction()
