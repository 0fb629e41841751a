#!/usr/bin/python3
"""A database-like load for fault scenarios: small writes and flushes that rewrite the
same blocks again and again.

In directory DIR (a mounted file system) for SECONDS seconds:
- a SQLite database in WAL mode with synchronous=FULL: every commit updates a few rows of
  a small hot table and appends one row, then fsyncs the WAL; checkpoints rewrite the
  same database pages;
- an appending log file, fsynced every few lines.
Prints one summary line. Exits non-zero if either writer failed.
"""

import os
import random
import sqlite3
import sys
import threading
import time


def database(path, deadline, counts, seed):
    rng = random.Random(seed)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA wal_autocheckpoint=64")
    db.execute("CREATE TABLE IF NOT EXISTS hot (id INTEGER PRIMARY KEY, n INTEGER, pad BLOB)")
    db.execute("CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY, at REAL, pad BLOB)")
    for row in range(64):
        db.execute("INSERT OR IGNORE INTO hot VALUES (?, 0, zeroblob(200))", (row,))
    while time.monotonic() < deadline:
        db.execute("BEGIN")
        for _ in range(3):
            db.execute("UPDATE hot SET n = n + 1 WHERE id = ?", (rng.randrange(64),))
        db.execute("INSERT INTO journal (at, pad) VALUES (?, randomblob(?))",
                   (time.time(), rng.randrange(16, 600)))
        db.execute("COMMIT")
        counts["commits"] += 1
    db.close()


def appender(path, deadline, counts, seed):
    rng = random.Random(seed)
    with open(path, "ab") as log:
        while time.monotonic() < deadline:
            for _ in range(rng.randrange(1, 6)):
                log.write(b"%.6f %s\n" % (time.time(), os.urandom(rng.randrange(8, 120)).hex().encode()))
            log.flush()
            os.fsync(log.fileno())
            counts["fsyncs"] += 1


def main():
    directory, seconds = sys.argv[1], float(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    deadline = time.monotonic() + seconds
    counts = {"commits": 0, "fsyncs": 0}
    failures = []

    def guarded(body, *args):
        try:
            body(*args)
        except Exception as err:  # reported below; the scenario fails on it
            failures.append(f"{body.__name__}: {err}")

    threads = [
        threading.Thread(target=guarded, args=(database, os.path.join(directory, "db.sqlite"), deadline, counts, seed)),
        threading.Thread(target=guarded, args=(appender, os.path.join(directory, "app.log"), deadline, counts, seed + 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"dbload: {counts['commits']} commits, {counts['fsyncs']} log fsyncs in {seconds:.0f} s")
    if failures:
        print("dbload failed: " + "; ".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
