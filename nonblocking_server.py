#!/usr/bin/env python3
"""Non-blocking IO in a busy loop, without pause: reply b'my server' to every chunk received."""
import socket
import argparse, contextlib, errno, os, signal, sys, time  # for the plumbing below the lesson


def main():
    args, trace = setup()
    server = socket.socket(socket.AF_INET6 if ':' in args.host else socket.AF_INET)  # fix: IPv6
    with listening(server, args):  # fix: restart at once after Ctrl-C; a port in use: one line
        server.bind((args.host, args.port))
        server.listen(1024)  # fix: listen()'s default backlog drops a burst of connects
    server.setblocking(False)
    # fix: the chapter's server said nothing, and looked dead until a client came
    print(f'listening on {args.host}:{args.port}: the loop never sleeps, so a CPU core stays '
          'busy. Ctrl-C stops it.', file=sys.stderr)
    con_list = []
    rm_list = []
    outbuf = {}  # fix: conn -> the part of its reply that the socket could not take yet
    pause = Pause()  # fix: out of descriptors, stop accepting for a second (see Pause)

    # The busy loop is the lesson: it never sleeps, so it burns a core even when idle.
    while True:
        trace.tick()
        try:
            pause.check()  # raises BlockingIOError while paused: serve the connections we have
            conn, addr = server.accept()
            conn.setblocking(False)  # fix: accept() hands back a blocking socket on Linux
            con_list.append(conn)
            outbuf[conn] = b''
            trace.accepted(conn, addr)
        except BlockingIOError:
            for conn in con_list:
                try:
                    if not outbuf[conn]:  # fix: read more only once the last reply is sent
                        msg = conn.recv(1024)
                        if not msg:
                            # fix: the client closed. The chapter went on replying to it here
                            # until send() raised BrokenPipeError and took the server down.
                            raise ConnectionResetError
                        trace.note(conn, 'recv', len(msg))
                        outbuf[conn] = b'my server'
                    # fix: what the socket can't take now is retried on the next pass: a
                    # client that does not read costs us one reply, no more.
                    sent = conn.send(outbuf[conn])
                    trace.note(conn, 'sent' if sent == len(outbuf[conn]) else
                               'partly sent, the rest next pass', sent)
                    outbuf[conn] = outbuf[conn][sent:]
                except BlockingIOError: pass
                except OSError:  # fix: reset, broken pipe, timeout: end this client only
                    rm_list.append(conn)
                    conn.close()
                    trace.closed(conn)
            for conn in rm_list:
                con_list.remove(conn)
                del outbuf[conn]
            else:
                rm_list.clear()  # 刪除關閉的client
        except OSError as e:  # fix: a client gone before we got to it, or out of descriptors
            pause.accept_failed(e)


# ---- Below: what the tutorial does not teach, which the lesson calls by name: the command ----
# ---- line, the output guard, the accept pause, --trace, and Windows. -------------------------

def setup():
    """Read the command line and guard the output; return the arguments and the trace."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1', help='the address to listen on, IPv4 or '
                        'IPv6; 0.0.0.0 or :: for every address (default: %(default)s)')
    parser.add_argument('--port', type=int, default=8800, help='the TCP port (default: 8800)')
    parser.add_argument('--trace', action='store_true',
                        help='say on stderr, once a second, how many passes the loop made')
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
    until = 0

    def check(self):
        if time.monotonic() < self.until:
            raise BlockingIOError  # as if no one were waiting

    def accept_failed(self, e):
        if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            print(f'accept: {e.strerror}; pausing new connections for 1 s', file=sys.stderr)
            self.until = time.monotonic() + 1
        elif not isinstance(e, ConnectionError):  # not just a client gone (Windows: reset)
            raise e


class Trace:
    """--trace: the loop never sleeps, so once a second one line counts its passes, and what the
    few that found something did."""

    def __init__(self, on):
        self.names = {}  # conn -> 'ip:port'
        self.start()
        if not on:  # each trace point is then a call that does nothing
            self.tick = self.accepted = self.note = self.closed = lambda *_: None

    def start(self):
        self.did = {}  # 'ip:port' -> what we did with it this second
        self.passes = self.data = self.new = self.gone = 0
        self.since = time.monotonic()

    def note(self, conn, what, nbytes=0):
        """Count what we did with conn: a line a second can't list every recv."""
        did = self.did.setdefault(self.names[conn], {})
        times, total = did.get(what, (0, 0))
        did[what] = times + 1, total + nbytes
        self.data += what == 'recv'

    def accepted(self, conn, addr):
        self.names[conn] = '%s:%s' % addr[:2]
        self.new += 1
        self.note(conn, 'new')

    def closed(self, conn):
        self.gone += 1
        self.note(conn, 'closed')
        del self.names[conn]

    def tick(self):
        self.passes += 1
        now = time.monotonic()
        if now - self.since < 1:
            return
        line = (f'{now - self.since:.2f} s: {self.passes:,} passes, {self.data} with data, '
                f'{self.new} new connection{"s" * (self.new != 1)}, {self.gone} closed')
        for name, did in self.did.items():
            line += f'; {name}: ' + ', '.join(f'{n} {what} ({total} bytes)' if total else what
                                             for what, (n, total) in did.items())
        print(line, file=sys.stderr)
        self.start()


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; the sockets close as we exit
        print('server stopped', file=sys.stderr)
