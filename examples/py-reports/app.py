"""A monthly report built page by page in the background: the `reports`
example in Python, on the Python SDK.

`start` submits the task under the key `reports.monthly.<month>`, so a
second click while it runs returns the same task. The task stores a
checkpoint after every page and asks the user halfway whether to include
drafts; it is resumable, so after a host restart it continues from its last
page, and a confirmation answered before or after the restart is not asked
twice.
"""

import time
from dataclasses import asdict

from modhost_sdk import ActionResult, Internal, InvalidInput, Module, Surface, context, tasks

module = Module()

PAGES = 10
"""Pages in a report."""
ASK_AT = 5
"""The page after which the user is asked about drafts."""
PAGE_MS = 200
"""What a page takes at least: rendering stands for real work (queries,
layout), so a person watching sees the report advance page by page."""


def key(month):
    return f"reports.monthly.{month}"


def month_of(args):
    month = (args or {}).get("month")
    if not isinstance(month, str) or not month:
        raise InvalidInput('give the month as {"month": "2026-11"}')
    return month


def render_page(month, page):
    """Some deterministic work per page (FNV-1a, 32 bits)."""
    h = 0x811C9DC5
    data = (month + str(page)).encode()
    for i in range(20_000):
        h = ((h ^ data[i % len(data)]) * 0x01000193) & 0xFFFFFFFF
    return h % 1000


@module.action("start", 'Build the report of a month: {month: "2026-11"}')
def start(args):
    month = month_of(args)
    task_id = tasks.run_background(
        "reports.monthly",
        {"month": month},
        key=key(month),
        title=f"Monthly report {month}",
        resumable=True,
    )
    return ActionResult({"id": task_id}).show_task(task_id)


@module.action("status", "The newest report task of a month: {month}")
def status(args):
    newest = tasks.get_tasks_by_key(key(month_of(args)))
    return asdict(newest[0]) if newest else None


@module.action("recent", "Report tasks, newest first")
def recent(args):
    return [asdict(t) for t in tasks.get_tasks_by_key_prefix("reports.monthly.", 20)]


@module.task("reports.monthly", "Build the monthly report")
def monthly(args):
    task_id = context.current_task()
    if task_id is None:
        raise Internal("not in a task")
    month = month_of(args)
    state = context.checkpoint() or {"next_page": 0, "include_drafts": None, "total": 0}
    while state["next_page"] < PAGES:
        if state["next_page"] == ASK_AT and state["include_drafts"] is None:
            surface = (
                Surface(f"Include drafts in the {month} report?")
                .text("Drafts are documents not yet approved.")
                .button("yes", "Include drafts", "primary")
                .button("no", "Leave them out", "secondary")
            )
            answer = tasks.request_confirmation(surface, timeout_ms=3_600_000)
            state["include_drafts"] = answer is not None and answer.button == "yes"
        time.sleep(PAGE_MS / 1000)
        state["total"] += render_page(month, state["next_page"])
        state["next_page"] += 1
        label = f"page {state['next_page']} of {PAGES}"
        tasks.update_progress(task_id, state["next_page"] / PAGES, label=label, checkpoint=state)
    return {
        "month": month,
        "pages": PAGES,
        "include_drafts": bool(state["include_drafts"]),
        "total": state["total"],
    }


WitWorld = module.world()
