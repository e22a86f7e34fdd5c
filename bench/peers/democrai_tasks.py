"""No-op background tasks through the seed system's TaskManager (democrai
0.0.1b2) on its own SQLite provider (WAL, synchronous=NORMAL), submit ->
completed. Prints one JSON object.

usage: democrai_tasks.py N DB_PATH PROGRESS_UPDATES

The connection registry is a stub whose sends do nothing, so no
notification row is written per task: the cheaper of its two paths."""
import asyncio, json, logging, os, sys, time

n, path, updates = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for p in (path, path + "-wal", path + "-shm"):
    if os.path.exists(p):
        os.remove(p)

from democrai.core.runtime.foundation.app import app_ctx
from democrai.core.infrastructure.database.providers.sqlite import SqlitePersistenceProvider
from democrai.core.infrastructure.database.models import Base
from democrai.core.application.tasks import models as _task_models  # registers the tables
from democrai.core.application.tasks.task_manager import TaskManager

ctx = app_ctx()
log = logging.getLogger("democrai-bench")
log.addHandler(logging.NullHandler())
log.propagate = False
log.setLevel(logging.WARNING)
ctx.logger = log
ctx.db = SqlitePersistenceProvider(db_path=path)
Base.metadata.create_all(ctx.db.engine)


class Bus:
    def send(self, client_id, message):
        pass


class Registry:
    def get_connections(self, user_id, org_id):
        return [(Bus(), "c1")]


ctx.connection_registry = Registry()


async def work(tm, holder):
    # The id is known once submit returns; the task starts after that.
    while "id" not in holder:
        await asyncio.sleep(0)
    for i in range(updates):
        await tm.update_progress(holder["id"], 100.0 * (i + 1) / updates)
    return None


async def main():
    tm = TaskManager()
    ctx.task_manager = tm
    start = time.perf_counter()
    ids = []
    for _ in range(n):
        holder = {}
        task_id = await tm.submit(1, work(tm, holder), "noop", module="core")
        holder["id"] = task_id
        ids.append(task_id)
    submitted = time.perf_counter()
    await asyncio.gather(*[tm.get_task(i)._asyncio_task for i in ids])
    return start, submitted, time.perf_counter()


start, submitted, done = asyncio.run(main())
from sqlalchemy import text

with ctx.db.engine.connect() as c:
    completed = c.execute(text("select count(*) from background_tasks where status='completed'")).scalar()
print(json.dumps({
    "tasks": n,
    "completed": completed,
    "submit_s": submitted - start,
    "total_s": done - start,
}))
