#!/usr/bin/env python3
"""Bulk TCP throughput of one link, for `make bench`'s drain-rate figures.

    bench_link.py recv PORT          (DR side: prints MiB/s received, then exits)
    bench_link.py sink PORT          (DR side: takes connections until killed)
    bench_link.py send HOST PORT SECONDS

The receiver times from the first byte to the sender's close, so connection setup
and the sender's start-up do not count. The sender prints its own figure: bytes sent
over the time until the receiver closed after them, so everything was received. It
sends a file in tmpfs with sendfile, which hands page references to TCP without a
copy, as the module's sender does: under emulation a copying sender measures its own
copy loop rather than the link.
"""

import socket
import sys
import tempfile
import time

CHUNK = 1 << 16
# Bytes of the file sent over and over.
SOURCE_BYTES = 16 << 20


def receive(port):
    with socket.create_server(("0.0.0.0", port)) as server:
        print("listening", flush=True)
        conn, _ = server.accept()
        with conn:
            total = 0
            started = None
            while True:
                data = conn.recv(CHUNK * 4)
                if not data:
                    break
                if started is None:
                    started = time.monotonic()
                total += len(data)
            elapsed = time.monotonic() - (started or time.monotonic())
    print("%.3f" % (total / 2**20 / max(elapsed, 1e-6)))


def sink(port):
    with socket.create_server(("0.0.0.0", port)) as server:
        print("listening", flush=True)
        while True:
            conn, _ = server.accept()
            with conn:
                while conn.recv(CHUNK * 4):
                    pass


def send(host, port, seconds):
    total = 0
    with tempfile.TemporaryFile(dir="/dev/shm") as source, socket.create_connection(
        (host, port)
    ) as conn:
        for _ in range(SOURCE_BYTES // CHUNK):
            source.write(bytes(CHUNK))
        source.flush()
        started = time.monotonic()
        deadline = started + seconds
        while time.monotonic() < deadline:
            total += conn.sendfile(source, 0, SOURCE_BYTES)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(CHUNK):
            pass
        elapsed = time.monotonic() - started
    print("%.3f" % (total / 2**20 / max(elapsed, 1e-6)))


def main(argv):
    if len(argv) == 3 and argv[1] == "recv":
        receive(int(argv[2]))
    elif len(argv) == 3 and argv[1] == "sink":
        sink(int(argv[2]))
    elif len(argv) == 5 and argv[1] == "send":
        send(argv[2], int(argv[3]), float(argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
