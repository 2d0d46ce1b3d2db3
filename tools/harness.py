"""What the tests and bench.py share: the scripts, free ports, a script started and stopped as a
person would at a terminal, what each server answers, and what /proc says about a process."""
import os
import pathlib
import signal
import socket
import subprocess
import sys
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
