#!/usr/bin/env python3
# delay.py HOST PORT MS: an ssh ProxyCommand that relays stdio <-> TCP and holds each chunk MS ms
# in each direction (round trip 2*MS), order kept. Bandwidth is not limited.
import os, socket, sys, threading, time, queue
host, port, ms = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000
s = socket.create_connection((host, port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def pump(read, write):
    q = queue.Queue()
    def writer():
        while True:
            t, data = q.get()
            d = t - time.monotonic()
            if d > 0:
                time.sleep(d)
            if not data:
                os._exit(0)
            write(data)
    threading.Thread(target=writer, daemon=True).start()
    while True:
        data = read()
        q.put((time.monotonic() + ms, data))
        if not data:
            return
def to_sock(data): s.sendall(data)
def to_out(data):
    mv = memoryview(data)
    while mv:
        n = os.write(1, mv); mv = mv[n:]
t = threading.Thread(target=pump, args=(lambda: os.read(0, 1 << 16), to_sock), daemon=True)
t.start()
pump(lambda: s.recv(1 << 16), to_out)
time.sleep(ms + 0.05)
