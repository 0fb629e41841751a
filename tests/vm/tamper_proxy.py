#!/usr/bin/env python3
"""A man in the middle for the VM suite: forwards TCP connections from LISTEN to
UPSTREAM, and in the first connection's client-to-server stream inverts the one byte at
offset FLIP_AT. Later connections pass untouched. Prints one line per connection and one
when it flipped."""
import socket
import sys
import threading


def pipe(src, dst, flip_at):
    seen = 0
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if flip_at is not None and seen <= flip_at < seen + len(data):
                data = bytearray(data)
                data[flip_at - seen] ^= 0xFF
                print(f"flipped byte {flip_at}", flush=True)
            seen += len(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    listen, upstream, flip_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    host, port = listen.rsplit(":", 1)
    up_host, up_port = upstream.rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen(8)
    print("listening", flush=True)
    count = 0
    while True:
        client, _ = server.accept()
        count += 1
        print(f"connection {count}", flush=True)
        try:
            up = socket.create_connection((up_host, int(up_port)))
        except OSError as err:
            # The receiver is down (restarting): the sender retries.
            print(f"upstream refused: {err}", flush=True)
            client.close()
            continue
        flip = flip_at if count == 1 else None
        threading.Thread(target=pipe, args=(client, up, flip), daemon=True).start()
        threading.Thread(target=pipe, args=(up, client, None), daemon=True).start()


if __name__ == "__main__":
    main()
