#!/usr/bin/env python3
"""Multiplexed IO with select.select(): reply with the received text upper-cased."""
import socket, select
import argparse, codecs, contextlib, errno, os, signal, sys, time  # for the plumbing below


def main():
    args, trace = setup()
    server = socket.socket(socket.AF_INET6 if ':' in args.host else socket.AF_INET)  # fix: IPv6
    with listening(server, args):  # fix: restart at once after Ctrl-C; a port in use: one line
        server.bind((args.host, args.port))
        server.listen(1024)  # fix: the chapter's listen(5) drops connects in a burst
    server.setblocking(False)  # 設置為非阻塞
    print('server is start ......')
    rlist = [server, ]  # 讀列表,初始只有server
    wlist = []  # 寫列表. fix: who has a reply waiting, and is not read meanwhile (see send)
    xlist = []  # 異常列表
    outbuf = {}  # fix: conn -> the part of its reply that the socket could not take yet
    decoders = {}  # fix: conn -> a UTF-8 decoder that keeps a character split between recv()s
    pause = Pause(lambda: rlist.remove(server), lambda: rlist.append(server))  # fix: see Pause

    def send(conn, data):
        """fix: send what the socket takes now and keep the rest. Until it is sent, watch conn
        for writing, not reading: a client that does not read our replies can't fill our memory."""
        try:
            sent = conn.send(data)
        except BlockingIOError:
            sent = 0
        trace.note(conn, 'sent {}' if sent == len(data) else 'sent {} of {}, waiting in wlist',
                   sent, len(data))
        if sent < len(data):
            outbuf[conn] = data[sent:]
            if conn in rlist:
                rlist.remove(conn)
                wlist.append(conn)
        elif conn in wlist:
            wlist.remove(conn)
            rlist.append(conn)

    while True:
        trace.select(rlist, wlist)
        rl, wl, xl = select.select(rlist, wlist, xlist, pause.timeout())  # fix: see Pause
        # print('rlist:', rlist)
        for sk in rl:
            if sk == server:  # 如果是server則建立連接并添加conn到列表
                try:
                    conn, addr = sk.accept()  # should be ready: select said so
                except OSError as e:  # fix: gone before we got to it, or out of descriptors
                    pause.accept_failed(e)
                    continue
                if not watchable(conn, addr, len(rlist) + len(wlist)):  # fix: select()'s wall
                    continue
                conn.setblocking(False)  # fix: accept() hands back a blocking socket on Linux
                decoders[conn] = codecs.getincrementaldecoder('utf-8')('surrogateescape')
                trace.accepted(sk, conn, addr)
                rlist.append(conn)  #
            else:  # 如果是conn,則收發數據
                try:
                    conn = sk
                    data = conn.recv(1024)  # should be ready: select said so
                    trace.note(conn, 'recv {} bytes', len(data))
                    # fix: recv() may end inside a character: decode incrementally. Bytes that
                    # are not UTF-8 pass unchanged (surrogateescape).
                    msg = decoders[conn].decode(data, final=not data)
                    if not msg:  # 客戶端關閉則刪除conn(linux)
                        if data:
                            continue  # fix: only part of a character so far
                        conn.close()
                        rlist.remove(conn)  # fix: the chapter said rlist.remove(sock)
                        del decoders[conn]
                        continue
                    # The chapter's print costs 6 to 15 % of our CPU per message (make bench)
                    print('接收消息:', shown(msg))  # fix: control characters shown escaped
                    send(conn, msg.upper().encode('utf-8', 'surrogateescape'))
                except OSError:  # 客戶端關閉則刪除conn(windows). fix: any socket error
                    conn.close()
                    rlist.remove(conn)
                    del decoders[conn]
        for conn in wl:  # fix: the rest of a reply, now that the socket takes it
            try:
                send(conn, outbuf.pop(conn))
            except OSError:
                conn.close()
                wlist.remove(conn)
                del decoders[conn]
        trace.wake(rl, wl)


# ---- Below: what the tutorial does not teach, which the lesson calls by name: the command ----
# ---- line, the output guard, select()'s wall, the accept pause, --trace, and Windows. -------

def setup():
    """Read the command line and guard the output; return the arguments and the trace."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1', help='the address to listen on, IPv4 or '
                        'IPv6; 0.0.0.0 or :: for every address (default: %(default)s)')
    parser.add_argument('--port', type=int, default=8800, help='the TCP port (default: 8800)')
    parser.add_argument('--trace', action='store_true',
                        help='say on stderr what each select() returned, and what we did')
    args = parser.parse_args()
    guard('stdout'), guard('stderr')
    if os.name == 'nt':  # Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    return args, Trace(args.trace)


@contextlib.contextmanager
def listening(sock, args):
    """Rebind at once, past TIME_WAIT, but not on Windows, where a second server could then take
    a port in use (see socket.create_server). An error ends the script with one line."""
    if os.name != 'nt':
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        yield
    except (OSError, OverflowError) as e:
        sys.exit(f'cannot listen on {args.host}:{args.port}: {getattr(e, "strerror", 0) or e}')


def watchable(conn, addr, watched):
    """select() has a wall: 512 sockets a list on Windows, else descriptor 1023. Past it select()
    would raise ValueError on every call: refuse this client, and serve the rest."""
    if watched < 512 if os.name == 'nt' else conn.fileno() < 1024:
        return True
    print('refusing %s:%s: past what select() can watch' % addr[:2], file=sys.stderr)
    conn.close()


def shown(text, escaped={c: repr(chr(c))[1:-1] for c in [*range(32), *range(127, 160)]
                         if c != 9}):
    """A client's text as it may reach our terminal: C0 controls but tab, DEL, and C1 controls
    escaped, so that a client's \\x1b[2J can't clear our screen (CWE-150)."""
    return text if text.isprintable() else text.translate(escaped)


def guard(name):
    """When stdout or stderr can't be written (a closed pipe, a full disk), say so once and drop
    the rest, below the buffer: a print costs no more. The chapter's print() raised in the loop."""
    stream = getattr(sys, name)  # unprintables escaped; stderr by line, as Python 3.9+ has it
    stream.reconfigure(errors='backslashreplace', line_buffering=name == 'stderr' or None)
    raw = getattr(stream.buffer, 'raw', stream.buffer)  # python -u: no buffer between

    def write_or_drop(data, write=raw.write):
        try:
            return write(data)
        except OSError as e:
            raw.write = len  # gone: from now on, taken as written
            if name == 'stdout':  # stderr still works, we hope
                print(f'stdout: {e.strerror}; printing no more', file=sys.stderr)
            return len(data)
    raw.write = write_or_drop


class Pause:
    """Out of descriptors: stop accepting for a second, as asyncio does, instead of spinning."""
    # Windows: select() sleeps through Ctrl-C, whose handler runs on another thread there, so
    # KeyboardInterrupt comes only when select() returns. Wake twice a second, as socketserver does.
    POLL, until = (0.5 if os.name == 'nt' else None), 0

    def __init__(self, stop, resume):
        self.stop, self.resume = stop, resume

    def accept_failed(self, e):
        if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            print(f'accept: {e.strerror}; pausing new connections for 1 s', file=sys.stderr)
            self.stop()
            self.until = time.monotonic() + 1
        elif not isinstance(e, (BlockingIOError, ConnectionError)):  # not just a client gone
            raise e

    def timeout(self):
        if self.until and time.monotonic() >= self.until:
            self.resume()
            self.until = 0
        left = self.until and max(0.001, self.until - time.monotonic())
        return min(self.POLL or 1, left) if left else self.POLL


class Trace:
    """--trace: one line on stderr per wake-up: what select() reported, and what we did."""

    def __init__(self, on):
        self.names, self.did = {}, {}  # socket -> 'ip:port'; socket -> what we did this wake-up
        if not on:  # each trace point is then a call that does nothing
            self.select = self.note = self.accepted = self.wake = lambda *_: None

    def select(self, rlist, wlist):
        self.head = f'select(rlist={len(rlist)}, wlist={len(wlist)})'

    def note(self, sk, what, *args):
        self.did.setdefault(sk, [self.names.get(sk, 'listener')]).append(what.format(*args))

    def accepted(self, server, conn, addr):
        self.names[conn] = '%s:%s' % addr[:2]
        self.note(server, 'accepted {}', self.names[conn])

    def wake(self, rl, wl):
        parts = []
        for kind, sk in [('readable', sk) for sk in rl] + [('writable', sk) for sk in wl]:
            name, *what = self.did.get(sk) or [self.names.get(sk, 'listener')]
            if sk.fileno() < 0:  # we closed it
                what.append('closed')
                del self.names[sk]
            parts.append(f'{kind}: {name} -> {", ".join(what) or "nothing"}')
        print(f'{self.head} -> {"; ".join(parts) or "timeout"}', file=sys.stderr)
        self.did.clear()


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; the sockets close as we exit
        print('server stopped', file=sys.stderr)
