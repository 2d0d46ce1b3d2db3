#!/usr/bin/env python3
"""Multiplexed IO with select.select(): reply with the received text upper-cased."""
import socket, select
import argparse, codecs, errno, os, signal, sys, time, unicodedata  # for the plumbing below


def main():
    args = setup()
    server = socket.socket()
    if os.name != 'nt': server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # fix: rebind
    server.bind((args.host, args.port))
    server.listen(1024)  # fix: the chapter's listen(5) drops connects when a class joins at once
    server.setblocking(False)  # 設置為非阻塞
    print('server is start ......')
    rlist = [server, ]  # 讀列表,初始只有server
    wlist = []  # 寫列表. fix: the conns whose reply waits in outbuf; not read till it is sent
    xlist = []  # 異常列表
    outbuf = {}  # fix: conn -> the part of its reply that conn.send() could not take yet
    while True:
        rl, wl, xl = select.select(rlist, wlist, xlist, TIMEOUT)  # fix: see TIMEOUT
        # print('rlist:', rlist)
        for sk in rl:
            if sk == server:  # 如果是server則建立連接并添加conn到列表
                try:
                    conn, addr = sk.accept()
                except (BlockingIOError, ConnectionError):  # fix: gone already (Windows: reset)
                    continue
                if server_full(conn, addr, len(rlist) + len(wlist)): continue  # fix: see WALL
                conn.setblocking(False)  # fix: blocking on Linux: a full send() would stop us all
                rlist.append(conn)  #
            else:  # 如果是conn,則收發數據
                try:
                    conn = sk
                    msg = conn.recv(1024)  # fix: bytes first, decoded below
                except OSError:  # 客戶端關閉則刪除conn(windows). fix: any socket error
                    msg = b''  # fix: ends conn below, as a close does; keeps print() out of the try
                if not msg:  # 客戶端關閉則刪除conn(linux)
                    conn.close()
                    rlist.remove(conn)  # fix: the chapter said rlist.remove(sock)
                    continue
                msg = decode(conn, msg)  # fix: a character split between recv()s waits for its rest
                print(f'接收消息: {shown(msg)}')  # fix: escaped, on one short line (see shown)
                reply = msg.upper().encode('utf-8', 'surrogateescape')  # fix: non-UTF-8 as it came
                if not send(conn, reply, outbuf):  # fix: the rest waits; conn goes to wlist
                    rlist.remove(conn)
                    wlist.append(conn)
        for conn in wl:  # fix: conn takes more now: the rest of its reply
            if send(conn, outbuf.pop(conn), outbuf):  # all sent: read conn again
                wlist.remove(conn)
                rlist.append(conn)
        if args.trace: trace(rl, wl, rlist, wlist, outbuf)  # --trace: what select() said, and did

# ---- Below: what the tutorial does not teach, which the lesson above calls by name. ----------

# Windows: Ctrl-C waits till select() returns (see README); select() watches 512 sockets a list.
TIMEOUT, WALL = (0.5, 512) if os.name == 'nt' else (None, 1024)  # Elsewhere: descriptors < 1024
WIDTH = 80 - 10  # the columns for a client's text: a projector's 80, less '接收消息: '
# What repr() escapes of these: controls, and what turns text round (U+202E); and bytes not UTF-8,
# which decode() keeps as U+DC80 to U+DCFF, as a bytes' repr() writes them: b'\xff' as \xff
ESCAPED = {c: repr(chr(c))[1:-1] for c in [*range(32), *range(127, 160), *range(0x2000, 0x2070),
                                            0xFEFF]}
ESCAPED.update({c: f'\\x{c - 0xDC00:x}' for c in range(0xDC80, 0xDD00)})
pending = {}  # decode()'s memory: conn -> the start of a character that its recv() cut
refused = {}  # server_full()'s: each conn told so -> when, open till it has gone (close_told)
names = {}  # trace()'s: conn -> 'ip:port', kept for the line that says it closed

def setup():
    """The command line; then what a class, a port in use and each platform need of us."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1', help='the address to listen on; '
                        '0.0.0.0: every address, for a class (default: %(default)s)')
    parser.add_argument('--port', type=int, default=8800, help='the TCP port (default: 8800)')
    parser.add_argument('--trace', action='store_true', help='say what each select() woke us for')
    args = parser.parse_args()
    if hasattr(sys.stdout, 'reconfigure'):  # not IDLE's, which has none and needs none
        sys.stdout.reconfigure(encoding='utf-8', line_buffering=True)  # Git Bash: UTF-8, at once
    if not 1 <= args.port <= 65535:  # 0, "any free port", is one nobody could be told
        parser.error(f'argument --port: {args.port} is not a port: 1 to 65535')
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

def decode(conn, msg):
    """msg as text; a character cut at its end waits in pending; bytes not UTF-8 stay so."""
    if conn in pending:
        msg = pending.pop(conn) + msg
    try:
        return msg.decode()  # the usual message, whole UTF-8: the quickest way
    except UnicodeDecodeError:  # a character cut at the end, or bytes not UTF-8
        text, used = codecs.utf_8_decode(msg, 'surrogateescape', False)
    if used < len(msg):
        for gone in [c for c in pending if c.fileno() < 0]:  # closed meanwhile: forget them
            del pending[gone]
        pending[conn] = msg[used:]
    return text

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

def shown(text):
    """A client's text for a projector: escaped, so that \\x1b[2J can't clear our screen, in one
    row of 80 columns, where a Chinese character takes two, as does what a Chinese console draws
    wide (East Asian "ambiguous": “, …, é); if cut, with its size."""
    if not text:  # recv() brought only the start of a character: decode() keeps it for the rest
        return '(part of a character: the rest comes next)'
    if len(text) <= WIDTH and text.isascii() and text.isprintable():
        return text  # the usual line
    size = f'... ({len(text.encode("utf-8", "surrogateescape")):,} bytes)'
    text = text.translate(ESCAPED)
    widths = [2 if unicodedata.east_asian_width(c) in 'WFA' else 1 for c in text[:WIDTH + 1]]
    if sum(widths) <= WIDTH:
        return text
    while sum(widths) > WIDTH - len(size):
        widths.pop()
    return text[:len(widths)] + size

def server_full(conn, addr, watched):
    """Past select()'s wall, where select() raises ValueError: tell this client so, in a line."""
    if (watched if os.name == 'nt' else conn.fileno()) < WALL:
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

def trace(rl, wl, rlist, wlist, outbuf):
    """--trace: on stderr, one line a wake-up: what select() reported, and what became of it."""
    said = []
    for sk in rl + wl:
        kind = 'readable' if sk in rl else 'writable'
        if sk is rlist[0]:  # the chapter's server: who joined
            new = [c for c in rlist + wlist if c not in names and c is not sk]
            for c in new:
                names[c] = peer(c)
            said.append(f'{kind}: server -> accepted ' + (', '.join(map(names.get, new)) or '0'))
        elif sk.fileno() < 0:
            said.append(f'{kind}: {names.pop(sk, "?")} -> closed')
        elif sk in outbuf:
            said.append(f'{kind}: {names.get(sk)} -> {len(outbuf[sk]):,} bytes wait, in wlist')
        else:
            did = 'replied' if kind == 'readable' else 'the rest sent, back in rlist'
            said.append(f'{kind}: {names.get(sk)} -> {did}')
    if said:  # not our own timeout (Windows)
        print(f'select() -> {"; ".join(said)} (now rlist={len(rlist)}, wlist={len(wlist)})',
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
