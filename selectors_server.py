#!/usr/bin/env python3
"""Multiplexing with selectors (epoll where there is one): reply data.upper() + b'_SB'."""
import selectors
import socket
import argparse, contextlib, os, signal, sys, time  # for the plumbing below the lesson


def main():
    args = setup()
    sock = socket.socket()
    if os.name != 'nt': sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # fix: README
    sock.bind((args.host, args.port))
    sock.listen(1024)  # fix: the chapter's listen(5) drops connects when a class joins at once
    sock.setblocking(False)
    sel = selectors.DefaultSelector()  # 生成select實例對象
    outbuf = {}  # fix: conn -> the rest of its reply, which the socket could not take yet

    def read(conn, mask):
        try:
            data = conn.recv(1024)
            if not data:
                print('closing', conn)
                sel.unregister(conn)
                conn.close()
                return
            write(conn, mask, data.upper() + b'_SB')  # fix: what the socket can't take waits
        except Exception:
            print('closing', conn)
            sel.unregister(conn)  # 取消注冊
            conn.close()  # 關閉連接

    def write(conn, mask, data=b''):  # fix: the rest of a reply waits for EVENT_WRITE
        data = outbuf.pop(conn) + data if conn in outbuf else data
        sent = send(conn, data)  # what the socket takes now: see send
        if sent < len(data):  # not read meanwhile: a client that does not read costs one reply
            outbuf[conn] = data[sent:]
            sel.modify(conn, selectors.EVENT_WRITE, write)
        elif mask == selectors.EVENT_WRITE:  # all sent at last: read again
            sel.modify(conn, selectors.EVENT_READ, read)

    def accept(sock, mask):
        try:
            conn, addr = sock.accept()
        except (BlockingIOError, ConnectionError):  # fix: gone already (Windows: reset)
            return
        if server_full(sel, conn, addr): return  # fix: select()'s wall, where selectors uses it
        print('-------', conn)
        conn.setblocking(False)  # fix: accept() hands back a blocking socket on Linux
        # 注冊conn,回調 read函數
        sel.register(conn, selectors.EVENT_READ, read)

    # 注冊server事件:
    # 參數1:sock 進行監聽
    # 參數2:selectors.EVENT_READ 執行動作
    # 參數3:accept,只要來一個鏈接就回調這個函數
    sel.register(sock, selectors.EVENT_READ, accept)
    while True:
        print('wating....')
        events = sel.select(TIMEOUT)  # 調用select:優先使用epoll. fix: see TIMEOUT
        # 默認阻塞,有活動鏈接就返回活動的鏈接列表
        for key, mask in events:
            # callback相當于調accept函數
            callback = key.data
            # 獲取函數內存地址,加入參數
            # key.fileobj = 文件句柄
            callback(key.fileobj, mask)

# ---- Below: what the tutorial does not teach, which the lesson above calls by name. ----------

# Windows: Ctrl-C waits till select() returns (see README); select() watches 512 sockets a list.
TIMEOUT, WALL = (1, 512) if os.name == 'nt' else (None, 1024)  # Elsewhere: descriptors < 1024

def setup():
    """Read the command line; lift the file limit; let Ctrl-C and Ctrl+Break through on Windows."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1', help='the address to listen on; '
                        '0.0.0.0: every address, for a class (default: %(default)s)')
    parser.add_argument('--port', type=int, default=8800, help='the TCP port (default: 8800)')
    parser.add_argument('--trace', action='store_true', help='say what each select() woke us for')
    args = parser.parse_args()
    if args.host == '0.0.0.0':  # for a class: the command for students, with the address of our
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # default route, found by
            probe.connect_ex(('192.0.2.1', 9))  # a UDP connect(), which sends nothing (RFC 5737)
            ip, port = probe.getsockname()[0], f' --port {args.port}' * (args.port != 8800)
        print(f'students: python interactive_client.py --host {ip}{port}' if ip != '0.0.0.0'
              else 'no network address found: is this machine on a network?', flush=True)
    if os.name == 'nt':
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    else:  # a client costs a descriptor: lift the soft limit (Linux 1024, macOS 256) to the hard
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        with contextlib.suppress(ValueError, OSError):  # macOS: "unlimited" means 10240
            resource.setrlimit(resource.RLIMIT_NOFILE, (
                10240 if hard == resource.RLIM_INFINITY else hard, hard))
    if args.trace:
        Trace()
    return args

def send(conn, data):
    """conn.send(), but 0 if the socket takes nothing now; all if it is gone (read() closes it)."""
    try:
        return conn.send(data)
    except BlockingIOError:
        return 0
    except OSError:
        return len(data)

def server_full(sel, conn, addr, said=[0]):  # said: when we last said so, kept between calls
    """Past select()'s wall, SelectSelector's select() would raise ValueError on every call:
    tell this client so in one line, close it, and serve the rest."""
    if not isinstance(sel, selectors.SelectSelector) or (
            len(sel.get_map()) if os.name == 'nt' else conn.fileno()) < WALL:
        return False
    why = f'server full: select() watches at most {WALL:,} sockets'
    with contextlib.suppress(OSError):
        conn.send(why.encode() + b'\n')
    conn.close()
    if time.monotonic() - said[0] >= 1:  # our own note: under a flood, one a second
        said[0] = time.monotonic()
        print('refused %s:%s: ' % addr[:2] + why, file=sys.stderr, flush=True)
    return True

class Trace:
    """--trace: after each sel.select(), its events and what each callback did. It wraps the
    selector and the socket calls: the lesson has no trace calls, and pays nothing."""
    def __init__(self):
        self.names, self.did, self.woke = {}, {}, None  # socket -> ip:port; -> what we did
        for owner, name in ((selectors.DefaultSelector, 'select'), (socket.socket, 'accept'),
                            (socket.socket, 'recv'), (socket.socket, 'send')):
            setattr(owner, name, self.wrap(name, getattr(owner, name)))

    def wrap(self, name, real):
        def traced(sock, *args):  # for select(), sock is the selector
            if name == 'select':
                self.say()  # about to wait: the wake-up before this one is over
            result = None  # if the call raises
            try:
                result = real(sock, *args)
                return result
            finally:
                self.did.setdefault(sock, []).append(self.what(name, sock, result, *args))
        return traced

    def what(self, name, sock, result, data=b'', *_):
        if name == 'select':
            mechanism = type(sock).__name__[:-len('Selector')].lower()
            self.woke = f'{mechanism}, {len(sock.get_map())} registered', result
        elif name == 'accept':
            self.names.update([(result[0], '%s:%s' % result[1][:2])] if result else [])
            return 'accepted ' + self.names[result[0]] if result else 'accept failed'
        elif name == 'recv':
            return f'read {len(result):,}' if result is not None else 'read failed'
        elif name == 'send':
            sent = result or 0
            return f'sent {sent:,}' + (f', {len(data) - sent:,} waiting' if data[sent:] else '')

    def say(self):
        if self.woke and self.woke[1]:
            print(self.woke[0], '->', '; '.join(f'{self.names.get(key.fileobj, "sock")} EVENT_'
                  f'{"READ" if mask & selectors.EVENT_READ else "WRITE"} -> ' + ', '.join(
                      self.did.get(key.fileobj, []) + ['closed'] * (key.fileobj.fileno() < 0))
                  for key, mask in self.woke[1]), file=sys.stderr, flush=True)
        self.did.clear()
        self.names = {sk: name for sk, name in self.names.items() if sk.fileno() >= 0}

if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; the sockets close as we exit
        print('server stopped', file=sys.stderr)
