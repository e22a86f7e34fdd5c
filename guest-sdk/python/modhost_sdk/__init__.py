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

Build it with componentize-py against modhost's `wit/` and the SDK's own
`wit/`, with this directory on the Python path:

    componentize-py -d WIT -d SDK_DIR/wit -w modhost:python-sdk/module-http@0.1.0 \
        componentize -p . -p SDK_DIR app -o component.wasm

That world is modhost's `module` with `wasi:http` added, for the
outbound client `modhost_sdk.http`; a module that sends no requests may
build for `-d WIT -w module` alone.

An exception a handler raises that is not a `ModhostError` becomes
`internal` with its type and message (its traceback goes to the host's
log), never a trap.

The namespaces follow the WIT interfaces: `context` (who is calling),
`tasks` (background and blocking work, subprocesses, progress,
confirmations, the key lookups), `background_tasks` (the read model:
filtered pages and one task's detail), `ui` (surfaces and the effects an
action returns) and `log`; `modhost_sdk.http` is the outbound HTTP
client.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import wit_world
from componentize_py_types import Err
from wit_world import Description, Entry
from wit_world.imports import background_tasks as _background_tasks
from wit_world.imports import context as _context
from wit_world.imports import log as _log
from wit_world.imports import tasks as _tasks
try:
    from wit_world.imports import types as _types
except ImportError:
    # Built for the SDK's `module-http` world, where wasi:http's `types`
    # interface shares the name and componentize-py names each by package.
    from wit_world.imports import modhost_sdk_types as _types
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
    "TaskPage",
    "TaskView",
    "TaskFailure",
    "PendingConfirmation",
    "Answer",
    "SubprocessOutput",
    "Surface",
    "ActionResult",
    "context",
    "tasks",
    "background_tasks",
    "ui",
    "log",
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


def _wit_enum(enum: Any, name: str) -> Any:
    """The value of a WIT enum spelled as WIT spells it. Another spelling
    is the module's own mistake: a `ValueError`, which reaches the caller
    as `internal` unless the module catches it (check a value that comes
    from the caller before passing it on)."""
    try:
        return enum[name.upper().replace("-", "_")]
    except KeyError:
        known = ", ".join(_wit_name(v) for v in enum)
        raise ValueError(f"{name!r} is not one of {known}") from None


class Surface:
    """What a confirmation shows, or what an action asks the host to render:
    a title and components, added in order by the chained methods.

        Surface("Delete 3 files?").text("They cannot be restored.")
            .button("yes", "Delete", "danger").button("no", "Keep", "secondary")
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self.components: List[Any] = []

    def text(self, text: str) -> "Surface":
        self.components.append(_ui.Component_Text(text))
        return self

    def markdown(self, markdown: str) -> "Surface":
        """Markdown, rendered without raw HTML."""
        self.components.append(_ui.Component_Markdown(markdown))
        return self

    def key_value(self, pairs: Union[Mapping[str, str], Iterable[Tuple[str, str]]]) -> "Surface":
        """A table of label/value pairs, from a dict or from pairs."""
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        self.components.append(_ui.Component_KeyValue([(str(k), str(v)) for k, v in items]))
        return self

    def choices(
        self,
        name: str,
        options: Union[Mapping[str, str], Iterable[Tuple[str, str]]],
        multiple: bool = False,
    ) -> "Surface":
        """Options to pick from, `{id: label}`; the answer carries the
        picked ids under `name` (see `Answer.picked`)."""
        items = options.items() if isinstance(options, Mapping) else options
        picks = [_ui.Choice(id=i, label=label) for i, label in items]
        self.components.append(
            _ui.Component_Choices(_ui.Choices(name=name, options=picks, multiple=multiple))
        )
        return self

    def button(self, id: str, label: str, style: str = "primary") -> "Surface":
        """A button (`primary`, `secondary` or `danger`); consecutive
        buttons go into one row."""
        button = _ui.Button(id=id, label=label, style=_wit_enum(_ui.ButtonStyle, style))
        last = self.components[-1] if self.components else None
        if isinstance(last, _ui.Component_Buttons):
            last.value.append(button)
        else:
            self.components.append(_ui.Component_Buttons([button]))
        return self

    def task_card(self, task_id: str) -> "Surface":
        """A live card of a task the viewer may see."""
        self.components.append(_ui.Component_TaskCard(task_id))
        return self

    def divider(self) -> "Surface":
        self.components.append(_ui.Component_Divider())
        return self

    def to_wit(self) -> _ui.Surface:
        return _ui.Surface(title=self.title, components=list(self.components))

    @staticmethod
    def from_wit(surface: _ui.Surface) -> "Surface":
        made = Surface(surface.title)
        made.components = list(surface.components)
        return made


class ActionResult:
    """What an action returns when it asks more of the page than data: a
    toast, a surface to render, a task card to show. A handler that returns
    anything else returns it as the action's data.

        return ActionResult({"id": id}).show_task(id).toast("success", "Started")
    """

    def __init__(self, data: Any = None) -> None:
        self.data = data
        self.effects: List[Any] = []

    def toast(self, level: str, message: str) -> "ActionResult":
        """A short message: `info`, `success`, `warning` or `error`."""
        self.effects.append(_ui.Effect_Toast((_wit_enum(_ui.ToastLevel, level), message)))
        return self

    def render(self, surface: Surface) -> "ActionResult":
        self.effects.append(_ui.Effect_Render(surface.to_wit()))
        return self

    def show_task(self, task_id: str) -> "ActionResult":
        self.effects.append(_ui.Effect_ShowTask(task_id))
        return self


@dataclass(frozen=True)
class Answer:
    """The user's answer to a confirmation."""

    button: str
    values: Dict[str, Any]
    answered_by: str
    answered_at: int

    def picked(self, name: str) -> List[str]:
        """The ids picked in the `choices` called `name`."""
        picked = self.values.get(name, [])
        return [picked] if isinstance(picked, str) else list(picked)


@dataclass(frozen=True)
class SubprocessOutput:
    """How a child process ended, and what it wrote."""

    exit_code: Optional[int]
    """Its exit code, or None when it was killed."""
    signal: Optional[int]
    """The signal that killed it, if one did."""
    timed_out: bool
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int

    @property
    def success(self) -> bool:
        return self.exit_code == 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


@dataclass(frozen=True)
class TaskPage:
    """One page of the read model; `next_cursor` fetches the next."""

    tasks: List[TaskSummary]
    next_cursor: Optional[str]


@dataclass(frozen=True)
class TaskFailure:
    kind: str
    message: str


@dataclass(frozen=True)
class PendingConfirmation:
    surface: Surface
    asked_at: int
    expires_at: Optional[int]


@dataclass(frozen=True)
class TaskView:
    """One task in detail."""

    summary: TaskSummary
    args: Any
    resumable: bool
    checkpoint: Any
    result: Any
    failure: Optional[TaskFailure]
    started_at: Optional[int]
    finished_at: Optional[int]
    attempts: int
    confirmation: Optional[PendingConfirmation]


def _loads(text: Optional[str]) -> Any:
    return None if text is None else json.loads(text)


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
    def list_user_tasks(
        limit: int = 100,
        *,
        user_id: Optional[str] = None,
        organization_id: Optional[str] = None,
    ) -> List[TaskSummary]:
        """Tasks of this module of a user (the caller by default), newest
        first. Another user's or organization's are empty unless the
        manifest grants wider reads."""
        found = _host(_tasks.list_user_tasks, user_id, organization_id, limit)
        return [_summary(t) for t in found]

    @staticmethod
    def run_subprocess(
        program: str,
        args: Sequence[str] = (),
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Union[bytes, str, None] = None,
        timeout_ms: Optional[int] = None,
        max_output_bytes: Optional[int] = None,
    ) -> SubprocessOutput:
        """Runs a program the manifest grants, by its granted name, with
        one argument per token (never a shell string), and waits for it.
        A refusal raises `PermissionDenied` naming the missing grant."""
        request = _tasks.SubprocessRequest(
            program=program,
            args=[str(a) for a in args],
            cwd=cwd,
            env=list((env or {}).items()),
            stdin=stdin.encode() if isinstance(stdin, str) else stdin,
            timeout_ms=timeout_ms,
            max_output_bytes=max_output_bytes,
        )
        out = _host(_tasks.run_subprocess, request)
        status = out.status
        return SubprocessOutput(
            exit_code=status.value if isinstance(status, _tasks.ExitStatus_Code) else None,
            signal=status.value if isinstance(status, _tasks.ExitStatus_Signal) else None,
            timed_out=isinstance(status, _tasks.ExitStatus_TimedOut),
            stdout=bytes(out.stdout),
            stderr=bytes(out.stderr),
            stdout_truncated=out.stdout_truncated,
            stderr_truncated=out.stderr_truncated,
            duration_ms=out.duration_ms,
        )

    @staticmethod
    def request_confirmation(surface: Surface, timeout_ms: Optional[int] = None) -> Optional[Answer]:
        """Pauses this background task until the user answers `surface`:
        the answer, or None when nobody answered in time. A resumable task
        that asks again after a restart gets the answer already given."""
        outcome = _host(_tasks.request_confirmation, surface.to_wit(), timeout_ms)
        if isinstance(outcome, _tasks.ConfirmationOutcome_TimedOut):
            return None
        answer = outcome.value
        return Answer(
            button=answer.button,
            values=json.loads(answer.values) if answer.values else {},
            answered_by=answer.answered_by,
            answered_at=answer.answered_at,
        )


class background_tasks:
    """The read model: this module's tasks of the caller's organization,
    filtered and paged, and one task in detail."""

    @staticmethod
    def list(
        *,
        statuses: Sequence[str] = (),
        task_name: Optional[str] = None,
        key_prefix: Optional[str] = None,
        created_after: Optional[int] = None,
        created_before: Optional[int] = None,
        user_id: Optional[str] = None,
        cursor: Optional[str] = None,
        limit: int = 50,
    ) -> TaskPage:
        """Newest first; pass the page's `next_cursor` for the next one."""
        wanted = _background_tasks.TaskFilter(
            statuses=[_wit_enum(_types.TaskStatus, s) for s in statuses],
            task_name=task_name,
            key_prefix=key_prefix,
            created_after=created_after,
            created_before=created_before,
            user_id=user_id,
        )
        page = _host(_background_tasks.list, wanted, cursor, limit)
        return TaskPage(tasks=[_summary(t) for t in page.tasks], next_cursor=page.next_cursor)

    @staticmethod
    def get(task_id: str) -> TaskView:
        """One task; another module's or organization's is `NotFound`."""
        v = _host(_background_tasks.get, task_id)
        asked = v.confirmation
        return TaskView(
            summary=_summary(v.summary),
            args=_loads(v.args),
            resumable=v.resumable,
            checkpoint=_loads(v.checkpoint),
            result=_loads(v.result),
            failure=None if v.failure is None else TaskFailure(v.failure.kind, v.failure.message),
            started_at=v.started_at,
            finished_at=v.finished_at,
            attempts=v.attempts,
            confirmation=None
            if asked is None
            else PendingConfirmation(Surface.from_wit(asked.surface), asked.asked_at, asked.expires_at),
        )


class ui:
    """The building blocks of what a user sees."""

    Surface = Surface
    ActionResult = ActionResult


class log:
    """Records in the host's log, stamped by the host with the caller's
    identity. Fields are `name=value` keyword arguments."""

    @staticmethod
    def write(level: str, message: str, **fields: Any) -> None:
        _log.write(
            _wit_enum(_log.Level, level), message, [(k, str(v)) for k, v in fields.items()]
        )

    @staticmethod
    def debug(message: str, **fields: Any) -> None:
        log.write("debug", message, **fields)

    @staticmethod
    def info(message: str, **fields: Any) -> None:
        log.write("info", message, **fields)

    @staticmethod
    def warn(message: str, **fields: Any) -> None:
        log.write("warn", message, **fields)

    @staticmethod
    def error(message: str, **fields: Any) -> None:
        log.write("error", message, **fields)


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

    def _call(self, kind: str, name: str, args_json: str) -> Any:
        """Runs a handler and returns its value, every failure raised as
        the WIT `error` it stands for."""
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
        return value

    def _json(self, kind: str, name: str, value: Any) -> Optional[str]:
        """A handler's value as JSON text (None for None)."""
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
                value = module._call("action", action, args_json)
                if isinstance(value, ActionResult):
                    data = module._json("action", action, value.data)
                    return _ui.ActionResult(data=data, effects=list(value.effects))
                return _ui.ActionResult(data=module._json("action", action, value), effects=[])

            def run_task(self, task: str, args_json: str) -> str:
                return module._json("task", task, module._call("task", task, args_json)) or "null"

            def call_blocking(self, function: str, args_json: str) -> str:
                value = module._call("blocking", function, args_json)
                return module._json("blocking", function, value) or "null"

        return WitWorld
