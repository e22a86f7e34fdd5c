"""{{name}}: a modhost module. `greet` answers at once; `start` runs `count`
in the background, with progress and a checkpoint it resumes from after a
host restart."""

from modhost_sdk import ActionResult, Internal, InvalidInput, Module, context, tasks

module = Module()


@module.action("greet", "Say hello to the caller")
def greet(args):
    return {"hello": context.current().user_id}


@module.action("start", 'Count to `to` in the background: {"to": 5}')
def start(args):
    to = (args or {}).get("to")
    if not isinstance(to, int) or to < 1:
        raise InvalidInput("`to` must be a whole number of at least 1")
    task_id = tasks.run_background("count", {"to": to}, key="count", resumable=True)
    return ActionResult({"id": task_id}).show_task(task_id)


@module.task("count", "Count, storing each step")
def count(args):
    task_id = context.current_task()
    if task_id is None:
        raise Internal("not in a task")
    done = (context.checkpoint() or {"n": 0})["n"]
    for n in range(done + 1, args["to"] + 1):
        label = f"step {n} of {args['to']}"
        tasks.update_progress(task_id, n / args["to"], label=label, checkpoint={"n": n})
    return {"from": done, "to": args["to"]}


WitWorld = module.world()
