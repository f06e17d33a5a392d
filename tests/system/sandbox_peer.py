#!/usr/bin/env python3
"""Host-side peer of the sandbox system tests (tests/system/test_sandbox.c), run where the VMM
runs (inside the emulated host when the session uses one). Python 3 standard library only.

  api SOCK METHOD PATH [BODY]
      One request to cvisor-vmm's control API on the Unix socket SOCK; prints "<status> <body>".
      Retries the connection for up to 60 s (the VMM creates the socket while it starts).

  balloon SOCK MIB
      GET / (the VMM answers), then inflates the balloon to MIB (PATCH /balloon), polls
      GET /balloon/statistics until the driver reports MIB, and deflates to 0. Prints "KEY
      value" lines: ROOT-STATUS, PATCH-INFLATE, ACTUAL-MIB, PATCH-DEFLATE. One interpreter does
      it all: every program started inside the emulated host costs seconds.

  tcp ADDR PORT_IN PORT_OUT NBYTES DIR
      Listens on ADDR:PORT_IN and ADDR:PORT_OUT and creates DIR/ready. Reads exactly NBYTES
      from the first connection to PORT_IN and writes "<count> <sha256>" to DIR/in; sends NBYTES
      of random data to the first connection to PORT_OUT and writes "<count> <sha256>" to
      DIR/out. Every wait is bounded, so a broken path ends the test instead of hanging it.

Exits non-zero on failure."""
import hashlib
import json
import os
import socket
import sys
import threading
import time

TIMEOUT = 120.0


def request(sock, method, path, body=None):
    """(status, body) of one request; retries the connection for up to 60 s."""
    end = time.time() + 60
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        try:
            s.connect(sock)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.time() > end:
                raise
            time.sleep(0.1)
    data = body.encode() if body else b""
    head = "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, path)
    if data:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
    s.sendall(head.encode() + b"\r\n" + data)
    reply = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
    s.close()
    status_line, _, rest = reply.partition(b"\r\n")
    _, _, body_text = rest.partition(b"\r\n\r\n")
    status = status_line.split()[1].decode() if len(status_line.split()) > 1 else "?"
    return status, body_text.decode(errors="replace").strip()


def api(sock, method, path, body=None):
    print("%s %s" % request(sock, method, path, body), flush=True)


def balloon(sock, mib):
    mib = int(mib)
    status, _ = request(sock, "GET", "/")
    print("ROOT-STATUS %s" % status, flush=True)
    status, _ = request(sock, "PATCH", "/balloon", json.dumps({"amount_mib": mib}))
    print("PATCH-INFLATE %s" % status, flush=True)
    actual, end = None, time.time() + TIMEOUT
    while time.time() < end:
        status, body = request(sock, "GET", "/balloon/statistics")
        if status == "200":
            actual = json.loads(body).get("actual_mib")
            if actual == mib:
                break
        time.sleep(0.2)
    print("ACTUAL-MIB %s" % actual, flush=True)
    status, _ = request(sock, "PATCH", "/balloon", json.dumps({"amount_mib": 0}))
    print("PATCH-DEFLATE %s" % status, flush=True)


def listen_on(addr, port):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(1)
    ls.settimeout(TIMEOUT)
    return ls


def tcp(addr, port_in, port_out, nbytes, out_dir):
    nbytes = int(nbytes)
    ls_in = listen_on(addr, int(port_in))
    ls_out = listen_on(addr, int(port_out))
    errors = []

    def receive():
        try:
            c, _ = ls_in.accept()
            c.settimeout(TIMEOUT)
            h, got = hashlib.sha256(), 0
            while got < nbytes:
                chunk = c.recv(min(1 << 16, nbytes - got))
                if not chunk:
                    break
                h.update(chunk)
                got += len(chunk)
            c.close()
            with open(os.path.join(out_dir, "in"), "w") as f:
                f.write("%d %s\n" % (got, h.hexdigest()))
        except OSError as e:
            errors.append("in: %s" % e)

    def send():
        try:
            c, _ = ls_out.accept()
            c.settimeout(TIMEOUT)
            h, sent = hashlib.sha256(), 0
            while sent < nbytes:
                chunk = os.urandom(min(1 << 16, nbytes - sent))
                c.sendall(chunk)
                h.update(chunk)
                sent += len(chunk)
            c.close()
            with open(os.path.join(out_dir, "out"), "w") as f:
                f.write("%d %s\n" % (sent, h.hexdigest()))
        except OSError as e:
            errors.append("out: %s" % e)

    threads = [threading.Thread(target=receive), threading.Thread(target=send)]
    for t in threads:
        t.start()
    open(os.path.join(out_dir, "ready"), "w").close()
    for t in threads:
        t.join()
    if errors:
        print("ERROR %s" % "; ".join(errors), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    cmds = {"api": api, "balloon": balloon, "tcp": tcp}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    try:
        cmds[sys.argv[1]](*sys.argv[2:])
    except OSError as e:
        print("ERROR %s: %s" % (sys.argv[1], e), flush=True)
        sys.exit(1)
