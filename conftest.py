"""What every test shares: the scripts started as processes, their clean-up, and talking to them.
What tools/bench.py needs as well is in tools/harness.py."""
import os
import re
import socket
import subprocess
import tempfile
import time
import unicodedata

import pytest

from tools import harness
from tools.harness import SERVERS, TIMEOUT, free_port, reply_rule, resource, usage

# Children speak UTF-8 whatever the locale, as a Chinese Windows pipe (gbk) would not.
# As CI has it: no PYTHONIOENCODING, and buffered output unless a test asks otherwise.
ENV = {k: v for k, v in os.environ.items()
       if k not in ('PYTHONIOENCODING', 'PYTHONUNBUFFERED')}
ENV['PYTHONUTF8'] = '1'


def wait_for(predicate, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.02)


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
        emulated = ['tools/emulate.py', emulate] if emulate else []
        with open(self.out, 'wb') as out, open(self.err, 'wb') as err:
            self.p = harness.start([*emulated, script, *args], nofile=nofile, stdin=stdin,
                                   stdout=stdout or out, stderr=stderr or err,
                                   env={**ENV, **(env or {})})

    def stdout(self):
        return self.out.read_text(encoding='utf-8', errors='replace')

    def stderr(self):
        return self.err.read_text(encoding='utf-8', errors='replace')

    def interrupt(self, sig=None):
        """Ctrl-C, as a person would press it (Ctrl+Break on Windows); return the exit code."""
        return harness.interrupt(self.p, sig=sig)

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(TIMEOUT)
        if self.p.stdin:
            self.p.stdin.close()


class Server(Proc):
    def __init__(self, tmp_path, script, *args, port=None, **kwargs):
        self.port = port or free_port()
        self.sockets = []  # every connection a test makes, closed in stop() even if it fails
        super().__init__(tmp_path, script, '--port', str(self.port), *args, **kwargs)

    def wait_until_accepting(self):
        assert harness.wait_until_accepting(self.p, self.port), \
            f'{self.script} did not start listening: {self.stderr()}'
        return self

    def connect(self, timeout=TIMEOUT):
        self.sockets.append(socket.create_connection(('127.0.0.1', self.port), timeout=timeout))
        return self.sockets[-1]

    def stop(self):
        # A failed test leaves its sockets open: 1,500 of them put the next test's descriptors
        # past select()'s 1,023.
        for sock in self.sockets:
            sock.close()
        super().stop()

    def alive(self):
        """The process runs, printed no traceback, and still answers a new client."""
        assert self.p.poll() is None, self.stderr()
        assert 'Traceback' not in self.stderr()
        with self.connect() as c:
            assert round_trip(c, self.script, b'still there?')


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


def whole_reply(script, data, reply):
    """The reply to data that the server read in pieces of 1024 bytes or fewer: an answer to
    each piece in turn. Each answer ends the same way (b'my server', b'_SB' or not at all): one
    such end for every 1024 bytes or more, and without them, what is left answers the data."""
    end = reply_rule(script, b'')
    answer = reply_rule(script, data)
    if end:
        assert reply.count(end) >= len(data) // 1024, f'{reply.count(end)} answers'
        reply, answer = reply.replace(end, b''), answer[:-len(end)]
    assert reply == answer
    return True


def recv_until_eof(sock, within=30):
    """All the bytes until the server closes. A server that never does (one that answers b''
    with more data, for ever) fails the test within `within` seconds rather than hanging it."""
    chunks, deadline = [], time.monotonic() + within
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)
        assert time.monotonic() < deadline, f'no end after {sum(map(len, chunks)):,} bytes'


def columns(line):
    """How many columns a terminal gives a line: East Asian wide and full-width characters two,
    and ambiguous ones (“, …, é) two as well, as a Chinese Windows console draws them."""
    return sum(2 if unicodedata.east_asian_width(c) in 'WFA' else 1 for c in line)


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


# ---- `make test`: the tests in two halves at once, one a core, about a minute rather than two ----
# Most tests wait on a server, not on a core. `--half both` runs every other test here and starts
# `pytest --half 2` beside it for the rest; its output is shown, and its result counted, at the end.
other_half = None  # that pytest, while it runs
other_output = None  # its output, in a temporary file
both_halves = ''  # what both halves' tests came to, for the last line of all
NO_TESTS = 5  # pytest's exit status when -k leaves a half nothing to run


def pytest_addoption(parser):
    parser.addoption('--half', choices=['1', '2', 'both'],
                     help='run every other test (1 or 2), or both halves at once (both)')


def pytest_collection_modifyitems(config, items):
    half = config.getoption('half')
    if half == '2':
        items[:] = items[1::2]
    elif half:
        items[:] = items[0::2]


def pytest_sessionstart(session):
    global other_half, other_output
    if session.config.getoption('half') != 'both':
        return
    args = list(session.config.invocation_params.args)
    if '--half=both' in args:
        args.remove('--half=both')
    else:  # `--half both`, as the Makefile writes it
        del args[args.index('--half'):args.index('--half') + 2]
    other_output = tempfile.TemporaryFile('w+', encoding='utf-8')
    # Started as the scripts are, so that Ctrl-C reaches it too.
    other_half = harness.start(['-m', 'pytest', '--half', '2', '-p', 'no:cacheprovider', *args],
                               stdout=other_output, stderr=subprocess.STDOUT)


def pytest_sessionfinish(session):
    if other_half is None:
        return
    status = other_half.wait()
    if status not in (0, NO_TESTS) and session.exitstatus in (0, NO_TESTS):
        session.exitstatus = status


def pytest_terminal_summary(terminalreporter):
    global both_halves
    if other_output is None:
        return
    other_output.seek(0)
    theirs = other_output.read()
    other_output.close()
    terminalreporter.section('the other half of the tests, run beside these')
    terminalreporter.write(theirs)
    counts = {}  # outcome -> tests, in both halves
    for outcome, tests in terminalreporter.stats.items():
        if outcome in ('passed', 'failed', 'skipped', 'error'):
            counts[outcome] = len(tests)
    last = theirs.strip().splitlines()[-1] if theirs.strip() else ''
    for n, outcome in re.findall(r'(\d+) (passed|failed|skipped|error)', last):
        counts[outcome] = counts.get(outcome, 0) + int(n)
    both_halves = ', '.join(f'{n} {outcome}' for outcome, n in counts.items())


def pytest_unconfigure(config):
    # After this half's own last line, which pytest writes once the summary above is done
    if both_halves:
        print(f'both halves together: {both_halves}')
