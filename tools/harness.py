"""What the tests and bench.py share: the scripts, free ports, a script started and stopped as a
person would at a terminal, what each server answers, and what /proc says about a process."""
import os
import pathlib
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
    """A classroom's Wi-Fi on loopback: a TCP proxy that forwards each chunk, in order, in both
    directions, after a random delay (seeded): 30 ± 40 ms, and 0.2 to 0.4 s more for 3 % of the
    chunks, as a lost frame's retransmission would add. `with DelayProxy(port) as proxy:`, then
    connect to proxy.port."""

    def __init__(self, target, seed=1):
        self.target, self.random = target, random.Random(seed)
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:  # closed: the proxy stops
                return
            try:
                far = socket.create_connection(('127.0.0.1', self.target), timeout=TIMEOUT)
            except OSError:
                near.close()
                continue
            far.settimeout(None)
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self.forward, args=(a, b), daemon=True).start()

    def delay(self):
        extra = self.random.uniform(0.2, 0.4) if self.random.random() < 0.03 else 0
        return max(0.0, self.random.gauss(0.03, 0.04)) + extra

    def forward(self, source, to):
        """Read from source; deliver each chunk after its delay, never before the one before it."""
        due, reset = 0.0, False
        while True:
            try:
                data = source.recv(1460)  # about a frame: each may come late
            except OSError:  # a reset: passed on as one, in its turn
                data, reset = b'', True
            due = max(due, time.monotonic() + self.delay())
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if reset:
                    to.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                    to.close()
                    return
                if not data:  # the end, after the data before it
                    to.shutdown(socket.SHUT_WR)
                    return
                to.sendall(data)
            except OSError:
                return

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.listener.close()
