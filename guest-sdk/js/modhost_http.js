// Outbound HTTP for modhost modules in JavaScript: a small blocking client
// over `wasi:http`, the twin of the Rust SDK's `module_sdk::http` and the
// Python SDK's `modhost_sdk.http`.
//
//     import { http } from './modhost_http.js';
//
//     const page = http.get('https://api.example.com/v1/items').send().text();
//     const written = http.get('https://downloads.example.org/model.bin')
//       .send()
//       .save('/data/model.bin', (p) => { /* p.done, p.total */ });
//
// The host sends a request only to a destination the module's
// `[network] allow` grants, resolves names itself and never lets a granted
// *name* lead to an internal address: such a host is reached only through a
// grant of its address. Each refusal throws an error that is the SDK's error
// of its kind (`Denied` is a `PermissionDenied`, `TooLarge` a
// `LimitExceeded`, ...; `isHttpError(e)` tells them from the rest), so a
// handler that lets one escape answers with the matching WIT `error`.
// Redirects are followed (10 at most by default), each a new request the
// host decides anew.
//
// It needs the SDK's world with `wasi:http` (`modhost:js-sdk/module-http`,
// `http-world.wit` beside this file) and a build that keeps the runtime's
// own `fetch` out:
//
//     componentize-js --wit WIT_DIR -n module-http -d http -d fetch-event -o component.wasm app.js
//
// where WIT_DIR holds `http-world.wit` as its `world.wit`, modhost's `wit/`
// under `deps/sdk/` and WASI's packages under `deps/` (as `modhost new
// --lang js` lays them out).

import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingBody, OutgoingRequest, RequestOptions } from 'wasi:http/types@0.2.12';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

import { Internal, InvalidInput, LimitExceeded, PermissionDenied } from './modhost_sdk.js';

/** Redirects a request follows unless told otherwise. */
export const MAX_REDIRECTS = 10;

// The request headers a redirect to another origin keeps; every other one
// (credentials, API keys, cookies) stays with the origin it was set for.
const KEPT_ACROSS_ORIGINS = new Set([
  'accept', 'accept-encoding', 'accept-language', 'user-agent', 'content-type', 'content-length',
]);

// The most bytes one write to a request body may carry (`wasi:io`).
const WRITE_CHUNK = 4096;

// The most bytes one read of a response body asks for.
const READ_CHUNK = 64n * 1024n;

const dispose = Symbol.dispose || Symbol.for('dispose');
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

const HTTP_ERROR = Symbol('modhost http error');

/** Whether `e` is one of this client's errors. */
export function isHttpError(e) {
  return Boolean(e && e[HTTP_ERROR]);
}

const network = (what) => `network: ${what}`;

/** The destination (`scheme://host:port`) is not in `[network] allow`. */
export class Denied extends PermissionDenied {
  constructor(destination) {
    super(network(`\`${destination}\` is not in the module's [network] allow`));
    this.destination = destination;
  }
}

/** The destination's name resolves only to internal addresses, which a
 * name never reaches: the grant must name the address itself. */
export class InternalAddress extends PermissionDenied {
  constructor(destination) {
    super(network(`\`${destination}\` resolves to an internal address, which a granted name never reaches: grant the address itself in [network] allow`));
    this.destination = destination;
  }
}

/** The response body is larger than `[network] max-response-mib`. */
export class TooLarge extends LimitExceeded {
  constructor(limitBytes) {
    super(network(limitBytes === undefined
      ? "the response is larger than the module's [network] max-response-mib"
      : `the response is larger than ${limitBytes} bytes, the module's [network] max-response-mib`));
    this.limitBytes = limitBytes;
  }
}

/** A time limit passed; the message says which. */
export class Timeout extends LimitExceeded {
  constructor(what) { super(network(`timed out: ${what}`)); }
}

/** The module has `[network] max-concurrent` requests open already. */
export class TooManyOpen extends LimitExceeded {
  constructor() { super(network('the module has [network] max-concurrent requests open already')); }
}

/** More redirects than the request follows. */
export class TooManyRedirects extends LimitExceeded {
  constructor(max) { super(network(`more than ${max} redirects`)); this.max = max; }
}

/** The URL, a header or the method is malformed; the message says which. */
export class InvalidRequest extends InvalidInput {
  constructor(what) { super(network(`invalid request: ${what}`)); }
}

/** The request failed on the way (refused, TLS, protocol, ...). */
export class RequestFailed extends Internal {
  constructor(what) { super(network(`the request failed: ${what}`)); }
}

for (const cls of [Denied, InternalAddress, TooLarge, Timeout, TooManyOpen, TooManyRedirects, InvalidRequest, RequestFailed]) {
  cls.prototype[HTTP_ERROR] = true;
}

/** The error for a `wasi:http` error code. */
function ofCode(code, destination) {
  switch (code && code.tag) {
    case 'HTTP-request-denied': return new Denied(destination);
    case 'destination-IP-prohibited': return new InternalAddress(destination);
    case 'HTTP-response-body-size':
      return new TooLarge(code.val === undefined || code.val === null ? undefined : Number(code.val));
    case 'HTTP-response-timeout': return new Timeout(`\`${destination}\` did not answer in time`);
    case 'connection-read-timeout': return new Timeout(`the response of \`${destination}\` stalled`);
    case 'connection-timeout': return new Timeout(`connecting to \`${destination}\``);
    case 'connection-limit-reached': return new TooManyOpen();
    case 'destination-not-found': return new RequestFailed(`\`${destination}\` did not resolve`);
    case 'connection-refused': return new RequestFailed(`\`${destination}\` refused the connection`);
    case 'TLS-certificate-error':
      return new RequestFailed(`the TLS certificate of \`${destination}\` is not one the host trusts (the Mozilla roots, and those of \`modhost serve --tls-roots\`)`);
    case 'HTTP-request-URI-invalid': return new InvalidRequest(`the URL of \`${destination}\``);
    default: {
      const detail = code && code.val !== undefined ? ` (${String(code.val)})` : '';
      return new RequestFailed(`\`${destination}\`: ${code ? code.tag : 'no code'}${detail}`);
    }
  }
}

/** A body's failure as the host spells it (`modhost-network-body:
 * too-large LIMIT`, `timeout total`, `timeout stall`), since `wasi:http`
 * carries no code for it. */
function ofBodyFailure(text, destination) {
  const at = text.indexOf('modhost-network-body: ');
  const what = at < 0 ? undefined : text.slice(at + 'modhost-network-body: '.length).trim();
  if (what !== undefined && what.startsWith('too-large')) {
    const limit = what.slice('too-large'.length).trim();
    return new TooLarge(/^\d+$/.test(limit) ? Number(limit) : undefined);
  }
  if (what === 'timeout total') return new Timeout(`the whole request to \`${destination}\` ([network] timeout-ms)`);
  if (what === 'timeout stall') return new Timeout(`the response of \`${destination}\` stalled`);
  return new RequestFailed(`reading the body of \`${destination}\`: ${text}`);
}

/** The payload of a result's `err` that a binding threw. */
function payloadOf(e) {
  if (e && typeof e === 'object' && 'payload' in e) return e.payload;
  throw e;
}

function streamError(error) {
  return error && error.tag === 'last-operation-failed' ? error.val.toDebugString() : 'the stream closed';
}

/** Drops `wasi:http` resources now, in the order given: a child before its
 * parent, which the host requires (the garbage collector keeps no order). */
function release(...resources) {
  for (const r of resources) if (r) r[dispose]();
}

function bytesOf(value) {
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new InvalidRequest(`a body or header value must be a string or bytes, not ${typeof value}`);
}

/** A URL split as `wasi:http` takes it. */
class Url {
  constructor(https, authority, path) {
    this.https = https;
    this.authority = authority;
    this.path = path;
  }

  static parse(text) {
    const bad = (why) => new InvalidRequest(`URL \`${text}\`: ${why}`);
    const sep = text.indexOf('://');
    if (sep < 0) throw bad('it must start with http:// or https://');
    const scheme = text.slice(0, sep).toLowerCase();
    if (scheme !== 'http' && scheme !== 'https') throw bad('the scheme must be http or https');
    const rest = text.slice(sep + 3);
    const ends = ['/', '?', '#'].map((c) => rest.indexOf(c)).filter((i) => i >= 0);
    const end = ends.length ? Math.min(...ends) : rest.length;
    const authority = rest.slice(0, end);
    if (!authority) throw bad('it has no host');
    if (authority.includes('@')) throw bad('credentials in the URL are not supported; send a header');
    if (/[\u0000-\u0020\u007f]/.test(text)) throw bad('it contains spaces or control characters');
    const tail = rest.slice(end).split('#')[0];
    return new Url(scheme === 'https', authority, tail.startsWith('/') ? tail : `/${tail}`);
  }

  get scheme() { return this.https ? 'https' : 'http'; }

  /** `scheme://host:port`, as the grant is matched. */
  destination() {
    const colon = this.authority.lastIndexOf(':');
    if (colon >= 0 && !this.authority.slice(colon).includes(']')) return `${this.scheme}://${this.authority}`;
    return `${this.scheme}://${this.authority}:${this.https ? 443 : 80}`;
  }

  /** The URL a `location` header leads to from this one. */
  join(location) {
    const lower = location.slice(0, 8).toLowerCase();
    if (lower.startsWith('http://') || lower.startsWith('https://')) return Url.parse(location);
    if (location.startsWith('//')) return Url.parse(`${this.scheme}:${location}`);
    let path = location;
    if (!location.startsWith('/')) {
      const base = this.path.split('?')[0];
      path = base.slice(0, base.lastIndexOf('/') + 1) + location;
    }
    return Url.parse(`${this.scheme}://${this.authority}${path}`);
  }

  toString() { return `${this.scheme}://${this.authority}${this.path}`; }
}

function headerOf(headers, name) {
  const lower = name.toLowerCase();
  const found = headers.find(([n]) => n.toLowerCase() === lower);
  return found ? decoder.decode(found[1]) : undefined;
}

function nanos(ms) {
  if (typeof ms !== 'number' || !(ms >= 0)) throw new InvalidRequest(`a timeout must be a number of milliseconds, not ${ms}`);
  return BigInt(Math.min(Math.round(ms * 1e6), Number.MAX_SAFE_INTEGER));
}

const METHODS = new Set(['get', 'head', 'post', 'put', 'delete', 'options', 'patch']);

/** A request being built: `http.get`, `http.post` or `http.request`, then
 * `send()`. Each setter returns the request, so they chain. */
export class Request {
  constructor(method, url) {
    this.method = String(method).toUpperCase();
    this.url = url;
    this.headers = [];
    this.bodyBytes = new Uint8Array(0);
    this.firstByteMs = undefined;
    this.betweenBytesMs = undefined;
    this.redirects = MAX_REDIRECTS;
  }

  /** Adds a header (repeatable). */
  header(name, value) { this.headers.push([String(name).toLowerCase(), bytesOf(value)]); return this; }

  /** The request body (a string or bytes). */
  body(body) { this.bodyBytes = bytesOf(body); return this; }

  /** A JSON body, with its content type. */
  json(value) {
    let text;
    try {
      text = JSON.stringify(value);
    } catch (e) {
      throw new InvalidRequest(`JSON body: ${e.message}`);
    }
    if (text === undefined) throw new InvalidRequest(`JSON body: ${typeof value} is not JSON`);
    return this.header('content-type', 'application/json').body(text);
  }

  /** How long to wait for the response's headers, in milliseconds; the
   * host caps it at `[network] first-byte-timeout-ms`. */
  timeout(ms) { this.firstByteMs = ms; return this; }

  /** How long the response body may stall between two chunks, in ms. */
  stallTimeout(ms) { this.betweenBytesMs = ms; return this; }

  /** Redirects to follow; 0 returns a redirect as it came. */
  maxRedirects(n) {
    if (!Number.isInteger(n) || n < 0) throw new InvalidRequest(`maxRedirects must be a whole number, not ${n}`);
    this.redirects = n;
    return this;
  }

  /** Sends the request, following redirects. */
  send() {
    let url = Url.parse(String(this.url));
    let { method, bodyBytes: body } = this;
    let headers = [...this.headers];
    for (let hops = 0; ; hops++) {
      const sent = sendOnce(method, url, headers, body, this.firstByteMs, this.betweenBytesMs);
      const location = [301, 302, 303, 307, 308].includes(sent.status) ? sent.header('location') : undefined;
      if (location === undefined || this.redirects === 0) return sent;
      sent.close();
      if (hops === this.redirects) throw new TooManyRedirects(this.redirects);
      const next = url.join(location);
      if (sent.status === 303 || ([301, 302].includes(sent.status) && method !== 'GET' && method !== 'HEAD')) {
        method = 'GET';
        body = new Uint8Array(0);
        headers = headers.filter(([n]) => n !== 'content-type' && n !== 'content-length');
      }
      if (next.authority !== url.authority || next.https !== url.https) {
        // Another origin gets none of what was meant for this one: only
        // headers that carry no secret go on.
        headers = headers.filter(([n]) => KEPT_ACROSS_ORIGINS.has(n));
      }
      url = next;
    }
  }
}

function sendOnce(method, url, headers, body, firstByteMs, betweenBytesMs) {
  const destination = url.destination();
  const invalid = (what) => new InvalidRequest(`${what} of \`${destination}\``);
  let fields;
  try {
    fields = Fields.fromList(headers);
  } catch (e) {
    throw new InvalidRequest(`headers: ${payloadOf(e).tag}`);
  }
  const req = new OutgoingRequest(fields);
  const lower = method.toLowerCase();
  const setters = [
    [() => req.setMethod(METHODS.has(lower) ? { tag: lower } : { tag: 'other', val: method }), 'the method'],
    [() => req.setScheme({ tag: url.https ? 'HTTPS' : 'HTTP' }), 'the scheme'],
    [() => req.setAuthority(url.authority), 'the host'],
    [() => req.setPathWithQuery(url.path), 'the path'],
  ];
  for (const [set, what] of setters) {
    try {
      set();
    } catch (e) {
      payloadOf(e);
      release(req);
      throw invalid(what);
    }
  }
  const out = body.length ? req.body() : undefined;
  const options = new RequestOptions();
  for (const [set, ms] of [[(d) => options.setFirstByteTimeout(d), firstByteMs], [(d) => options.setBetweenBytesTimeout(d), betweenBytesMs]]) {
    if (ms === undefined) continue;
    try {
      set(nanos(ms));
    } catch (e) {
      if (e instanceof InvalidRequest) throw e;
      payloadOf(e); // a host without the setting keeps its own limit
    }
  }
  let future;
  try {
    future = handle(req, options);
  } catch (e) {
    release(out);
    throw ofCode(payloadOf(e), destination);
  }
  if (out) {
    const stream = out.write();
    try {
      for (let at = 0; at < body.length; at += WRITE_CHUNK) {
        stream.blockingWriteAndFlush(body.subarray(at, at + WRITE_CHUNK));
      }
    } catch (e) {
      release(stream, out, future);
      throw new RequestFailed(`sending the body: ${streamError(payloadOf(e))}`);
    }
    release(stream);
    try {
      OutgoingBody.finish(out, undefined);
    } catch (e) {
      release(future);
      throw ofCode(payloadOf(e), destination);
    }
  }
  const pollable = future.subscribe();
  pollable.block();
  release(pollable);
  const got = future.get();
  release(future);
  if (!got || got.tag !== 'ok') throw new RequestFailed(`\`${destination}\`: no response`);
  if (got.val.tag !== 'ok') throw ofCode(got.val.val, destination);
  const response = got.val.val;
  const status = response.status();
  const responseFields = response.headers();
  const entries = responseFields.entries();
  release(responseFields);
  const incoming = response.consume();
  return new Response(status, url, entries, response, incoming, incoming.stream(), destination);
}

/** Where `path` lies: the preopened directory that holds it, and the path
 * within. */
function inPreopen(path) {
  let found;
  for (const [dir, name] of getDirectories()) {
    const root = name.endsWith('/') ? name : `${name}/`;
    if (!found && path.startsWith(root) && path.length > root.length) found = [dir, path.slice(root.length)];
    else release(dir);
  }
  if (found) return found;
  throw new InvalidInput(`\`${path}\` is not in a directory the module may write (its data directory is /data, with [filesystem] data granted)`);
}

function fileError(e, path) {
  const code = e && typeof e === 'object' && 'payload' in e ? e.payload : undefined;
  if (code === undefined) throw e;
  return new Internal(`writing \`${path}\`: ${code}`);
}

/** A response: its status and headers, and its body to read once.
 *
 * Read the body with `bytes()`, `text()`, `json()`, `chunks()` or `save()`;
 * a failure of the body (a cap reached, a stall) throws the error it is. A
 * response holds one of the module's `[network] max-concurrent` places
 * until its body is read to the end or it is closed (`close()`). */
export class Response {
  constructor(status, url, headers, response, body, stream, destination) {
    /** The status code. */
    this.status = status;
    /** Every header as [name, value bytes], names in lower case. */
    this.headers = headers;
    this.origin = url;
    this.resources = { response, body, stream };
    this.destination = destination;
  }

  /** The URL this response came from, after redirects. */
  get url() { return this.origin.toString(); }

  /** The first value of header `name`. */
  header(name) { return headerOf(this.headers, name); }

  /** The body's length, when the server said it. */
  get contentLength() {
    const value = (this.header('content-length') || '').trim();
    return /^\d+$/.test(value) ? Number(value) : undefined;
  }

  /** Gives the body up unread, and the request's place with it. */
  close() {
    const { stream, body, response } = this.resources;
    this.resources = {};
    release(stream, body, response);
  }

  /** The body, as chunks (Uint8Array) of at most `size` bytes as they
   * arrive. In componentize-js 0.23.0 what the chunks took stays taken
   * until the handler returns: read this way only a body that fits the
   * module's memory, and `save()` a larger one. */
  *chunks(size = Number(READ_CHUNK)) {
    if (!Number.isInteger(size) || size <= 0) throw new InvalidRequest(`a chunk size must be a positive whole number, not ${size}`);
    while (this.resources.stream) {
      let chunk;
      try {
        chunk = this.resources.stream.blockingRead(BigInt(size));
      } catch (e) {
        const error = payloadOf(e);
        this.close();
        if (error.tag === 'closed') return;
        throw ofBodyFailure(streamError(error), this.destination);
      }
      if (chunk.length) yield chunk;
    }
  }

  /** The whole body, as one Uint8Array. */
  bytes() {
    const parts = [...this.chunks()];
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return all;
  }

  /** The whole body as text (invalid UTF-8 replaced). */
  text() { return decoder.decode(this.bytes()); }

  /** The whole body as JSON. */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new InvalidInput(`the response of \`${this.destination}\` is not JSON: ${e.message}`);
    }
  }

  /** Streams the body into the file `path` (in the data directory, for a
   * module granted `[filesystem] data`), calling `progress` with
   * `{done, total}` as it goes. The bytes move on the host's side and never
   * pass through JavaScript (so there is no `chunk` to hash: read
   * `chunks()` for that, of a body that fits the module's memory). The file
   * appears only whole: the body goes to `path.partial` first, renamed once
   * complete and removed on failure. Returns the bytes written. */
  save(path, progress) {
    const [dir, name] = inPreopen(String(path));
    const partial = `${name}.partial`;
    const total = this.contentLength;
    let done = 0;
    let file;
    try {
      try {
        file = dir.openAt({}, partial, { create: true, truncate: true }, { write: true });
      } catch (e) {
        throw fileError(e, path);
      }
      // The body moves on the host's side, stream to stream: no chunk
      // passes through JavaScript, whose bindings keep what a read
      // returns until a collection that a loop of reads does not bring.
      const out = file.writeViaStream(0n);
      try {
        for (;;) {
          let moved;
          try {
            moved = Number(out.blockingSplice(this.resources.stream, READ_CHUNK * 16n));
          } catch (e) {
            const error = payloadOf(e);
            if (error.tag === 'closed') break;
            throw ofBodyFailure(streamError(error), this.destination);
          }
          done += moved;
          if (progress && moved) progress({ done, total });
        }
        out.blockingFlush();
      } finally {
        release(out);
      }
      try {
        file.syncData();
        release(file);
        file = undefined;
        dir.renameAt(partial, dir, name);
      } catch (e) {
        throw fileError(e, path);
      }
    } catch (e) {
      this.close();
      release(file);
      try {
        dir.unlinkFileAt(partial);
      } catch {
        // nothing was left, or nothing can be done about it
      }
      throw e;
    } finally {
      release(dir);
    }
    return done;
  }
}

/** The client: `http.get(url)`, `http.post(url)`, `http.request(method,
 * url)`, each a `Request` to `send()`. */
export const http = {
  get: (url) => new Request('GET', url),
  post: (url) => new Request('POST', url),
  request: (method, url) => new Request(method, url),
};
