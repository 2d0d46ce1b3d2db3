#!/usr/bin/env python3
"""Multiplexing with selectors (epoll where there is one): reply data.upper() + b'_SB'."""
import argparse
import errno
import selectors
import socket
import sys
import time

try:
    import resource
except ImportError:  # Windows has no resource module
    resource = None


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8800)
    args = parser.parse_args()
    if resource:
        # Each client costs a descriptor: lift the soft limit (often 1024) to the hard one.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # macOS refuses an unlimited hard limit; keep what we have

    sock = socket.socket()
    # Rebind at once after Ctrl-C, while old connections sit in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
        # The seed's listen(5) drops connects in a burst; clients then wait seconds.
        sock.listen(1024)
    except (OSError, OverflowError) as e:
        sock.close()
        sys.exit(f'cannot listen on {args.host}:{args.port}: {getattr(e, "strerror", None) or e}')
    sock.setblocking(False)
    sel = selectors.DefaultSelector()  # 生成select實例對象
    outbuf = {}  # conn -> reply bytes the socket could not take yet
    resume_accept = None  # out of descriptors: when to register sock again

    def close(conn):
        print('closing', conn)
        outbuf.pop(conn, None)
        sel.unregister(conn)  # 取消注冊
        conn.close()  # 關閉連接

    def send(conn, data):
        """Send what the socket takes now; keep the rest and wait until conn is writable."""
        try:
            sent = conn.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            outbuf[conn] = data[sent:]
            # Stop reading from a client that is not reading our replies: memory stays bounded.
            sel.modify(conn, selectors.EVENT_WRITE, write)
        elif conn in outbuf:
            del outbuf[conn]
            sel.modify(conn, selectors.EVENT_READ, read)

    def write(conn, mask):
        try:
            send(conn, outbuf[conn])  # should be ready: select said so
        except OSError:
            close(conn)

    def read(conn, mask):
        try:
            data = conn.recv(1024)  # should be ready: select said so
            if not data:
                close(conn)
                return
            send(conn, data.upper() + b'_SB')
        except OSError:  # reset, broken pipe, timeout: end this client only (not every Exception)
            close(conn)

    def accept(sock, mask):
        nonlocal resume_accept
        try:
            conn, addr = sock.accept()  # should be ready: select said so
        except (BlockingIOError, ConnectionAbortedError):
            return  # the client gave up before we got to it
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            # Like asyncio: pause accepting for a second instead of spinning.
            print(f'accept: {e.strerror}; pausing new connections for 1 s', file=sys.stderr)
            sel.unregister(sock)
            resume_accept = time.monotonic() + 1
            return
        print('-------', conn)
        conn.setblocking(False)  # accept() hands back a blocking socket on Linux
        # 注冊conn,回調 read函數
        sel.register(conn, selectors.EVENT_READ, read)

    # 注冊server事件: 只要來一個鏈接就回調accept
    sel.register(sock, selectors.EVENT_READ, accept)
    try:
        while True:
            if resume_accept and time.monotonic() >= resume_accept:
                sel.register(sock, selectors.EVENT_READ, accept)
                resume_accept = None
            print('wating....')
            # Block with no timeout while idle; wake only to resume accepting.
            events = sel.select(resume_accept and max(0, resume_accept - time.monotonic()))
            for key, mask in events:
                callback = key.data  # accept, read or write
                callback(key.fileobj, mask)
    except KeyboardInterrupt:
        print('server stopped', file=sys.stderr)
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
        sock.close()


if __name__ == '__main__':
    main()
