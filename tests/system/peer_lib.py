"""What the host-side peers of the system tests share (devices_peer.py, sandbox_peer.py): a TCP
peer for a guest's NIC, requests to cvisor-vmm's control API on its Unix socket, and the
subcommand dispatch. Python 3 standard library only; the peers run where the VMM runs (inside
the emulated host when the session uses one)."""
import hashlib
import http.client
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
    """tcp ADDR PORT_IN PORT_OUT NBYTES DIR
      Listens on ADDR:PORT_IN and ADDR:PORT_OUT, then creates DIR/ready. On PORT_IN it reads
      exactly NBYTES from the guest and writes "<count> <sha256>" to DIR/in; on PORT_OUT it sends
      NBYTES of fresh random data, writes "<count> <sha256>" to DIR/out, and closes. Reading a
      known count (rather than waiting for end of file) keeps the guest's nc from having to
      half-close. Every wait has a timeout, so a broken device ends the test instead of hanging.
      When the guest connects, the link-layer address the host's ARP table holds for it goes to
      DIR/neigh (read now: the entry vanishes once the TAP loses its carrier at VM exit)."""
    n = int(nbytes)

    def listener(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(port)))
        s.listen(1)
        # The guest connects for the second direction only after the first is done, which in
        # a slow emulated host can take longer than TIMEOUT: waiting to be called is not a
        # stall. Once connected, TIMEOUT of silence is.
        s.settimeout(3 * TIMEOUT)
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
        sys.exit("peer tcp: " + "; ".join(failures))


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the Unix socket at path; connecting retries for up to retry_seconds while the
    socket is missing or refuses (a VMM that is still starting)."""

    def __init__(self, path, retry_seconds=0):
        super().__init__("localhost", timeout=30)
        self.unix_path = path
        self.retry_seconds = retry_seconds

    def connect(self):
        end = time.time() + self.retry_seconds
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            try:
                s.connect(self.unix_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.time() >= end:
                    raise
                time.sleep(0.1)
        self.sock = s


def request(sock, method, path, body=None, retry_seconds=0):
    """One request to the control API: (HTTP status, body text)."""
    c = UnixHTTPConnection(sock, retry_seconds)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    status, text = r.status, r.read().decode(errors="replace").strip()
    c.close()
    return status, text


def run(cmds, doc):
    """Runs the subcommand argv[1] with the remaining arguments; the usage (doc) if none fits.
    An OSError (e.g. the VM and its sockets went away early) is one ERROR line and exit 1."""
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(doc)
    try:
        cmds[sys.argv[1]](*sys.argv[2:])
    except OSError as e:
        print("ERROR %s: %s" % (sys.argv[1], e), flush=True)
        sys.exit(1)
