"""A module in Python on the Python SDK (`guest-sdk/python`): identity,
typed errors both ways, a keyed resumable task with progress and a
checkpoint, and a blocking function."""

from modhost_sdk import InvalidInput, Module, context, tasks

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


WitWorld = module.world()
