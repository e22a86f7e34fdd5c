"""A module in Python on the Python SDK (`guest-sdk/python`): identity,
typed errors both ways, a keyed resumable task with progress and a
checkpoint, a blocking function, a confirmation, a subprocess, the read
model, effects and the log. `tests/programs-js/sdk/app.js` is its twin in
JavaScript: the same actions, answering the same way (but `fetch`, which
only Python has).

It is built for modhost's `module` world alone, without `wasi:http`, so it
also proves the SDK works there."""

from modhost_sdk import (
    ActionResult,
    InvalidInput,
    Module,
    NotFound,
    PermissionDenied,
    Surface,
    background_tasks,
    context,
    http,
    log,
    tasks,
)

module = Module()


class NoSuchReport(InvalidInput):
    """A module's own error, answered as the SDK's it derives from."""


@module.action("whoami", "The caller's identity")
def whoami(args):
    me = context.current()
    return {"user_id": me.user_id, "organization_id": me.organization_id, "role": me.role}


@module.action("refuse", "Refuse with invalid-input")
def refuse(args):
    raise NoSuchReport("no such report")


@module.action("crash", "Fail with an exception the module did not mean")
def crash(args):
    return {}["missing"]


@module.action("unjson", "Return a value JSON cannot hold")
def unjson(args):
    return {1, 2}


@module.action("start", "Start the `count` task: {to, key?}")
def start(args):
    return {"id": tasks.run_background("count", {"to": args["to"]}, key=args.get("key"), resumable=True)}


@module.action("by_key", "The statuses of the tasks under a key")
def by_key(args):
    return [t.status for t in tasks.get_tasks_by_key(args["key"])]


@module.action("double", "Twice `n`, through the blocking function")
def double_action(args):
    return tasks.run_blocking("double", args["n"])


@module.action("bad_progress", "Store a progress the host refuses, and say what it raised")
def bad_progress(args):
    try:
        tasks.update_progress(args["id"], float("nan"))
    except InvalidInput as e:
        return {"refused": e.kind}
    return {"refused": None}


@module.task("count", "Count to `to` from the checkpoint, storing each step")
def count(args):
    task_id = context.current_task()
    start = (context.checkpoint() or {"n": 0})["n"]
    for n in range(start + 1, args["to"] + 1):
        tasks.update_progress(task_id, n / args["to"], label=f"step {n}", checkpoint={"n": n})
    return {"from": start, "to": args["to"]}


@module.blocking("double", "Twice an integer")
def double(n):
    return n * 2


@module.action("ask", "Start the `ask` task under `key`, and show its card")
def ask_start(args):
    task_id = tasks.run_background("ask", args, key=args.get("key"), title="Ask", resumable=True)
    return ActionResult({"id": task_id}).show_task(task_id).toast("info", "asked")


@module.task("ask", "Checkpoint, ask, and return the answer")
def ask(args):
    resumed = context.checkpoint() is not None
    tasks.update_progress(
        context.current_task(), 0.5, label="waiting for the user", checkpoint={"asked": True}
    )
    surface = (
        Surface("Delete 3 files?")
        .text("The files are gone for good.")
        .choices("which", {"a": "File a", "b": "File b"}, multiple=True)
        .button("yes", "Delete", "danger")
        .button("no", "Keep", "secondary")
    )
    answer = tasks.request_confirmation(surface, timeout_ms=args.get("timeout_ms"))
    if answer is None:
        return {"resumed": resumed, "answer": "timed-out"}
    return {
        "resumed": resumed,
        "answer": {"button": answer.button, "by": answer.answered_by, "picked": answer.picked("which")},
    }


@module.action("run", "Run a program: {program, args}")
def run(args):
    try:
        out = tasks.run_subprocess(args["program"], args.get("args", []))
    except PermissionDenied as e:
        return {"denied": e.message}
    return {"code": out.exit_code, "stdout": out.stdout_text}


@module.action("page", "One page of the read model: {statuses?, prefix?, limit?, cursor?}")
def page(args):
    got = background_tasks.list(
        statuses=args.get("statuses", ()),
        key_prefix=args.get("prefix"),
        cursor=args.get("cursor"),
        limit=args.get("limit", 50),
    )
    return {"keys": [t.task_key for t in got.tasks], "next": got.next_cursor}


@module.action("detail", "One task in detail: {id}")
def detail(args):
    try:
        v = background_tasks.get(args["id"])
    except NotFound:
        return {"found": False}
    asked = v.confirmation
    return {
        "found": True,
        "status": v.summary.status,
        "key": v.summary.task_key,
        "args": v.args,
        "checkpoint": v.checkpoint,
        "attempts": v.attempts,
        "question": None if asked is None else asked.surface.title,
    }


@module.action("mine", "The keys of the caller's tasks, newest first")
def mine(args):
    return [t.task_key for t in tasks.list_user_tasks(10)]


@module.action("log", "Write a log record with a field")
def write_log(args):
    log.info("hello from the SDK", answer=42)
    return None


@module.action("bad_style", "Build a button of a style WIT does not have")
def bad_style(args):
    Surface("x").button("b", "B", "loud")
    return None


@module.action("ok", "Return at once")
def ok(args):
    return {"ok": True}


@module.action("fetch", "GET `url` through the SDK's client, in a build without wasi:http")
def fetch(args):
    return {"status": http.get(args["url"]).send().status}


@module.task("noop", "Return at once")
def noop(args):
    return None


WitWorld = module.world()
