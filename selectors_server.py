#!/usr/bin/env python3
"""Multiplexing with selectors (epoll where there is one): reply data.upper() + b'_SB'."""
import selectors
import socket
import argparse, errno, os, signal, sys, time  # for the plumbing below the lesson


def main():
    args = setup()
    sock = socket.socket()
    if os.name != 'nt': sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # fix: rebind
    sock.bind((args.host, args.port))
    sock.listen(1024)  # fix: the chapter's listen(5) drops connects when a class joins at once
    sock.setblocking(False)
    sel = selectors.DefaultSelector()  # 生成select實例對象
    outbuf = {}  # fix: conn -> the part of its reply that conn.send() could not take yet

    def read(conn, mask):
        try:
            data = conn.recv(1024)
            if not data:
                print('closing', conn)
                sel.unregister(conn)
                conn.close()
                return
            if not send(conn, data.upper() + b'_SB', outbuf):  # fix: the rest waits in outbuf:
                sel.modify(conn, selectors.EVENT_WRITE, write)  # write to conn, read it no more
        except Exception:
            print('closing', conn)
            sel.unregister(conn)  # 取消注冊
            conn.close()  # 關閉連接

    def write(conn, mask):  # fix: conn takes more now: the rest of its reply
        if send(conn, outbuf.pop(conn), outbuf):  # all sent at last: read conn again
            sel.modify(conn, selectors.EVENT_READ, read)

    def accept(sock, mask):
        try:
            conn, addr = sock.accept()
        except (BlockingIOError, ConnectionError):  # fix: gone already (Windows: reset)
            return
        if server_full(sel, conn, addr): return  # fix: select()'s wall, where selectors uses it
        print('-------', conn)
        conn.setblocking(False)  # fix: blocking on Linux: a full send() would stop us all
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
        if args.trace: trace(events, sock, sel, outbuf)  # --trace: what sel.select() said, and did

# ---- Below: what the tutorial does not teach, which the lesson above calls by name. ----------

# Windows: Ctrl-C waits till select() returns (see README); select() watches 512 sockets a list.
TIMEOUT, WALL = (1, 512) if os.name == 'nt' else (None, 1024)  # Elsewhere: descriptors < 1024
refused = {}  # server_full()'s: each conn told so -> when, open till it has gone (close_told)
names = {}  # trace()'s: conn -> 'ip:port', kept for the line that says it closed

def setup():
    """The command line; then what a class, a port in use and each platform need of us."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1', help='the address to listen on; '
                        '0.0.0.0: every address, for a class (default: %(default)s)')
    parser.add_argument('--port', type=int, default=8800, help='the TCP port (default: 8800)')
    parser.add_argument('--trace', action='store_true',
                        help='say what each sel.select() woke us for')
    args = parser.parse_args()
    if not 1 <= args.port <= 65535:  # 0, "any free port", is one nobody could be told
        parser.error(f'argument --port: {args.port} is not a port: 1 to 65535')
    if hasattr(sys.stdout, 'reconfigure'):  # not IDLE's, which has none and needs none
        sys.stdout.reconfigure(line_buffering=True)  # Git Bash, | tee: each line at once
    with socket.socket() as probe:  # a port in use: one line, not bind()'s traceback
        if os.name != 'nt':
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((args.host, args.port))
        except OSError as e:
            hint = ': is another server still running?' if e.errno == errno.EADDRINUSE else ''
            sys.exit(f'cannot listen on {args.host}:{args.port}: {e.strerror}{hint}')
    if args.host == '0.0.0.0':
        print('\n'.join(students(args.port)))
    if os.name == 'nt':
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    else:  # a client costs a descriptor: lift the soft limit (Linux 1024, macOS 256) to the hard
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        try:  # macOS: "unlimited" means 10240
            resource.setrlimit(resource.RLIMIT_NOFILE, (
                10240 if hard == resource.RLIM_INFINITY else hard, hard))
        except (ValueError, OSError):
            pass
    return args

def students(port):
    """The students' command at each IPv4 address of ours, the default route's first."""
    found = []  # a UDP connect() sends nothing: it finds our address on the way to each of these
    for there in ('192.0.2.1', '10.0.0.1', '172.16.0.1', '192.168.0.1'):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            if probe.connect_ex((there, 9)) == 0:
                found.append(probe.getsockname()[0])
    try:
        found += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    port = '' if port == 8800 else f' --port {port}'
    lines = []
    for ip in found:  # each once, and not loopback, link-local (169.254.) or 0.x
        line = f'students: python interactive_client.py --host {ip}{port}'
        if line not in lines and not ip.startswith(('127.', '169.254.', '0.')):
            lines.append(line)
    return lines or ['no network address found: is this machine on a network?']

def send(conn, data, outbuf):
    """conn.send(data), and the rest waits in outbuf[conn]: False if some waits."""
    try:
        sent = conn.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:  # conn has gone: the next recv() finds that out, and closes it
        sent = len(data)
    if sent < len(data):
        outbuf[conn] = data[sent:]
    return sent == len(data)

def server_full(sel, conn, addr):
    """Past select()'s wall, where selectors uses select() (Windows; make bench's selectors/select),
    its select() would raise ValueError on every call: tell this client so, and serve the rest."""
    if not isinstance(sel, selectors.SelectSelector) or (
            len(sel.get_map()) if os.name == 'nt' else conn.fileno()) < WALL:
        close_told(0)  # one served: and those told, once they have gone, are closed
        return False
    close_told(10)  # past the wall, a flood: only those told 10 s ago
    why = f'server full: select() watches at most {WALL:,} sockets'
    if not refused:  # our own note: one for a flood of them, not one each
        print('refused %s:%s: server full' % addr[:2], file=sys.stderr, flush=True)  # fits 80
    conn.setblocking(False)
    refused[conn] = time.monotonic()
    try:
        conn.send(why.encode() + b'\n')
        conn.shutdown(socket.SHUT_WR)  # our line, then the end; its close: see close_told
    except OSError:
        pass
    return True

def close_told(older_than):
    """Close each client told so over older_than seconds ago, once it has gone, or after 10 s.
    Closed at once, with its line unread, its socket would send a reset, which may come first."""
    for told in list(refused):  # the oldest first
        age = time.monotonic() - refused[told]
        crowded = len(refused) > WALL  # a connect-and-close flood: keep WALL, or run out of fds
        if age < older_than and not crowded:
            break
        try:
            while told.recv(65536):  # what it sent, dropped: read on, for its end may follow
                pass
        except BlockingIOError:  # it has not gone yet
            if age < 10 and not crowded:
                continue
        except OSError:
            pass
        told.close()
        del refused[told]

def trace(events, sock, sel, outbuf):
    """--trace: on stderr, one line a wake-up: the events sel.select() gave, and what became of
    each socket."""
    said = []
    for key, mask in events:
        sk = key.fileobj
        event = 'EVENT_READ' if mask & selectors.EVENT_READ else 'EVENT_WRITE'
        if sk is sock:  # the chapter's listening sock: who joined
            new = [k.fileobj for k in sel.get_map().values()]
            new = [c for c in new if c not in names and c is not sock]
            for c in new:
                names[c] = peer(c)
            said.append(f'sock {event} -> accepted ' + (', '.join(map(names.get, new)) or '0'))
        elif sk.fileno() < 0:
            said.append(f'{names.pop(sk, "?")} {event} -> closed')
        elif sk in outbuf:
            said.append(f'{names.get(sk)} {event} -> {len(outbuf[sk]):,} bytes wait, EVENT_WRITE')
        else:
            did = 'replied' if event == 'EVENT_READ' else 'the rest sent, back to EVENT_READ'
            said.append(f'{names.get(sk)} {event} -> {did}')
    if said:  # not our own timeout (Windows)
        mechanism = type(sel).__name__.replace('Selector', '').lower()
        print(f'{mechanism}: {"; ".join(said)} (now {len(sel.get_map())} registered)',
              file=sys.stderr, flush=True)

def peer(conn):
    """A connection's name in the trace: the client's ip:port, or '?' if it has gone already."""
    try:
        return '%s:%s' % conn.getpeername()[:2]
    except OSError:
        return '?'

if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; the sockets close as we exit
        print('server stopped', file=sys.stderr)
