#!/usr/bin/env python3
"""The select and selectors sections' client: send each line typed at '>>:' and print the reply."""
import argparse
import codecs
import os
import selectors
import signal
import socket
import sys

# TCP keeps no message boundaries: a reply may come in several pieces (select_server.py answers
# a 5,000-character line in five), so we cannot tell its end from one recv(). A reply is taken as
# complete when nothing more of it arrives for QUIET seconds after its first bytes. On loopback or
# a LAN the pieces of one reply come far closer together than that, and 0.2 s is below what a
# person notices.
QUIET = 0.2
FIRST = 5  # seconds to wait for a reply to begin, so that a silent server cannot hang us


def read_reply(client, decoder):
    """Return the reply as text, '' if none came; exit if the server closed the connection."""
    chunks = []
    client.settimeout(FIRST)
    try:
        while True:
            data = client.recv(4096)
            if not data:
                print(decoder.decode(b''.join(chunks)), end='\n' if chunks else '')
                sys.exit('connection closed by server')
            chunks.append(data)
            client.settimeout(QUIET)
    except socket.timeout:
        pass
    # One decoder for the whole connection: a character split between two replies stays whole.
    return decoder.decode(b''.join(chunks))


def wait_for_keyboard(sel, client, decoder):
    """Return when a line is typed; exit at once if the server closes first (as telnet does)."""
    while True:
        for key, mask in sel.select():
            if key.fileobj is sys.stdin:
                return
        print()  # the socket woke us, not the keyboard: end the prompt's line
        print(read_reply(client, decoder))  # exits if the server closed; else unasked-for data
        print('>>:', end='', flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8800)
    args = parser.parse_args()
    if hasattr(signal, 'SIGBREAK'):  # Windows: Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    # Bytes a terminal sends that are not UTF-8 go to the server as they are; nothing crashes.
    sys.stdin.reconfigure(errors='surrogateescape')
    # Line by line even into a pipe or a file: a client's output is watched as it happens.
    sys.stdout.reconfigure(errors='replace', line_buffering=True)
    # With a pipe as stdin there is no one to prompt: print only the replies.
    interactive = sys.stdin.isatty()

    client = socket.socket()
    try:
        client.connect((args.host, args.port))
    except (OSError, OverflowError) as e:
        client.close()
        sys.exit(f'cannot connect to {args.host}:{args.port}: {getattr(e, "strerror", None) or e}')
    decoder = codecs.getincrementaldecoder('utf-8')('replace')
    sel = selectors.DefaultSelector()
    if interactive and os.name != 'nt':  # Windows cannot select() on the keyboard
        sel.register(sys.stdin, selectors.EVENT_READ)
        sel.register(client, selectors.EVENT_READ)
    try:
        while True:
            if interactive:
                print('>>:', end='', flush=True)
            if sel.get_map():
                wait_for_keyboard(sel, client, decoder)
            msg = input()
            if not msg:
                continue
            client.settimeout(FIRST)
            client.sendall(msg.encode('utf-8', 'surrogateescape'))
            data = read_reply(client, decoder)
            if data:
                print(data)
            else:
                print(f'(no reply within {FIRST} s)', file=sys.stderr)
    except (EOFError, KeyboardInterrupt):  # Ctrl-D or the end of piped input; Ctrl-C
        if interactive:
            print()
    except socket.timeout:  # a line of megabytes: the server waits for us to read its replies
        sys.exit(f'the server stopped taking our line for {FIRST} s '
                 '(it waits for us to read); giving up')
    except OSError:  # reset or broken pipe: the server went away
        sys.exit('connection closed by server')
    finally:
        sel.close()
        client.close()


if __name__ == '__main__':
    main()
