#!/usr/bin/env python3
"""Multiplexing with selectors (epoll where there is one): reply data.upper() + b'_SB'."""
import argparse
import errno
import io
import os
import selectors
import signal
import socket
import sys
import time

try:
    import resource
except ImportError:  # Windows has no resource module
    resource = None

# The kernel calls selectors can wrap, of those this platform has.
SELECTORS = {name: getattr(selectors, name.capitalize() + 'Selector')
             for name in ('select', 'poll', 'epoll', 'kqueue', 'devpoll')
             if hasattr(selectors, name.capitalize() + 'Selector')}
# Windows: select() sleeps through Ctrl-C, whose handler runs on another thread there, so the
# KeyboardInterrupt comes only when select() returns. Wake twice a second, as socketserver does.
POLL = 0.5 if os.name == 'nt' else None


def watchable(sel, conn):
    """SelectSelector has select()'s wall: 512 sockets on Windows, else no descriptor past 1023."""
    if not isinstance(sel, selectors.SelectSelector):
        return True
    return len(sel.get_map()) < 512 if os.name == 'nt' else conn.fileno() < 1024


def lift_nofile():
    """Each client costs a descriptor: lift the soft limit (1024 on Linux, 256 on macOS) as far
    as we may. macOS refuses its usual hard limit, RLIM_INFINITY: find the most it takes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    refused = (1 << 20 if hard == resource.RLIM_INFINITY else hard) + 1
    want = refused - 1
    while soft != resource.RLIM_INFINITY and want > soft:  # soft: the most taken so far
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            refused = want
        want = (soft + refused) // 2


class Output(io.RawIOBase):
    """stdout or stderr, below its buffer, so that a print costs no more. Once it can't be written
    (a closed pipe, a full disk), say so once and drop the rest: the seed's print() raised into
    the loop and cost a client, or the server."""

    def __init__(self, name):
        stream, self.name = getattr(sys, name), name
        self.raw = getattr(stream.buffer, 'raw', stream.buffer)  # python -u: no buffer between
        # The same buffering as before, stderr line by line as in Python 3.9 and newer, and what
        # a terminal can't show escaped.
        setattr(sys, name, io.TextIOWrapper(
            self if self.raw is stream.buffer else io.BufferedWriter(self),
            stream.encoding, 'backslashreplace',
            line_buffering=stream.line_buffering or name == 'stderr',
            write_through=stream.write_through))

    def writable(self):
        return True

    def write(self, data):
        if self.raw:
            try:
                return self.raw.write(data)
            except OSError as e:
                self.raw = None
                if self.name == 'stdout':  # stderr still works, we hope
                    print(f'stdout: {e.strerror}; printing no more', file=sys.stderr)
        return len(data)  # gone: taken as written


class Trace:
    """--trace: one line on stderr per wake-up: each event, its callback, and what that did."""

    def __init__(self, sel):
        self.names, self.did = {}, {}  # socket -> 'ip:port'; socket -> what we did this wake-up
        self.mechanism = next(name for name, cls in SELECTORS.items() if isinstance(sel, cls))

    def __call__(self, sk, what):
        self.did.setdefault(sk, [self.names.get(sk, 'listener')]).append(what)

    def wake(self, registered, events):
        parts = []
        for key, mask in events:
            name, *what = self.did.get(key.fileobj) or [self.names.get(key.fileobj, 'listener')]
            kind = 'EVENT_READ' if mask & selectors.EVENT_READ else 'EVENT_WRITE'
            parts.append(f'{name} {kind} -> {key.data.__name__}: {", ".join(what)}')
        print(f'{self.mechanism}, {registered} registered -> {"; ".join(parts) or "timeout"}',
              file=sys.stderr)
        self.did.clear()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8800)
    parser.add_argument('--selector', choices=list(SELECTORS),
                        help='the kernel call to use, of those this platform has '
                             '(default: selectors.DefaultSelector, the best of them)')
    parser.add_argument('--trace', action='store_true',
                        help='say on stderr what woke each sel.select(), and what we did')
    args = parser.parse_args()
    Output('stdout'), Output('stderr')
    if hasattr(signal, 'SIGBREAK'):  # Windows: Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    if resource:  # Windows has no such limit
        lift_nofile()

    sock = socket.socket()
    # Rebind at once after Ctrl-C, while old connections sit in TIME_WAIT. Not on Windows: there it
    # would let a second server take the same port (see socket.create_server).
    if os.name != 'nt':
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
        # The seed's listen(5) drops connects in a burst; clients then wait seconds.
        sock.listen(1024)
    except (OSError, OverflowError) as e:
        sock.close()
        sys.exit(f'cannot listen on {args.host}:{args.port}: {getattr(e, "strerror", None) or e}')
    sock.setblocking(False)
    # 生成select實例對象: the best this platform has, as in the seed, unless --selector says.
    sel = SELECTORS[args.selector]() if args.selector else selectors.DefaultSelector()
    trace = Trace(sel) if args.trace else None
    outbuf = {}  # conn -> reply bytes the socket could not take yet
    resume_accept = None  # out of descriptors: when to register sock again

    def close(conn):
        print('closing', conn)
        if trace:
            trace(conn, 'closed')
            trace.names.pop(conn, None)
        outbuf.pop(conn, None)
        sel.unregister(conn)  # 取消注冊
        conn.close()  # 關閉連接

    def send(conn, data):
        """Send what the socket takes now; keep the rest and wait until conn is writable."""
        try:
            sent = conn.send(data)
        except BlockingIOError:
            sent = 0
        if trace:
            trace(conn, f'sent {sent}' if sent == len(data) else
                  f'sent {sent} of {len(data)}, waiting for EVENT_WRITE')
        if sent < len(data):
            outbuf[conn] = data[sent:]
            # Stop reading from a client that is not reading our replies: memory stays bounded.
            sel.modify(conn, selectors.EVENT_WRITE, write)
        elif conn in outbuf:
            del outbuf[conn]
            sel.modify(conn, selectors.EVENT_READ, read)

    def write(conn, mask):
        try:
            send(conn, outbuf[conn])  # should be ready: select said so
        except OSError:
            close(conn)

    def read(conn, mask):
        try:
            data = conn.recv(1024)  # should be ready: select said so
            if trace:
                trace(conn, f'recv {len(data)} bytes')
            if not data:
                close(conn)
                return
            send(conn, data.upper() + b'_SB')
        except OSError:  # reset, broken pipe, timeout: end this client only (not every Exception)
            close(conn)

    def accept(sock, mask):
        nonlocal resume_accept
        try:
            conn, addr = sock.accept()  # should be ready: select said so
        except (BlockingIOError, ConnectionError):
            return  # the client gave up (or, on Windows, reset) before we got to it
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            # Like asyncio: pause accepting for a second instead of spinning.
            print(f'accept: {e.strerror}; pausing new connections for 1 s', file=sys.stderr)
            sel.unregister(sock)
            resume_accept = time.monotonic() + 1
            return
        name = '%s:%s' % addr[:2]
        if not watchable(sel, conn):  # sel.select() would raise ValueError: refuse, serve the rest
            print(f'refusing {name}: past what select() can watch', file=sys.stderr)
            conn.close()
            return
        print('-------', conn)
        if trace:
            trace.names[conn] = name
            trace(sock, f'accepted {name}')
        conn.setblocking(False)  # accept() hands back a blocking socket on Linux
        # 注冊conn,回調 read函數
        sel.register(conn, selectors.EVENT_READ, read)

    # 注冊server事件: 只要來一個鏈接就回調accept
    sel.register(sock, selectors.EVENT_READ, accept)
    events = None
    try:
        while True:
            if resume_accept and time.monotonic() >= resume_accept:
                sel.register(sock, selectors.EVENT_READ, accept)
                resume_accept = None
            if events != []:  # not again after a timeout: Windows wakes twice a second
                print('wating....')
            # Block with no timeout while idle; wake to resume accepting, and on Windows for Ctrl-C.
            timeout = POLL
            if resume_accept:
                timeout = min(POLL or 1, max(0, resume_accept - time.monotonic()))
            registered = trace and len(sel.get_map())
            events = sel.select(timeout)
            for key, mask in events:
                callback = key.data  # accept, read or write
                callback(key.fileobj, mask)
            if trace:
                trace.wake(registered, events)
    except KeyboardInterrupt:
        print('server stopped', file=sys.stderr)
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
        sock.close()


if __name__ == '__main__':
    main()
