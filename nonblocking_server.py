#!/usr/bin/env python3
"""Non-blocking IO in a busy loop, without pause: reply b'my server' to every chunk received."""
import argparse
import errno
import io
import os
import signal
import socket
import sys
import time


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
    """--trace: the loop never sleeps, so once a second one line counts its passes, and what the
    few that found something did."""

    def __init__(self):
        self.names = {}  # conn -> 'ip:port'
        self.start()

    def start(self):
        self.did = {}  # 'ip:port' -> what we did with it this second
        self.passes = self.data = self.new = self.closed = 0
        self.since = time.monotonic()

    def __call__(self, conn, what, nbytes=0):
        """Count what we did with conn: a line a second can't list every recv."""
        did = self.did.setdefault(self.names[conn], {})
        times, total = did.get(what, (0, 0))
        did[what] = times + 1, total + nbytes

    def tick(self):
        self.passes += 1
        now = time.monotonic()
        if now - self.since < 1:
            return
        line = (f'{now - self.since:.2f} s: {self.passes:,} passes, {self.data} with data, '
                f'{self.new} new connection{"s" * (self.new != 1)}, {self.closed} closed')
        for name, did in self.did.items():
            line += f'; {name}: ' + ', '.join(f'{n} {what} ({total} bytes)' if total else what
                                             for what, (n, total) in did.items())
        print(line, file=sys.stderr)
        self.start()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8800)
    parser.add_argument('--trace', action='store_true',
                        help='say on stderr, once a second, how many passes the loop made')
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
        # listen() with no backlog is short: a burst of connects would wait seconds for retries.
        server.listen(1024)
    except (OSError, OverflowError) as e:
        server.close()
        sys.exit(f'cannot listen on {args.host}:{args.port}: {getattr(e, "strerror", None) or e}')
    server.setblocking(False)
    con_list = []
    rm_list = []
    outbuf = {}  # conn -> the part of a reply the socket could not take yet
    resume_accept = 0  # out of descriptors: when to try accept() again

    try:
        # The busy loop is the lesson: it never sleeps, so it burns a core even when idle.
        while True:
            if trace:
                trace.tick()
            try:
                if time.monotonic() < resume_accept:
                    raise BlockingIOError  # paused: serve the connections we have
                conn, addr = server.accept()
                conn.setblocking(False)  # accept() hands back a blocking socket on Linux
                con_list.append(conn)
                outbuf[conn] = b''
                if trace:
                    trace.names[conn] = '%s:%s' % addr[:2]
                    trace.new += 1
                    trace(conn, 'new')
            except BlockingIOError:
                for conn in con_list:
                    try:
                        if not outbuf[conn]:
                            msg = conn.recv(1024)
                            if not msg:
                                # The client closed. The seed went on replying to it here
                                # until send() raised BrokenPipeError and took the server down.
                                raise ConnectionResetError
                            outbuf[conn] = b'my server'
                            if trace:
                                trace.data += 1
                                trace(conn, 'recv', len(msg))
                        # What the socket can't take now is retried next round, before we
                        # read more: a client that does not read costs us one reply, no more.
                        sent = conn.send(outbuf[conn])
                        if trace:
                            trace(conn, 'sent' if sent == len(outbuf[conn]) else
                                  'partly sent, the rest next pass', sent)
                        outbuf[conn] = outbuf[conn][sent:]
                    except BlockingIOError:
                        pass
                    except OSError:  # reset, broken pipe, timeout: end this client only
                        rm_list.append(conn)
                        conn.close()
                        if trace:
                            trace.closed += 1
                            trace(conn, 'closed')
                            del trace.names[conn]
                for conn in rm_list:
                    con_list.remove(conn)
                    del outbuf[conn]
                else:
                    rm_list.clear()  # 刪除關閉的client
            except ConnectionError:
                pass  # the client gave up (or, on Windows, reset) before we got to it
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                # Like asyncio: pause accepting for a second instead of spinning.
                print(f'accept: {e.strerror}; pausing new connections for 1 s', file=sys.stderr)
                resume_accept = time.monotonic() + 1
    except KeyboardInterrupt:
        print('server stopped', file=sys.stderr)
    finally:
        for conn in con_list:
            conn.close()
        server.close()


if __name__ == '__main__':
    main()
