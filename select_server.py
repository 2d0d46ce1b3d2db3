#!/usr/bin/env python3
"""Multiplexed IO with select.select(): reply with the received text upper-cased."""
import argparse
import codecs
import errno
import os
import select
import socket
import sys
import time

# select() on Linux and macOS cannot watch a descriptor numbered this or higher.
FD_SETSIZE = 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8800)
    args = parser.parse_args()
    # A learner's terminal may not take every character; never crash on a print.
    sys.stdout.reconfigure(errors='backslashreplace')

    server = socket.socket()
    # Rebind at once after Ctrl-C, while old connections sit in TIME_WAIT.
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((args.host, args.port))
        # The seed's listen(5) drops connects in a burst; clients then wait seconds.
        server.listen(1024)
    except (OSError, OverflowError) as e:
        server.close()
        sys.exit(f'cannot listen on {args.host}:{args.port}: {getattr(e, "strerror", None) or e}')
    server.setblocking(False)  # 設置為非阻塞
    print('server is start ......')

    rlist = [server, ]  # 讀列表,初始只有server
    wlist = []  # 寫列表: only connections whose reply is still waiting
    xlist = []  # 異常列表
    outbuf = {}  # conn -> reply bytes the socket could not take yet
    decoders = {}  # conn -> UTF-8 decoder that keeps a character split between recv()s
    resume_accept = None  # out of descriptors: when to try accept() again

    def close(conn):
        conn.close()
        for waiting in (rlist, wlist):
            if conn in waiting:
                waiting.remove(conn)  # the seed said rlist.remove(sock): no such name
        outbuf.pop(conn, None)
        decoders.pop(conn, None)

    def send(conn, data):
        """Send what the socket takes now; keep the rest and watch conn for writing."""
        try:
            sent = conn.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            outbuf[conn] = data[sent:]
            # Stop reading from a client that is not reading our replies: memory stays bounded.
            if conn in rlist:
                rlist.remove(conn)
                wlist.append(conn)
        elif conn in wlist:
            del outbuf[conn]
            wlist.remove(conn)
            rlist.append(conn)

    try:
        while True:
            if resume_accept and time.monotonic() >= resume_accept:
                rlist.append(server)
                resume_accept = None
            # Block with no timeout while idle; wake only to resume accepting.
            timeout = resume_accept and max(0, resume_accept - time.monotonic())
            rl, wl, xl = select.select(rlist, wlist, xlist, timeout)
            for sk in rl:
                if sk == server:  # 如果是server則建立連接并添加conn到列表
                    try:
                        conn, addr = sk.accept()  # should be ready: select said so
                    except (BlockingIOError, ConnectionAbortedError):
                        continue  # the client gave up before we got to it
                    except OSError as e:
                        if e.errno not in (errno.EMFILE, errno.ENFILE,
                                           errno.ENOBUFS, errno.ENOMEM):
                            raise
                        # Like asyncio: pause accepting for a second instead of spinning.
                        print(f'accept: {e.strerror}; pausing new connections for 1 s',
                              file=sys.stderr)
                        rlist.remove(server)
                        resume_accept = time.monotonic() + 1
                        continue
                    # select() would raise ValueError on every call: refuse this one, serve the rest.
                    if os.name != 'nt' and conn.fileno() >= FD_SETSIZE:
                        print(f'refusing {addr}: descriptor {conn.fileno()} '
                              'is past what select() can watch', file=sys.stderr)
                        conn.close()
                        continue
                    conn.setblocking(False)  # accept() hands back a blocking socket on Linux
                    decoders[conn] = codecs.getincrementaldecoder('utf-8')('surrogateescape')
                    rlist.append(conn)
                else:  # 如果是conn,則收發數據
                    conn = sk
                    try:
                        data = conn.recv(1024)
                        # Decode incrementally: recv() may end inside a character.
                        # Bytes that are not UTF-8 pass through unchanged (surrogateescape),
                        # and at EOF (final) an unfinished character is answered, not lost.
                        msg = decoders[conn].decode(data, final=not data)
                        if not data and not msg:  # 客戶端關閉則刪除conn(linux)
                            close(conn)
                            continue
                        if not msg:
                            continue  # only part of a character so far
                        # The seed's print('接收消息:', msg), as one string: the same line, half the
                        # writes. The print is a large part of what each message costs this server.
                        print(f'接收消息: {msg}')
                        send(conn, msg.upper().encode('utf-8', 'surrogateescape'))
                    except OSError:  # reset, broken pipe, timeout: end this client only
                        close(conn)
            for conn in wl:
                try:
                    send(conn, outbuf[conn])  # should be ready: select said so
                except OSError:
                    close(conn)
    except KeyboardInterrupt:
        print('server stopped', file=sys.stderr)
    finally:
        for sk in rlist + wlist:
            sk.close()
        server.close()


if __name__ == '__main__':
    main()
