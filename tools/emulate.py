#!/usr/bin/env python3
"""Run a script as Windows or macOS would, on Linux, so that the tests reach their branches.

    python tools/emulate.py FEATURE[,FEATURE...] script.py [args...]

Each feature copies one behaviour, as CPython's source and the platforms' documentation give it:

  nt            os.name is 'nt', and signal.SIGBREAK (Ctrl+Break) is SIGUSR1.
  sigint-thread Ctrl-C is handled on another thread, so it does not interrupt select() (Winsock).
  select512     select() takes at most 512 sockets per list, and DefaultSelector is the
                SelectSelector that calls select(r, w, w), as Lib/selectors.py does on win32.
  select-only   a system whose selectors has select() alone, as the bench's selectors/select row
                runs: DefaultSelector is SelectSelector, which here takes descriptors below 1024.
  accept-reset  the first connection accept() would return was reset first (WSAECONNRESET).
  setsockopt    each setsockopt() call is said on stderr, as 'emulate: setsockopt LEVEL OPTION'.
  rlimit        macOS: RLIMIT_NOFILE starts at 256 with no hard limit, and setrlimit() refuses
                a soft limit over OPEN_MAX, 10240. What it takes is said on stderr.
  no-readline   Windows: there is no readline module to import.
  offline       a machine on no network: a UDP connect() finds no route (ENETUNREACH), and the
                machine's name gives loopback alone.
  two-nets      a teacher's laptop on two networks: the default route goes out by 192.168.50.7
                (another network), and the class is on 10.123.0.1/24, which no fixed probe
                reaches; the machine's name gives both, as Windows and macOS do.
  no-default-route  the class's access point gives no route to anywhere: only the class's own
                network, 10.123.0.1/24, is reached; the machine's name gives 10.123.0.1.
  short-send    send() takes at most 100 bytes a call, as a busy link's full buffer may: every
                reply is sent in pieces, each waiting for the socket to be writable again.
  idle          run from IDLE (F5), as many Windows learners do: stdin, stdout and stderr are
                IDLE's own text files, which write to its shell as they are given text, say they
                are a terminal, and have no reconfigure() (Lib/idlelib/run.py, StdioFile).
  vanish        a client's laptop leaves the network: recv() on its connection raises ETIMEDOUT, as
                the kernel does once its retransmissions give up. A client that sends VANISH stands
                for one.
"""
import argparse  # noqa: F401  imported before os.name changes: some modules look at it as they
import codecs  # noqa: F401    load (shutil, which argparse imports, on Windows needs nt)
import shutil  # noqa: F401
import errno
import io
import os
import runpy
import select
import selectors
import signal
import socket
import sys
import threading
import time


def say(text):
    print(f'emulate: {text}', file=sys.__stderr__, flush=True)


def nt():
    os.name = 'nt'
    signal.SIGBREAK = signal.SIGUSR1


def sigint_thread():
    # The thread starts with SIGINT open; the main thread then blocks it, so the kernel hands
    # Ctrl-C to the thread. Python's handler still runs on the main thread, but only once that
    # thread runs Python code again: a blocking select() is not interrupted.
    threading.Thread(target=lambda: time.sleep(1e9), daemon=True).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def select512():
    real = select.select

    def select_512(r, w, x, *timeout):
        if max(len(r), len(w), len(x)) > 512:
            raise ValueError('too many file descriptors in select()')
        return real(r, w, x, *timeout)

    class WindowsSelectSelector(selectors.SelectSelector):
        def _select(self, r, w, _, timeout=None):
            r, w, x = select.select(r, w, w, timeout)
            return r, w + x, []

    select.select = select_512
    selectors.DefaultSelector = WindowsSelectSelector


def select_only():
    selectors.DefaultSelector = selectors.SelectSelector


def accept_reset():
    real = socket.socket.accept
    done = []

    def accept(self):
        conn, addr = real(self)
        if done:
            return conn, addr
        done.append(addr)
        conn.close()
        raise ConnectionResetError(errno.ECONNRESET, 'An existing connection was forcibly closed')

    socket.socket.accept = accept


def setsockopt():
    real = socket.socket.setsockopt
    names = {getattr(socket, n): n for n in ('SO_REUSEADDR', 'SO_LINGER', 'SO_KEEPALIVE')}

    def recorded(self, level, option, *value):
        say(f'setsockopt {level} {names.get(option, option)}')
        return real(self, level, option, *value)

    socket.socket.setsockopt = recorded


def rlimit():
    import resource
    real_get, real_set = resource.getrlimit, resource.setrlimit
    real_set(resource.RLIMIT_NOFILE, (256, real_get(resource.RLIMIT_NOFILE)[1]))

    def getrlimit(which):
        soft, hard = real_get(which)
        return (soft, resource.RLIM_INFINITY) if which == resource.RLIMIT_NOFILE else (soft, hard)

    def setrlimit(which, limits):
        soft, hard = limits
        if which == resource.RLIMIT_NOFILE:
            if soft == resource.RLIM_INFINITY or soft > 10240:
                raise ValueError('not allowed to raise maximum limit')
            say(f'RLIMIT_NOFILE soft limit {soft}')
            limits = soft, real_get(which)[1]
        real_set(which, limits)

    resource.getrlimit, resource.setrlimit = getrlimit, setrlimit


def no_readline():
    sys.modules['readline'] = None  # import readline now raises ImportError


def networks(routes, addresses):
    """A UDP connect() to an address in one of routes (prefix -> our address, '' for the
    default route) finds that address as ours; elsewhere ENETUNREACH. The machine's name
    gives addresses."""
    real_connect_ex, real_getsockname = socket.socket.connect_ex, socket.socket.getsockname
    ours = {}  # a probe -> the address it found

    def connect_ex(self, address):
        if self.type != socket.SOCK_DGRAM:
            return real_connect_ex(self, address)
        found = [ip for prefix, ip in routes.items() if address[0].startswith(prefix)]
        if not found:
            return errno.ENETUNREACH
        ours[id(self)] = found[0]
        return 0

    def getsockname(self):
        if id(self) in ours:
            return ours[id(self)], 40000
        return real_getsockname(self)

    socket.socket.connect_ex, socket.socket.getsockname = connect_ex, getsockname
    socket.gethostbyname_ex = lambda name: (name, [], addresses)


def two_nets():
    networks({'10.123.0.': '10.123.0.1', '': '192.168.50.7'}, ['192.168.50.7', '10.123.0.1'])


def no_default_route():
    networks({'10.123.0.': '10.123.0.1'}, ['127.0.1.1', '10.123.0.1'])


def offline():
    socket.gethostbyname_ex = lambda name: (name, [], ['127.0.1.1'])
    real = socket.socket.connect_ex

    def connect_ex(self, address):
        if self.type == socket.SOCK_DGRAM:
            return errno.ENETUNREACH
        return real(self, address)

    def connect(self, address):
        if self.type == socket.SOCK_DGRAM:
            raise OSError(errno.ENETUNREACH, 'Network is unreachable')
        return real_connect(self, address)

    real_connect = socket.socket.connect
    socket.socket.connect_ex, socket.socket.connect = connect_ex, connect


def short_send():
    real = socket.socket.send

    def send(self, data, *args):
        return real(self, data[:100], *args)

    socket.socket.send = send


def vanish():
    real = socket.socket.recv

    def recv(self, *args):
        data = real(self, *args)
        if data.startswith(b'VANISH'):
            raise TimeoutError(errno.ETIMEDOUT, 'Connection timed out')
        return data

    socket.socket.recv = recv


class IdleFile(io.TextIOBase):
    """IDLE's StdOutputFile or StdInputFile, here over the real file: text in, text out."""

    encoding = 'utf-8'

    def __init__(self, real):
        self.real = real

    def write(self, text):
        self.real.write(text)
        self.real.flush()
        return len(text)

    def readline(self, size=-1):
        return self.real.readline(size)

    def isatty(self):
        return True


def idle():
    sys.stdin = IdleFile(sys.stdin)
    sys.stdout = IdleFile(sys.stdout)
    sys.stderr = IdleFile(sys.stderr)


FEATURES = {'nt': nt, 'sigint-thread': sigint_thread, 'select512': select512,
            'select-only': select_only,
            'accept-reset': accept_reset, 'setsockopt': setsockopt, 'rlimit': rlimit,
            'no-readline': no_readline, 'offline': offline, 'vanish': vanish,
            'two-nets': two_nets, 'no-default-route': no_default_route, 'short-send': short_send,
            'idle': idle}

if __name__ == '__main__':
    if sys.argv[1:2] in (['-h'], ['--help']):
        print(__doc__)
        sys.exit(0)
    if len(sys.argv) < 3 or not set(sys.argv[1].split(',')) <= set(FEATURES):
        sys.exit(__doc__)
    for feature in sys.argv[1].split(','):
        FEATURES[feature]()
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name='__main__')
