"""What the tests and bench.py share: the scripts, free ports, a script started and stopped as a
person would at a terminal, what each server answers, what /proc says about a process, and a
classroom's Wi-Fi on loopback."""
import itertools
import os
import pathlib
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

try:
    import resource
except ImportError:  # Windows
    resource = None

HERE = pathlib.Path(__file__).resolve().parent.parent  # the project: the scripts and the tests
SERVERS = ['nonblocking_server.py', 'select_server.py', 'selectors_server.py']
TIMEOUT = 5  # seconds: every socket and every wait has one
WINDOWS = os.name == 'nt'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def reply_rule(script, data):
    """What the server answers to the bytes of one recv(). bench.py's asyncio and threads
    yardsticks answer as selectors_server.py does."""
    if script == 'nonblocking_server.py':
        return b'my server'
    if script == 'select_server.py':
        return data.decode('utf-8', 'surrogateescape').upper().encode('utf-8', 'surrogateescape')
    return data.upper() + b'_SB'


def usage(pid):
    """(CPU seconds, resident KiB) of a process, from /proc; (None, None) where there is none."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        # VmRSS, not stat's RSS field: on recent kernels that is an estimate, off by ~100 KiB.
        with open(f'/proc/{pid}/status') as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith('VmRSS:'))
    except OSError:
        return None, None
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK'), rss


def start(args, nofile=None, **popen):
    """Run `python ARGS` in this folder, as from a terminal, so that Ctrl-C reaches it."""

    def child_setup():
        # A shell's background jobs ignore SIGINT, and their children inherit that: restore it.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    return subprocess.Popen(
        [sys.executable, *map(str, args)], cwd=HERE, preexec_fn=None if WINDOWS else child_setup,
        # Windows: a group of its own, so that Ctrl+Break (interrupt) reaches this process alone.
        creationflags=subprocess.CREATE_NEW_PROCESS_GROUP if WINDOWS else 0, **popen)


def interrupt(p, timeout=TIMEOUT, sig=None):
    """Ctrl-C, as a person would press it (Ctrl+Break on Windows); return the exit code."""
    p.send_signal(sig or (signal.CTRL_BREAK_EVENT if WINDOWS else signal.SIGINT))
    return p.wait(timeout)


def wait_until_accepting(p, port, timeout=TIMEOUT, host='127.0.0.1'):
    """True once the server p accepts on port; False if it exits or the time runs out first."""
    deadline = time.monotonic() + timeout
    while p.poll() is None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return True
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
    return False


class DelayProxy:
    """A classroom's Wi-Fi on loopback: a TCP proxy from a free port of 127.0.0.1 to `target`. It
    sends each chunk on, either way, after a seeded random delay: 30 ± 40 ms (at least 0), and 0.2
    to 0.4 s more for 3 % of them, as a lost frame's retransmission adds; never before the chunk
    before it, and an end (EOF or reset) after the data. `with DelayProxy(port) as proxy:`."""

    def __init__(self, target, seed=1):
        self.target, self.seed, self.sockets, self.closed = target, seed, [], False
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.accepting = threading.Thread(target=self.accept, daemon=True)
        self.accepting.start()

    def accept(self):
        for n in itertools.count():
            near = self.listener.accept()[0]
            if self.closed:  # close() connected, to wake us
                break
            threading.Thread(target=self.serve, args=(near, n), daemon=True).start()
        near.close()
        self.listener.close()

    def serve(self, near, n):
        """One client: on to the target both ways; its sockets closed once both ways have ended."""
        try:
            far = socket.create_connection(('127.0.0.1', self.target))
        except OSError:  # nothing listens there: the client finds its connection closed
            near.close()
            return
        self.sockets += [near, far]
        seed = f'{self.seed} {n}'  # each way of each client its own delays, the same each run
        up = threading.Thread(target=self.forward, args=(near, far, seed + ' up'), daemon=True)
        up.start()
        self.forward(far, near, seed + ' down')
        up.join()
        near.close()
        far.close()

    def forward(self, source, sink, seed):
        """Read chunks as they come, while a thread sends each on when it is due."""
        rng, chunks, due = random.Random(seed), queue.Queue(), 0
        sender = threading.Thread(target=self.send, args=(chunks, sink), daemon=True)
        sender.start()
        while True:
            try:
                data = source.recv(1460)  # a frame's worth: each may come late
            except ConnectionResetError:
                data = None  # passed on as a reset, in its turn
            except OSError:  # close()
                data = b''
            delay = max(0, rng.gauss(0.030, 0.040))
            if rng.random() < 0.03:  # a lost frame, sent again
                delay += rng.uniform(0.2, 0.4)
            due = max(due, time.monotonic() + delay)  # never before the chunk before it
            chunks.put((due, data))
            if not data:
                break
        sender.join()

    def send(self, chunks, sink):
        while True:
            due, data = chunks.get()
            time.sleep(max(0, due - time.monotonic()))
            try:
                if data:
                    sink.sendall(data)
                elif data is None:  # a reset: wake our other way's recv(sink), then reset
                    sink.shutdown(socket.SHUT_RD)
                    sink.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                    sink.close()
                else:
                    sink.shutdown(socket.SHUT_WR)  # the end, after all the data
            except OSError:  # sink has gone: what is left for it is dropped
                pass
            if not data:
                return

    def close(self):
        """No more clients; each one's sockets shut, which ends its threads."""
        if self.closed:
            return
        self.closed = True
        socket.create_connection(('127.0.0.1', self.port), timeout=TIMEOUT).close()  # wakes accept()
        self.accepting.join(TIMEOUT)
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed already
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
