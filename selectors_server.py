#!/usr/bin/env python3
"""Multiplexing with selectors (epoll where there is one): reply data.upper() + b'_SB'."""
import selectors
import socket
import argparse, contextlib, errno, os, signal, sys, time  # for the plumbing below the lesson


def main():
    args, trace = setup()
    sock = socket.socket(socket.AF_INET6 if ':' in args.host else socket.AF_INET)  # fix: IPv6
    with listening(sock, args):  # fix: restart at once after Ctrl-C; a port in use: one line
        sock.bind((args.host, args.port))
        sock.listen(1024)  # fix: the chapter's listen(5) drops connects in a burst
    sock.setblocking(False)
    # 生成select實例對象. fix: --selector may choose another of the kernel calls
    sel = selectors.DefaultSelector() if not args.selector else SELECTORS[args.selector]()
    outbuf = {}  # fix: conn -> the part of its reply that the socket could not take yet

    def read(conn, mask):
        try:
            data = conn.recv(1024)  # should be ready: select said so
            trace.note(conn, 'recv {} bytes', len(data))
            if not data:
                print('closing', conn)
                sel.unregister(conn)
                conn.close()
                return
            write(conn, mask, data.upper() + b'_SB')  # fix: what the socket can't take waits
        except OSError:  # fix: socket errors only; the chapter's Exception hid our mistakes
            print('closing', conn)
            sel.unregister(conn)  # 取消注冊
            conn.close()  # 關閉連接

    def write(conn, mask, data=None):
        """fix: send what the socket takes. Keep the rest and wait for EVENT_WRITE, not EVENT_READ,
        until it is sent: a client that does not read our replies can't fill our memory."""
        data = data or outbuf.pop(conn)
        try:
            sent = conn.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # gone: as in read()
            print('closing', conn)
            sel.unregister(conn)
            return conn.close()
        trace.note(conn, 'sent {}' if sent == len(data) else
                   'sent {} of {}, waiting for EVENT_WRITE', sent, len(data))
        if sent < len(data):
            outbuf[conn] = data[sent:]
            sel.modify(conn, selectors.EVENT_WRITE, write)
        elif mask == selectors.EVENT_WRITE:  # all sent at last: read again
            sel.modify(conn, selectors.EVENT_READ, read)

    def accept(sock, mask):
        try:
            conn, addr = sock.accept()  # should be ready: select said so
        except OSError as e:  # fix: gone before we got to it, or out of descriptors
            return pause.accept_failed(e)
        if not watchable(sel, conn, addr):  # fix: past it, SelectSelector's select() would fail
            return
        print('-------', conn)
        conn.setblocking(False)  # fix: accept() hands back a blocking socket on Linux
        trace.accepted(sock, conn, addr)
        # 注冊conn,回調 read函數
        sel.register(conn, selectors.EVENT_READ, read)

    pause = Pause(sel, sock, accept)  # fix: see Pause
    # 注冊server事件:
    # 參數1:sock 進行監聽
    # 參數2:selectors.EVENT_READ 執行動作
    # 參數3:accept,只要來一個鏈接就回調這個函數
    sel.register(sock, selectors.EVENT_READ, accept)
    events = None
    while True:
        if events != []:  # fix: once per wait, though on Windows we wake twice a second
            print('wating....')
        trace.select(sel)
        events = sel.select(pause.timeout())  # 調用select:優先使用epoll. fix: see Pause
        # 默認阻塞,有活動鏈接就返回活動的鏈接列表
        for key, mask in events:
            # callback相當于調accept函數
            callback = key.data
            # 獲取函數內存地址,加入參數
            # key.fileobj = 文件句柄
            callback(key.fileobj, mask)
        trace.wake(events)


# ---- Below: what the tutorial does not teach, which the lesson calls by name: the command ----
# ---- line, the output guard, the file limit, select()'s wall, the accept pause, --trace. ----

SELECTORS = {name: getattr(selectors, name.capitalize() + 'Selector')  # what this platform has
             for name in ('select', 'poll', 'epoll', 'kqueue', 'devpoll')
             if hasattr(selectors, name.capitalize() + 'Selector')}


def setup():
    """Read the command line, guard the output, lift the file limit; return args and trace."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1', help='the address to listen on, IPv4 or '
                        'IPv6; 0.0.0.0 or :: for every address (default: %(default)s)')
    parser.add_argument('--port', type=int, default=8800, help='the TCP port (default: 8800)')
    parser.add_argument('--selector', choices=list(SELECTORS), help='the kernel call to use '
                        '(default: selectors.DefaultSelector, the best this platform has)')
    parser.add_argument('--trace', action='store_true',
                        help='say on stderr what woke each sel.select(), and what we did')
    args = parser.parse_args()
    guard('stdout'), guard('stderr')
    if os.name == 'nt':  # Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    else:  # each client costs a descriptor (1024 on Linux, 256 on macOS); Windows: no limit
        lift_nofile()
    return args, Trace(args.trace)


def lift_nofile():
    """Lift the soft file limit to the hard one; macOS refuses RLIM_INFINITY, but takes 10240."""
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for want in (hard, 10240):
        with contextlib.suppress(ValueError, OSError):
            return resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


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


def watchable(sel, conn, addr):
    """Refuse a client past select()'s wall (512 sockets on Windows, else descriptor 1023)."""
    if not isinstance(sel, selectors.SelectSelector) or (
            len(sel.get_map()) < 512 if os.name == 'nt' else conn.fileno() < 1024):
        return True
    print('refusing %s:%s: past what select() can watch' % addr[:2], file=sys.stderr)
    conn.close()


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
    # Windows: select() sleeps through Ctrl-C, so wake twice a second, as socketserver does.
    POLL, until = (0.5 if os.name == 'nt' else None), 0

    def __init__(self, sel, sock, accept):
        self.stop = lambda: sel.unregister(sock)
        self.resume = lambda: sel.register(sock, selectors.EVENT_READ, accept)

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
    """--trace: one line on stderr per wake-up: each event, its callback, and what that did."""
    def __init__(self, on):
        self.names, self.did = {}, {}  # socket -> 'ip:port'; socket -> what we did this wake-up
        if not on:  # each trace point is then a call that does nothing
            self.select = self.note = self.accepted = self.wake = lambda *_: None
    def select(self, sel):
        mechanism = next(name for name, cls in SELECTORS.items() if isinstance(sel, cls))
        self.head = f'{mechanism}, {len(sel.get_map())} registered'
    def note(self, sk, what, *args):
        self.did.setdefault(sk, [self.names.get(sk, 'listener')]).append(what.format(*args))
    def accepted(self, sock, conn, addr):
        self.names[conn] = '%s:%s' % addr[:2]
        self.note(sock, 'accepted {}', self.names[conn])
    def wake(self, events):
        parts = []
        for key, mask in events:
            name, *what = self.did.get(key.fileobj) or [self.names.get(key.fileobj, 'listener')]
            if key.fileobj.fileno() < 0:  # its callback closed it
                what.append('closed')
                del self.names[key.fileobj]
            kind = 'EVENT_READ' if mask & selectors.EVENT_READ else 'EVENT_WRITE'
            parts.append(f'{name} {kind} -> {key.data.__name__}: {", ".join(what)}')
        print(f'{self.head} -> {"; ".join(parts) or "timeout"}', file=sys.stderr)
        self.did.clear()


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; the sockets close as we exit
        print('server stopped', file=sys.stderr)
