"""What every test shares: free ports, the scripts started as processes, and their clean-up."""
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

try:
    import resource
except ImportError:  # Windows
    resource = None

HERE = pathlib.Path(__file__).resolve().parent
SERVERS = ['nonblocking_server.py', 'select_server.py', 'selectors_server.py']
TIMEOUT = 5  # seconds: every socket and every wait has one
# Children speak UTF-8 whatever the locale, as a Chinese Windows pipe (gbk) would not.
ENV = {k: v for k, v in os.environ.items() if k != 'PYTHONIOENCODING'}
ENV['PYTHONUTF8'] = '1'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(predicate, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.02)


def usage(pid):
    """(CPU seconds, resident KiB) of a process, from /proc; (None, None) where there is none."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return None, None
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    return cpu, int(fields[21]) * os.sysconf('SC_PAGE_SIZE') // 1024


def growth_kib(pid, base):
    """How much the process grew since `base` KiB; 0 where that can't be measured (no /proc)."""
    now = usage(pid)[1]
    return 0 if base is None or now is None else now - base


def raise_nofile(n):
    """Let this test process hold n sockets, or skip the test."""
    if resource is None:
        pytest.skip('no resource module')
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f'the hard RLIMIT_NOFILE is {hard}, below the {n} this test needs')
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


class Proc:
    """A script running as a process, its output in files."""

    def __init__(self, tmp_path, script, *args, nofile=None, stdin=subprocess.DEVNULL,
                 stdout=None, stderr=None, env=None, emulate=None):
        self.script = script
        name = f'{script}.{id(self)}'
        self.out, self.err = tmp_path / f'{name}.out', tmp_path / f'{name}.err'

        def child_setup():
            # A shell's background jobs ignore SIGINT; our Ctrl-C must reach the script.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        cmd = [sys.executable, str(HERE / script), *args]
        if emulate:
            cmd[1:1] = [str(HERE / 'emulate.py'), emulate]
        windows = os.name == 'nt'
        with open(self.out, 'wb') as out, open(self.err, 'wb') as err:
            self.p = subprocess.Popen(
                cmd, cwd=HERE, stdin=stdin, stdout=stdout or out, stderr=stderr or err,
                env={**ENV, **(env or {})}, preexec_fn=None if windows else child_setup,
                # Windows: a group of its own, so that Ctrl+Break reaches this process alone.
                creationflags=subprocess.CREATE_NEW_PROCESS_GROUP if windows else 0)

    def stdout(self):
        return self.out.read_text(encoding='utf-8', errors='replace')

    def stderr(self):
        return self.err.read_text(encoding='utf-8', errors='replace')

    def interrupt(self, sig=None):
        """Ctrl-C, as a person would press it (Ctrl+Break on Windows); return the exit code."""
        self.p.send_signal(sig or (signal.CTRL_BREAK_EVENT if os.name == 'nt' else signal.SIGINT))
        return self.p.wait(TIMEOUT)

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(TIMEOUT)
        if self.p.stdin:
            self.p.stdin.close()


class Server(Proc):
    def __init__(self, tmp_path, script, *args, port=None, **kwargs):
        self.port = port or free_port()
        super().__init__(tmp_path, script, '--port', str(self.port), *args, **kwargs)

    def wait_until_accepting(self):
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert self.p.poll() is None, f'{self.script} exited: {self.stderr()}'
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=TIMEOUT).close()
                return self
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, f'{self.script} did not start listening'
                time.sleep(0.05)

    def connect(self):
        return socket.create_connection(('127.0.0.1', self.port), timeout=TIMEOUT)

    def alive(self):
        """The process runs, printed no traceback, and still answers a new client."""
        assert self.p.poll() is None, self.stderr()
        assert 'Traceback' not in self.stderr()
        with self.connect() as c:
            assert round_trip(c, self.script, b'still there?')


def reply_rule(script, data):
    """What the server answers to one chunk of bytes."""
    if script == 'nonblocking_server.py':
        return b'my server'
    if script == 'select_server.py':
        return data.decode('utf-8', 'surrogateescape').upper().encode('utf-8', 'surrogateescape')
    return data.upper() + b'_SB'


def recv_exactly(sock, n):
    data = b''
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f'connection closed after {len(data)} of {n} bytes'
        data += chunk
    return data


def round_trip(sock, script, data):
    sock.sendall(data)
    expected = reply_rule(script, data)
    assert recv_exactly(sock, len(expected)) == expected
    return True


def recv_until_eof(sock):
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)


def peer(sock):
    """How a server's --trace names this client: its own address and port."""
    return '%s:%s' % sock.getsockname()[:2]


def passes(text):
    """The busy loop's passes per traced second."""
    return [int(n.replace(',', '')) for n in re.findall(r'([\d,]+) passes', text)]


@pytest.fixture
def start(tmp_path):
    """start(script, *args, **kwargs) runs a script; start.server(...) waits until it accepts.
    Every process is recorded before anything can fail, and stopped after the test."""
    started = []

    def proc(script, *args, **kwargs):
        started.append(Proc(tmp_path, script, *args, **kwargs))
        return started[-1]

    def server(script, *args, **kwargs):
        started.append(Server(tmp_path, script, *args, **kwargs))
        return started[-1].wait_until_accepting()

    proc.server = server
    yield proc
    for p in started:
        p.stop()


@pytest.fixture(params=SERVERS)
def server(request, start):
    return start.server(request.param)
