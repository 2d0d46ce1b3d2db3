#!/usr/bin/env python3
"""Non-blocking IO in a busy loop, without pause: reply b'my server' to every chunk received."""
import socket
import argparse, contextlib, os, signal, sys, time  # for the plumbing below the lesson


def main():
    args = setup()
    server = socket.socket()
    if os.name != 'nt': server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # fix: README
    server.bind((args.host, args.port))
    server.listen()
    server.setblocking(False)
    con_list = []
    rm_list = []
    # The busy loop is the lesson: it never sleeps, so it burns a core even when idle.
    while True:
        try:
            conn, addr = server.accept()
            conn.setblocking(False)  # fix: accept() hands back a blocking socket on Linux
            con_list.append(conn)
        except BlockingIOError:
            for conn in con_list:
                try:
                    msg = conn.recv(1024)
                    if not msg: raise ConnectionResetError  # fix: b'' is a client that closed
                    conn.send(b'my server')
                except BlockingIOError: pass
                except OSError:  # fix: reset, broken pipe, a laptop gone: end this client only
                    rm_list.append(conn)
                    conn.close()
            for conn in rm_list:
                con_list.remove(conn)
            else:
                rm_list.clear()  # 刪除關閉的client
        except ConnectionError:  # fix: a client gone before we got to it (Windows: reset)
            pass

# ---- Below: what the tutorial does not teach, which the lesson above calls by name. ----------

def setup():
    """Read the command line; lift the file limit; let Ctrl+Break stop us as Ctrl-C does."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1', help='the address to listen on; '
                        '0.0.0.0: every address, for a class (default: %(default)s)')
    parser.add_argument('--port', type=int, default=8800, help='the TCP port (default: 8800)')
    parser.add_argument('--trace', action='store_true',
                        help='say on stderr, once a second, how many passes the loop made')
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

class Trace:
    """--trace: the loop never sleeps, so once a second one line on stderr counts its passes, and
    what the few that found something did. It wraps the socket calls that the loop makes: the
    lesson has no trace calls, and without --trace nothing is wrapped."""
    def __init__(self):
        self.names, self.since = {}, time.monotonic()  # socket -> 'ip:port'
        self.passes, self.data, self.new, self.closed = 0, 0, [], []
        accept, recv, close = socket.socket.accept, socket.socket.recv, socket.socket.close

        def traced_accept(sock):  # once a pass: count it, and once a second, say what it did
            self.passes += 1
            if time.monotonic() - self.since >= 1:
                self.say()
            conn, addr = accept(sock)  # BlockingIOError: no one new
            self.names[conn] = '%s:%s' % addr[:2]
            self.new.append(self.names[conn])
            return conn, addr

        def traced_recv(sock, *args):
            data = recv(sock, *args)  # BlockingIOError: nothing came
            self.data += bool(data)
            return data

        def traced_close(sock):
            if sock in self.names:
                self.closed.append(self.names.pop(sock))
            close(sock)
        socket.socket.accept, socket.socket.recv = traced_accept, traced_recv
        socket.socket.close = traced_close

    def say(self):
        now = time.monotonic()
        new = f' ({", ".join(self.new)})' if self.new else ''
        closed = f' ({", ".join(self.closed)})' if self.closed else ''
        print(f'{now - self.since:.2f} s: {self.passes:,} passes, {self.data} with data, '
              f'{len(self.new)} new{new}, {len(self.closed)} closed{closed}',
              file=sys.stderr, flush=True)
        self.since, self.passes, self.data, self.new, self.closed = now, 0, 0, [], []

if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; the sockets close as we exit
        print('server stopped', file=sys.stderr)
