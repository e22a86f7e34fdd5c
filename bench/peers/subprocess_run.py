"""Python's subprocess.run of one program, N times after a warm-up.
Prints one JSON object with every latency in microseconds.

usage: subprocess_run.py PROGRAM N"""
import json, subprocess, sys, time

program, n = sys.argv[1], int(sys.argv[2])
for _ in range(20):
    subprocess.run([program], check=True)
latencies = []
for _ in range(n):
    t = time.perf_counter_ns()
    subprocess.run([program], check=True)
    latencies.append((time.perf_counter_ns() - t) / 1000)
print(json.dumps({"latencies_us": latencies}))
