#!/usr/bin/env python3
"""Host half of vsock-check.sh: talks to cvisor-vmm's hybrid vsock Unix sockets.

  echo SOCK PORT N     CONNECT to guest PORT (retrying until the guest listens), send N random
                       bytes, read the echo concurrently, compare SHA-256, report MB/s
  send SOCK PORT N     CONNECT, send N bytes, wait for the guest to close; report MB/s
  refused SOCK PORT    CONNECT to a port nobody listens on: must end in a clean close
  serve PATH echo|sink accept one guest-initiated connection on PATH (= SOCK_PORT)
  agent SOCK PORT      agent protocol over vsock: ping, exec uname -r, poweroff
Exits non-zero when a check fails."""
import hashlib, json, os, socket, struct, sys, threading, time

def dial(sock_path, port, deadline=60.0):
    """CONNECT with retries until the guest listens; returns (socket, hostport)."""
    end = time.time() + deadline
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock_path)
            s.sendall(b"CONNECT %d\n" % port)
            line = b""
            while not line.endswith(b"\n"):
                c = s.recv(1)
                if not c:
                    break
                line += c
            if line.startswith(b"OK "):
                return s, int(line[3:])
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        s.close()
        if time.time() > end:
            sys.exit("no OK from guest port %d" % port)
        time.sleep(0.2)

def recv_all(s, h=None, sink=None):
    n = 0
    while True:
        b = s.recv(1 << 20)
        if not b:
            return n
        n += len(b)
        if h: h.update(b)
        if sink: sink(b)

def cmd_echo(path, port, nbytes):
    s, hp = dial(path, int(port))
    data = os.urandom(int(nbytes))
    back = hashlib.sha256()
    got = [0]
    t = threading.Thread(target=lambda: got.__setitem__(0, recv_all(s, back)))
    t0 = time.time(); t.start()
    s.sendall(data); s.shutdown(socket.SHUT_WR); t.join()
    dt = time.time() - t0
    sent = hashlib.sha256(data).hexdigest()
    print("echo: hostport %d sent %d sha256 %s | back %d sha256 %s | %s | %.2f s (%.2f MB/s each way)"
          % (hp, len(data), sent, got[0], back.hexdigest(),
             "MATCH" if sent == back.hexdigest() and got[0] == len(data) else "MISMATCH",
             dt, len(data) / dt / 1e6))
    if sent != back.hexdigest() or got[0] != len(data):
        sys.exit(1)

def cmd_send(path, port, nbytes):
    s, hp = dial(path, int(port))
    chunk = b"\xa5" * (1 << 20)
    n = int(nbytes)
    t0 = time.time()
    left = n
    while left:
        k = min(left, len(chunk)); s.sendall(chunk[:k]); left -= k
    s.shutdown(socket.SHUT_WR)
    recv_all(s)   # guest closes after reading everything
    dt = time.time() - t0
    print("host->guest: %d bytes in %.2f s = %.2f MB/s" % (n, dt, n / dt / 1e6))

def cmd_refused(path, port):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b"CONNECT %d\n" % int(port))
    t0 = time.time()
    b = s.recv(100)
    print("refused: port %s -> %r after %.3f s (%s)" % (port, b, time.time() - t0,
          "clean close" if b == b"" else "UNEXPECTED"))
    if b != b"":
        sys.exit(1)

def cmd_serve(path, mode):
    """Guest-initiated: listen on PATH (PATH_P), accept one connection."""
    try: os.unlink(path)
    except FileNotFoundError: pass
    l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    l.bind(path); l.listen(1)
    print("serve: listening on %s" % path, flush=True)
    c, _ = l.accept()
    t0 = time.time()
    h = hashlib.sha256()
    n = recv_all(c, h, (lambda b: c.sendall(b)) if mode == "echo" else None)
    dt = time.time() - t0
    c.shutdown(socket.SHUT_WR)
    c.close(); l.close(); os.unlink(path)
    print("serve %s: received %d bytes sha256 %s in %.2f s = %.2f MB/s" % (mode, n, h.hexdigest(),
          dt, n / dt / 1e6 if dt else 0), flush=True)

def frame(t, payload):
    return struct.pack(">IB", len(payload), t) + payload

def read_frame(s):
    hdr = b""
    while len(hdr) < 5:
        b = s.recv(5 - len(hdr))
        if not b: return None
        hdr += b
    n, t = struct.unpack(">IB", hdr)
    p = b""
    while len(p) < n:
        b = s.recv(n - len(p))
        if not b: return None
        p += b
    return t, p

def cmd_agent(path, port):
    s, hp = dial(path, int(port))
    s.sendall(frame(1, json.dumps({"op": "ping"}).encode()))
    pong = read_frame(s)
    print("agent ping via hostport %d ->" % hp, pong)
    if not pong or b'"pong"' not in pong[1]:
        sys.exit(1)
    s.sendall(frame(1, json.dumps({"op": "exec", "argv": ["uname", "-r"]}).encode()))
    while True:
        f = read_frame(s)
        print("agent exec ->", f)
        if f is None or (f[0] == 1 and b'"exit"' in f[1]):
            break
    s2, hp2 = dial(path, int(port))
    s2.sendall(frame(1, json.dumps({"op": "poweroff"}).encode()))
    print("agent poweroff ->", read_frame(s2))

cmds = {"echo": cmd_echo, "send": cmd_send, "refused": cmd_refused, "serve": cmd_serve,
        "agent": cmd_agent}
cmds[sys.argv[1]](*sys.argv[2:])
