"""No-op tasks through huey's SqliteHuey (WAL, results stored), enqueued
first, then processed by a consumer of WORKERS threads: enqueue -> every
task completed. Prints one JSON object.

usage: huey_tasks.py N DB_PATH WORKERS"""
import json, logging, os, sys, threading, time

n, path, workers = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for p in (path, path + "-wal", path + "-shm"):
    if os.path.exists(p):
        os.remove(p)

from huey import SqliteHuey
from huey.signals import SIGNAL_COMPLETE, SIGNAL_ERROR

huey = SqliteHuey(filename=path)
logging.getLogger("huey").setLevel(logging.WARNING)


@huey.task()
def noop():
    return None


done, lock, counts = threading.Event(), threading.Lock(), {"done": 0, "errors": 0}


@huey.signal(SIGNAL_COMPLETE, SIGNAL_ERROR)
def on_done(signal, task, exc=None):
    with lock:
        counts["done"] += 1
        if signal == SIGNAL_ERROR:
            counts["errors"] += 1
        if counts["done"] == n:
            done.set()


start = time.perf_counter()
for _ in range(n):
    noop()
submitted = time.perf_counter()
consumer = huey.create_consumer(workers=workers, worker_type="thread")
consumer.start()
done.wait()
finished = time.perf_counter()
consumer.stop(graceful=True)
print(json.dumps({
    "tasks": n,
    "completed": counts["done"] - counts["errors"],
    "submit_s": submitted - start,
    "total_s": finished - start,
}))
