#!/usr/bin/env python3
"""Host-side peer of the device system tests (tests/system/test_devices.c), run where the guest's
VMM runs (inside the emulated host when the session uses one). Python 3 standard library only.

  tcp ADDR PORT_IN PORT_OUT NBYTES DIR
      The guest's TCP peer: NBYTES each way, "<count> <sha256>" of each in DIR/in and DIR/out,
      the guest's link-layer address in DIR/neigh, DIR/ready once listening (peer_lib.tcp).

  vsock SOCK ECHO_PORT NO_PORT SINK_PORT NBYTES
      Host-initiated vsock checks through cvisor-vmm's hybrid Unix socket SOCK ("CONNECT <port>"
      then "OK <hostport>"): NBYTES of random data to the guest's echo server on ECHO_PORT,
      reading the echo concurrently (ECHO-SENT and ECHO-BACK "<count> <sha256>"); a CONNECT to
      NO_PORT, where nothing listens, must end in a plain close (NO-PORT closed); NBYTES of other
      random data to SINK_PORT, then close (SINK-SENT "<count> <sha256>", for the guest to
      compare). Connecting retries until the guest listens. (guest/tools/vsock-host.py does the
      same one step per run; one interpreter here, as each start costs seconds.)

  balloon SOCK CONSOLE MIB VMM_PID
      Drives a balloon test through cvisor-vmm's control API on the Unix socket SOCK while the
      guest reports on the console file CONSOLE: waits for the guest's BEFORE line, inflates to
      MIB (PATCH /balloon), waits for INFLATED, polls GET /balloon/statistics until the driver
      reports MIB, then deflates to 0. Prints "KEY value" lines: PATCH-INFLATE and PATCH-DEFLATE
      (HTTP status), AMOUNT-MIB (GET /balloon), ACTUAL-MIB (statistics), and TIMEOUT <what> if
      something never happened. Each wait is bounded and ends early once the VM is gone
      (VMM_PID exited or the guest's exit marker is on the console). (One
      interpreter doing all of it: every program started in the emulated host costs seconds.)

Exits non-zero on any failure."""
import hashlib
import json
import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
from peer_lib import TIMEOUT, request, run, tcp  # noqa: E402


def vsock_dial(path, port, deadline=TIMEOUT):
    """A connection to guest port `port` through the hybrid socket, once the guest listens."""
    end = time.time() + deadline
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        try:
            s.connect(path)
            s.sendall(b"CONNECT %d\n" % port)
            line = b""
            while not line.endswith(b"\n"):
                c = s.recv(1)
                if not c:
                    break
                line += c
            if line.startswith(b"OK "):
                return s
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError):
            pass
        s.close()
        if time.time() > end:
            raise TimeoutError("guest port %d never accepted" % port)
        time.sleep(0.2)


def recv_all(s, h):
    n = 0
    while True:
        b = s.recv(1 << 20)
        if not b:
            return n
        h.update(b)
        n += len(b)


def vsock(sock, echo_port, no_port, sink_port, nbytes):
    n = int(nbytes)
    s = vsock_dial(sock, int(echo_port))
    data = os.urandom(n)
    back, got = hashlib.sha256(), [0]
    t = threading.Thread(target=lambda: got.__setitem__(0, recv_all(s, back)))
    t.start()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    t.join()
    s.close()
    print("ECHO-SENT %d %s" % (n, hashlib.sha256(data).hexdigest()))
    print("ECHO-BACK %d %s" % (got[0], back.hexdigest()), flush=True)

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sock)
    s.sendall(b"CONNECT %d\n" % int(no_port))
    answer = s.recv(100)
    s.close()
    print("NO-PORT %s" % ("closed" if answer == b"" else repr(answer)), flush=True)

    s = vsock_dial(sock, int(sink_port))
    data = os.urandom(n)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    recv_all(s, hashlib.sha256())   # the guest closes once it has read everything
    s.close()
    print("SINK-SENT %d %s" % (n, hashlib.sha256(data).hexdigest()), flush=True)


def balloon(sock, console, mib, vmm_pid):
    mib = int(mib)

    def vm_gone():
        return not os.path.exists("/proc/%d" % int(vmm_pid)) or console_has("[cvisor-exit")

    def console_has(word):
        try:
            with open(console, errors="replace") as f:
                return any(line.startswith(word) for line in f)
        except FileNotFoundError:
            return False

    def wait_for(what, cond, seconds):
        end = time.time() + seconds
        while time.time() < end:
            if cond():
                return True
            if vm_gone():
                break
            time.sleep(0.1)
        print("TIMEOUT %s" % what, flush=True)
        return False

    if not wait_for("BEFORE", lambda: console_has("BEFORE"), 120):
        sys.exit(1)
    status, _ = request(sock, "PATCH", "/balloon", json.dumps({"amount_mib": mib}))
    print("PATCH-INFLATE %d" % status, flush=True)
    if not wait_for("INFLATED", lambda: console_has("INFLATED"), 120):
        sys.exit(1)
    actual = [None]

    def driver_reports():
        status, body = request(sock, "GET", "/balloon/statistics")
        actual[0] = json.loads(body).get("actual_mib") if status == 200 else None
        return actual[0] == mib

    wait_for("ACTUAL", driver_reports, 10)
    print("ACTUAL-MIB %s" % actual[0])
    status, body = request(sock, "GET", "/balloon")
    print("AMOUNT-MIB %s" % (json.loads(body).get("amount_mib") if status == 200 else body))
    status, _ = request(sock, "PATCH", "/balloon", json.dumps({"amount_mib": 0}))
    print("PATCH-DEFLATE %d" % status, flush=True)


if __name__ == "__main__":
    run({"tcp": tcp, "vsock": vsock, "balloon": balloon}, __doc__)
