"""Run the real scripts as processes and talk to them over real sockets on free ports."""
import os
import pathlib
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

# The benchmark's helpers for measuring a server from outside.
from bench import free_port, server_cpu, server_rss_kib

try:
    import resource
except ImportError:  # Windows
    resource = None

HERE = pathlib.Path(__file__).resolve().parent
SERVERS = ['nonblocking_server.py', 'select_server.py', 'selectors_server.py']
TIMEOUT = 5  # seconds: every socket and every wait has one


def reply_rule(script, data):
    """What the server answers to one chunk of bytes."""
    if script == 'nonblocking_server.py':
        return b'my server'
    if script == 'select_server.py':
        return data.decode('utf-8', 'surrogateescape').upper().encode('utf-8', 'surrogateescape')
    return data.upper() + b'_SB'


def raise_nofile(n):
    """Let this test process hold n sockets, or skip the test."""
    if resource is None:
        pytest.skip('no resource module')
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f'hard RLIMIT_NOFILE is {hard}, below {n}')
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


class Proc:
    """A script running as a process, its output in files."""

    def __init__(self, tmp_path, script, *args, nofile=None, stdin=subprocess.DEVNULL):
        self.script = script
        self.out = tmp_path / f'{script}.{id(self)}.out'
        self.err = tmp_path / f'{script}.{id(self)}.err'

        def child_setup():
            # A shell's background jobs ignore SIGINT; our Ctrl-C must reach the script.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        with open(self.out, 'wb') as out, open(self.err, 'wb') as err:
            self.p = subprocess.Popen([sys.executable, str(HERE / script), *args], cwd=HERE,
                                      stdin=stdin, stdout=out, stderr=err,
                                      preexec_fn=child_setup if os.name != 'nt' else None)

    def stdout(self):
        return self.out.read_text(encoding='utf-8', errors='replace')

    def stderr(self):
        return self.err.read_text(encoding='utf-8', errors='replace')

    def interrupt(self):
        """Ctrl-C, as a person would press it; return the exit code."""
        self.p.send_signal(signal.SIGINT)
        return self.p.wait(TIMEOUT)

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(TIMEOUT)
        if self.p.stdin:
            self.p.stdin.close()


class Server(Proc):
    def __init__(self, tmp_path, script, port=None, nofile=None):
        self.port = port or free_port()
        super().__init__(tmp_path, script, '--port', str(self.port), nofile=nofile)
        deadline = time.monotonic() + TIMEOUT
        while True:  # wait until it accepts
            assert self.p.poll() is None, f'{script} exited: {self.stderr()}'
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=TIMEOUT).close()
                return
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, f'{script} did not start listening'
                time.sleep(0.05)

    def connect(self):
        return socket.create_connection(('127.0.0.1', self.port), timeout=TIMEOUT)

    def alive(self):
        """The process runs, printed no traceback, and still answers a new client."""
        assert self.p.poll() is None, self.stderr()
        assert 'Traceback' not in self.stderr()
        with self.connect() as c:
            assert round_trip(c, self.script, b'still there?')


@pytest.fixture
def procs():
    """Every process a test starts is stopped, even when the test fails."""
    started = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture(params=SERVERS)
def server(request, tmp_path, procs):
    procs.append(Server(tmp_path, request.param))
    return procs[-1]


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


# ---- every server -------------------------------------------------------------------------

def test_reply_rule(server):
    with server.connect() as c:
        c.sendall('你好abcé'.encode())
        expected = {'nonblocking_server.py': b'my server',
                    'select_server.py': '你好ABCÉ'.encode(),  # str.upper()
                    'selectors_server.py': '你好ABCé'.encode() + b'_SB',  # bytes.upper()
                    }[server.script]
        assert recv_exactly(c, len(expected)) == expected
        for _ in range(3):
            assert round_trip(c, server.script, b'hello again')


@pytest.mark.parametrize('how', ['orderly', 'reset', 'unread replies'])
def test_disconnect_ends_one_client_only(server, how):
    other = server.connect()
    with other:
        round_trip(other, server.script, b'before')
        c = server.connect()
        round_trip(c, server.script, b'hi')
        if how == 'reset':  # close with SO_LINGER 0 sends RST
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            c.sendall(b'x' * 5000)
        elif how == 'unread replies':  # the server is still sending when we vanish
            c.sendall(b'y' * 200_000)
        c.close()
        time.sleep(0.3)
        round_trip(other, server.script, b'after')
    server.alive()


def test_burst_of_connects_needs_no_retries(server):
    """300 clients connect at once. With the seed's listen(5) the kernel drops most of the SYNs,
    and those clients connect only after TCP's first retry, a second later."""
    socks = []
    with selectors.DefaultSelector() as sel:
        t0 = time.monotonic()
        for _ in range(300):
            s = socket.socket()
            socks.append(s)
            s.setblocking(False)
            s.connect_ex(('127.0.0.1', server.port))
            sel.register(s, selectors.EVENT_WRITE)
        connected = 0
        while connected < 300 and time.monotonic() - t0 < TIMEOUT:
            for key, _ in sel.select(1):
                sel.unregister(key.fileobj)
                connected += 1
        elapsed = time.monotonic() - t0
    for s in socks:
        s.close()
    assert connected == 300 and elapsed < 0.9, f'{connected} connected in {elapsed:.2f} s'
    server.alive()


def test_idle_client_does_not_starve_another(server):
    with server.connect() as idle, server.connect() as busy:
        for i in range(5):
            assert round_trip(busy, server.script, b'ping %d' % i)
        idle.sendall(b'now')
        assert round_trip(busy, server.script, b'still served')


def test_non_reading_flooder_costs_one_buffer(server):
    base = server_rss_kib(server.p.pid)
    flooder = server.connect()
    flooder.settimeout(0.5)
    blocked = threading.Event()
    sent = 0

    def flood():
        nonlocal sent
        chunk = b'z' * 65536
        deadline = time.monotonic() + 3
        try:
            while time.monotonic() < deadline:
                flooder.sendall(chunk)
                sent += len(chunk)
        except socket.timeout:
            blocked.set()  # the server stopped reading from us: flow control works
        except OSError:
            pass

    t = threading.Thread(target=flood)
    t.start()
    try:
        with server.connect() as other:
            for i in range(20):
                assert round_trip(other, server.script, b'hello %d' % i)
                time.sleep(0.05)
    finally:
        t.join(TIMEOUT)
    growth = server_rss_kib(server.p.pid) - base
    flooder.close()
    assert growth < 16 * 1024, f'server grew by {growth} KiB while {sent} bytes were sent'
    if server.script != 'nonblocking_server.py':  # its 9-byte replies take ages to fill a buffer
        assert blocked.is_set(), f'the server went on reading: {sent} bytes taken'
    server.alive()


def test_half_close_gets_whole_reply(server):
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
    if server.script == 'nonblocking_server.py':
        n = len(reply) // len(b'my server')
        assert n >= len(data) // 1024 and reply == b'my server' * n
    elif server.script == 'select_server.py':
        assert reply == data.upper()
    else:
        assert reply.count(b'_SB') >= len(data) // 1024
        assert reply.replace(b'_SB', b'') == data.upper()
    server.alive()


def test_ctrl_c_stops_quietly_and_restarts_at_once(server, tmp_path, procs):
    with server.connect() as c:
        round_trip(c, server.script, b'hi')
        t0 = time.monotonic()
        assert server.interrupt() == 0
        assert time.monotonic() - t0 < 1
        assert c.recv(100) == b''  # it closed our connection
    assert 'Traceback' not in server.stderr()
    # The server closed first, so its side sits in TIME_WAIT: SO_REUSEADDR lets it bind again.
    procs.append(Server(tmp_path, server.script, port=server.port))
    procs[-1].alive()


def test_port_taken_is_one_line_no_traceback(tmp_path, procs):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        for script in SERVERS:
            procs.append(Proc(tmp_path, script, '--port', str(port)))
            assert procs[-1].p.wait(TIMEOUT) != 0
            err = procs[-1].stderr()
            assert f'127.0.0.1:{port}' in err and 'in use' in err, err
            assert 'Traceback' not in err and err.count('\n') <= 1, err


def test_out_of_descriptors_pauses_accepting(tmp_path, procs):
    for script in SERVERS:
        server = Server(tmp_path, script, nofile=(40, 40))
        procs.append(server)
        first = server.connect()
        clients = [server.connect() for _ in range(60)]  # the kernel queues what we don't accept
        round_trip(first, script, b'served while out of descriptors')
        time.sleep(1.5)
        assert 'Too many open files' in server.stderr()
        # Pausing, not spinning: a line at most every second or so.
        assert server.stderr().count('pausing') <= 3, server.stderr()
        for c in clients[:40]:
            c.close()
        round_trip(clients[-1], script, b'accepted once descriptors were free')  # within TIMEOUT
        round_trip(first, script, b'and the first still served')
        for c in [first] + clients[40:]:
            c.close()
        server.alive()


def test_help_names_the_io_model():
    for script, words in zip(SERVERS, ['Non-blocking', 'select.select()', 'selectors']):
        out = subprocess.run([sys.executable, str(HERE / script), '--help'], capture_output=True,
                             text=True, timeout=TIMEOUT)
        assert out.returncode == 0 and words in out.stdout and '--port' in out.stdout


def test_importing_starts_nothing():
    code = 'import nonblocking_server, select_server, selectors_server; print("ok")'
    out = subprocess.run([sys.executable, '-c', code], cwd=HERE, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.stdout == 'ok\n' and out.returncode == 0


# ---- each server's own ----------------------------------------------------------------------

def test_select_prints_the_seed_messages(tmp_path, procs):
    server = Server(tmp_path, 'select_server.py')
    procs.append(server)
    with server.connect() as c:
        round_trip(c, 'select_server.py', 'hello 你好'.encode())
    server.interrupt()
    assert server.stdout().startswith('server is start ......\n')
    assert '接收消息: hello 你好\n' in server.stdout()


def test_selectors_prints_the_seed_messages(tmp_path, procs):
    server = Server(tmp_path, 'selectors_server.py')
    procs.append(server)
    with server.connect() as c:
        round_trip(c, 'selectors_server.py', b'hello')
    time.sleep(0.2)
    server.interrupt()
    out = server.stdout()
    assert out.startswith('wating....\n')
    assert '------- <socket.socket' in out and 'closing <socket.socket' in out


def test_select_upper_cases_a_character_split_between_recvs(tmp_path, procs):
    server = Server(tmp_path, 'select_server.py')
    procs.append(server)
    with server.connect() as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(b'a\xc3')  # the first byte of é
        time.sleep(0.2)  # so that the server's recv() ends inside the character
        c.sendall(b'\xa9b')
        expected = 'AÉB'.encode()
        assert recv_exactly(c, len(expected)) == expected


def test_select_returns_invalid_utf8_unchanged(tmp_path, procs):
    server = Server(tmp_path, 'select_server.py')
    procs.append(server)
    with server.connect() as c:
        c.sendall(b'abc\xff\xfedef\xc3(')
        assert recv_exactly(c, 10) == b'ABC\xff\xfeDEF\xc3('
        c.sendall(b'x\xe4\xbd')  # an unfinished character, then EOF: answered, not lost
        c.shutdown(socket.SHUT_WR)
        assert recv_until_eof(c) == b'X\xe4\xbd'
    server.alive()
    server.interrupt()
    assert '接收消息: abc\\udcff\\udcfedef' in server.stdout()


def test_select_refuses_descriptors_past_fd_setsize(tmp_path, procs):
    raise_nofile(1300)
    server = Server(tmp_path, 'select_server.py', nofile=(1200, 1200))
    procs.append(server)
    clients = []
    try:
        for _ in range(1060):
            clients.append(server.connect())
        round_trip(clients[0], 'select_server.py', b'first')
        for c in clients[-20:]:  # their descriptors would be past 1023 on the server
            assert c.recv(10) == b''
        round_trip(clients[1000], 'select_server.py', b'below the line')
        assert 'past what select() can watch' in server.stderr()
    finally:
        for c in clients:
            c.close()
    server.alive()


def test_selectors_holds_10000_clients(tmp_path, procs):
    n = 10_000
    raise_nofile(n + 200)
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < n + 50:
        pytest.skip('hard RLIMIT_NOFILE too low')
    # A soft limit of 1024, as many machines have: the server must lift it itself.
    server = Server(tmp_path, 'selectors_server.py',
                    nofile=(1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    procs.append(server)
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


@pytest.mark.parametrize('script', ['select_server.py', 'selectors_server.py'])
def test_idle_server_sleeps(tmp_path, procs, script):
    server = Server(tmp_path, script)
    procs.append(server)
    with server.connect():
        time.sleep(0.1)
        before = server_cpu(server.p.pid)
        time.sleep(1)
        assert server_cpu(server.p.pid) - before < 0.05  # a spinning loop would take ~1 s


# ---- the clients ----------------------------------------------------------------------------

def run_client(script, port, stdin_text=''):
    return subprocess.run([sys.executable, str(HERE / script), '--port', str(port)], cwd=HERE,
                          input=stdin_text.encode(), capture_output=True, timeout=30)


def wait_for(predicate, what):
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.05)


def test_client_talks_every_second(tmp_path, procs):
    server = Server(tmp_path, 'nonblocking_server.py')
    client = Proc(tmp_path, 'client.py', '--port', str(server.port))
    procs.extend([server, client])
    wait_for(lambda: client.stdout().count("b'my server'") >= 2, 'two replies')
    assert client.interrupt() == 0
    pid = client.p.pid
    assert client.stdout().startswith(f"my client:{pid}\nb'my server'\nmy client:{pid}\n")
    assert client.stderr() == ''


@pytest.mark.parametrize('script', ['client.py', 'interactive_client.py'])
def test_client_without_server_says_so(script):
    port = free_port()  # nothing listens there
    out = run_client(script, port, 'hello\n')
    err = out.stderr.decode()
    assert out.returncode != 0 and out.stdout == b''
    assert err == f'cannot connect to 127.0.0.1:{port}: Connection refused\n'


def test_client_says_when_the_server_goes_away(tmp_path, procs):
    server = Server(tmp_path, 'select_server.py')
    client = Proc(tmp_path, 'client.py', '--port', str(server.port))
    procs.extend([server, client])
    wait_for(lambda: "b'MY CLIENT:" in client.stdout(), 'a reply')
    server.p.kill()
    t0 = time.monotonic()
    assert client.p.wait(TIMEOUT) == 1
    assert time.monotonic() - t0 < 2  # the issue: within two seconds
    assert client.stderr() == 'connection closed by server\n'


def test_interactive_client_piped_lines(tmp_path, procs):
    server = Server(tmp_path, 'select_server.py')
    procs.append(server)
    out = run_client('interactive_client.py', server.port, 'hello\n\nworld 你好é\n')
    assert (out.returncode, out.stderr) == (0, b'')
    assert out.stdout.decode() == 'HELLO\nWORLD 你好É\n'  # the empty line was skipped


@pytest.mark.parametrize('line', ['x' * 5000, '你好abc' * 1000], ids=['5000 ASCII', 'long Chinese'])
def test_interactive_client_prints_whole_replies(tmp_path, procs, line):
    server = Server(tmp_path, 'select_server.py')
    procs.append(server)
    # Several long lines: each reply must be whole before the next line is sent.
    out = run_client('interactive_client.py', server.port, (line + '\n') * 3)
    assert (out.returncode, out.stderr) == (0, b'')
    assert out.stdout.decode() == (line.upper() + '\n') * 3


@pytest.mark.skipif(os.name == 'nt', reason='needs a pseudo-terminal')
@pytest.mark.parametrize('key', ['Ctrl-D', 'Ctrl-C', 'server killed'])
def test_interactive_client_at_a_terminal(tmp_path, procs, key):
    import pty
    server = Server(tmp_path, 'selectors_server.py')
    procs.append(server)
    master, slave = pty.openpty()
    try:
        client = Proc(tmp_path, 'interactive_client.py', '--port', str(server.port), stdin=slave)
        procs.append(client)
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


def test_interactive_client_when_the_server_goes_away(tmp_path, procs):
    server = Server(tmp_path, 'select_server.py')
    client = Proc(tmp_path, 'interactive_client.py', '--port', str(server.port),
                  stdin=subprocess.PIPE)
    procs.extend([server, client])
    client.p.stdin.write(b'one\n')
    client.p.stdin.flush()
    wait_for(lambda: client.stdout() == 'ONE\n', 'the reply')
    server.p.kill()
    server.p.wait(TIMEOUT)
    client.p.stdin.write(b'two\n')  # the next line finds the connection gone
    client.p.stdin.flush()
    assert client.p.wait(TIMEOUT) == 1
    assert client.stderr() == 'connection closed by server\n'
