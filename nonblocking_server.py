#!/usr/bin/env python3
"""Non-blocking IO in a busy loop, without pause: reply b'my server' to every chunk received."""
import argparse
import errno
import socket
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8800)
    args = parser.parse_args()

    server = socket.socket()
    # Rebind at once after Ctrl-C, while old connections sit in TIME_WAIT.
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
            try:
                if time.monotonic() < resume_accept:
                    raise BlockingIOError  # paused: serve the connections we have
                conn, addr = server.accept()
                conn.setblocking(False)  # accept() hands back a blocking socket on Linux
                con_list.append(conn)
                outbuf[conn] = b''
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
                        # What the socket can't take now is retried next round, before we
                        # read more: a client that does not read costs us one reply, no more.
                        sent = conn.send(outbuf[conn])
                        outbuf[conn] = outbuf[conn][sent:]
                    except BlockingIOError:
                        pass
                    except OSError:  # reset, broken pipe, timeout: end this client only
                        rm_list.append(conn)
                        conn.close()
                for conn in rm_list:
                    con_list.remove(conn)
                    del outbuf[conn]
                else:
                    rm_list.clear()  # 刪除關閉的client
            except ConnectionAbortedError:
                pass  # the client gave up before we got to it
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
