#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A byte count through TCP within a deadline (it_netns_selftest.sh's check
that netns_slow slows a link; Debian's python3, no other tool needed).

    netns_xfer.py sink PORT BYTES SECONDS
        accept one connection on PORT (waiting at most 10 s for it), read
        until BYTES arrived, EOF, or SECONDS after the accept; print
        "received=N seconds=T" and exit 0
    netns_xfer.py source ADDR PORT BYTES
        connect to ADDR:PORT (retrying for 10 s while refused) and send BYTES
        zero bytes; exit 0 once all are sent, 1 if the peer went away

The sink counts what arrived, not what the source wrote: a write completes
when the bytes are in the socket's send buffer, which may hold megabytes.
"""
import socket
import sys
import time


def sink(port, want, secs):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", port))
    lsock.listen(1)
    lsock.settimeout(10)
    conn, _ = lsock.accept()
    start = time.monotonic()
    got = 0
    while got < want:
        left = start + secs - time.monotonic()
        if left <= 0:
            break
        conn.settimeout(left)
        try:
            chunk = conn.recv(1 << 16)
        except socket.timeout:
            break
        if not chunk:
            break
        got += len(chunk)
    print(f"received={got} seconds={time.monotonic() - start:.3f}", flush=True)
    return 0


def source(addr, port, count):
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection((addr, port), timeout=10)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    sock.settimeout(None)
    block = bytes(1 << 16)
    try:
        while count > 0:
            n = min(count, len(block))
            sock.sendall(block[:n])
            count -= n
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return 1
    return 0


def main(argv):
    if len(argv) == 5 and argv[1] == "sink":
        return sink(int(argv[2]), int(argv[3]), float(argv[4]))
    if len(argv) == 5 and argv[1] == "source":
        return source(argv[2], int(argv[3]), int(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
