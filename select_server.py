#!/usr/bin/env python3
"""Multiplexed IO with select.select(): reply with the received text upper-cased."""
import argparse
import codecs
import errno
import io
import os
import select
import signal
import socket
import sys
import time

# Windows: select() sleeps through Ctrl-C, whose handler runs on another thread there, so the
# KeyboardInterrupt comes only when select() returns. Wake twice a second, as socketserver does.
POLL = 0.5 if os.name == 'nt' else None


def watchable(conn, watched):
    """select() has a wall: on Windows 512 sockets per list, elsewhere no descriptor past 1023."""
    return watched < 512 if os.name == 'nt' else conn.fileno() < 1024


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
    """--trace: one line on stderr per wake-up: what select() reported, and what we did with it."""

    def __init__(self):
        self.names, self.did = {}, {}  # socket -> 'ip:port'; socket -> what we did this wake-up

    def __call__(self, sk, what):
        self.did.setdefault(sk, [self.names.get(sk, 'listener')]).append(what)

    def wake(self, head, **ready):
        parts = []
        for kind, socks in ready.items():
            for sk in socks:
                name, *what = self.did.get(sk) or [self.names.get(sk, 'listener')]
                parts.append(f'{kind}: {name} -> {", ".join(what) or "nothing"}')
        print(f'{head} -> {"; ".join(parts) or "timeout"}', file=sys.stderr)
        self.did.clear()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8800)
    parser.add_argument('--trace', action='store_true',
                        help='say on stderr what each select() returned, and what we did')
    args = parser.parse_args()
    Output('stdout'), Output('stderr')
    if hasattr(signal, 'SIGBREAK'):  # Windows: Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    trace = Trace() if args.trace else None

    server = socket.socket()
    # Rebind at once after Ctrl-C, while old connections sit in TIME_WAIT. Not on Windows: there it
    # would let a second server take the same port (see socket.create_server).
    if os.name != 'nt':
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((args.host, args.port))
        # The seed's listen(5) drops connects in a burst; clients then wait seconds.
        server.listen(1024)
    except (OSError, OverflowError) as e:
        server.close()
        sys.exit(f'cannot listen on {args.host}:{args.port}: {getattr(e, "strerror", None) or e}')
    server.setblocking(False)  # 設置為非阻塞
    print('server is start ......')

    rlist = [server, ]  # 讀列表,初始只有server
    wlist = []  # 寫列表: only connections whose reply is still waiting
    xlist = []  # 異常列表
    outbuf = {}  # conn -> reply bytes the socket could not take yet
    decoders = {}  # conn -> UTF-8 decoder that keeps a character split between recv()s
    resume_accept = None  # out of descriptors: when to try accept() again

    def close(conn):
        if trace:
            trace(conn, 'closed')
            trace.names.pop(conn, None)
        conn.close()
        for waiting in (rlist, wlist):
            if conn in waiting:
                waiting.remove(conn)  # the seed said rlist.remove(sock): no such name
        outbuf.pop(conn, None)
        decoders.pop(conn, None)

    def send(conn, data):
        """Send what the socket takes now; keep the rest and watch conn for writing."""
        try:
            sent = conn.send(data)
        except BlockingIOError:
            sent = 0
        if trace:
            trace(conn, f'sent {sent}' if sent == len(data) else
                  f'sent {sent} of {len(data)}, waiting in wlist')
        if sent < len(data):
            outbuf[conn] = data[sent:]
            # Stop reading from a client that is not reading our replies: memory stays bounded.
            if conn in rlist:
                rlist.remove(conn)
                wlist.append(conn)
        elif conn in wlist:
            del outbuf[conn]
            wlist.remove(conn)
            rlist.append(conn)

    def accept():
        nonlocal resume_accept
        try:
            conn, addr = server.accept()  # should be ready: select said so
        except (BlockingIOError, ConnectionError):
            return  # the client gave up (or, on Windows, reset) before we got to it
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            # Like asyncio: pause accepting for a second instead of spinning.
            print(f'accept: {e.strerror}; pausing new connections for 1 s', file=sys.stderr)
            rlist.remove(server)
            resume_accept = time.monotonic() + 1
            return
        name = '%s:%s' % addr[:2]
        # select() would raise ValueError on every call: refuse this one, serve the rest.
        if not watchable(conn, len(rlist) + len(wlist)):
            print(f'refusing {name}: past what select() can watch', file=sys.stderr)
            conn.close()
            return
        if trace:
            trace.names[conn] = name
            trace(server, f'accepted {name}')
        conn.setblocking(False)  # accept() hands back a blocking socket on Linux
        decoders[conn] = codecs.getincrementaldecoder('utf-8')('surrogateescape')
        rlist.append(conn)

    try:
        while True:
            if resume_accept and time.monotonic() >= resume_accept:
                rlist.append(server)
                resume_accept = None
            # Block with no timeout while idle; wake to resume accepting, and on Windows for Ctrl-C.
            timeout = POLL
            if resume_accept:
                timeout = min(POLL or 1, max(0, resume_accept - time.monotonic()))
            head = trace and f'select(rlist={len(rlist)}, wlist={len(wlist)})'
            rl, wl, xl = select.select(rlist, wlist, xlist, timeout)
            for sk in rl:
                if sk == server:  # 如果是server則建立連接并添加conn到列表
                    accept()
                    continue
                conn = sk  # 如果是conn,則收發數據
                try:
                    data = conn.recv(1024)  # should be ready: select said so
                    if trace:
                        trace(conn, f'recv {len(data)} bytes')
                    # Decode incrementally: recv() may end inside a character. Bytes that are
                    # not UTF-8 pass through unchanged (surrogateescape), and at EOF (final) an
                    # unfinished character is answered, not lost.
                    msg = decoders[conn].decode(data, final=not data)
                    if not data and not msg:  # 客戶端關閉則刪除conn(linux)
                        close(conn)
                        continue
                    if not msg:
                        continue  # only part of a character so far
                    # The seed's print('接收消息:', msg), as one string: the same line, half the
                    # writes. The print is a large part of what each message costs this server.
                    print(f'接收消息: {msg}')
                    send(conn, msg.upper().encode('utf-8', 'surrogateescape'))
                except OSError:  # reset, broken pipe, timeout: end this client only
                    close(conn)
            for conn in wl:
                try:
                    send(conn, outbuf[conn])  # should be ready: select said so
                except OSError:
                    close(conn)
            if trace:
                trace.wake(head, readable=rl, writable=wl)
    except KeyboardInterrupt:
        print('server stopped', file=sys.stderr)
    finally:
        for sk in rlist + wlist:
            sk.close()
        server.close()


if __name__ == '__main__':
    main()
