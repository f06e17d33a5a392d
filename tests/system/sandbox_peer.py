#!/usr/bin/env python3
"""Host-side peer of the sandbox system tests (tests/system/test_sandbox.c), run where the VMM
runs (inside the emulated host when the session uses one). Python 3 standard library only.

  api SOCK METHOD PATH [BODY]
      One request to cvisor-vmm's control API on the Unix socket SOCK; prints "<status> <body>".
      Retries the connection for up to 60 s (the VMM creates the socket while it starts).

  balloon SOCK MIB CONSOLE
      GET / (the VMM answers), then inflates the balloon to MIB (PATCH /balloon), polls
      GET /balloon/statistics until the driver reports MIB, waits for the guest to say
      INFLATED on its console (it polls its memory: deflating sooner could hide the inflation
      from it), and deflates to 0. Prints "KEY value" lines: ROOT-STATUS, PATCH-INFLATE,
      ACTUAL-MIB, GUEST-SAW, PATCH-DEFLATE. One interpreter does it all: every program started
      inside the emulated host costs seconds.

  tcp ADDR PORT_IN PORT_OUT NBYTES DIR
      The guest's TCP peer: NBYTES each way, "<count> <sha256>" of each in DIR/in and DIR/out,
      DIR/ready once listening (peer_lib.tcp).

Exits non-zero on failure."""
import json
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
from peer_lib import request, run, tcp  # noqa: E402

POLL_SECONDS = 120.0   # how long the balloon driver has to report the new size
API_RETRY = 60         # the VMM creates its API socket while it starts


def api(sock, method, path, body=None):
    print("%s %s" % request(sock, method, path, body, API_RETRY), flush=True)


def console_says(path, word, seconds):
    end = time.time() + seconds
    while time.time() < end:
        try:
            with open(path, errors="replace") as f:
                if word in f.read():
                    return True
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    return False


def balloon(sock, mib, console):
    mib = int(mib)
    status, _ = request(sock, "GET", "/", retry_seconds=API_RETRY)
    print("ROOT-STATUS %s" % status, flush=True)
    status, _ = request(sock, "PATCH", "/balloon", json.dumps({"amount_mib": mib}), API_RETRY)
    print("PATCH-INFLATE %s" % status, flush=True)
    actual, end = None, time.time() + POLL_SECONDS
    while time.time() < end:
        status, body = request(sock, "GET", "/balloon/statistics", retry_seconds=API_RETRY)
        if status == 200:
            actual = json.loads(body).get("actual_mib")
            if actual == mib:
                break
        time.sleep(0.2)
    print("ACTUAL-MIB %s" % actual, flush=True)
    print("GUEST-SAW %s" % ("yes" if console_says(console, "INFLATED", POLL_SECONDS) else "no"),
          flush=True)
    status, _ = request(sock, "PATCH", "/balloon", json.dumps({"amount_mib": 0}), API_RETRY)
    print("PATCH-DEFLATE %s" % status, flush=True)


if __name__ == "__main__":
    run({"api": api, "balloon": balloon, "tcp": tcp}, __doc__)
