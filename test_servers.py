"""Run the real scripts as processes and talk to them over real sockets on free ports."""
import functools
import io
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from xml.etree import ElementTree

import pytest

from conftest import (ENV, growth_kib, passes, peer, raise_nofile, recv_exactly, recv_until_eof,
                      round_trip, wait_for, whole_reply)
import harness
from harness import HERE, SERVERS, TIMEOUT, free_port, reply_rule, resource, usage
from selectors_server import SELECTORS  # importing starts nothing

MULTIPLEXED = ['select_server.py', 'selectors_server.py']
POSIX_ONLY = pytest.mark.skipif(os.name == 'nt', reason='needs POSIX signals and rlimits')
needs_linux = pytest.mark.skipif(sys.platform != 'linux', reason='emulates Windows on Linux')


class Flooder:
    """A client that sends `data` (`times` over) from a thread without reading, counting what
    the server took. Once the server stops taking it, the thread gives up after `patience` s."""

    def __init__(self, sock, data, times=1, then_shutdown=True, patience=None):
        self.sock, self.data, self.total, self.sent = sock, data, len(data) * times, 0
        sock.settimeout(patience)
        self.thread = threading.Thread(target=self.run, args=(then_shutdown,), daemon=True)
        self.thread.start()

    def run(self, then_shutdown):
        view = memoryview(self.data)
        try:
            while self.sent < self.total:
                at = self.sent % len(view)
                self.sent += self.sock.send(view[at:at + 65536])
            if then_shutdown:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # our patience ran out, or the test closed the socket

    def stalled(self, quiet=0.3, within=TIMEOUT):
        """Wait until the server stops taking our bytes; False if it goes on taking them."""
        deadline = time.monotonic() + within
        while self.sent < self.total and time.monotonic() < deadline:
            before = self.sent
            time.sleep(quiet)
            if self.sent == before:
                return True
        return False


# ---- every server -------------------------------------------------------------------------

def test_each_server_answers_by_its_reply_rule(server):
    with server.connect() as c:
        c.sendall('你好abcé'.encode())  # é: str.upper() changes it, bytes.upper() does not
        expected = reply_rule(server.script, '你好abcé'.encode())
        assert recv_exactly(c, len(expected)) == expected
        for _ in range(3):
            assert round_trip(c, server.script, b'hello again')


def reset(sock):
    """Close with SO_LINGER 0, which sends RST: the client vanishes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


def one_client_goes(server, how):
    with server.connect() as other:
        round_trip(other, server.script, b'before')
        c = server.connect()
        round_trip(c, server.script, b'hi')
        if how == 'reset':
            c.sendall(b'x' * 5000)
            reset(c)
        c.close()
        time.sleep(0.2)
        round_trip(other, server.script, b'after')
    server.alive()


@pytest.mark.parametrize('how', ['orderly', 'reset'])
def test_disconnect_ends_one_client_only(server, how):
    one_client_goes(server, how)


@pytest.mark.skipif(sys.platform == 'darwin', reason='macOS caps every listen backlog at '
                    'kern.ipc.somaxconn, 128 by default: a burst of 300 must retry there')
def test_burst_of_connects_needs_no_retries(server):
    """300 clients connect at once. With the seed's listen(5) the kernel drops most of the SYNs,
    and those clients connect only after TCP's first retry, a second later."""
    socks = [socket.socket() for _ in range(300)]
    connected = 0
    try:
        with selectors.DefaultSelector() as sel:
            t0 = time.monotonic()
            for s in socks:
                s.setblocking(False)
                s.connect_ex(('127.0.0.1', server.port))
                sel.register(s, selectors.EVENT_WRITE)
            while connected < 300 and time.monotonic() - t0 < TIMEOUT:
                for key, _ in sel.select(0.5):
                    sel.unregister(key.fileobj)
                    # Writable also means failed: only SO_ERROR 0 is a connection.
                    assert key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                    connected += 1
            elapsed = time.monotonic() - t0
    finally:
        for s in socks:
            s.close()
    # Here: a few ms. After a dropped SYN: a second or more.
    assert connected == 300 and elapsed < 0.5, f'{connected} connected in {elapsed:.2f} s'
    server.alive()


@pytest.mark.parametrize('sends', [b'', b'\xe4\xbd'], ids=['nothing', 'half a character'])
def test_idle_client_does_not_starve_another(server, sends):
    with server.connect() as idle, server.connect() as busy:
        idle.sendall(sends)  # then nothing more
        for i in range(5):
            assert round_trip(busy, server.script, b'ping %d' % i)
        if sends and server.script == 'selectors_server.py':  # bytes in, bytes out
            assert recv_exactly(idle, 5) == b'\xe4\xbd_SB'
        assert round_trip(busy, server.script, b'still served')
    server.alive()


@pytest.mark.parametrize('script', MULTIPLEXED)
def test_non_reading_client_gets_every_byte_in_order(start, script):
    """12 MB, far more than the socket buffers hold, sent without reading: the server's replies
    back up, so its send() takes only part of one. It must keep the rest, stop reading from us
    meanwhile (memory stays bounded), serve everyone else, and lose nothing."""
    server = start.server(script)
    data = bytes(97 + i % 26 for i in range(12 << 20))  # a..z
    base = usage(server.p.pid)[1]
    c = server.connect()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # so that the replies back up soon
    flooder = Flooder(c, data, patience=20)
    with c:
        assert flooder.stalled(), 'the server read all 12 MB while its replies waited'
        growth = growth_kib(server.p.pid, base)
        with server.connect() as other:
            for i in range(10):
                assert round_trip(other, script, b'served meanwhile %d' % i)
        reply = recv_until_eof(c)
    flooder.thread.join(TIMEOUT)
    assert growth < 8 * 1024, f'the server grew by {growth} KiB while our replies waited'
    assert whole_reply(script, data, reply)
    server.alive()


@pytest.mark.parametrize('script', MULTIPLEXED)
def test_reset_while_a_reply_waits_leaves_the_server_serving(start, script):
    """Reset by a client whose reply is still waiting: the connection leaves wlist (or its
    EVENT_WRITE registration) for good."""
    server = start.server(script)
    c = server.connect()
    flooder = Flooder(c, b'y' * 65536, times=1024, then_shutdown=False, patience=1)
    assert flooder.stalled(), 'the server took 64 MB without reading its replies'
    reset(c)
    flooder.thread.join(TIMEOUT)
    time.sleep(0.2)
    server.alive()


def test_upload_then_half_close_gets_whole_reply(server):
    data = bytes(97 + i % 26 for i in range(1 << 20))  # 1 MiB of a..z
    c = server.connect()

    def send_then_shutdown():
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=send_then_shutdown)
    t.start()
    with c:
        reply = recv_until_eof(c)
    t.join(TIMEOUT)
    assert whole_reply(server.script, data, reply)
    server.alive()


def test_ctrl_c_stops_quietly_and_restarts_at_once(server, start):
    with server.connect() as c:
        round_trip(c, server.script, b'hi')
        t0 = time.monotonic()
        assert server.interrupt() == 0
        assert time.monotonic() - t0 < 1
        assert c.recv(100) == b''  # it closed our connection
    assert 'Traceback' not in server.stderr()
    # The server closed first, so its side sits in TIME_WAIT: SO_REUSEADDR lets it bind again.
    start.server(server.script, port=server.port).alive()


@pytest.mark.parametrize('script', SERVERS)
def test_port_taken_is_one_line_no_traceback(start, script):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = start(script, '--port', str(port))
        assert p.p.wait(TIMEOUT) != 0
    err = p.stderr()
    assert err.startswith(f'cannot listen on 127.0.0.1:{port}: ') and err.count('\n') == 1, err


@POSIX_ONLY
@pytest.mark.parametrize('script', SERVERS)
def test_out_of_descriptors_pauses_then_resumes_on_its_own(start, script):
    """A limit of 40 descriptors, 60 clients. The server accepts what it can, says 'Too many open
    files' and stops accepting for a second. We free descriptors at once, during the pause,
    and then nothing stirs: accepting must resume on the timer, not on the next event."""
    server = start.server(script, nofile=(40, 40))
    first = server.connect()
    clients = [server.connect() for _ in range(60)]  # the kernel queues what it doesn't accept
    wait_for(lambda: 'Too many open files' in server.stderr(), 'the first EMFILE')
    paused = time.monotonic()
    round_trip(first, script, b'served while out of descriptors')
    for c in clients[:30]:  # accepted ones: the server wakes, reads EOF and closes them
        c.close()
    time.sleep(0.3)
    last = clients[-1]  # still in the kernel's queue: nothing the server watches
    last.settimeout(3)
    round_trip(last, script, b'accepted once the pause ran out')
    elapsed = time.monotonic() - paused
    assert 0.5 < elapsed < 2.5, f'accepting resumed {elapsed:.2f} s after the pause began'
    # Pausing, not spinning: a line at most every second or so.
    assert server.stderr().count('pausing') <= 3, server.stderr()
    round_trip(first, script, b'and the first still served')
    for c in [first] + clients[30:]:
        c.close()
    server.alive()


@pytest.mark.parametrize('script, words', list(zip(SERVERS, ['Non-blocking', 'select.select()',
                                                               'selectors'])))
def test_help_names_the_io_model(script, words):
    out = subprocess.run([sys.executable, str(HERE / script), '--help'], capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0 and words in out.stdout and '--port' in out.stdout
    assert '--trace' in out.stdout


def test_importing_starts_nothing():
    code = 'import nonblocking_server, select_server, selectors_server; print("ok")'
    out = subprocess.run([sys.executable, '-c', code], cwd=HERE, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.stdout == 'ok\n' and out.returncode == 0


# ---- --trace, and output that can't be written ------------------------------------------------

@pytest.mark.parametrize('script', SERVERS)
def test_trace_names_each_client(start, script):
    server = start.server(script, '--trace')
    with server.connect() as c:
        round_trip(c, script, b'hello')
        name, n = peer(c), len(reply_rule(script, b'hello'))
        # What the kernel reported, and what the server did with it.
        line = {'nonblocking_server.py': f'{name}: new, 1 recv (5 bytes), 1 sent ({n} bytes)',
                'select_server.py': f'readable: {name} -> recv 5 bytes, sent {n}',
                'selectors_server.py': f'registered -> {name} EVENT_READ -> read: recv 5 bytes, '
                                       f'sent {n}'}[script]
        wait_for(lambda: line in server.stderr(), line)
    if script == 'nonblocking_server.py':  # one line a second, counting passes
        assert passes(server.stderr())[-1] > 0
    assert 'Traceback' not in server.stderr()


@pytest.mark.parametrize('script', SERVERS)
def test_trace_changes_no_reply(start, script):
    server = start.server(script, '--trace')
    clients = [server.connect() for _ in range(30)]
    try:
        for i in range(20):
            for n, c in enumerate(clients):
                c.sendall(b'client %d says %d' % (n, i))
            for n, c in enumerate(clients):
                expected = reply_rule(script, b'client %d says %d' % (n, i))
                assert recv_exactly(c, len(expected)) == expected
    finally:
        for c in clients:
            c.close()
    server.alive()


@pytest.mark.parametrize('stream, target', [('stdout', 'closed pipe'), ('stdout', '/dev/full'),
                                            ('stderr', 'closed pipe')])
@pytest.mark.parametrize('script', SERVERS)
def test_output_gone_costs_no_client(start, script, stream, target):
    """`python select_server.py | head -1`, a full disk, a closed terminal: the server says so
    once and serves on. Unbuffered, so that the very first print meets the broken stream."""
    if target == '/dev/full' and not os.path.exists('/dev/full'):
        pytest.skip('no /dev/full here')
    if target == 'closed pipe':
        read_end, broken = os.pipe()
        os.close(read_end)
    else:
        broken = os.open(target, os.O_WRONLY)
    try:
        trace = ['--trace'] if stream == 'stderr' else []  # what it prints on stderr
        server = start.server(script, *trace, env={'PYTHONUNBUFFERED': '1'}, **{stream: broken})
    finally:
        os.close(broken)
    for i in range(5):  # several clients in turn
        with server.connect() as c:
            round_trip(c, script, b'client %d' % i)
            time.sleep(0.05)
    if script == 'nonblocking_server.py' and stream == 'stderr':
        time.sleep(1.1)  # its trace line comes once a second
    server.alive()
    assert server.interrupt() == 0
    err = server.stderr()
    if stream == 'stdout' and script != 'nonblocking_server.py':  # it prints nothing there
        assert err.count('printing no more') == 1, err
    assert 'Traceback' not in err and 'Exception ignored' not in err, err


# ---- each server's own ----------------------------------------------------------------------

def test_select_prints_the_seed_messages(start):
    # Unbuffered (python -u), as IDEs run scripts: each line must come out as it is printed.
    server = start.server('select_server.py', env={'PYTHONUNBUFFERED': '1'})
    with server.connect() as c:
        round_trip(c, 'select_server.py', 'hello 你好'.encode())
    wait_for(lambda: '接收消息: hello 你好\n' in server.stdout(), 'the line, before any exit')
    server.interrupt()
    assert server.stdout().startswith('server is start ......\n')
    assert '接收消息: hello 你好\n' in server.stdout()
    assert server.stderr() == 'server stopped\n'  # without --trace, nothing more


def test_selectors_prints_the_seed_messages(start):
    server = start.server('selectors_server.py')
    with server.connect() as c:
        round_trip(c, 'selectors_server.py', b'hello')
    time.sleep(0.2)
    server.interrupt()
    out = server.stdout()
    assert out.startswith('wating....\n')
    assert '------- <socket.socket' in out and 'closing <socket.socket' in out
    assert server.stderr() == 'server stopped\n'  # without --trace, nothing more


def test_select_upper_cases_a_character_split_between_recvs(start):
    server = start.server('select_server.py')
    with server.connect() as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(b'a\xc3')  # the first byte of é
        time.sleep(0.2)  # so that the server's recv() ends inside the character
        c.sendall(b'\xa9b')
        expected = 'AÉB'.encode()
        assert recv_exactly(c, len(expected)) == expected


def test_select_returns_invalid_utf8_unchanged(start):
    server = start.server('select_server.py')
    with server.connect() as c:
        c.sendall(b'abc\xff\xfedef\xc3(')
        assert recv_exactly(c, 10) == b'ABC\xff\xfeDEF\xc3('
        c.sendall(b'x\xe4\xbd')  # an unfinished character, then EOF: answered, not lost
        c.shutdown(socket.SHUT_WR)
        assert recv_until_eof(c) == b'X\xe4\xbd'
    server.alive()
    server.interrupt()
    assert '接收消息: abc\\udcff\\udcfedef' in server.stdout()


@POSIX_ONLY
@pytest.mark.parametrize('script, args', [('select_server.py', ()),
                                          ('selectors_server.py', ('--selector', 'select'))])
def test_select_refuses_descriptors_past_fd_setsize(start, script, args):
    raise_nofile(1300)
    server = start.server(script, *args, nofile=(1200, 1200))
    clients = []
    try:
        for _ in range(1060):
            clients.append(server.connect())
        round_trip(clients[0], script, b'first')
        for c in clients[-20:]:  # their descriptors would be past 1023 on the server
            assert c.recv(10) == b''
        round_trip(clients[1000], script, b'below the line')
        assert 'past what select() can watch' in server.stderr()
    finally:
        for c in clients:
            c.close()
    server.alive()


@POSIX_ONLY
def test_selectors_holds_10000_clients(start):
    n = 10_000
    raise_nofile(n + 200)
    # A soft limit of 1024, as many machines have: the server must lift it itself.
    server = start.server('selectors_server.py',
                          nofile=(1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    clients = []
    try:
        for _ in range(n):
            clients.append(server.connect())
        for c in clients:
            c.sendall(b'x')
        for c in clients:
            assert recv_exactly(c, 4) == b'X_SB'
    finally:
        for c in clients:
            c.close()
    server.alive()


@pytest.mark.parametrize('mechanism', sorted(SELECTORS))
def test_selectors_serves_on_each_mechanism(start, mechanism):
    server = start.server('selectors_server.py', '--selector', mechanism, '--trace')
    one_client_goes(server, 'orderly')  # the reply rule, then an orderly close
    assert server.stderr().startswith(f'{mechanism}, ') and 'closed' in server.stderr()
    one_client_goes(server, 'reset')


@pytest.mark.parametrize('name', ['kqueue' if sys.platform == 'linux' else 'epoll', 'nope'])
def test_selectors_refuses_a_mechanism_it_lacks(name):
    out = subprocess.run([sys.executable, str(HERE / 'selectors_server.py'), '--selector', name],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 2 and out.stdout == ''
    assert 'invalid choice' in out.stderr and 'Traceback' not in out.stderr


@POSIX_ONLY
@pytest.mark.parametrize('script', MULTIPLEXED)
def test_idle_server_sleeps(start, script):
    server = start.server(script)
    if usage(server.p.pid)[0] is None:
        pytest.skip('no /proc: CPU time is not measured here')
    with server.connect():
        time.sleep(0.1)
        before = usage(server.p.pid)[0]
        time.sleep(1)
        assert usage(server.p.pid)[0] - before < 0.05  # a spinning loop would take ~1 s


def test_nonblocking_stops_reading_from_a_client_that_does_not_read(start):
    """Its 9-byte replies back up only once the socket buffers are full. A client that announces
    small segments (TCP_MAXSEG) and keeps a small receive buffer keeps the server's send buffer
    small, so that they do within seconds. From then on the server must not read from us: its
    --trace shows whole seconds with no data. Meanwhile others are served, memory stays bounded,
    and at last we vanish while a reply waits."""
    server = start.server('nonblocking_server.py', '--trace')
    base = usage(server.p.pid)[1]
    c = socket.socket()
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    except (AttributeError, OSError):
        c.close()
        pytest.skip('TCP_MAXSEG is not available here')
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(('127.0.0.1', server.port))
    flooder = Flooder(c, b'z' * 65536, times=1 << 16, then_shutdown=False, patience=10)
    assert flooder.stalled(0.5, within=8), 'the server went on reading while its replies waited'
    seconds = len(passes(server.stderr()))
    wait_for(lambda: len(passes(server.stderr())) >= seconds + 2, 'two traced seconds')
    assert ' 0 with data' in server.stderr().splitlines()[-1], server.stderr()[-500:]
    assert growth_kib(server.p.pid, base) < 16 * 1024
    with server.connect() as other:
        round_trip(other, server.script, b'served meanwhile')
    c.shutdown(socket.SHUT_RDWR)  # wakes the thread's send
    reset(c)
    flooder.thread.join(TIMEOUT)
    time.sleep(0.1)
    server.alive()


# ---- Windows and macOS, emulated on Linux (see emulate.py) ---------------------------------

@needs_linux
@pytest.mark.parametrize('script', SERVERS)
def test_windows_ctrl_c_stops_an_idle_server(start, script):
    server = start.server(script, emulate='nt,sigint-thread')
    time.sleep(1.2)  # idle, asleep in select(), through two of its wake-ups
    t0 = time.monotonic()
    assert server.interrupt() == 0
    assert time.monotonic() - t0 < 1
    assert 'server stopped' in server.stderr() and 'Traceback' not in server.stderr()
    if script == 'selectors_server.py':  # it woke twice a second, but waits once per event
        out = server.stdout()
        assert out.count('wating....') == 1 + out.count('-------') + out.count('closing'), out


@needs_linux
@pytest.mark.parametrize('script', SERVERS + ['client.py', 'interactive_client.py'])
def test_windows_ctrl_break_stops_like_ctrl_c(start, script):
    if script.endswith('client.py'):
        server = start.server('select_server.py')
        p = start(script, '--port', str(server.port), emulate='nt', stdin=subprocess.PIPE)
        wait_for(lambda: script == 'interactive_client.py' or p.stdout(), 'the first line')
        time.sleep(0.2)
    else:
        p = start.server(script, emulate='nt')
    assert p.interrupt(signal.SIGUSR1) == 0  # SIGBREAK, as emulate.py has it
    assert 'Traceback' not in p.stderr()


@needs_linux
@pytest.mark.parametrize('script', MULTIPLEXED)
def test_windows_select_takes_512_sockets(start, script):
    raise_nofile(800)
    server = start.server(script, emulate='nt,select512')
    clients = []
    try:
        for _ in range(600):
            clients.append(server.connect())
        served = 0
        for c in clients:
            try:
                served += round_trip(c, script, b'x')
            except (AssertionError, ConnectionError):  # closed at once: refused
                pass
        assert served == 511, f'{served} of 600 served'  # 512 with the listening socket
        assert 'past what select() can watch' in server.stderr()
    finally:
        for c in clients:
            c.close()
    wait_for(lambda: server.stderr().count('past') == 89, 'the last refusal')
    time.sleep(0.3)  # the server reads our 600 closes
    server.alive()


@needs_linux
@pytest.mark.parametrize('script', SERVERS)
def test_windows_reset_before_accept_leaves_the_server_serving(start, script):
    server = start.server(script, emulate='nt,accept-reset')  # the readiness probe is reset
    server.alive()


@needs_linux
@pytest.mark.parametrize('platform', ['nt', 'linux'])
@pytest.mark.parametrize('script', SERVERS)
def test_windows_never_sets_reuseaddr(start, script, platform):
    server = start.server(script, emulate=('nt,' if platform == 'nt' else '') + 'setsockopt')
    server.alive()
    assert ('SO_REUSEADDR' in server.stderr()) == (platform == 'linux'), server.stderr()


@needs_linux
def test_macos_file_limit_is_lifted_to_what_it_takes(start):
    raise_nofile(1300)
    server = start.server('selectors_server.py', emulate='rlimit')
    assert server.stderr().splitlines()[-1] == 'emulate: RLIMIT_NOFILE soft limit 10240'
    clients = [server.connect() for _ in range(1000)]  # past macOS's default 256
    try:
        for c in clients:
            round_trip(c, server.script, b'x')
    finally:
        for c in clients:
            c.close()
    server.alive()


@needs_linux
def test_windows_interactive_client_notices_a_closed_server_at_the_next_line(start):
    """Windows can't select() on the keyboard: at a terminal the client waits in input() alone,
    and finds the server gone when it sends the next line."""
    import pty
    server = start.server('select_server.py')
    master, slave = pty.openpty()
    try:
        client = start('interactive_client.py', '--port', str(server.port), stdin=slave,
                       emulate='nt')
        os.write(master, b'one\n')
        wait_for(lambda: 'ONE\n>>:' in client.stdout(), 'the reply and the next prompt')
        server.p.kill()
        time.sleep(0.5)
        assert client.p.poll() is None  # it does not watch the socket meanwhile
        os.write(master, b'two\n')
        assert client.p.wait(TIMEOUT) == 1
        assert client.stderr() == 'connection closed by server\n'
    finally:
        os.close(master)
        os.close(slave)


# ---- the clients ----------------------------------------------------------------------------

def run_client(script, port, stdin_text=''):
    return subprocess.run([sys.executable, str(HERE / script), '--port', str(port)], cwd=HERE,
                          input=stdin_text.encode(), capture_output=True, timeout=30,
                          env=ENV)


def test_client_talks_every_second(start):
    server = start.server('nonblocking_server.py')
    client = start('client.py', '--port', str(server.port))
    wait_for(lambda: 'my client' in client.stdout(), 'the first line')
    time.sleep(2.2)
    lines = client.stdout().count('my client:')
    assert 2 <= lines <= 4, f'{lines} messages in about 2 s'  # without the sleep: thousands
    assert client.interrupt() == 0
    pid = client.p.pid
    assert client.stdout().startswith(f"my client:{pid}\nb'my server'\nmy client:{pid}\n")
    assert client.stderr() == ''


@pytest.mark.parametrize('script', ['client.py', 'interactive_client.py'])
def test_client_without_server_says_so(script):
    port = free_port()  # nothing listens there
    out = run_client(script, port, 'hello\n')
    err = out.stderr.decode()
    assert out.returncode == 1 and out.stdout == b''
    assert err.startswith(f'cannot connect to 127.0.0.1:{port}: ') and err.count('\n') == 1


def test_client_says_when_the_server_goes_away(start):
    server = start.server('select_server.py')
    client = start('client.py', '--port', str(server.port))
    wait_for(lambda: "b'MY CLIENT:" in client.stdout(), 'a reply')
    server.p.kill()
    t0 = time.monotonic()
    assert client.p.wait(TIMEOUT) == 1
    # README says "within about a second"; a client that waits for its next send takes 2 s.
    assert time.monotonic() - t0 < 1.5
    assert client.stderr() == 'connection closed by server\n'


def test_interactive_client_answers_piped_lines_and_skips_empty_ones(start):
    server = start.server('select_server.py')
    out = run_client('interactive_client.py', server.port, 'hello\n\nworld 你好é\n')
    assert (out.returncode, out.stderr) == (0, b'')
    assert out.stdout.decode() == 'HELLO\nWORLD 你好É\n'  # the empty line was skipped


@pytest.mark.parametrize('line', ['x' * 5000, '你好abc' * 1000],
                         ids=['5000 ASCII', 'long Chinese'])
def test_interactive_client_prints_whole_replies(start, line):
    server = start.server('select_server.py')
    # Several long lines: each reply must be whole before the next line is sent.
    out = run_client('interactive_client.py', server.port, (line + '\n') * 3)
    assert (out.returncode, out.stderr) == (0, b'')
    assert out.stdout.decode() == (line.upper() + '\n') * 3


@pytest.mark.skipif(os.name == 'nt', reason='needs a pseudo-terminal')
@pytest.mark.parametrize('key', ['Ctrl-D', 'Ctrl-C', 'server killed'])
def test_interactive_client_at_a_terminal_prompts_and_ends_cleanly(start, key):
    import pty
    server = start.server('selectors_server.py')
    master, slave = pty.openpty()
    try:
        client = start('interactive_client.py', '--port', str(server.port), stdin=slave)
        os.write(master, 'hi 你好\n'.encode())
        wait_for(lambda: 'HI 你好_SB\n>>:' in client.stdout(), 'the reply and the next prompt')
        assert client.stdout().startswith('>>:')
        if key == 'Ctrl-D':
            os.write(master, b'\x04')
            assert client.p.wait(TIMEOUT) == 0
        elif key == 'Ctrl-C':
            assert client.interrupt() == 0
        else:  # nothing typed: the client notices on its own, as telnet does
            server.p.kill()
            assert client.p.wait(TIMEOUT) == 1
            assert client.stderr() == 'connection closed by server\n'
        assert 'Traceback' not in client.stderr()
    finally:
        os.close(master)
        os.close(slave)


def test_interactive_client_says_when_the_server_goes_away(start):
    server = start.server('select_server.py')
    client = start('interactive_client.py', '--port', str(server.port), stdin=subprocess.PIPE)
    client.p.stdin.write(b'one\n')
    client.p.stdin.flush()
    wait_for(lambda: client.stdout() == 'ONE\n', 'the reply')
    server.p.kill()
    server.p.wait(TIMEOUT)
    client.p.stdin.write(b'two\n')  # the next line finds the connection gone
    client.p.stdin.flush()
    assert client.p.wait(TIMEOUT) == 1
    assert client.stderr() == 'connection closed by server\n'


# ---- bench.py ---------------------------------------------------------------------------------

NEEDS_PROC = pytest.mark.skipif(not os.path.exists('/proc/self/stat'),
                                reason='bench.py reads CPU time from /proc')


@pytest.fixture(scope='module')
def quick_bench(tmp_path_factory):
    """One short bench.py run for all the tests below: select, and select again from a copy
    of the scripts (--compare), beside crowds of 0, 50 and 300."""
    tmp = tmp_path_factory.mktemp('bench')
    (tmp / 'before').mkdir()
    shutil.copy(HERE / 'select_server.py', tmp / 'before')
    svg = tmp / 'crowd.svg'
    out = subprocess.run([sys.executable, str(HERE / 'tools' / 'bench.py'), '--quick', '--json',
                          '--servers', 'select', '--compare', str(tmp / 'before'),
                          '--idle', '0,50,300', '--seconds', '0.2', '--svg', str(svg)],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 0, out.stderr
    return out, svg


def test_bench_quick_says_first_that_it_is_a_smoke_run(quick_bench):
    out, _ = quick_bench
    first = out.stderr.splitlines()[0]
    assert 'smoke run' in first and 'make bench' in first, first
    assert json.loads(out.stdout)['quick'] is True  # and JSON alone on stdout


def bench_runs(stderr):
    """(number, of, server) for each line of bench.py's progress."""
    return [m.groups() for m in re.finditer(r'^bench (\d+)/(\d+) \(\d+:\d\d gone, about '
                                            r'\d+:\d\d left\): ([^:]+): ', stderr, re.M)]


def test_bench_without_a_terminal_says_each_run_on_a_line_of_its_own(quick_bench):
    out, _ = quick_bench
    assert '\r' not in out.stderr
    runs = bench_runs(out.stderr)
    assert len(runs) == 8  # two rows: idle CPU, the load of 16, and crowds of 50 and 300
    assert len(runs) == sum(line.startswith('bench ') for line in out.stderr.splitlines())
    assert [run[:2] for run in runs] == [(str(i), str(len(runs)))
                                         for i in range(1, len(runs) + 1)], out.stderr


def test_bench_compare_rows_take_turns_with_their_own(quick_bench):
    out, _ = quick_bench
    assert list(json.loads(out.stdout)['results']) == ['select', 'select@before']
    runs = [server for _, _, server in bench_runs(out.stderr)]
    # idle CPU, the load of 16, and crowds of 50 and 300: one slice each, the two in turn
    assert runs == ['select', 'select@before'] * 4, runs


def test_bench_progress_at_a_terminal_rewrites_one_line():
    import bench  # importing starts nothing

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    runs = [bench.Run('select', 'load:16', '16 connections', 1, i) for i in range(3)]
    screen = Terminal()
    progress = bench.Progress(runs, 3, stream=screen)
    for run in runs:
        with progress.step(run):
            pass
    shown = screen.getvalue()
    assert shown.count('\r') == 3 and '\n' not in shown
    assert shown.split('\r')[-1].startswith('bench 3/3 (0:00 gone, about 0:00 left): select: '
                                             '16 connections, slice 3/3')
    progress.end('done')  # over the last line, blanking the rest of it; then a fresh line
    last = screen.getvalue().split('\r')[-1]
    assert last == 'done'.ljust(len(shown.split('\r')[-1])) + '\n'


@NEEDS_PROC
def test_bench_svg_draws_a_line_per_server_with_points_left_to_right(quick_bench):
    out, svg = quick_bench
    ns = {'svg': 'http://www.w3.org/2000/svg'}
    root = ElementTree.parse(svg).getroot()
    series = {g.get('data-server'): g for g in root.iter('{http://www.w3.org/2000/svg}g')
              if g.get('class') == 'series'}
    assert sorted(series) == sorted(json.loads(out.stdout)['results']), sorted(series)
    for name, g in series.items():
        points = g.findall('svg:use[@class="point"]', ns)
        assert [int(p.get('data-idle')) for p in points] == [0, 50, 300], name
        xs = [float(p.get('x')) for p in points]
        assert xs == sorted(set(xs)), f'{name}: x {xs} for 0, 50 and 300 idle'
        line = g.find('svg:polyline', ns).get('points').split()
        assert [float(xy.split(',')[0]) for xy in line] == xs, name


# ---- the first ten minutes: --help, a start line, escaped client text, IPv6 ---------------------

CLIENTS = ['client.py', 'interactive_client.py']


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(('::1', 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason='no IPv6 loopback (::1) here')


# ---- the first ten minutes --------------------------------------------------------------------

@pytest.mark.parametrize('script', SERVERS + CLIENTS)
def test_help_says_what_host_and_port_are_with_defaults(script):
    out = subprocess.run([sys.executable, str(HERE / script), '--help'], capture_output=True,
                         text=True, timeout=TIMEOUT)
    text = ' '.join(out.stdout.split())  # argparse wraps its lines
    assert out.returncode == 0
    assert '--host HOST' in text and '(default: 127.0.0.1)' in text, text
    assert '--port PORT' in text and '(default: 8800)' in text, text
    assert 'IPv6' in text


def test_nonblocking_says_where_it_listens_and_that_it_never_sleeps(start):
    server = start.server('nonblocking_server.py')
    wait_for(lambda: server.stderr(), 'the start line')
    line, = server.stderr().splitlines()
    assert line.startswith(f'listening on 127.0.0.1:{server.port}: ')
    assert 'never sleeps' in line and 'Ctrl-C stops it' in line
    assert server.stdout() == ''  # the tutorial's own messages are unchanged: none
    assert server.interrupt() == 0
    assert server.stderr().splitlines()[1:] == ['server stopped']


def test_select_shows_control_characters_escaped(start):
    """A client that sends terminal escapes can't clear or retitle the server's terminal."""
    server = start.server('select_server.py', env={'PYTHONUNBUFFERED': '1'})
    sent = '\x1b[2J\x1b]0;owned\x07hi\r\n\x08\x08\t你好\x7f\x85é'.encode()
    with server.connect() as c:
        c.sendall(sent)
        expected = sent.decode().upper().encode()  # the reply is what it always was
        assert recv_exactly(c, len(expected)) == expected
    line = '接收消息: \\x1b[2J\\x1b]0;owned\\x07hi\\r\\n\\x08\\x08\t你好\\x7f\\x85é\n'
    wait_for(lambda: line in server.stdout(), 'the escaped line')
    for raw in '\x1b\x07\r\x08\x7f\x85':
        assert raw not in server.stdout()


# ---- IPv6 -------------------------------------------------------------------------------------

@needs_ipv6
@pytest.mark.parametrize('host', ['::1', '::'])
@pytest.mark.parametrize('script', SERVERS)
def test_server_over_ipv6(start, script, host):
    port = free_port()
    server = start(script, '--host', host, '--port', str(port))
    assert harness.wait_until_accepting(server.p, port, host='::1'), server.stderr()
    with socket.create_connection(('::1', port), timeout=TIMEOUT) as c:
        assert round_trip(c, script, 'over IPv6 你好'.encode())
    if host == '::':  # every address, IPv4 too where the system maps it (Linux does)
        with socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT) as c:
            assert round_trip(c, script, b'over IPv4')
    assert 'Traceback' not in server.stderr()


@needs_ipv6
def test_clients_over_ipv6(start):
    port = free_port()
    server = start('select_server.py', '--host', '::1', '--port', str(port))
    assert harness.wait_until_accepting(server.p, port, host='::1'), server.stderr()
    out = subprocess.run([sys.executable, str(HERE / 'interactive_client.py'), '--host', '::1',
                          '--port', str(port)], input='ipv6\n'.encode(), capture_output=True,
                         timeout=TIMEOUT * 2)
    assert (out.returncode, out.stdout, out.stderr) == (0, b'IPV6\n', b'')
    client = start('client.py', '--host', '::1', '--port', str(port))
    wait_for(lambda: "b'MY CLIENT:" in client.stdout(), 'a reply over IPv6')
    assert client.interrupt() == 0


@pytest.mark.parametrize('script', SERVERS)
def test_server_on_localhost_by_name(start, script):
    port = free_port()
    server = start(script, '--host', 'localhost', '--port', str(port))
    assert harness.wait_until_accepting(server.p, port), server.stderr()
    out = subprocess.run([sys.executable, str(HERE / 'interactive_client.py'), '--host',
                          'localhost', '--port', str(port)], input=b'x\n', capture_output=True,
                         timeout=TIMEOUT * 2)
    assert out.returncode == 0 and out.stdout and out.stderr == b''


# ---- the clients leave the terminal clean ---------------------------------------------------

def at_a_terminal(script, *args):
    """Run a client with a pseudo-terminal as its controlling terminal, as a shell would, so that
    Ctrl-C typed there reaches it. Return the process and the terminal's other end."""
    import pty
    master, slave = pty.openpty()

    def controlling_terminal():
        import fcntl
        import termios
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    p = subprocess.Popen([sys.executable, str(HERE / script), *args], stdin=slave, stdout=slave,
                         stderr=slave, preexec_fn=controlling_terminal, cwd=HERE)
    os.close(slave)
    return p, master


def read_terminal(master, until, timeout=TIMEOUT):
    """What the terminal shows, until `until` is in it."""
    import select
    seen = b''
    deadline = time.monotonic() + timeout
    while until not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:  # the other end closed
                break
    return seen


@pytest.mark.skipif(os.name == 'nt', reason='needs a pseudo-terminal')
@pytest.mark.parametrize('script', CLIENTS)
def test_ctrl_c_leaves_the_shell_a_fresh_line(start, script):
    server = start.server('select_server.py')
    p, master = at_a_terminal(script, '--port', str(server.port))
    try:
        if script == 'interactive_client.py':
            os.write(master, b'hi\n')
            read_terminal(master, b'HI\r\n>>:')
        else:
            read_terminal(master, b"b'MY CLIENT:")
        os.write(master, b'\x03')  # Ctrl-C, typed: the terminal says ^C and interrupts
        assert p.wait(TIMEOUT) == 0
        shown = read_terminal(master, b'^C\r\n', timeout=1)
        assert shown.endswith(b'^C\r\n'), shown[-40:]
        assert b'Traceback' not in shown
    finally:
        p.kill()
        p.wait(TIMEOUT)
        os.close(master)


@pytest.mark.skipif(os.name == 'nt', reason='needs a pseudo-terminal')
def test_unsent_text_does_not_reach_the_shell(start):
    """Text typed but not yet sent when the server goes away is discarded: the shell that reads
    the terminal next must not find it."""
    import pty
    server = start.server('select_server.py')
    master, slave = pty.openpty()
    try:
        client = start('interactive_client.py', '--port', str(server.port), stdin=slave)
        os.write(master, b'one\n')
        wait_for(lambda: 'ONE\n>>:' in client.stdout(), 'the reply and the next prompt')
        os.write(master, b'partial')  # no Enter yet
        time.sleep(0.2)
        server.p.kill()
        assert client.p.wait(TIMEOUT) == 1
        os.write(master, b'ls\n')  # what the shell reads next
        import select
        assert select.select([slave], [], [], TIMEOUT)[0]
        assert os.read(slave, 100) == b'ls\n'  # not b'partials\n'
    finally:
        os.close(master)
        os.close(slave)


# ---- the two READMEs, English and Chinese, show the same commands and real flags --------------

READMES = ['README.md', 'README.zh-TW.md']
RUNNERS = {'python', 'python3', 'py', 'make'}  # a code-block line run by one of these is a command
# A flag mentioned without a script (in prose, "takes `--trace`") must belong to one of these.
SCRIPTS = ['nonblocking_server.py', 'select_server.py', 'selectors_server.py', 'client.py',
           'interactive_client.py', 'tools/bench.py']
HELP_TIMEOUT = 30  # seconds for one `script --help`, a cold start on a slow CI machine included
FLAG = re.compile(r'(?<![A-Za-z0-9_-])--[A-Za-z][A-Za-z0-9-]*')  # not `-->`, not `---`


def readme(name):
    path = HERE / name
    assert path.is_file(), f'{name} is missing'
    return path.read_text(encoding='utf-8')


def split_fences(text):
    """(the lines of each fenced code block, unindented; the prose around them)"""
    blocks, prose, block, fence = [], [], None, ''
    for line in text.splitlines():
        s = line.strip()
        if block is None:
            m = re.match(r'(`{3,}|~{3,})', s)
            if m:
                block, fence = [], m.group(1)
            else:
                prose.append(line)
        elif s.startswith(fence) and not s.strip(fence[0]):  # the closing fence
            blocks.append(block)
            block = None
        else:
            block.append(s)
    return blocks, '\n'.join(prose)


def commands(text):
    """The commands shown in code blocks, whitespace normalised. In a transcript (a block with `$ `
    lines) only the `$ ` lines are commands; the rest is output. A pipeline counts as a whole when
    one of its parts is a command: `printf ... | python interactive_client.py` must be the same
    in both READMEs, input included."""
    found = set()
    for block in split_fences(text)[0]:
        transcript = any(line.startswith('$ ') for line in block)
        for line in block:
            if transcript:
                if not line.startswith('$ '):
                    continue
                line = line[2:]
            line = ' '.join(line.split())
            if any(part.split()[:1] and part.split()[0] in RUNNERS for part in line.split('|')):
                found.add(line)
    return found


def flag_uses(text):
    """(flag, the script it goes with or None, where it was seen) for every --flag in the text.
    A flag goes with the nearest script named before it on the same code-block line or in the same
    inline code span (`python emulate.py nt select_server.py --trace`: select_server.py). After
    `-m module` it is that module's, not ours: 'external'. Elsewhere it goes with no script."""
    blocks, prose = split_fences(text)
    spans = [line for block in blocks for line in block]
    # An inline code span may go on over a line break, within its paragraph.
    paragraphs = re.split(r'\n\s*\n', prose)
    spans += [' '.join(span.split()) for p in paragraphs for span in re.findall(r'`([^`]+)`', p)]
    uses = []
    for span in spans:
        owner, words = None, span.split()
        for word in words:
            if word == '|':
                owner = None
            elif word == '-m':
                owner = 'external'
            elif word.endswith('.py') and (HERE / word).is_file():
                owner = word
            elif FLAG.fullmatch(word.split('=')[0]):
                uses.append((word.split('=')[0], owner, span))
    bare = '\n\n'.join(re.sub(r'`[^`]+`', ' ', p) for p in paragraphs)  # outside code spans
    uses += [(m.group(), None, ' '.join(bare[max(m.start() - 30, 0):m.end() + 30].split()))
             for m in FLAG.finditer(bare)]
    return uses


@functools.lru_cache(maxsize=None)
def help_text(script):
    """(exit status, stdout and stderr together) of `script --help`."""
    try:
        r = subprocess.run([sys.executable, str(HERE / script), '--help'], cwd=HERE, env=ENV,
                           capture_output=True, text=True, encoding='utf-8', errors='replace',
                           timeout=HELP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f'{script} --help took more than {HELP_TIMEOUT} s')
    return r.returncode, r.stdout + r.stderr


def in_help(flag, script):
    return re.search(rf'(?<![\w-]){re.escape(flag)}(?![\w-])', help_text(script)[1]) is not None


def test_readmes_show_the_same_commands():
    en, zh = (commands(readme(name)) for name in READMES)
    assert 'make test' in en and 'make test' in zh, 'no `make test` found: is the parsing broken?'
    only_en, only_zh = sorted(en - zh), sorted(zh - en)
    assert not only_en and not only_zh, (
        'the READMEs show different commands in their code blocks:\n'
        + ''.join(f'  only in README.md:       {c}\n' for c in only_en)
        + ''.join(f'  only in README.zh-TW.md: {c}\n' for c in only_zh))


@pytest.mark.parametrize('name', READMES)
def test_readme_flags_exist_in_help(name):
    uses = flag_uses(readme(name))
    assert any(owner for _, owner, _ in uses), 'no flag after a script: is the parsing broken?'
    missing = []
    for flag, owner, where in uses:
        if owner == 'external':
            continue  # python -m pytest -x: pytest's flags are not ours to check
        if owner is None:
            ok, said = any(in_help(flag, s) for s in SCRIPTS), 'no script\'s --help'
        else:
            ok, said = in_help(flag, owner), f'{owner} --help'
        if not ok:
            missing.append(f'  {flag}: not in {said}; seen in: {where}\n')
    assert not missing, f'{name} names flags that do not exist:\n' + ''.join(sorted(set(missing)))
