"""Write modhost modules in Python.

The `modhost:sdk/module` world behind plain Python: arguments and results
are Python values (the JSON is handled here), errors are exceptions mapped
to the WIT `error` variant both ways, enums are their WIT strings.

    from modhost_sdk import Module, InvalidInput, context, tasks

    module = Module()

    @module.action("greet", "Say hello to the caller")
    def greet(args):
        return {"hello": context.current().user_id}

    @module.task("count", "Count to `to`, storing each step")
    def count(args):
        for n in range(1, args["to"] + 1):
            tasks.update_progress(context.current_task(), n / args["to"], checkpoint={"n": n})
        return {"counted": args["to"]}

    WitWorld = module.world()

Build it with componentize-py against modhost's `wit/`, with this
directory on the Python path:

    componentize-py -d WIT -w module componentize -p . -p SDK_DIR app -o component.wasm

An exception a handler raises that is not a `ModhostError` becomes
`internal` with its type and message (its traceback goes to the host's
log), never a trap.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import wit_world
from componentize_py_types import Err
from wit_world import Description, Entry
from wit_world.imports import context as _context
from wit_world.imports import tasks as _tasks
from wit_world.imports import types as _types
from wit_world.imports import ui as _ui

__all__ = [
    "Module",
    "ModhostError",
    "NotFound",
    "PermissionDenied",
    "InvalidInput",
    "Unauthenticated",
    "LimitExceeded",
    "Internal",
    "Identity",
    "TaskSummary",
    "context",
    "tasks",
]


class ModhostError(Exception):
    """An error of the WIT `error` variant. Raise a subclass to answer a
    call with it; host calls raise one when the host refuses."""

    kind = "internal"

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def to_wit(self) -> _types.Error:
        # A module's own subclass (`class NoSuchReport(NotFound)`) is the
        # case of the SDK's class it derives from.
        case = next(
            (_WIT_CASES[c] for c in type(self).__mro__ if c in _WIT_CASES),
            _types.Error_Internal,
        )
        return case() if case in _WITHOUT_TEXT else case(self.message)


class NotFound(ModhostError):
    kind = "not-found"


class PermissionDenied(ModhostError):
    kind = "permission-denied"


class InvalidInput(ModhostError):
    kind = "invalid-input"


class Unauthenticated(ModhostError):
    kind = "unauthenticated"


class LimitExceeded(ModhostError):
    kind = "limit-exceeded"


class Internal(ModhostError):
    kind = "internal"


# Each exception and the case of the WIT `error` it stands for.
_WIT_CASES = {
    NotFound: _types.Error_NotFound,
    PermissionDenied: _types.Error_PermissionDenied,
    InvalidInput: _types.Error_InvalidInput,
    Unauthenticated: _types.Error_Unauthenticated,
    LimitExceeded: _types.Error_LimitExceeded,
    Internal: _types.Error_Internal,
}
_WITHOUT_TEXT = (_types.Error_NotFound, _types.Error_Unauthenticated)


def _from_wit(error: Any) -> ModhostError:
    """The exception for an `error` the host answered."""
    for cls, case in _WIT_CASES.items():
        if isinstance(error, case):
            return cls(getattr(error, "value", "") or "")
    return Internal(str(error))


def _host(call: Callable[..., Any], *args: Any) -> Any:
    """Calls the host, turning its `error` into the matching exception."""
    try:
        return call(*args)
    except Err as e:
        raise _from_wit(e.value) from None


def _wit_name(value: Any) -> str:
    """An enum value as WIT spells it (`WAITING_CONFIRMATION` is
    `waiting-confirmation`)."""
    return value.name.lower().replace("_", "-")


@dataclass(frozen=True)
class Identity:
    """Who is calling; set by the host, never by the module."""

    module: str
    user_id: str
    organization_id: str
    role: str
    request_id: str
    session_id: Optional[str]


@dataclass(frozen=True)
class TaskSummary:
    """One task as the lookups return it."""

    id: str
    module: str
    task_name: str
    task_key: Optional[str]
    title: Optional[str]
    status: str
    progress: float
    label: Optional[str]
    user_id: str
    organization_id: str
    created_at: int
    updated_at: int


def _summary(t: Any) -> TaskSummary:
    return TaskSummary(
        id=t.id,
        module=t.module,
        task_name=t.task_name,
        task_key=t.task_key,
        title=t.title,
        status=_wit_name(t.status),
        progress=t.progress,
        label=t.label,
        user_id=t.user_id,
        organization_id=t.organization_id,
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


class context:
    """Who is calling, and the task this call runs, if any."""

    @staticmethod
    def current() -> Identity:
        me = _context.current()
        return Identity(
            module=me.module,
            user_id=me.user_id,
            organization_id=me.organization_id,
            role=_wit_name(me.role),
            request_id=me.request_id,
            session_id=me.session_id,
        )

    @staticmethod
    def current_task() -> Optional[str]:
        return _context.current_task()

    @staticmethod
    def checkpoint() -> Any:
        """The checkpoint a resumed task stored last, or None."""
        stored = _context.checkpoint()
        return None if stored is None else json.loads(stored)


class tasks:
    """Background and blocking work, progress, and the lookups."""

    @staticmethod
    def run_background(
        task: str,
        args: Any = None,
        *,
        key: Optional[str] = None,
        title: Optional[str] = None,
        resumable: bool = False,
    ) -> str:
        """Starts `task` detached; its id once it is stored. An active task
        with the same `key` is returned instead of a new one."""
        options = _tasks.BackgroundOptions(task_key=key, title=title, resumable=resumable)
        return _host(_tasks.run_background, task, json.dumps(args), options)

    @staticmethod
    def run_blocking(function: str, args: Any = None) -> Any:
        """Runs the blocking `function` off the event loop and waits."""
        return json.loads(_host(_tasks.run_blocking, function, json.dumps(args)))

    @staticmethod
    def update_progress(
        task_id: str,
        progress: float,
        label: Optional[str] = None,
        checkpoint: Any = None,
    ) -> None:
        """Stores progress (0..1), and a label and a checkpoint when given."""
        stored = None if checkpoint is None else json.dumps(checkpoint)
        _host(_tasks.update_progress, task_id, float(progress), label, stored)

    @staticmethod
    def emit_progress(
        task_id: str, progress: Optional[float] = None, label: Optional[str] = None
    ) -> None:
        """Tells watchers of progress without storing it."""
        _host(_tasks.emit_progress, task_id, progress, label)

    @staticmethod
    def get_tasks_by_key(key: str) -> List[TaskSummary]:
        return [_summary(t) for t in _host(_tasks.get_tasks_by_key, key)]

    @staticmethod
    def get_tasks_by_key_prefix(prefix: str, limit: int = 100) -> List[TaskSummary]:
        """Newest first."""
        return [_summary(t) for t in _host(_tasks.get_tasks_by_key_prefix, prefix, limit)]

    @staticmethod
    def list_user_tasks(limit: int = 100) -> List[TaskSummary]:
        """The caller's own tasks of this module, newest first."""
        return [_summary(t) for t in _host(_tasks.list_user_tasks, None, None, limit)]


Handler = Callable[[Any], Any]


class Module:
    """A module's actions, tasks and blocking functions, registered with
    the decorators; `world()` is the class componentize-py exports."""

    def __init__(self) -> None:
        self._entries: Dict[str, Dict[str, tuple]] = {"action": {}, "task": {}, "blocking": {}}

    def _register(self, kind: str, name: str, description: str) -> Callable[[Handler], Handler]:
        def register(f: Handler) -> Handler:
            if name in self._entries[kind]:
                raise ValueError(f"{kind} {name!r} is registered twice")
            self._entries[kind][name] = (description, f)
            return f

        return register

    def action(self, name: str, description: str = "") -> Callable[[Handler], Handler]:
        """An action: called with the parsed arguments; what it returns is
        the action's data."""
        return self._register("action", name, description)

    def task(self, name: str, description: str = "") -> Callable[[Handler], Handler]:
        """A background task: called with the parsed arguments in a fresh
        instance; what it returns is stored as the task's result."""
        return self._register("task", name, description)

    def blocking(self, name: str, description: str = "") -> Callable[[Handler], Handler]:
        """A blocking function for `tasks.run_blocking`."""
        return self._register("blocking", name, description)

    def _call(self, kind: str, name: str, args_json: str) -> Optional[str]:
        """Runs a handler and returns its value as JSON text (None for
        None), every failure raised as the WIT `error` it stands for."""
        entry = self._entries[kind].get(name)
        if entry is None:
            raise Err(_types.Error_InvalidInput(f"unknown {kind} {name!r}"))
        try:
            args = json.loads(args_json) if args_json else None
        except ValueError as e:
            raise Err(_types.Error_InvalidInput(f"the arguments are not JSON: {e}")) from None
        try:
            value = entry[1](args)
        except ModhostError as e:
            raise Err(e.to_wit()) from None
        except Err:
            raise
        except Exception as e:  # noqa: BLE001 - every escape becomes `internal`
            traceback.print_exc(file=sys.stderr)
            raise Err(_types.Error_Internal(f"{type(e).__name__}: {e}")) from None
        if value is None:
            return None
        try:
            return json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            message = f"the {kind} {name!r} returned a value that is not JSON: {e}"
            raise Err(_types.Error_Internal(message)) from None

    def world(self) -> type:
        """The `WitWorld` class to export: `WitWorld = module.world()`."""
        module = self

        def entries(kind: str) -> List[Entry]:
            return [Entry(name=n, description=d) for n, (d, _) in module._entries[kind].items()]

        class WitWorld(wit_world.WitWorld):
            def describe(self) -> Description:
                return Description(
                    actions=entries("action"), tasks=entries("task"), blocking=entries("blocking")
                )

            def handle_action(self, action: str, args_json: str) -> _ui.ActionResult:
                return _ui.ActionResult(data=module._call("action", action, args_json), effects=[])

            def run_task(self, task: str, args_json: str) -> str:
                return module._call("task", task, args_json) or "null"

            def call_blocking(self, function: str, args_json: str) -> str:
                return module._call("blocking", function, args_json) or "null"

        return WitWorld
