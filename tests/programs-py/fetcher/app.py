"""Sends whatever outbound request its caller describes through the Python
SDK's `http` client and reports what came back: the twin of the Rust
`tests/programs/fetcher`, so the network tests run each grant and attack
through both SDKs."""

import hashlib

from modhost_sdk import ModhostError, Module, context, http, tasks, Internal

module = Module()


@module.action("send", "Send a request: {url, method?, body?, headers?, max_redirects?, timeout_ms?, stall_ms?}")
def send(r):
    req = http.request(r.get("method") or "GET", r["url"])
    for name, value in r.get("headers") or []:
        req.header(name, value)
    if r.get("body") is not None:
        req.body(r["body"])
    if r.get("max_redirects") is not None:
        req.max_redirects(r["max_redirects"])
    if r.get("timeout_ms") is not None:
        req.timeout(r["timeout_ms"] / 1000)
    if r.get("stall_ms") is not None:
        req.stall_timeout(r["stall_ms"] / 1000)
    response = req.send()
    status, url, kind = response.status, response.url, response.header("content-type")
    body = response.bytes()
    return {
        "status": status,
        "url": url,
        "content_type": kind,
        "len": len(body),
        "body": body[:4096].decode("utf-8", "replace"),
    }


@module.action("hold", "Open `n` requests to `url` and keep them all open; report how many were answered")
def hold(r):
    held, refused = [], None
    for _ in range(r["n"]):
        try:
            held.append(http.get(r["url"]).send())
        except ModhostError as e:
            refused = {"kind": e.kind, "message": e.message}
            break
    answered = len(held)
    for response in held:
        response.close()
    # Every place is given back once the responses are closed.
    try:
        http.get(r["url"]).send().close()
        again = True
    except ModhostError:
        again = False
    return {"answered": answered, "refused": refused, "again": again}


@module.action("repeat", "GET `url` `n` times, reading each body; report the bytes read")
def repeat(r):
    read = 0
    for _ in range(r["n"]):
        response = http.get(r["url"]).send()
        if response.status != 200:
            raise Internal(f"{r['url']} answered {response.status}")
        read += len(response.bytes())
    return {"n": r["n"], "bytes": read}


@module.action("save", "Save `url` to the data directory as `name`, in the action")
def save(d):
    return {"bytes": http.get(d["url"]).send().save(f"/data/{d['name']}")}


@module.action("download", "Save `url` to the data directory as `name` in a background task")
def download(d):
    return {"task_id": tasks.run_background("download", d)}


@module.task("download", "Save a URL into the data directory, with progress")
def download_in_task(d):
    task_id = context.current_task()
    path = f"/data/{d['name']}"
    digest = hashlib.sha256()
    reported = 0

    def progress(p):
        nonlocal reported
        digest.update(p.chunk)
        if p.total and p.done - reported >= p.total // 4:
            reported = p.done
            tasks.update_progress(task_id, p.done / p.total, label=f"{p.done} of {p.total} bytes")

    written = http.get(d["url"]).send().save(path, progress)
    return {"bytes": written, "path": path, "sha256": digest.hexdigest()}


WitWorld = module.world()
