// Sends whatever outbound request its caller describes through the
// JavaScript SDK's `http` client and reports what came back: the twin of
// the Rust `tests/programs/fetcher` and the Python one, so the network
// tests run each grant and attack through every SDK.

import { Internal, ModhostError, Module, context, tasks } from './modhost_sdk.js';
import { http } from './modhost_http.js';

const module = new Module();
const text = new TextDecoder();

module.action('send', 'Send a request: {url, method?, body?, headers?, max_redirects?, timeout_ms?, stall_ms?}', (r) => {
  const req = http.request(r.method || 'GET', r.url);
  for (const [name, value] of r.headers || []) req.header(name, value);
  if (r.body !== undefined && r.body !== null) req.body(r.body);
  if (r.max_redirects !== undefined && r.max_redirects !== null) req.maxRedirects(r.max_redirects);
  if (r.timeout_ms !== undefined && r.timeout_ms !== null) req.timeout(r.timeout_ms);
  if (r.stall_ms !== undefined && r.stall_ms !== null) req.stallTimeout(r.stall_ms);
  const response = req.send();
  const { status, url } = response;
  const kind = response.header('content-type');
  const body = response.bytes();
  return {
    status,
    url,
    content_type: kind === undefined ? null : kind,
    len: body.length,
    body: text.decode(body.subarray(0, 4096)),
  };
});

module.action('hold', 'Open `n` requests to `url` and keep them all open; report how many were answered', (r) => {
  const held = [];
  let refused = null;
  for (let i = 0; i < r.n; i++) {
    try {
      held.push(http.get(r.url).send());
    } catch (e) {
      if (!(e instanceof ModhostError)) throw e;
      refused = { kind: e.kind, message: e.message };
      break;
    }
  }
  const answered = held.length;
  for (const response of held) response.close();
  // Every place is given back once the responses are closed.
  let again = true;
  try {
    http.get(r.url).send().close();
  } catch (e) {
    if (!(e instanceof ModhostError)) throw e;
    again = false;
  }
  return { answered, refused, again };
});

module.action('repeat', 'GET `url` `n` times, reading each body; report the bytes read', (r) => {
  let read = 0;
  for (let i = 0; i < r.n; i++) {
    const response = http.get(r.url).send();
    if (response.status !== 200) throw new Internal(`${r.url} answered ${response.status}`);
    read += response.bytes().length;
  }
  return { n: r.n, bytes: read };
});

module.action('save', 'Save `url` to the data directory as `name`, in the action', (d) => (
  { bytes: http.get(d.url).send().save(`/data/${d.name}`) }
));

module.action('download', 'Save `url` to the data directory as `name` in a background task', (d) => (
  { task_id: tasks.runBackground('download', d) }
));

module.task('download', 'Save a URL into the data directory, with progress', (d) => {
  const id = context.currentTask();
  const path = `/data/${d.name}`;
  let reported = 0;
  const written = http.get(d.url).send().save(path, (p) => {
    if (p.total && p.done - reported >= Math.floor(p.total / 4)) {
      reported = p.done;
      tasks.updateProgress(id, p.done / p.total, { label: `${p.done} of ${p.total} bytes` });
    }
  });
  return { bytes: written, path };
});

export const { describe, handleAction, runTask, callBlocking } = module.world();
