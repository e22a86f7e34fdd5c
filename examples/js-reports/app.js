// A monthly report built page by page in the background: the `reports`
// example in JavaScript, on the JavaScript SDK.
//
// `start` submits the task under the key `reports.monthly.<month>`, so a
// second click while it runs returns the same task. The task stores a
// checkpoint after every page and asks the user halfway whether to include
// drafts; it is resumable, so after a host restart it continues from its
// last page, and a confirmation answered before or after the restart is not
// asked twice.

import {
  ActionResult, Internal, InvalidInput, Module, Surface, context, tasks,
} from '../../guest-sdk/js/modhost_sdk.js';

const module = new Module();

/** Pages in a report. */
const PAGES = 10;
/** The page after which the user is asked about drafts. */
const ASK_AT = 5;
/** What a page takes at least: rendering stands for real work (queries,
 * layout), so a person watching sees the report advance page by page. */
const PAGE_MS = 200;

const key = (month) => `reports.monthly.${month}`;

function monthOf(args) {
  const month = args && args.month;
  if (typeof month !== 'string' || month === '') {
    throw new InvalidInput('give the month as {"month": "2026-11"}');
  }
  return month;
}

/** Some deterministic work per page (FNV-1a, 32 bits). */
function renderPage(month, page) {
  let h = 0x811c9dc5;
  const data = new TextEncoder().encode(month + String(page));
  for (let i = 0; i < 20000; i++) {
    h = Math.imul(h ^ data[i % data.length], 0x01000193) >>> 0;
  }
  return h % 1000;
}

/** Waits `ms` milliseconds: the guest has no event loop to yield to. */
function sleep(ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) { /* the page's work */ }
}

module.action('start', 'Build the report of a month: {month: "2026-11"}', (args) => {
  const month = monthOf(args);
  const id = tasks.runBackground('reports.monthly', { month }, {
    key: key(month),
    title: `Monthly report ${month}`,
    resumable: true,
  });
  return new ActionResult({ id }).showTask(id);
});

module.action('status', 'The newest report task of a month: {month}', (args) =>
  tasks.getTasksByKey(key(monthOf(args)))[0] ?? null);

module.action('recent', 'Report tasks, newest first', () =>
  tasks.getTasksByKeyPrefix('reports.monthly.', 20));

module.task('reports.monthly', 'Build the monthly report', (args) => {
  const id = context.currentTask();
  if (id === undefined) throw new Internal('not in a task');
  const month = monthOf(args);
  const state = context.checkpoint() ?? { nextPage: 0, includeDrafts: null, total: 0 };
  while (state.nextPage < PAGES) {
    if (state.nextPage === ASK_AT && state.includeDrafts === null) {
      const surface = new Surface(`Include drafts in the ${month} report?`)
        .text('Drafts are documents not yet approved.')
        .button('yes', 'Include drafts', 'primary')
        .button('no', 'Leave them out', 'secondary');
      const answer = tasks.requestConfirmation(surface, { timeoutMs: 3600000 });
      state.includeDrafts = answer !== undefined && answer.button === 'yes';
    }
    sleep(PAGE_MS);
    state.total += renderPage(month, state.nextPage);
    state.nextPage += 1;
    tasks.updateProgress(id, state.nextPage / PAGES, {
      label: `page ${state.nextPage} of ${PAGES}`,
      checkpoint: state,
    });
  }
  return { month, pages: PAGES, include_drafts: Boolean(state.includeDrafts), total: state.total };
});

export const { describe, handleAction, runTask, callBlocking } = module.world();
