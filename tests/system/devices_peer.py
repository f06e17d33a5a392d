#!/usr/bin/env python3
"""Host-side peer of the device system tests (tests/system/test_devices.c), run where the guest's
VMM runs (inside the emulated host when the session uses one). Python 3 standard library only.

  tcp ADDR PORT_IN PORT_OUT NBYTES DIR
      Listens on ADDR:PORT_IN and ADDR:PORT_OUT, then creates DIR/ready. On PORT_IN it reads
      exactly NBYTES from the guest and writes "<count> <sha256>" to DIR/in; on PORT_OUT it sends
      NBYTES of fresh random data, writes "<count> <sha256>" to DIR/out, and closes. Reading a
      known count (rather than waiting for end of file) keeps the guest's nc from having to
      half-close. Every wait has a timeout, so a broken device ends the test instead of hanging.
      When the guest connects, the link-layer address the host's ARP table holds for it goes to
      DIR/neigh (read now: the entry vanishes once the TAP loses its carrier at VM exit).

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
import http.client
import json
import os
import socket
import sys
import threading
import time

TIMEOUT = 200.0   # seconds; generous: a loaded emulated host is slow, a stalled device is not


def arp_lookup(ip):
    """The hardware address /proc/net/arp holds for ip, or "none"."""
    with open("/proc/net/arp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if len(cols) >= 4 and cols[0] == ip:
                return cols[3]
    return "none"


def tcp(addr, port_in, port_out, nbytes, out_dir):
    n = int(nbytes)

    def listener(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(port)))
        s.listen(1)
        s.settimeout(TIMEOUT)
        return s

    l_in, l_out = listener(port_in), listener(port_out)
    failures = []

    def sink():
        try:
            c, peer = l_in.accept()
            with open(os.path.join(out_dir, "neigh"), "w") as f:
                f.write("%s\n" % arp_lookup(peer[0]))
            c.settimeout(TIMEOUT)
            h, got = hashlib.sha256(), 0
            while got < n:
                b = c.recv(min(1 << 20, n - got))
                if not b:
                    break
                h.update(b)
                got += len(b)
            c.close()
            with open(os.path.join(out_dir, "in"), "w") as f:
                f.write("%d %s\n" % (got, h.hexdigest()))
        except OSError as e:
            failures.append("receiving: %s" % e)

    def source():
        try:
            c, _ = l_out.accept()
            c.settimeout(TIMEOUT)
            data = os.urandom(n)
            with open(os.path.join(out_dir, "out"), "w") as f:
                f.write("%d %s\n" % (n, hashlib.sha256(data).hexdigest()))
            c.sendall(data)
            c.close()
        except OSError as e:
            failures.append("sending: %s" % e)

    threads = [threading.Thread(target=sink), threading.Thread(target=source)]
    for t in threads:
        t.start()
    open(os.path.join(out_dir, "ready"), "w").close()
    for t in threads:
        t.join()
    if failures:
        sys.exit("devices_peer tcp: " + "; ".join(failures))


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


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


def request(sock, method, path, body=None):
    """One request to the control API: (HTTP status, body text)."""
    c = UnixHTTPConnection(sock)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    return r.status, r.read().decode().strip()


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
    cmds = {"tcp": tcp, "vsock": vsock, "balloon": balloon}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    try:
        cmds[sys.argv[1]](*sys.argv[2:])
    except OSError as e:   # e.g. the VM (and its sockets) went away early
        print("ERROR %s: %s" % (sys.argv[1], e), flush=True)
        sys.exit(1)
