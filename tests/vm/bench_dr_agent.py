#!/usr/bin/env python3
"""Remote control of the benchmark's DR machine (a VM of its own, see
scripts/bench-quick.sh), so the primary's guest can start and stop the receiver of
each system under test there.

    bench_dr_agent.py serve PORT SCRIPT     (DR side: runs `SCRIPT WORD...` for each
                                             command, until the command `quit`)
    bench_dr_agent.py call HOST PORT WORD...  (primary side: runs one command; prints
                                             its output, exits 1 if it failed)

One command per connection: the words on one line, answered by "ok" or "failed" on a
line, then the command's output. Nothing here is exposed beyond the benchmark's own
bridge, which only the two VMs share.
"""

import socket
import subprocess
import sys

# A command that takes longer has hung (DRBD waiting for its peer, at worst 60 s).
COMMAND_TIMEOUT_S = 180


def serve(port, script):
    with socket.create_server(("0.0.0.0", port)) as server:
        print("listening", flush=True)
        while True:
            conn, _ = server.accept()
            with conn, conn.makefile("rwb") as stream:
                words = stream.readline().decode().split()
                if words == ["quit"]:
                    stream.write(b"ok\n")
                    return
                try:
                    done = subprocess.run(
                        [script, *words],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        timeout=COMMAND_TIMEOUT_S,
                        check=False,
                    )
                    status, output = ("ok" if done.returncode == 0 else "failed"), done.stdout
                except subprocess.TimeoutExpired as timeout:
                    status, output = "failed", (timeout.output or b"") + b"\n(timed out)\n"
                stream.write(status.encode() + b"\n" + output)


def call(host, port, words):
    with socket.create_connection((host, port), timeout=COMMAND_TIMEOUT_S + 30) as conn:
        with conn.makefile("rwb") as stream:
            stream.write(" ".join(words).encode() + b"\n")
            stream.flush()
            conn.shutdown(socket.SHUT_WR)
            status = stream.readline().decode().strip()
            sys.stdout.write(stream.read().decode(errors="replace"))
    return status == "ok"


def main(argv):
    if len(argv) == 4 and argv[1] == "serve":
        serve(int(argv[2]), argv[3])
    elif len(argv) >= 5 and argv[1] == "call":
        sys.exit(0 if call(argv[2], int(argv[3]), argv[4:]) else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
