#!/usr/bin/env python3
"""Write stalls of appending to files, with and without blocks reserved ahead.

The experiment behind weir-storage's segment preallocation (crates/storage/src/preallocate.rs):
three files in DIR are appended to round robin in 64 KiB writes at RATE MB/s (total) for
SECONDS, and every write(2) is timed. With --mode prealloc a second thread reserves blocks
ahead of each file with fallocate(FALLOC_FL_KEEP_SIZE), WINDOW MiB at a time whenever less
than half a window is left, as the broker does; with --mode plain nothing is reserved.

Before each run the page cache is written back (`sync`) and the script waits --settle seconds,
so the previous run's writeback and deletions don't leak into this one.

Prints one JSON line per run: write latency p50/p99/p99.9/max in ms and the stalls (writes
over 50 ms) as [seconds into the run, ms]. Linux only (fallocate through libc).

    scripts/write-stalls.py --dir /var/tmp --rate 380 --seconds 15 --mode plain --runs 2
    scripts/write-stalls.py --dir /var/tmp --rate 380 --seconds 15 --mode prealloc --runs 2
"""

import argparse
import ctypes
import json
import os
import queue
import subprocess
import threading
import time

FALLOC_FL_KEEP_SIZE = 1
CHUNK = 65536
FILES = 3


def run(args, libc):
    rate = args.rate * 1e6
    window = args.window << 20
    paths = [os.path.join(args.dir, f"write-stalls-{i}") for i in range(FILES)]
    fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644) for p in paths]
    buf = os.urandom(CHUNK)
    written = [0] * FILES
    reserved = [0] * FILES
    work = queue.Queue()
    reserve_ms = []

    def reserver():
        while True:
            item = work.get()
            if item is None:
                return
            fd, offset, length = item
            t0 = time.perf_counter()
            if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) != 0:
                raise OSError(ctypes.get_errno(), "fallocate failed")
            reserve_ms.append((time.perf_counter() - t0) * 1e3)

    thread = threading.Thread(target=reserver, daemon=True)
    thread.start()
    latencies = []
    stalls = []
    start = time.perf_counter()
    n = 0
    try:
        while True:
            due = start + n * CHUNK / rate
            now = time.perf_counter()
            if now - start > args.seconds:
                break
            if due > now:
                time.sleep(due - now)
            i = n % FILES
            t0 = time.perf_counter()
            os.write(fds[i], buf)
            took = time.perf_counter() - t0
            latencies.append(took)
            if took > 0.05:
                stalls.append([round(t0 - start, 2), round(took * 1e3)])
            written[i] += CHUNK
            if args.mode == "prealloc" and reserved[i] - written[i] < window // 2:
                start_at = max(reserved[i], written[i])
                work.put((fds[i], start_at, written[i] + window - start_at))
                reserved[i] = written[i] + window
            n += 1
    finally:
        work.put(None)
        thread.join()
        for fd, path in zip(fds, paths):
            os.close(fd)
            os.unlink(path)
    latencies.sort()

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1e3, 3)

    return {
        "mode": args.mode,
        "rate_mb_per_sec": args.rate,
        "seconds": args.seconds,
        "mb_written": round(n * CHUNK / 1e6),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": round(latencies[-1] * 1e3, 1),
        "stalls": stalls,
        "reservations": len(reserve_ms),
        "reservation_max_ms": round(max(reserve_ms), 1) if reserve_ms else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="/var/tmp", help="where the three files go")
    parser.add_argument("--rate", type=float, default=380.0, help="MB/s over all files")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--mode", choices=["plain", "prealloc"], default="plain")
    parser.add_argument("--window", type=int, default=256, help="MiB reserved ahead")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--settle", type=float, default=8.0, help="seconds idle before a run")
    args = parser.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    for _ in range(args.runs):
        subprocess.run(["sync"], check=True)
        time.sleep(args.settle)
        print(json.dumps(run(args, libc)), flush=True)


if __name__ == "__main__":
    main()
