// Write modhost modules in JavaScript.
//
// The `modhost:sdk/module` world behind plain JavaScript: arguments and
// results are JavaScript values (the JSON is handled here), errors are
// exceptions mapped to the WIT `error` variant both ways, enums are their
// WIT strings, timestamps are numbers (milliseconds since the epoch).
//
//     import { Module, InvalidInput, context, tasks } from './modhost_sdk.js';
//
//     const module = new Module();
//
//     module.action('greet', 'Say hello to the caller', () => ({ hello: context.current().userId }));
//
//     module.task('count', 'Count to `to`, storing each step', (args) => {
//       for (let n = 1; n <= args.to; n++) {
//         tasks.updateProgress(context.currentTask(), n / args.to, { checkpoint: { n } });
//       }
//       return { counted: args.to };
//     });
//
//     export const { describe, handleAction, runTask, callBlocking } = module.world();
//
// Build it with componentize-js against modhost's `wit/`, with this file
// beside the module's:
//
//     componentize-js --wit WIT -n module -d http -d fetch-event -o component.wasm app.js
//
// (`-d http -d fetch-event` leaves out the runtime's own `fetch`, whose
// errors do not say why a request was refused.) The outbound client,
// `modhost_http.js`, needs the SDK's `module-http` world instead; see its
// header.
//
// A handler may be async: its export returns the promise, which
// componentize-js awaits.
//
// An exception a handler throws that is not a `ModhostError` becomes
// `internal` with its name and message (its stack goes to the host's log),
// never a trap.
//
// The namespaces follow the WIT interfaces: `context` (who is calling),
// `tasks` (background and blocking work, subprocesses, progress,
// confirmations, the key lookups), `backgroundTasks` (the read model:
// filtered pages and one task's detail), `ui` (surfaces and the effects an
// action returns) and `log`.

import * as hostContext from 'modhost:sdk/context@0.1.0';
import * as hostTasks from 'modhost:sdk/tasks@0.1.0';
import * as hostBackground from 'modhost:sdk/background-tasks@0.1.0';
import * as hostLog from 'modhost:sdk/log@0.1.0';

/** An error of the WIT `error` variant. Throw a subclass to answer a call
 * with it; host calls throw one when the host refuses. `kind` is the WIT
 * case. */
export class ModhostError extends Error {
  constructor(message = '') {
    super(message);
    this.name = new.target.name;
  }

  get kind() {
    return 'internal';
  }

  /** The WIT `error` this stands for. */
  toWit() {
    const kind = this.kind;
    return WITHOUT_TEXT.has(kind) ? { tag: kind } : { tag: kind, val: this.message };
  }
}

export class NotFound extends ModhostError {
  get kind() { return 'not-found'; }
}
export class PermissionDenied extends ModhostError {
  get kind() { return 'permission-denied'; }
}
export class InvalidInput extends ModhostError {
  get kind() { return 'invalid-input'; }
}
export class Unauthenticated extends ModhostError {
  get kind() { return 'unauthenticated'; }
}
export class LimitExceeded extends ModhostError {
  get kind() { return 'limit-exceeded'; }
}
export class Internal extends ModhostError {
  get kind() { return 'internal'; }
}

// Each case of the WIT `error` and the exception it stands for.
const ERRORS = {
  'not-found': NotFound,
  'permission-denied': PermissionDenied,
  'invalid-input': InvalidInput,
  unauthenticated: Unauthenticated,
  'limit-exceeded': LimitExceeded,
  internal: Internal,
};
const WITHOUT_TEXT = new Set(['not-found', 'unauthenticated']);

/** Calls the host, turning its `error` into the matching exception. */
function host(call, ...args) {
  try {
    return call(...args);
  } catch (e) {
    const error = e && e.payload !== undefined ? e.payload : e;
    const Kind = error && ERRORS[error.tag];
    if (Kind) throw new Kind(error.val ?? '');
    throw e;
  }
}

/** A WIT `u64` (a BigInt here) as a number; none stays undefined. */
function num(value) {
  return value === undefined || value === null ? undefined : Number(value);
}

// A value the host cannot take (a negative timeout, an enum spelled
// otherwise) is the module's own mistake: a RangeError, which reaches the
// caller as `internal` unless the module catches it (check a value that
// comes from the caller before passing it on).

/** A number as a WIT `u64`; none stays undefined. */
function u64(value, what) {
  if (value === undefined || value === null) return undefined;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${what} must be a whole number of at least 0, not ${value}`);
  }
  return BigInt(value);
}

function oneOf(value, known, what) {
  if (!known.includes(value)) {
    throw new RangeError(`${what} ${JSON.stringify(value)} is not one of ${known.join(', ')}`);
  }
  return value;
}

const BUTTON_STYLES = ['primary', 'secondary', 'danger'];
const TOAST_LEVELS = ['info', 'success', 'warning', 'error'];
const STATUSES = [
  'pending', 'running', 'waiting-confirmation', 'completed', 'failed', 'cancelled', 'interrupted',
];
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

function summary(t) {
  return {
    id: t.id,
    module: t.module,
    taskName: t.taskName,
    taskKey: t.taskKey,
    title: t.title,
    status: t.status,
    progress: t.progress,
    label: t.label,
    userId: t.userId,
    organizationId: t.organizationId,
    createdAt: num(t.createdAt),
    updatedAt: num(t.updatedAt),
  };
}

function loads(text) {
  return text === undefined || text === null ? undefined : JSON.parse(text);
}

function pairs(entries) {
  return (entries instanceof Map ? [...entries] : Array.isArray(entries) ? entries : Object.entries(entries))
    .map(([k, v]) => [String(k), String(v)]);
}

/** What a confirmation shows, or what an action asks the host to render:
 * a title and components, added in order by the chained methods.
 *
 *     new Surface('Delete 3 files?').text('They cannot be restored.')
 *       .button('yes', 'Delete', 'danger').button('no', 'Keep', 'secondary')
 */
export class Surface {
  constructor(title) {
    this.title = title;
    this.components = [];
  }

  text(text) { this.components.push({ tag: 'text', val: text }); return this; }

  /** Markdown, rendered without raw HTML. */
  markdown(markdown) { this.components.push({ tag: 'markdown', val: markdown }); return this; }

  /** A table of label/value pairs, from an object, a Map or pairs. */
  keyValue(entries) { this.components.push({ tag: 'key-value', val: pairs(entries) }); return this; }

  /** Options to pick from, `{id: label}`; the answer carries the picked
   * ids under `name` (see `picked`). */
  choices(name, options, { multiple = false } = {}) {
    const list = pairs(options).map(([id, label]) => ({ id, label }));
    this.components.push({ tag: 'choices', val: { name, options: list, multiple } });
    return this;
  }

  /** A button (`primary`, `secondary` or `danger`); consecutive buttons go
   * into one row. */
  button(id, label, style = 'primary') {
    const button = { id, label, style: oneOf(style, BUTTON_STYLES, 'button style') };
    const last = this.components[this.components.length - 1];
    if (last && last.tag === 'buttons') last.val.push(button);
    else this.components.push({ tag: 'buttons', val: [button] });
    return this;
  }

  /** A live card of a task the viewer may see. */
  taskCard(taskId) { this.components.push({ tag: 'task-card', val: taskId }); return this; }

  divider() { this.components.push({ tag: 'divider' }); return this; }

  toWit() { return { title: this.title, components: this.components }; }

  static fromWit(surface) {
    const made = new Surface(surface.title);
    made.components = surface.components;
    return made;
  }
}

/** What an action returns when it asks more of the page than data: a
 * toast, a surface to render, a task card to show. A handler that returns
 * anything else returns it as the action's data.
 *
 *     return new ActionResult({ id }).showTask(id).toast('success', 'Started');
 */
export class ActionResult {
  constructor(data) {
    this.data = data;
    this.effects = [];
  }

  /** A short message: `info`, `success`, `warning` or `error`. */
  toast(level, message) {
    this.effects.push({ tag: 'toast', val: [oneOf(level, TOAST_LEVELS, 'toast level'), message] });
    return this;
  }

  render(surface) { this.effects.push({ tag: 'render', val: surface.toWit() }); return this; }

  showTask(taskId) { this.effects.push({ tag: 'show-task', val: taskId }); return this; }
}

export const ui = { Surface, ActionResult };

/** Who is calling, and the task this call runs, if any. */
export const context = {
  /** `{module, userId, organizationId, role, requestId, sessionId}`, set
   * by the host, never by the module. */
  current() {
    const me = hostContext.current();
    return {
      module: me.module,
      userId: me.userId,
      organizationId: me.organizationId,
      role: me.role,
      requestId: me.requestId,
      sessionId: me.sessionId,
    };
  },

  /** The id of the background task this call runs, or undefined. */
  currentTask() {
    return hostContext.currentTask();
  },

  /** The checkpoint a resumed task stored last, or undefined. */
  checkpoint() {
    return loads(hostContext.checkpoint());
  },
};

/** Background and blocking work, subprocesses, progress, confirmations
 * and the lookups. */
export const tasks = {
  /** Starts `task` detached; its id once it is stored. An active task with
   * the same `key` is returned instead of a new one. */
  runBackground(task, args = null, { key, title, resumable = false } = {}) {
    const options = { taskKey: key, title, resumable };
    return host(hostTasks.runBackground, task, JSON.stringify(args ?? null), options);
  },

  /** Runs the blocking `fn` off the event loop and waits for its result. */
  runBlocking(fn, args = null) {
    return JSON.parse(host(hostTasks.runBlocking, fn, JSON.stringify(args ?? null)));
  },

  /** Runs a program the manifest grants, by its granted name, with one
   * argument per token (never a shell string), and waits for it. A refusal
   * throws `PermissionDenied` naming the missing grant. Returns
   * `{exitCode, signal, timedOut, stdout, stderr, stdoutText, stderrText,
   * stdoutTruncated, stderrTruncated, durationMs, success}`. */
  runSubprocess(program, args = [], { cwd, env = {}, stdin, timeoutMs, maxOutputBytes } = {}) {
    const request = {
      program,
      args: args.map(String),
      cwd,
      env: pairs(env),
      stdin: typeof stdin === 'string' ? new TextEncoder().encode(stdin) : stdin,
      timeoutMs: u64(timeoutMs, 'timeoutMs'),
      maxOutputBytes: u64(maxOutputBytes, 'maxOutputBytes'),
    };
    const out = host(hostTasks.runSubprocess, request);
    const text = (bytes) => new TextDecoder().decode(bytes);
    const exitCode = out.status.tag === 'code' ? out.status.val : undefined;
    return {
      exitCode,
      signal: out.status.tag === 'signal' ? out.status.val : undefined,
      timedOut: out.status.tag === 'timed-out',
      success: exitCode === 0,
      stdout: out.stdout,
      stderr: out.stderr,
      stdoutText: text(out.stdout),
      stderrText: text(out.stderr),
      stdoutTruncated: out.stdoutTruncated,
      stderrTruncated: out.stderrTruncated,
      durationMs: num(out.durationMs),
    };
  },

  /** Stores progress (0..1), and a label and a checkpoint when given. */
  updateProgress(taskId, progress, { label, checkpoint } = {}) {
    const stored = checkpoint === undefined ? undefined : JSON.stringify(checkpoint);
    host(hostTasks.updateProgress, taskId, Number(progress), label, stored);
  },

  /** Tells watchers of progress without storing it. */
  emitProgress(taskId, { progress, label } = {}) {
    host(hostTasks.emitProgress, taskId, progress, label);
  },

  /** Pauses this background task until the user answers `surface`: the
   * answer `{button, values, answeredBy, answeredAt, picked(name)}`, or
   * undefined when nobody answered in time. A resumable task that asks
   * again after a restart gets the answer already given. */
  requestConfirmation(surface, { timeoutMs } = {}) {
    const outcome = host(hostTasks.requestConfirmation, surface.toWit(), u64(timeoutMs, 'timeoutMs'));
    if (outcome.tag === 'timed-out') return undefined;
    const a = outcome.val;
    const values = a.values ? JSON.parse(a.values) : {};
    return {
      button: a.button,
      values,
      answeredBy: a.answeredBy,
      answeredAt: num(a.answeredAt),
      picked(name) {
        const p = values[name] ?? [];
        return typeof p === 'string' ? [p] : [...p];
      },
    };
  },

  /** Tasks of this module of a user (the caller by default), newest first.
   * Another user's or organization's are empty unless the manifest grants
   * wider reads. */
  listUserTasks({ limit = 100, userId, organizationId } = {}) {
    return host(hostTasks.listUserTasks, userId, organizationId, limit).map(summary);
  },

  /** Tasks of this module and organization under `key`, newest first. */
  getTasksByKey(key) {
    return host(hostTasks.getTasksByKey, key).map(summary);
  },

  /** Tasks whose key starts with `prefix`, newest first. */
  getTasksByKeyPrefix(prefix, limit = 100) {
    return host(hostTasks.getTasksByKeyPrefix, prefix, limit).map(summary);
  },
};

/** The read model: this module's tasks of the caller's organization,
 * filtered and paged, and one task in detail. */
export const backgroundTasks = {
  /** Newest first; pass the page's `nextCursor` for the next one. */
  list({ statuses = [], taskName, keyPrefix, createdAfter, createdBefore, userId, cursor, limit = 50 } = {}) {
    const filter = {
      statuses: statuses.map((s) => oneOf(s, STATUSES, 'status')),
      taskName,
      keyPrefix,
      createdAfter: u64(createdAfter, 'createdAfter'),
      createdBefore: u64(createdBefore, 'createdBefore'),
      userId,
    };
    const page = host(hostBackground.list, filter, cursor, limit);
    return { tasks: page.tasks.map(summary), nextCursor: page.nextCursor };
  },

  /** One task; another module's or organization's is `NotFound`. */
  get(taskId) {
    const v = host(hostBackground.get, taskId);
    const asked = v.confirmation;
    return {
      summary: summary(v.summary),
      args: loads(v.args),
      resumable: v.resumable,
      checkpoint: loads(v.checkpoint),
      result: loads(v.result),
      failure: v.failure ? { kind: v.failure.kind, message: v.failure.message } : undefined,
      startedAt: num(v.startedAt),
      finishedAt: num(v.finishedAt),
      attempts: v.attempts,
      confirmation: asked
        ? { surface: Surface.fromWit(asked.surface), askedAt: num(asked.askedAt), expiresAt: num(asked.expiresAt) }
        : undefined,
    };
  },
};

/** Records in the host's log, stamped by the host with the caller's
 * identity; `fields` is an object of names and values. */
export const log = {
  write(level, message, fields = {}) {
    hostLog.write(oneOf(level, LOG_LEVELS, 'log level'), String(message), pairs(fields));
  },
  debug(message, fields) { log.write('debug', message, fields); },
  info(message, fields) { log.write('info', message, fields); },
  warn(message, fields) { log.write('warn', message, fields); },
  error(message, fields) { log.write('error', message, fields); },
};

function isPromise(value) {
  return value !== null && typeof value === 'object' && typeof value.then === 'function';
}

/** What a handler threw, as the WIT `error` it stands for: an SDK error as
 * its case, anything else as `internal` (its stack to the log). */
function witError(e) {
  if (e instanceof ModhostError) return e.toWit();
  if (e && typeof e === 'object' && typeof e.tag === 'string' && !(e instanceof Error)) return e;
  console.error(e && e.stack ? e.stack : String(e));
  const what = e instanceof Error ? `${e.name}: ${e.message}` : `thrown: ${String(e)}`;
  return { tag: 'internal', val: what };
}

/** A module's actions, tasks and blocking functions, registered by name;
 * `world()` gives the four exports the component needs. */
export class Module {
  constructor() {
    this.entries = { action: new Map(), task: new Map(), blocking: new Map() };
  }

  register(kind, name, description, handler) {
    if (typeof description === 'function') [description, handler] = ['', description];
    if (this.entries[kind].has(name)) throw new Error(`${kind} ${JSON.stringify(name)} is registered twice`);
    this.entries[kind].set(name, { description, handler });
    return this;
  }

  /** An action: called with the parsed arguments; what it returns is the
   * action's data (or an `ActionResult`). */
  action(name, description, handler) { return this.register('action', name, description, handler); }

  /** A background task: called with the parsed arguments in a fresh
   * instance; what it returns is stored as the task's result. */
  task(name, description, handler) { return this.register('task', name, description, handler); }

  /** A blocking function for `tasks.runBlocking`. */
  blocking(name, description, handler) { return this.register('blocking', name, description, handler); }

  /** Runs a handler and returns its value, every failure thrown as the WIT
   * `error` it stands for (which the component returns as its `err`). */
  call(kind, name, argsJson) {
    const entry = this.entries[kind].get(name);
    if (!entry) throw { tag: 'invalid-input', val: `unknown ${kind} ${JSON.stringify(name)}` };
    let args;
    try {
      args = argsJson ? JSON.parse(argsJson) : null;
    } catch (e) {
      throw { tag: 'invalid-input', val: `the arguments are not JSON: ${e.message}` };
    }
    let value;
    try {
      value = entry.handler(args);
    } catch (e) {
      throw witError(e);
    }
    return isPromise(value) ? value.catch((e) => { throw witError(e); }) : value;
  }

  /** A handler's value as JSON text (undefined for nothing). */
  json(kind, name, value) {
    if (value === undefined || value === null) return undefined;
    let text;
    try {
      text = JSON.stringify(value, (_, v) => {
        if (typeof v === 'number' && !Number.isFinite(v)) throw new TypeError(`${v} is not a JSON number`);
        return v;
      });
    } catch (e) {
      throw { tag: 'internal', val: `the ${kind} ${JSON.stringify(name)} returned a value that is not JSON: ${e.message}` };
    }
    if (text === undefined) {
      throw { tag: 'internal', val: `the ${kind} ${JSON.stringify(name)} returned a value that is not JSON: ${typeof value}` };
    }
    return text;
  }

  /** The component's exports:
   * `export const { describe, handleAction, runTask, callBlocking } = module.world();` */
  world() {
    const entries = (kind) => [...this.entries[kind]].map(([name, e]) => ({ name, description: e.description }));
    // A handler may be async (to await `http`): its export then returns a
    // promise, which componentize-js awaits, running the event loop.
    const then = (value, f) => (isPromise(value) ? value.then(f) : f(value));
    const action = (name, value) => (value instanceof ActionResult
      ? { data: this.json('action', name, value.data), effects: value.effects }
      : { data: this.json('action', name, value), effects: [] });
    return {
      describe: () => ({ actions: entries('action'), tasks: entries('task'), blocking: entries('blocking') }),
      handleAction: (name, argsJson) => then(this.call('action', name, argsJson), (v) => action(name, v)),
      runTask: (task, argsJson) => then(this.call('task', task, argsJson), (v) => this.json('task', task, v) ?? 'null'),
      callBlocking: (fn, argsJson) => then(this.call('blocking', fn, argsJson), (v) => this.json('blocking', fn, v) ?? 'null'),
    };
  }
}
