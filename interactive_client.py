#!/usr/bin/env python3
"""The select and selectors sections' client: send each line typed at '>>:' and print the reply."""
import socket
import argparse, codecs, contextlib, os, selectors, signal, sys  # for the plumbing below


def main():
    args = setup()
    client = socket.socket(socket.AF_INET6 if ':' in args.host else socket.AF_INET)  # fix: IPv6
    with connecting(args):  # fix: no server is one line, not a traceback
        client.connect((args.host, args.port))
    keyboard = Keyboard(client)  # fix: see Keyboard: a server that goes away is noticed at once
    while True:
        keyboard.wait('>>:')
        msg = input()
        if not msg: continue
        # fix: all of the line, even past what one send() takes; bytes that are not UTF-8 as typed
        client.sendall(msg.encode('utf-8', 'surrogateescape'))
        data = read_reply(client)  # fix: a long reply comes in pieces: see read_reply
        print(data)


# ---- Below: what the tutorial does not teach, which the lesson calls by name. ------------------

# TCP keeps no message boundaries: a reply may come in several pieces (select_server.py answers
# a 5,000-character line in five), so we cannot tell its end from one recv(). A reply is taken as
# complete when nothing more of it arrives for QUIET seconds after its first bytes. On loopback or
# a LAN the pieces of one reply come far closer together than that, and 0.2 s is below what a
# person notices.
QUIET = 0.2
FIRST = 5  # seconds to wait for a reply to begin, or for the server to take our line
# One decoder for the whole connection: a character split between two replies prints whole.
DECODER = codecs.getincrementaldecoder('utf-8')('replace')


def setup():
    """Read the command line; set up stdin and stdout; on Windows, let Ctrl+Break stop us."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1',
                        help="the server's address: IPv4, IPv6 or a name (default: %(default)s)")
    parser.add_argument('--port', type=int, default=8800,
                        help="the server's TCP port (default: %(default)s)")
    args = parser.parse_args()
    # Bytes a terminal sends that are not UTF-8 go to the server as they are; nothing crashes.
    sys.stdin.reconfigure(errors='surrogateescape')
    # Line by line even into a pipe or a file: a client's output is watched as it happens.
    sys.stdout.reconfigure(errors='replace', line_buffering=True)
    if os.name == 'nt':  # Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    return args


@contextlib.contextmanager
def connecting(args):
    """No server there: one line and exit code 1, not a traceback."""
    try:
        yield
    except (OSError, OverflowError) as e:
        sys.exit(f'cannot connect to {args.host}:{args.port}: {getattr(e, "strerror", 0) or e}')


def read_reply(client):
    """Return the reply as text, '' if none came; raise ConnectionError if the server closed."""
    chunks = []
    client.settimeout(FIRST)
    try:
        while True:
            data = client.recv(4096)
            if not data:
                print(DECODER.decode(b''.join(chunks)), end='\n' if chunks else '')
                raise ConnectionResetError
            chunks.append(data)
            client.settimeout(QUIET)
    except socket.timeout:
        pass
    finally:
        client.settimeout(FIRST)  # for sendall(): a server that stops taking our line
    if not chunks:
        print(f'(no reply within {FIRST} s)', file=sys.stderr)
    return DECODER.decode(b''.join(chunks))


class Keyboard:
    """Prompt, and wait for a line while watching the socket too, as telnet does: a server that
    goes away is noticed at once, even while we wait. Only at a terminal, and not on Windows,
    which can't select() on the keyboard. With piped input there is no one to prompt."""

    def __init__(self, client):
        self.client, self.sel = client, selectors.DefaultSelector()
        self.interactive = sys.stdin.isatty()
        if self.interactive and os.name != 'nt':
            self.sel.register(sys.stdin, selectors.EVENT_READ)
            self.sel.register(client, selectors.EVENT_READ)

    def wait(self, prompt):
        if self.interactive:
            print(prompt, end='', flush=True)
        while self.sel.get_map():
            for key, mask in self.sel.select():
                if key.fileobj is sys.stdin:
                    return
            print()  # the socket woke us, not the keyboard: end the prompt's line
            print(read_reply(self.client))  # raises if the server closed; else unasked-for data
            print(prompt, end='', flush=True)


def discard_typed_input():
    """Text typed but not sent yet would go to the shell once we exit: drop it."""
    if sys.stdin.isatty() and os.name != 'nt':
        import termios
        termios.tcflush(sys.stdin, termios.TCIFLUSH)


if __name__ == '__main__':
    try:
        main()
    except (EOFError, KeyboardInterrupt):  # Ctrl-D or the end of piped input; Ctrl-C
        if sys.stdin.isatty():
            print()  # so that the shell's prompt starts on a fresh line
    except socket.timeout:  # a line of megabytes: the server waits for us to read its replies
        sys.exit(f'the server stopped taking our line for {FIRST} s '
                 '(it waits for us to read); giving up')
    except ConnectionError:  # reset, broken pipe or closed: the server went away
        discard_typed_input()
        sys.exit('connection closed by server')
