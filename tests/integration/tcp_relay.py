#!/usr/bin/python3
"""A TCP relay standing in for the network path to one iSCSI portal, so tests can break it.

    tcp_relay.py LISTEN_HOST:PORT TARGET_HOST:PORT

Prints "listening" once it accepts connections. Faults, from the test:
  SIGKILL       the path dies: the kernel closes both ends (restart the relay to heal it)
  SIGUSR1       every connection is reset (RST on both sides); new connections are accepted
  SIGSTOP/CONT  the path freezes and thaws: what was sent meanwhile waits in socket buffers
                and is delivered late, like a stalled network or target process
"""
import selectors
import signal
import socket
import struct
import sys

BUFFER_LIMIT = 1 << 20  # per direction; reading pauses beyond it, like a real window


def split_host_port(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Relay:
    def __init__(self, listen, target):
        self.target = target
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(listen)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.peer = {}     # socket -> the other end of its pair
        self.pending = {}  # socket -> bytes waiting to be written to it
        self.reset_requested = False

    def watch(self, sock):
        events = 0
        peer = self.peer.get(sock)
        if peer is not None and len(self.pending.get(peer, b"")) < BUFFER_LIMIT:
            events |= selectors.EVENT_READ
        if self.pending.get(sock):
            events |= selectors.EVENT_WRITE
        try:
            if events:
                self.selector.modify(sock, events) if sock in self.selector.get_map() else \
                    self.selector.register(sock, events)
            elif sock in self.selector.get_map():
                self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def close_pair(self, sock, reset=False):
        for s in (sock, self.peer.get(sock)):
            if s is None or s not in self.peer:
                continue
            if s.fileno() >= 0 and s in self.selector.get_map():
                self.selector.unregister(s)
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            del self.peer[s]
            self.pending.pop(s, None)

    def accept(self):
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        try:
            server = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        for s in (client, server):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer[client] = server
        self.peer[server] = client
        self.watch(client)
        self.watch(server)

    def readable(self, sock):
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # The far end finished: pass on what it said last (a login reject, say), then close.
            peer = self.peer[sock]
            try:
                peer.settimeout(1)
                peer.sendall(self.pending.get(peer, b""))
            except OSError:
                pass
            return self.close_pair(sock)
        peer = self.peer[sock]
        self.pending[peer] = self.pending.get(peer, b"") + data
        self.watch(peer)
        self.watch(sock)

    def writable(self, sock):
        data = self.pending.get(sock, b"")
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.close_pair(sock)
        self.pending[sock] = data[sent:]
        self.watch(sock)
        self.watch(self.peer[sock])

    def run(self):
        print("listening", flush=True)
        while True:
            if self.reset_requested:
                self.reset_requested = False
                for s in list(self.peer):
                    self.close_pair(s, reset=True)
            for key, events in self.selector.select(timeout=0.05):
                sock = key.fileobj
                if sock is self.listener:
                    self.accept()
                    continue
                if sock not in self.peer:
                    continue
                if events & selectors.EVENT_WRITE:
                    self.writable(sock)
                if sock in self.peer and events & selectors.EVENT_READ:
                    self.readable(sock)


def main():
    relay = Relay(split_host_port(sys.argv[1]), split_host_port(sys.argv[2]))

    def on_reset(signum, frame):
        relay.reset_requested = True

    signal.signal(signal.SIGUSR1, on_reset)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    relay.run()


if __name__ == "__main__":
    main()
