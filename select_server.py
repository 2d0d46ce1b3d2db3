#!/usr/bin/env python3
"""Multiplexed IO with select.select(): reply with the received text upper-cased."""
import socket, select
import argparse, codecs, contextlib, os, signal, sys, time  # for the plumbing below


def main():
    args = setup()
    server = socket.socket()
    if os.name != 'nt': server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # fix: README
    server.bind((args.host, args.port))
    server.listen(1024)  # fix: the chapter's listen(5) drops connects when a class joins at once
    server.setblocking(False)  # 設置為非阻塞
    print('server is start ......')
    rlist = [server, ]  # 讀列表,初始只有server
    wlist = []  # 寫列表. fix: the conns whose reply waits, not read until it is sent
    xlist = []  # 異常列表
    send = sender(rlist, wlist)  # fix: conn.send() may take only part of a reply: see sender
    decoders = {}  # fix: descriptor -> its UTF-8 decoder, for a character split between recv()s
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
                conn.setblocking(False)  # fix: accept() hands back a blocking socket on Linux
                decoders[conn.fileno()] = codecs.getincrementaldecoder('utf-8')('surrogateescape')
                rlist.append(conn)  #
            else:  # 如果是conn,則收發數據
                try:
                    conn = sk
                    msg = conn.recv(1024)  # fix: bytes first, decoded below
                    if not msg:  # 客戶端關閉則刪除conn(linux)
                        conn.close()
                        rlist.remove(conn)  # fix: the chapter said rlist.remove(sock)
                        continue
                    msg = decoders[conn.fileno()].decode(msg)  # fix: keeps a split character
                    print(f'接收消息: {shown(msg)}')  # fix: escaped, cut to a line (see shown)
                    send(conn, msg.upper().encode('utf-8', 'surrogateescape'))
                except BrokenPipeError: raise  # fix: from print(): our stdout is gone, not conn
                except OSError:  # 客戶端關閉則刪除conn(windows). fix: any socket error
                    conn.close()
                    rlist.remove(conn)
        for conn in wl:  # fix: the socket takes more now: send the rest of its reply
            send(conn)

# ---- Below: what the tutorial does not teach, which the lesson above calls by name. ----------

# Windows: Ctrl-C waits till select() returns (see README); select() watches 512 sockets a list.
TIMEOUT, WALL = (0.5, 512) if os.name == 'nt' else (None, 1024)  # Elsewhere: descriptors < 1024

def setup():
    """Read the command line; lift the file limit; let Ctrl+Break stop us as Ctrl-C does."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1', help='the address to listen on; '
                        '0.0.0.0: every address, for a class (default: %(default)s)')
    parser.add_argument('--port', type=int, default=8800, help='the TCP port (default: 8800)')
    parser.add_argument('--trace', action='store_true', help='say what each select() woke us for')
    args = parser.parse_args()
    if args.host == '0.0.0.0':  # for a class: the command for students, with the address of our
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # default route, found
            probe.connect_ex(('192.0.2.1', 9))  # by a UDP connect(), which sends nothing (RFC 5737)
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

def sender(rlist, wlist):
    """Return send(conn, data): what the socket can't take now waits, and conn moves from rlist
    to wlist till it is sent, so a client that does not read costs us one reply, no more."""
    outbuf = {}  # conn -> the part of its reply that the socket could not take yet
    def send(conn, data=b''):  # send(conn): what waits
        data = outbuf.pop(conn) + data if conn in outbuf else data
        try:
            sent = conn.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # gone: back to rlist, where the lesson's recv() finds out and closes it
            sent = len(data)
        if sent < len(data):
            outbuf[conn] = data[sent:]
            if conn in rlist:  # the rest waits: watch conn for writing, and read it no more
                rlist.remove(conn), wlist.append(conn)
        elif conn in wlist:  # all sent at last: read it again
            wlist.remove(conn), rlist.append(conn)
    return send

def shown(text, escaped={c: repr(chr(c))[1:-1] for c in [
        *range(32), *range(127, 160), *range(0xDC80, 0xDD00)] if c != 9}):  # bytes not UTF-8
    """A client's text as a projected terminal should show it: control characters escaped, so
    that \\x1b[2J can't clear our screen (CWE-150), on one line of at most 200 characters."""
    if len(text) > 194 or not text.isprintable():
        size = f'… ({len(text.encode("utf-8", "surrogateescape")):,} bytes)'
        text = text.translate(escaped)
        text = text if len(text) <= 194 else text[:194 - len(size)] + size
    return text

def server_full(conn, addr, watched, said=[0]):  # said: when we last said so, kept between calls
    """Past select()'s wall, select() would raise ValueError on every call: tell this client so
    in one line, close it, and serve the rest."""
    if (watched if os.name == 'nt' else conn.fileno()) < WALL:
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
    """--trace: after each select(), what it reported and what the loop did with each socket. It
    wraps select() and the socket calls: the lesson has no trace calls, and pays nothing."""
    def __init__(self):
        self.names, self.did, self.woke = {}, {}, None  # socket -> ip:port; -> what we did
        for owner, name in ((select, 'select'), (socket.socket, 'accept'),
                            (socket.socket, 'recv'), (socket.socket, 'send')):
            setattr(owner, name, self.wrap(name, getattr(owner, name)))

    def wrap(self, name, real):
        def traced(sock, *args):  # for select(), sock is rlist
            if name == 'select':
                self.say()  # about to wait: the wake-up before this one is over
            result = None  # if the call raises
            try:
                result = real(sock, *args)
                return result
            finally:
                if name == 'select':
                    self.woke = f'select(rlist={len(sock)}, wlist={len(args[0])})', result
                elif name == 'accept' and result:
                    self.names[result[0]] = '%s:%s' % result[1][:2]
                    self.did.setdefault(sock, []).append('accepted ' + self.names[result[0]])
                elif name == 'recv' and result is not None:
                    self.did.setdefault(sock, []).append(f'read {len(result):,}')
                elif name == 'send':
                    sent, size = result or 0, len(args[0])
                    waiting = f', {size - sent:,} waiting' if sent < size else ''
                    self.did.setdefault(sock, []).append(f'sent {sent:,}{waiting}')
        return traced

    def say(self):
        if self.woke and any(self.woke[1]):  # not our own timeout (Windows)
            head, (rl, wl, _) = self.woke
            print(head, '->', '; '.join(f'{kind}: {self.names.get(sk, "server")} -> ' + ', '.join(
                self.did.pop(sk, []) + ['closed'] * (sk.fileno() < 0)) for kind, ready in
                (('readable', rl), ('writable', wl)) for sk in ready), file=sys.stderr, flush=True)
            self.did.clear()
            self.names = {sk: name for sk, name in self.names.items() if sk.fileno() >= 0}

if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; the sockets close as we exit
        print('server stopped', file=sys.stderr)
