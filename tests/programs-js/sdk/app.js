// A module in JavaScript on the JavaScript SDK (`guest-sdk/js`): the twin
// of `tests/programs-py/sdk/app.py`, with the same actions answering the
// same way (but `later`, an async handler, which only JavaScript has).

import {
  ActionResult,
  InvalidInput,
  Module,
  NotFound,
  PermissionDenied,
  Surface,
  backgroundTasks,
  context,
  log,
  tasks,
} from './modhost_sdk.js';

const module = new Module();

/** A module's own error, answered as the SDK's it derives from. */
class NoSuchReport extends InvalidInput {}

module.action('whoami', "The caller's identity", () => {
  const me = context.current();
  return { user_id: me.userId, organization_id: me.organizationId, role: me.role };
});

module.action('refuse', 'Refuse with invalid-input', () => {
  throw new NoSuchReport('no such report');
});

module.action('crash', 'Fail with an exception the module did not mean', () => {
  const missing = undefined;
  return missing.field;
});

module.action('unjson', 'Return a value JSON cannot hold', () => ({ n: 1n }));

module.action('start', 'Start the `count` task: {to, key?}', (args) => ({
  id: tasks.runBackground('count', { to: args.to }, { key: args.key, resumable: true }),
}));

module.action('by_key', 'The statuses of the tasks under a key', (args) =>
  tasks.getTasksByKey(args.key).map((t) => t.status));

module.action('double', 'Twice `n`, through the blocking function', (args) =>
  tasks.runBlocking('double', args.n));

module.action('bad_progress', 'Store a progress the host refuses, and say what it raised', (args) => {
  try {
    tasks.updateProgress(args.id, NaN);
  } catch (e) {
    if (e instanceof InvalidInput) return { refused: e.kind };
    throw e;
  }
  return { refused: null };
});

module.task('count', 'Count to `to` from the checkpoint, storing each step', (args) => {
  const taskId = context.currentTask();
  const start = (context.checkpoint() ?? { n: 0 }).n;
  for (let n = start + 1; n <= args.to; n++) {
    tasks.updateProgress(taskId, n / args.to, { label: `step ${n}`, checkpoint: { n } });
  }
  return { from: start, to: args.to };
});

module.blocking('double', 'Twice an integer', (n) => n * 2);

module.action('ask', 'Start the `ask` task under `key`, and show its card', (args) => {
  const id = tasks.runBackground('ask', args, { key: args.key, title: 'Ask', resumable: true });
  return new ActionResult({ id }).showTask(id).toast('info', 'asked');
});

module.task('ask', 'Checkpoint, ask, and return the answer', (args) => {
  const resumed = context.checkpoint() !== undefined;
  tasks.updateProgress(context.currentTask(), 0.5, {
    label: 'waiting for the user',
    checkpoint: { asked: true },
  });
  const surface = new Surface('Delete 3 files?')
    .text('The files are gone for good.')
    .choices('which', { a: 'File a', b: 'File b' }, { multiple: true })
    .button('yes', 'Delete', 'danger')
    .button('no', 'Keep', 'secondary');
  const answer = tasks.requestConfirmation(surface, { timeoutMs: args.timeout_ms });
  if (answer === undefined) return { resumed, answer: 'timed-out' };
  return { resumed, answer: { button: answer.button, by: answer.answeredBy, picked: answer.picked('which') } };
});

module.action('run', 'Run a program: {program, args}', (args) => {
  try {
    const out = tasks.runSubprocess(args.program, args.args ?? []);
    return { code: out.exitCode, stdout: out.stdoutText };
  } catch (e) {
    if (e instanceof PermissionDenied) return { denied: e.message };
    throw e;
  }
});

module.action('page', 'One page of the read model: {statuses?, prefix?, limit?, cursor?}', (args) => {
  const got = backgroundTasks.list({
    statuses: args.statuses ?? [],
    keyPrefix: args.prefix,
    cursor: args.cursor ?? undefined,
    limit: args.limit ?? 50,
  });
  return { keys: got.tasks.map((t) => t.taskKey ?? null), next: got.nextCursor ?? null };
});

module.action('detail', 'One task in detail: {id}', (args) => {
  let v;
  try {
    v = backgroundTasks.get(args.id);
  } catch (e) {
    if (e instanceof NotFound) return { found: false };
    throw e;
  }
  return {
    found: true,
    status: v.summary.status,
    key: v.summary.taskKey ?? null,
    args: v.args,
    checkpoint: v.checkpoint ?? null,
    attempts: v.attempts,
    question: v.confirmation ? v.confirmation.surface.title : null,
  };
});

module.action('mine', "The keys of the caller's tasks, newest first", () =>
  tasks.listUserTasks({ limit: 10 }).map((t) => t.taskKey ?? null));

module.action('log', 'Write a log record with a field', () => {
  log.info('hello from the SDK', { answer: 42 });
  return null;
});

module.action('bad_style', 'Build a button of a style WIT does not have', () => {
  new Surface('x').button('b', 'B', 'loud');
  return null;
});

module.action('ok', 'Return at once', () => ({ ok: true }));

module.action('later', 'An async handler: await a timer, then refuse or answer: {refuse?}', async (args) => {
  await new Promise((resolve) => setTimeout(resolve, 20));
  if (args && args.refuse) throw new PermissionDenied('refused after a wait');
  return { waited: true };
});

module.task('noop', 'Return at once', () => null);

export const { describe, handleAction, runTask, callBlocking } = module.world();
