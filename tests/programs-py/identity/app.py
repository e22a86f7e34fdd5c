"""A module in Python, written against the bindings componentize-py
generates from `wit/`: who is calling, and an exception that escapes."""

import json

import wit_world
from wit_world import Description, Entry
from wit_world.imports import context, ui


class WitWorld(wit_world.WitWorld):
    def describe(self) -> Description:
        return Description(
            actions=[
                Entry(name="whoami", description="The caller's identity"),
                Entry(name="raise", description="Print a line, then raise"),
            ],
            tasks=[],
            blocking=[],
        )

    def handle_action(self, action: str, args_json: str) -> ui.ActionResult:
        if action == "whoami":
            me = context.current()
            data = {
                "module": me.module,
                "user_id": me.user_id,
                "organization_id": me.organization_id,
            }
            return ui.ActionResult(data=json.dumps(data), effects=[])
        print("about to raise")
        raise ValueError("the Python program raises on purpose")

    def run_task(self, task: str, args_json: str) -> str:
        return "null"

    def call_blocking(self, function: str, args_json: str) -> str:
        return "null"
