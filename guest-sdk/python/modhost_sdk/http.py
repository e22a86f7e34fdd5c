"""Outbound HTTP: a small blocking client over `wasi:http`, the twin of
the Rust SDK's `module_sdk::http`.

The host sends a request only to a destination the module's
`[network] allow` grants (`https://api.example.com`,
`downloads.example.org:443`), resolves names itself and never lets a
granted *name* lead to an internal address (loopback, private,
link-local): such a host is reached only through a grant of its address
(`127.0.0.1:8080`). Each refusal is an `HttpError` naming what is
missing, and each one is also the `ModhostError` of its kind, so a
handler that lets it escape answers with the matching WIT `error`.
Redirects are followed (up to `MAX_REDIRECTS` by default), each one a new
request the host decides anew.

    from modhost_sdk import http

    page = http.get("https://api.example.com/v1/items").send().text()
    saved = http.get("https://downloads.example.org/model.bin").send().save(
        "/data/model.bin", lambda p: print(p.done, p.total)
    )

It needs a build for the SDK's `module-http` world (see the package's
docstring); in a build without `wasi:http`, sending raises `Internal`
saying so.
"""

from __future__ import annotations

import json as _json
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Tuple, Union

from componentize_py_types import Err, Ok

from . import Internal, InvalidInput, LimitExceeded, ModhostError, PermissionDenied

try:
    from wit_world.imports import outgoing_handler as _handler
    from wit_world.imports import streams as _streams
    from wit_world.imports import wasi_http_types as _h
except ImportError:  # built for `modhost:sdk/module` alone
    _handler = None

__all__ = [
    "MAX_REDIRECTS",
    "HttpError",
    "Denied",
    "InternalAddress",
    "TooLarge",
    "Timeout",
    "TooManyOpen",
    "TooManyRedirects",
    "InvalidRequest",
    "RequestFailed",
    "Progress",
    "Request",
    "Response",
    "get",
    "post",
    "request",
]

MAX_REDIRECTS = 10
"""Redirects a request follows unless told otherwise."""

# The request headers a redirect to another origin keeps; every other one
# (credentials, API keys, cookies) stays with the origin it was set for.
_KEPT_ACROSS_ORIGINS = (
    "accept",
    "accept-encoding",
    "accept-language",
    "user-agent",
    "content-type",
    "content-length",
)

# The most bytes one write to a request body may carry (`wasi:io`).
_WRITE_CHUNK = 4096

# The most bytes one read of a response body asks for.
_READ_CHUNK = 64 * 1024

_METHODS = {
    "GET": "Method_Get",
    "HEAD": "Method_Head",
    "POST": "Method_Post",
    "PUT": "Method_Put",
    "DELETE": "Method_Delete",
    "OPTIONS": "Method_Options",
    "PATCH": "Method_Patch",
}


class HttpError(ModhostError):
    """Why a request failed. Each subclass is also the `ModhostError` of
    its kind: a refusal is a missing grant, a cap reached is a limit, a bad
    URL is bad input."""

    def __init__(self, what: str):
        super().__init__(f"network: {what}")


class Denied(HttpError, PermissionDenied):
    """The destination (`scheme://host:port`) is not in `[network] allow`."""

    def __init__(self, destination: str):
        super().__init__(f"`{destination}` is not in the module's [network] allow")
        self.destination = destination


class InternalAddress(HttpError, PermissionDenied):
    """The destination's name resolves only to internal addresses, which a
    name never reaches: the grant must name the address itself."""

    def __init__(self, destination: str):
        super().__init__(
            f"`{destination}` resolves to an internal address, which a granted name never "
            "reaches: grant the address itself in [network] allow"
        )
        self.destination = destination


class TooLarge(HttpError, LimitExceeded):
    """The response body is larger than `[network] max-response-mib`."""

    def __init__(self, limit_bytes: Optional[int]):
        if limit_bytes is None:
            what = "the response is larger than the module's [network] max-response-mib"
        else:
            what = (
                f"the response is larger than {limit_bytes} bytes, "
                "the module's [network] max-response-mib"
            )
        super().__init__(what)
        self.limit_bytes = limit_bytes


class Timeout(HttpError, LimitExceeded):
    """A time limit passed; the message says which."""

    def __init__(self, what: str):
        super().__init__(f"timed out: {what}")


class TooManyOpen(HttpError, LimitExceeded):
    """The module has `[network] max-concurrent` requests open already."""

    def __init__(self) -> None:
        super().__init__("the module has [network] max-concurrent requests open already")


class TooManyRedirects(HttpError, LimitExceeded):
    """More redirects than the request follows."""

    def __init__(self, max: int):
        super().__init__(f"more than {max} redirects")
        self.max = max


class InvalidRequest(HttpError, InvalidInput):
    """The URL, a header or the method is malformed; the message says which."""

    def __init__(self, what: str):
        super().__init__(f"invalid request: {what}")


class RequestFailed(HttpError, Internal):
    """The request failed on the way (refused, TLS, protocol, ...)."""

    def __init__(self, what: str):
        super().__init__(f"the request failed: {what}")


def _of_code(code: Any, destination: str) -> HttpError:
    """The error for a `wasi:http` error code."""
    name = type(code).__name__.removeprefix("ErrorCode_")
    if name == "HttpRequestDenied":
        return Denied(destination)
    if name == "DestinationIpProhibited":
        return InternalAddress(destination)
    if name == "HttpResponseBodySize":
        return TooLarge(code.value)
    if name == "HttpResponseTimeout":
        return Timeout(f"`{destination}` did not answer in time")
    if name == "ConnectionReadTimeout":
        return Timeout(f"the response of `{destination}` stalled")
    if name == "ConnectionTimeout":
        return Timeout(f"connecting to `{destination}`")
    if name == "ConnectionLimitReached":
        return TooManyOpen()
    if name == "DestinationNotFound":
        return RequestFailed(f"`{destination}` did not resolve")
    if name == "ConnectionRefused":
        return RequestFailed(f"`{destination}` refused the connection")
    if name == "TlsCertificateError":
        return RequestFailed(
            f"the TLS certificate of `{destination}` is not one the host trusts (the Mozilla "
            "roots, and those of `modhost serve --tls-roots`)"
        )
    if name == "HttpRequestUriInvalid":
        return InvalidRequest(f"the URL of `{destination}`")
    detail = getattr(code, "value", None)
    return RequestFailed(f"`{destination}`: {name}" + (f" ({detail})" if detail else ""))


def _of_body_failure(text: str, destination: str) -> HttpError:
    """A body's failure as the host spells it (`modhost-network-body:
    too-large LIMIT`, `timeout total`, `timeout stall`), since `wasi:http`
    carries no code for it."""
    _, marker, what = text.partition("modhost-network-body: ")
    what = what.strip()
    if marker and what.startswith("too-large"):
        limit = what[len("too-large") :].strip()
        return TooLarge(int(limit) if limit.isdigit() else None)
    if marker and what == "timeout total":
        return Timeout(f"the whole request to `{destination}` ([network] timeout-ms)")
    if marker and what == "timeout stall":
        return Timeout(f"the response of `{destination}` stalled")
    return RequestFailed(f"reading the body of `{destination}`: {text}")


def _release(*resources: Any) -> None:
    """Drops `wasi:http` resources now, in the order given: a child before
    its parent, which the host requires (the garbage collector keeps no
    order)."""
    for r in resources:
        if r is not None:
            r.__exit__(None, None, None)


@dataclass(frozen=True)
class _Url:
    """A URL split as `wasi:http` takes it."""

    https: bool
    authority: str
    path: str

    @staticmethod
    def parse(text: str) -> "_Url":
        def bad(why: str) -> InvalidRequest:
            return InvalidRequest(f"URL `{text}`: {why}")

        scheme, sep, rest = text.partition("://")
        if not sep:
            raise bad("it must start with http:// or https://")
        if scheme.lower() not in ("http", "https"):
            raise bad("the scheme must be http or https")
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, tail = rest[:end], rest[end:]
        if not authority:
            raise bad("it has no host")
        if "@" in authority:
            raise bad("credentials in the URL are not supported; send a header")
        if any(c == " " or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise bad("it contains spaces or control characters")
        tail = tail.split("#", 1)[0]
        path = tail if tail.startswith("/") else "/" + tail
        return _Url(https=scheme.lower() == "https", authority=authority, path=path)

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"

    def destination(self) -> str:
        """`scheme://host:port`, as the grant is matched."""
        colon = self.authority.rfind(":")
        if colon >= 0 and "]" not in self.authority[colon:]:
            return f"{self.scheme}://{self.authority}"
        return f"{self.scheme}://{self.authority}:{443 if self.https else 80}"

    def join(self, location: str) -> "_Url":
        """The URL a `location` header leads to from this one."""
        lower = location[:8].lower()
        if lower.startswith("http://") or lower.startswith("https://"):
            return _Url.parse(location)
        if location.startswith("//"):
            return _Url.parse(f"{self.scheme}:{location}")
        if location.startswith("/"):
            path = location
        else:
            base = self.path.split("?", 1)[0]
            path = base[: base.rfind("/") + 1] + location
        return _Url.parse(f"{self.scheme}://{self.authority}{path}")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"


def _header_of(headers: List[Tuple[str, bytes]], name: str) -> Optional[str]:
    name = name.lower()
    for n, v in headers:
        if n.lower() == name:
            return v.decode("utf-8", "replace")
    return None


def _nanos(seconds: float) -> int:
    return max(0, min(int(seconds * 1e9), 2**64 - 1))


@dataclass(frozen=True)
class Progress:
    """How far `Response.save` is."""

    chunk: bytes
    """The chunk just written."""
    done: int
    """Bytes written so far."""
    total: Optional[int]
    """The declared length of the body, if the server said it."""


class Request:
    """A request being built: `get`, `post` or `request`, then `send()`.
    Each setter returns the request, so they chain."""

    def __init__(self, method: str, url: str) -> None:
        self.method = method.upper()
        self.url = url
        self.headers: List[Tuple[str, bytes]] = []
        self._body = b""
        self._first_byte: Optional[float] = None
        self._between_bytes: Optional[float] = None
        self._max_redirects = MAX_REDIRECTS

    def header(self, name: str, value: Union[str, bytes]) -> "Request":
        """Adds a header (repeatable)."""
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        self.headers.append((name.lower(), raw))
        return self

    def body(self, body: Union[str, bytes]) -> "Request":
        """The request body."""
        self._body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        return self

    def json(self, value: Any) -> "Request":
        """A JSON body, with its content type."""
        try:
            text = _json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidRequest(f"JSON body: {e}") from None
        return self.header("content-type", "application/json").body(text)

    def timeout(self, seconds: float) -> "Request":
        """How long to wait for the response's headers; the host caps it at
        `[network] first-byte-timeout-ms`."""
        self._first_byte = seconds
        return self

    def stall_timeout(self, seconds: float) -> "Request":
        """How long the response body may stall between two chunks."""
        self._between_bytes = seconds
        return self

    def max_redirects(self, n: int) -> "Request":
        """Redirects to follow; 0 returns a redirect as it came."""
        if n < 0:
            raise InvalidRequest(f"max_redirects must not be negative, not {n}")
        self._max_redirects = n
        return self

    def send(self) -> "Response":
        """Sends the request, following redirects."""
        if _handler is None:
            raise Internal(
                "network: this module was built without wasi:http; build it for the SDK's "
                "world: -d SDK_DIR/wit -w modhost:python-sdk/module-http@0.1.0"
            )
        url = _Url.parse(self.url)
        method, body, headers = self.method, self._body, list(self.headers)
        hops = 0
        while True:
            sent = _send_once(method, url, headers, body, self._first_byte, self._between_bytes)
            location = (
                sent.header("location") if sent.status in (301, 302, 303, 307, 308) else None
            )
            if location is None or self._max_redirects == 0:
                return sent
            sent.close()
            if hops == self._max_redirects:
                raise TooManyRedirects(self._max_redirects)
            hops += 1
            following = url.join(location)
            if sent.status == 303 or (sent.status in (301, 302) and method not in ("GET", "HEAD")):
                method, body = "GET", b""
                headers = [(n, v) for n, v in headers if n not in ("content-type", "content-length")]
            if following.authority != url.authority or following.https != url.https:
                # Another origin gets none of what was meant for this one:
                # only headers that carry no secret go on.
                headers = [(n, v) for n, v in headers if n in _KEPT_ACROSS_ORIGINS]
            url = following


def get(url: str) -> Request:
    """A `GET` of `url`."""
    return Request("GET", url)


def post(url: str) -> Request:
    """A `POST` to `url`; give it a `body()` or `json()`."""
    return Request("POST", url)


def request(method: str, url: str) -> Request:
    """A request with any method."""
    return Request(method, url)


def _send_once(
    method: str,
    url: _Url,
    headers: List[Tuple[str, bytes]],
    body: bytes,
    first_byte: Optional[float],
    between_bytes: Optional[float],
) -> "Response":
    destination = url.destination()

    def invalid(what: str) -> InvalidRequest:
        return InvalidRequest(f"{what} of `{destination}`")

    try:
        fields = _h.Fields.from_list(headers)
    except Err as e:
        raise InvalidRequest(f"headers: {type(e.value).__name__.removeprefix('HeaderError_')}") from None
    req = _h.OutgoingRequest(fields)
    method_case = _METHODS.get(method)
    for setter, value, what in (
        (req.set_method, getattr(_h, method_case)() if method_case else _h.Method_Other(method), "the method"),
        (req.set_scheme, _h.Scheme_Https() if url.https else _h.Scheme_Http(), "the scheme"),
        (req.set_authority, url.authority, "the host"),
        (req.set_path_with_query, url.path, "the path"),
    ):
        try:
            setter(value)
        except Err:
            _release(req)
            raise invalid(what) from None
    out = req.body() if body else None
    options = _h.RequestOptions()
    for setter, seconds in (
        (options.set_first_byte_timeout, first_byte),
        (options.set_between_bytes_timeout, between_bytes),
    ):
        if seconds is not None:
            try:
                setter(_nanos(seconds))
            except Err:
                pass  # a host without the setting keeps its own limit
    try:
        future = _handler.handle(req, options)
    except Err as e:
        _release(out)
        raise _of_code(e.value, destination) from None
    if out is not None:
        stream = out.write()
        try:
            for start in range(0, len(body), _WRITE_CHUNK):
                stream.blocking_write_and_flush(body[start : start + _WRITE_CHUNK])
        except Err as e:
            _release(stream, out, future)
            raise RequestFailed(f"sending the body: {_stream_error(e.value)}") from None
        _release(stream)
        try:
            _h.OutgoingBody.finish(out, None)
        except Err as e:
            _release(future)
            raise _of_code(e.value, destination) from None
    pollable = future.subscribe()
    pollable.block()
    _release(pollable)
    got = future.get()
    _release(future)
    if not isinstance(got, Ok) or got is None:
        raise RequestFailed(f"`{destination}`: no response")
    if isinstance(got.value, Err):
        raise _of_code(got.value.value, destination)
    response = got.value.value
    status = response.status()
    fields = response.headers()
    entries = fields.entries()
    _release(fields)
    incoming = response.consume()
    return Response(status, url, entries, response, incoming, incoming.stream(), destination)


def _stream_error(error: Any) -> str:
    if isinstance(error, _streams.StreamError_LastOperationFailed):
        return error.value.to_debug_string()
    return "the stream closed"


class Response:
    """A response: its status and headers, and its body to read once.

    Read the body with `bytes()`, `text()`, `json()`, `chunks()` or
    `save()`; a failure of the body (a cap reached, a stall) raises the
    `HttpError` it is. A response holds one of the module's
    `[network] max-concurrent` places until its body is read to the end or
    it is closed (`close()`, or `with ... as response:`).
    """

    def __init__(
        self,
        status: int,
        url: _Url,
        headers: List[Tuple[str, bytes]],
        response: Any,
        body: Any,
        stream: Any,
        destination: str,
    ) -> None:
        self.status = status
        """The status code."""
        self.headers = headers
        """Every header as (name, value bytes), names in lower case."""
        self._url = url
        self._response, self._body, self._stream = response, body, stream
        self._destination = destination

    def __repr__(self) -> str:
        return f"Response(status={self.status}, url={self.url!r})"

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The URL this response came from, after redirects."""
        return str(self._url)

    def header(self, name: str) -> Optional[str]:
        """The first value of header `name`."""
        return _header_of(self.headers, name)

    @property
    def content_length(self) -> Optional[int]:
        """The body's length, when the server said it."""
        value = (self.header("content-length") or "").strip()
        return int(value) if value.isdigit() else None

    def close(self) -> None:
        """Gives the body up unread, and the request's place with it."""
        stream, body, response = self._stream, self._body, self._response
        self._stream = self._body = self._response = None
        _release(stream, body, response)

    def chunks(self, size: int = _READ_CHUNK) -> Iterator[bytes]:
        """The body, as chunks of at most `size` bytes as they arrive."""
        if size <= 0:
            raise InvalidRequest(f"a chunk size must be positive, not {size}")
        while self._stream is not None:
            try:
                chunk = self._stream.blocking_read(size)
            except Err as e:
                self.close()
                if isinstance(e.value, _streams.StreamError_Closed):
                    return
                raise _of_body_failure(_stream_error(e.value), self._destination) from None
            if chunk:
                yield chunk

    def bytes(self) -> bytes:
        """The whole body."""
        return b"".join(self.chunks())

    def text(self) -> str:
        """The whole body as text (invalid UTF-8 replaced)."""
        return self.bytes().decode("utf-8", "replace")

    def json(self) -> Any:
        """The whole body as JSON."""
        try:
            return _json.loads(self.bytes())
        except ValueError as e:
            raise InvalidInput(f"the response of `{self._destination}` is not JSON: {e}") from None

    def save(self, path: Union[str, os.PathLike], progress: Any = None) -> int:
        """Streams the body into the file `path` (in the data directory,
        for a module granted `[filesystem] data`), calling `progress` with a
        `Progress` after each chunk is written. The file appears only
        whole: the body goes to `path.partial` first, renamed once complete
        and removed on failure. Returns the bytes written."""
        path = os.fspath(path)
        partial = f"{path}.partial"
        total = self.content_length
        done = 0
        try:
            with open(partial, "wb") as file:
                for chunk in self.chunks():
                    file.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(Progress(chunk=chunk, done=done, total=total))
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except BaseException:
            self.close()
            try:
                os.remove(partial)
            except OSError:
                pass
            raise
        return done
