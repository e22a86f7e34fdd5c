// {{name}}: a modhost module. `greet` answers at once; `start` runs `count`
// in the background, with progress and a checkpoint it resumes from after a
// host restart.

import { ActionResult, Internal, InvalidInput, Module, context, tasks } from './modhost_sdk.js';

const module = new Module();

module.action('greet', 'Say hello to the caller', () => ({ hello: context.current().userId }));

module.action('start', 'Count to `to` in the background: {"to": 5}', (args) => {
  const to = args && args.to;
  if (!Number.isInteger(to) || to < 1) throw new InvalidInput('`to` must be a whole number of at least 1');
  const id = tasks.runBackground('count', { to }, { key: 'count', resumable: true });
  return new ActionResult({ id }).showTask(id);
});

module.task('count', 'Count, storing each step', (args) => {
  const id = context.currentTask();
  if (id === undefined) throw new Internal('not in a task');
  const done = (context.checkpoint() ?? { n: 0 }).n;
  for (let n = done + 1; n <= args.to; n++) {
    tasks.updateProgress(id, n / args.to, { label: `step ${n} of ${args.to}`, checkpoint: { n } });
  }
  return { from: done, to: args.to };
});

export const { describe, handleAction, runTask, callBlocking } = module.world();
