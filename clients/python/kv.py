#!/usr/bin/env python3
"""The kv example (examples/kv.rs) over a node's attach socket, in Python.

A key-value *master* attaches mount 7:1 to the node it runs beside and serves PUT, GET and
SCAN (a streamed answer); a *client* calls it from any node of the cluster (through that
node's own attach socket).

    python3 kv.py master /run/ringspan/attach.sock
    python3 kv.py put    /run/ringspan/attach.sock fruit/apple red
    python3 kv.py get    /run/ringspan/attach.sock fruit/apple
    python3 kv.py scan   /run/ringspan/attach.sock fruit/
    python3 kv.py demo   /run/ringspan/attach.sock   # master and client in one process

The commands are examples/kv.rs's: protocol 2, PUT 1 ("key=value" -> "ok"), GET 2 ("key" ->
the value, empty if none), SCAN 3 ("prefix" -> one "key=value" message per entry, then an
empty last message). Anything else is refused (REFUSED).
"""

import sys
import threading

import ringspan

PUT, GET, SCAN = (2, 1), (2, 2), (2, 3)
CLUSTER, MOUNT = 7, 1
WAIT = 5.0


class Store:
    """The master's data and its answers to calls."""

    def __init__(self):
        self.data = {}
        self.lock = threading.Lock()

    def handle(self, call):
        """A serve() handler: returns the reply, or answers on the call itself (SCAN)."""
        request = call.payload.decode("utf-8", "replace")
        command = (call.proto, call.command)
        with self.lock:
            if command == PUT:
                key, _, value = request.partition("=")
                self.data[key] = value
                call.finish(b"ok", PUT)
            elif command == GET:
                call.finish(self.data.get(request, "").encode(), GET)
            elif command == SCAN:
                for key in sorted(k for k in self.data if k.startswith(request)):
                    call.send(("%s=%s" % (key, self.data[key])).encode(), SCAN)
                call.finish(b"", SCAN)
            else:
                call.abort(ringspan.REFUSED)


def master(path):
    """Attaches the store's mount and serves it until the link ends."""
    client = ringspan.Client.connect(path)
    client.attach(CLUSTER, MOUNT, "master", b"kv/master")
    print("kv master: serving %d:%d" % (CLUSTER, MOUNT), flush=True)
    client.serve(Store().handle)


def ask(client, command, text):
    """One call to the store; the answer's non-empty payloads, as strings."""
    answers = client.call_messages(CLUSTER, MOUNT, text.encode(), WAIT, command)
    return [a.decode("utf-8", "replace") for a in answers if a]


def connect_client(path):
    client = ringspan.Client.connect(path)
    if not client.wait_for_route(CLUSTER, MOUNT, WAIT):
        client.close()
        sys.exit("kv: no route to %d:%d (is a master attached?)" % (CLUSTER, MOUNT))
    return client


def demo(path):
    """Master and client over two local links of one node."""
    server = ringspan.Client.connect(path)
    server.attach(CLUSTER, MOUNT, "master", b"kv/master")
    threading.Thread(target=server.serve, args=(Store().handle,), daemon=True).start()
    with connect_client(path) as client:
        for route in client.routes():
            print("client sees mount %d:%d (%s, %r)" % (route.cluster, route.mount,
                                                        ringspan.KINDS[route.kind], route.label))
        for key, value in [("fruit/apple", "red"), ("fruit/kiwi", "green"),
                           ("veg/leek", "white")]:
            ask(client, PUT, "%s=%s" % (key, value))
        print("GET fruit/kiwi ->", ask(client, GET, "fruit/kiwi"))
        print("SCAN fruit/    ->", ask(client, SCAN, "fruit/"))
    server.close()


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    mode, path, args = argv[1], argv[2], argv[3:]
    try:
        if mode == "master":
            master(path)
        elif mode == "demo":
            demo(path)
        elif mode in ("put", "get", "scan") and len(args) == (2 if mode == "put" else 1):
            with connect_client(path) as client:
                if mode == "put":
                    print(*ask(client, PUT, "%s=%s" % tuple(args)))
                elif mode == "get":
                    print(*ask(client, GET, args[0]))
                else:
                    print("\n".join(ask(client, SCAN, args[0])))
        else:
            sys.exit(__doc__)
    except (ringspan.RingspanError, OSError) as e:
        sys.exit("kv: %s: %s" % (path, e))


if __name__ == "__main__":
    main(sys.argv)
