"""Tests of ringspan.py: golden bytes from docs/PROTOCOL.md, and message flows against a fake
node on a socketpair.

The golden tests read the document's ```hex name=...``` blocks (as tests/sim/protocol_doc
reads them for the Rust code), so the client and the document cannot drift apart.

    python3 -m unittest discover clients/python
"""

import concurrent.futures
import os
import re
import select
import socket
import struct
import threading
import time
import unittest

import ringspan as rs
from ringspan import (ABORT, CREATE, DELETE, REPLY, REV_PARENT, Message)

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "PROTOCOL.md")


def doc_blocks(path=DOC):
    """Every ```hex name=NAME``` block of the document: name -> bytes. A line is
    ``[offset:] byte* [# comment]``; the offset is checked against the bytes before it."""
    blocks = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"\s*```hex\b(.*)$", lines[i])
        i += 1
        if not fence:
            continue
        name = re.search(r"name=(\S+)", fence.group(1)).group(1)
        data = bytearray()
        while not lines[i].lstrip().startswith("```"):
            code = lines[i].split("#", 1)[0].split()
            if code and code[0].endswith(":"):
                assert int(code[0][:-1], 16) == len(data), (name, lines[i])
                code = code[1:]
            data += bytes(int(token, 16) for token in code)
            i += 1
        i += 1
        assert name not in blocks, name
        blocks[name] = bytes(data)
    return blocks


BLOCKS = doc_blocks()


def block(name):
    return BLOCKS[name]


# --- Golden bytes --------------------------------------------------------------------------

class DocumentBlocks(unittest.TestCase):
    def test_the_document_has_the_blocks_we_use(self):
        for name in ["record-i2r-0-plaintext", "record-i2r-0", "record-i2r-1",
                     "message-forced-reply", "hello-client", "advert-example", "call-create",
                     "local-record", "attach-create", "attach-answer", "attach-call-create",
                     "attach-call-reply", "attach-detach", "attach-detach-answer",
                     "attach-record"]:
            self.assertIn(name, BLOCKS)


class Records(unittest.TestCase):
    """Section 4, framing only: the header is the same sealed or plain."""

    def test_plain_record_header_is_the_documents(self):
        for plain, sealed, phase in [("record-i2r-0-plaintext", "record-i2r-0", 0),
                                     ("record-r2i-0-plaintext", "record-r2i-0", 0),
                                     ("record-i2r-1-plaintext", "record-i2r-1", 1)]:
            record = rs.encode_record(block(plain), phase)
            self.assertEqual(record[:8], block(sealed)[:8], sealed)
            self.assertEqual(len(record), len(block(sealed)))
            self.assertEqual(record[8:-16], block(plain))
            self.assertEqual(record[-16:], bytes(16))
            self.assertEqual(rs.RecordReader().feed(record), [block(plain)])

    def test_local_records_are_the_documents(self):
        # Section 10: a local link's records, plaintext as it is and a zero tag.
        for plain, record in [("message-ping", "local-record"),
                              ("attach-create", "attach-record")]:
            self.assertEqual(rs.encode_record(block(plain)), block(record), record)
            self.assertEqual(rs.RecordReader().feed(block(record)), [block(plain)], record)

    def test_smallest_record_is_56_bytes(self):
        self.assertEqual(len(rs.encode_record(block("message-ping"))), 56)

    def test_lengths_refused_before_anything_else(self):
        # 4.7: lengths 0, 15, 16, 47, 65 and 65,560 are refused; 65,552 is the largest valid.
        for length in [0, 15, 16, 47, 65, 65560]:
            header = struct.pack("<IB3x", length, 0)
            with self.assertRaises(rs.ProtocolError, msg=length):
                rs.RecordReader().feed(header)
        self.assertEqual(rs.check_record_header(struct.pack("<IB3x", 65552, 0)), 65560)
        for at, value in [(4, 2), (4, 0x80), (5, 1), (7, 1)]:
            header = bytearray(block("record-i2r-0")[:8])
            header[at] = value
            with self.assertRaises(rs.ProtocolError):
                rs.check_record_header(bytes(header))

    def test_records_split_anywhere_and_batched(self):
        stream = rs.encode_record(block("message-ping")) + rs.encode_record(
            block("record-i2r-0-plaintext"), 1)
        reader, out = rs.RecordReader(), []
        for i in range(len(stream)):
            out += reader.feed(stream[i:i + 1])
        self.assertEqual(out, [block("message-ping"), block("record-i2r-0-plaintext")])
        self.assertEqual(reader.pending(), 0)

    def test_a_sealed_record_is_not_taken_for_a_plain_one(self):
        with self.assertRaises(rs.ProtocolError):
            rs.RecordReader().feed(block("record-i2r-0"))


class Messages(unittest.TestCase):
    """Section 5's examples, both ways."""

    CASES = {
        "message-forced-reply": Message(CREATE | DELETE | REPLY | ABORT, 2, 0x0304,
                                        0x0102030405060708, 0, rs.LOST_LINK, b"hello"),
        "message-stacked-create": Message(CREATE | REV_PARENT, 0, 1, 9, 7, 0, b""),
        "message-request": Message(CREATE | DELETE, 7, 1, 1, 0, 0, b"get k"),
        "message-reply": Message(REPLY | CREATE | DELETE, 7, 1, 1, 0, 0, b"v"),
        "message-ping": Message(0, 0, 1, 0, 0, 0, b""),
        "message-close-shutdown": Message(0, 0, 2, 0, 0, rs.SHUTDOWN, b""),
        "call-create": Message(CREATE | DELETE | REV_PARENT, 1, 1, 2, 2, 0, b"ping"),
        "call-reply": Message(REPLY | CREATE | DELETE, 1, 1, 2, 0, 0, b"ping"),
        "attach-answer": Message(REPLY | CREATE, 0, 8, 2, 0, 0, b""),
        "attach-call-create": Message(CREATE | DELETE | REV_PARENT, 1, 1, 3, 2, 0, b"ping"),
        "attach-call-reply": Message(REPLY | CREATE | DELETE, 1, 1, 3, 0, 0, b"ping"),
        "attach-detach": Message(DELETE, 0, 8, 2, 0, 0, b""),
        "attach-detach-answer": Message(REPLY | DELETE, 0, 8, 2, 0, 0, b""),
    }

    def test_examples_encode_and_decode(self):
        for name, message in self.CASES.items():
            self.assertEqual(rs.encode_message(message), block(name), name)
            self.assertEqual(rs.decode_messages(block(name)), [message], name)

    def test_two_messages_in_one_plaintext(self):
        both = block("message-forced-reply") + block("message-stacked-create")
        self.assertEqual(len(rs.decode_messages(both)), 2)

    def test_the_documents_refusals(self):
        # 5.9: flags 0x2f, byte 31 set, padding byte 39 set.
        for at, value in [(0, 0x2F), (31, 1), (39, 1)]:
            data = bytearray(block("message-forced-reply"))
            data[at] = value
            with self.assertRaises(rs.ProtocolError, msg=at):
                rs.decode_messages(bytes(data))

    def test_rules_of_5_8(self):
        bad = [Message(CREATE, 0, 1, 0, 0),               # one-way with flags
               Message(0, 0, 1, 0, 5),                    # one-way with a parent
               Message(REPLY | CREATE, 0, 1, 3, 5),       # parent on a reply
               Message(CREATE | REV_PARENT, 0, 1, 3, 0),  # REV_PARENT without a parent
               Message(DELETE, 0, 1, 3, 5)]               # parent on a DELETE
        for m in bad:
            with self.assertRaises(rs.ProtocolError, msg=m):
                rs.decode_messages(rs.encode_message(m))
        with self.assertRaises(rs.ProtocolError):
            rs.decode_messages(block("message-request")[:-8])   # payload truncated
        with self.assertRaises(rs.ProtocolError):
            rs.decode_messages(block("message-ping") + bytes(8))  # header truncated


class Payloads(unittest.TestCase):
    def test_hello_examples(self):
        self.assertEqual(rs.encode_hello(rs.ROLE_CLIENT, 0x11, [7, 9], 5000),
                         block("hello-client"))
        self.assertEqual(rs.encode_hello(rs.ROLE_ROUTER, 0x7F, None, 0x01020304),
                         block("hello-router"))
        self.assertEqual(rs.encode_hello(rs.ROLE_ROUTER, 0x7F, None, 5000, "core-1"),
                         block("hello-named"))
        hello = rs.decode_hello(block("hello-client"))
        self.assertEqual(hello, rs.Hello(2, 0x11, False, [7, 9], 5000, ""))
        self.assertEqual(rs.decode_hello(block("hello-named")).name, "core-1")

    def test_hello_in_the_documents_first_record(self):
        # 4.7: a router's hello, wanting everything, 5 s, in a LINK_CONN CREATE, msgid 1.
        (m,) = rs.decode_messages(block("record-i2r-0-plaintext"))
        self.assertEqual((m.flags, (m.proto, m.command), m.msgid), (CREATE, rs.LINK_CONN, 1))
        self.assertEqual(m.payload, rs.encode_hello(rs.ROLE_ROUTER, 0x7F, None, 5000))

    def test_hello_refusals(self):
        good = block("hello-client")
        for at, value in [(0, 3), (1, 0x80), (2, 2), (6, 1), (12, 1)]:
            data = bytearray(good)
            data[at] = value
            with self.assertRaises(rs.ProtocolError, msg=at):
                rs.decode_hello(bytes(data))
        with self.assertRaises(rs.ProtocolError):
            rs.decode_hello(good[:-1])
        with self.assertRaises(rs.ProtocolError):    # idle timeout 0
            rs.decode_hello(good[:8] + bytes(4) + good[12:])
        with self.assertRaises(rs.ProtocolError):    # a control character in the name
            rs.decode_hello(block("hello-named")[:-1] + b"\x07")

    def test_advert_example(self):
        advert = rs.Advert(0x0102, 0x0A0B, 0xFEED, 0x1234, 3, 2, b"pfs")
        self.assertEqual(rs.encode_advert(advert), block("advert-example"))
        self.assertEqual(rs.decode_advert(block("advert-example")), advert)
        # The same advertisement inside section 8.8's span.
        (span,) = rs.decode_messages(block("call-span"))
        self.assertEqual((span.flags, (span.proto, span.command), span.msgid),
                         (CREATE, rs.LINK_SPAN, 2))
        self.assertEqual(rs.decode_advert(span.payload), advert)

    def test_advert_refusals(self):
        good = block("advert-example")
        for data in [good[:-1], good + b"x", good[:50] + b"\xff\xff" + good[52:],
                     good[:52] + b"\x07" + good[53:], good[:54] + b"\x01" + good[55:]]:
            with self.assertRaises(rs.ProtocolError):
                rs.decode_advert(data)

    def test_attach_request(self):
        # Section 8.11's attach-create: the mount of 8.3 (cluster 0x0102, mount 0x0a0b,
        # soft-master, label "pfs"), the application's msgid 2.
        (m,) = rs.decode_messages(block("attach-create"))
        self.assertEqual((m.flags, (m.proto, m.command), m.msgid, m.parent, m.error),
                         (CREATE, rs.LINK_ATTACH, 2, 0, 0))
        payload = m.payload
        self.assertEqual(rs.encode_attach(0x0102, 0x0A0B, "soft-master", b"pfs"), payload)
        self.assertEqual(rs.decode_attach(payload), (0x0102, 0x0A0B, 2, b"pfs"))
        # A client kind, a label too long, a label length not the payload's, a reserved byte.
        for at, value in [(32, 5), (33, 65), (33, 2), (33, 4), (37, 1)]:
            data = bytearray(payload)
            data[at] = value
            with self.assertRaises(rs.ProtocolError, msg=at):
                rs.decode_attach(bytes(data))
        with self.assertRaises(ValueError):
            rs.encode_attach(1, 2, "client")
        with self.assertRaises(ValueError):
            rs.encode_attach(1, 2, 0, b"x" * 65)

    def test_error_names(self):
        self.assertEqual(rs.error_name(2), "NO_ROUTE")
        self.assertEqual(rs.error_name(0x10005), "APPLICATION+5")
        self.assertEqual(rs.error_name(77), "UNASSIGNED(77)")


# --- A fake node on a socketpair -----------------------------------------------------------

class FakeNode:
    """The node's end of a local link, driven by the test one message at a time."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(5)
        self.reader = rs.RecordReader()
        self.inbox = []
        self.next_msgid = 1

    def send(self, *messages):
        self.sock.sendall(rs.encode_record(b"".join(rs.encode_message(m) for m in messages)))

    def open(self, command, payload=b"", flags=CREATE, parent=0):
        """Opens a transaction of the node's; returns its msgid."""
        msgid = self.next_msgid
        self.next_msgid += 1
        self.send(Message(flags, command[0], command[1], msgid, parent, 0, payload))
        return msgid

    def recv(self, skip_pings=True, timeout=5):
        """The client's next message (keepalives skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            while not self.inbox:
                if time.monotonic() > deadline:
                    raise TimeoutError("no message from the client")
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError("the client closed the link")
                for plain in self.reader.feed(data):
                    self.inbox += rs.decode_messages(plain)
            m = self.inbox.pop(0)
            if not (skip_pings and m.msgid == 0 and (m.proto, m.command) == rs.LINK_PING):
                return m


def hello(role=rs.ROLE_ROUTER, idle_ms=5000):
    return rs.encode_hello(role, rs.KINDS_ALL, None, idle_ms)


def advert(cluster, mount, label=b"m", seqno=1, kind=0):
    return rs.encode_advert(rs.Advert(cluster, mount, 0xFEED, seqno, 0, kind, label))


class FakeNodeTest(unittest.TestCase):
    """A client connected to a fake node whose hello (its msgid 1) has been sent."""

    def setUp(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.node = FakeNode(theirs)
        self.pool = concurrent.futures.ThreadPoolExecutor(4)
        self.node.open(rs.LINK_CONN, hello())              # the node's msgid 1
        self.client = rs.Client.connect(ours, timeout=5)

    def tearDown(self):
        self.client.close()
        self.node.sock.close()
        self.pool.shutdown(wait=True)

    def later(self, fn, *args, **kwargs):
        return self.pool.submit(fn, *args, **kwargs)

    def hello_sent(self):
        m = self.node.recv()
        self.assertEqual((m.flags, (m.proto, m.command), m.msgid, m.parent),
                         (CREATE, rs.LINK_CONN, 1, 0))
        return rs.decode_hello(m.payload)


class Flows(FakeNodeTest):
    """Message flows at the transaction level, against a fake node."""

    def test_hello(self):
        sent = self.hello_sent()
        self.assertEqual((sent.role, sent.kinds, sent.all_clusters, sent.clusters),
                         (rs.ROLE_CLIENT, 0x7F, True, []))
        self.assertEqual(self.client.node_hello.role, rs.ROLE_ROUTER)

    def test_routes_follow_spans(self):
        self.hello_sent()
        span = self.node.open(rs.LINK_SPAN, advert(7, 1, b"kv"))
        self.node.open(rs.LINK_SPAN, advert(7, 2, b"other", kind=4))
        self.assertTrue(self.client.wait_for_route(7, 2, 2))
        self.assertEqual(self.client.routes(), [rs.Route(7, 1, 0, b"kv"),
                                                rs.Route(7, 2, 4, b"other")])
        # An update, then a retraction: the client answers the DELETE with its own.
        self.node.send(Message(0, 0, 4, span, 0, 0, advert(7, 1, b"kv2", seqno=2)))
        self.node.send(Message(DELETE, 0, 4, span, 0, 0, b""))
        m = self.node.recv()
        self.assertEqual((m.flags, m.msgid, (m.proto, m.command)),
                         (REPLY | CREATE | DELETE, span, rs.LINK_SPAN))
        self.assertEqual(self.client.routes(), [rs.Route(7, 2, 4, b"other")])

    def test_call_is_the_documents(self):
        # Section 8.8: the node's hello is its msgid 1, its span msgid 2; the client's hello
        # is its msgid 1, so its call is msgid 2: the very bytes of call-create.
        self.hello_sent()
        self.node.open(rs.LINK_SPAN, advert(0x0102, 0x0A0B, b"pfs"))
        self.assertTrue(self.client.wait_for_route(0x0102, 0x0A0B, 2))
        reply = self.later(self.client.call, 0x0102, 0x0A0B, b"ping", 5)
        self.assertEqual(rs.encode_message(self.node.recv()), block("call-create"))
        self.node.sock.sendall(rs.encode_record(block("call-reply")))
        self.assertEqual(reply.result(5), b"ping")

    def test_attach_is_the_documents(self):
        # Section 8.11's example, the client in A's place: its hello is its msgid 1, so its
        # attach is msgid 2; the node's span for the mount is its msgid 2, its call msgid 3.
        self.hello_sent()
        attached = self.later(self.client.attach, 0x0102, 0x0A0B, "soft-master", b"pfs")
        self.assertEqual(rs.encode_message(self.node.recv()), block("attach-create"))
        span = self.node.open(rs.LINK_SPAN, advert(0x0102, 0x0A0B, b"pfs", kind=2))
        self.node.sock.sendall(rs.encode_record(block("attach-answer")))
        attached.result(5)
        self.assertEqual(self.client.attached(), [(0x0102, 0x0A0B)])
        self.node.sock.sendall(rs.encode_record(block("attach-call-create")))
        self.client.serve(lambda c: c.payload, timeout=0.3)
        self.assertEqual(rs.encode_message(self.node.recv()), block("attach-call-reply"))
        detached = self.later(self.client.detach, 0x0102, 0x0A0B)
        self.assertEqual(rs.encode_message(self.node.recv()), block("attach-detach"))
        # The node retracts its span, then answers; the client answers the retraction.
        self.node.send(Message(DELETE, 0, 4, span, 0, 0, b""))
        self.node.sock.sendall(rs.encode_record(block("attach-detach-answer")))
        detached.result(5)
        m = self.node.recv()
        self.assertEqual((m.flags, m.msgid, (m.proto, m.command)),
                         (REPLY | CREATE | DELETE, span, rs.LINK_SPAN))
        self.assertEqual(self.client.attached(), [])
        self.assertEqual(self.client.routes(), [])

    def test_attach_serve_detach(self):
        self.hello_sent()
        attached = self.later(self.client.attach, 7, 1, "master", b"kv/master")
        m = self.node.recv()
        self.assertEqual((m.flags, (m.proto, m.command), m.msgid, m.parent),
                         (CREATE, rs.LINK_ATTACH, 2, 0))
        self.assertEqual(rs.decode_attach(m.payload), (7, 1, 0, b"kv/master"))
        self.node.send(Message(REPLY | CREATE, 0, 8, 2, 0, 0, b""))
        attached.result(5)
        self.assertEqual(self.client.attached(), [(7, 1)])
        # A call opened inside the LINK_ATTACH transaction.
        call = self.node.open((2, 2), b"key", CREATE | DELETE | REV_PARENT, parent=2)
        self.client.serve(lambda c: b"value:" + c.payload, timeout=0.3)
        m = self.node.recv()
        self.assertEqual(m, Message(REPLY | CREATE | DELETE, 2, 2, call, 0, 0, b"value:key"))
        # A streamed answer from a handler using the call's methods.
        call2 = self.node.open((2, 3), b"scan", CREATE | DELETE | REV_PARENT, parent=2)

        def stream(c):
            c.send(b"a")
            c.send(b"b")
            c.finish(b"", error=0)
        self.client.serve(stream, timeout=0.5)
        got = [self.node.recv() for _ in range(3)]
        self.assertEqual([(m.flags, m.msgid, m.payload) for m in got],
                         [(REPLY | CREATE, call2, b"a"), (REPLY, call2, b"b"),
                          (REPLY | DELETE, call2, b"")])
        # Detach: our DELETE, the node's DELETE.
        detached = self.later(self.client.detach, 7, 1)
        m = self.node.recv()
        self.assertEqual((m.flags, m.msgid, (m.proto, m.command)), (DELETE, 2, rs.LINK_ATTACH))
        self.node.send(Message(REPLY | DELETE, 0, 8, 2, 0, 0, b""))
        detached.result(5)
        self.assertEqual(self.client.attached(), [])

    def test_handler_errors_become_forced_closes(self):
        self.hello_sent()
        attached = self.later(self.client.attach, 7, 1)
        self.node.recv()
        self.node.send(Message(REPLY | CREATE, 0, 8, 2, 0, 0, b""))
        attached.result(5)
        call = self.node.open((2, 9), b"?", CREATE | DELETE | REV_PARENT, parent=2)

        def refuse(c):
            raise rs.TransactionError(rs.REFUSED)
        self.client.serve(refuse, timeout=0.5)
        m = self.node.recv()
        self.assertEqual((m.flags, m.msgid, m.error, (m.proto, m.command)),
                         (REPLY | CREATE | ABORT | DELETE, call, rs.REFUSED, (2, 9)))

    def test_attach_refused(self):
        self.hello_sent()
        attached = self.later(self.client.attach, 7, 1)
        self.node.recv()
        self.node.send(Message(REPLY | CREATE | ABORT | DELETE, 0, 8, 2, 0, rs.REFUSED, b""))
        with self.assertRaises(rs.TransactionError) as caught:
            attached.result(5)
        self.assertEqual(caught.exception.name, "REFUSED")
        # Our direction was open: the client answers the forced close at once (6.5).
        m = self.node.recv()
        self.assertEqual((m.flags, m.msgid, m.error), (DELETE, 2, rs.REFUSED))

    def test_call_errors(self):
        self.hello_sent()
        with self.assertRaises(rs.TransactionError) as caught:
            self.client.call(9, 9, b"x")
        self.assertEqual(caught.exception.code, rs.NO_ROUTE)
        span = self.node.open(rs.LINK_SPAN, advert(7, 1))
        self.assertTrue(self.client.wait_for_route(7, 1, 2))
        # The node forces the call closed: its code is raised.
        reply = self.later(self.client.call, 7, 1, b"x", 5)
        m = self.node.recv()
        self.assertEqual((m.flags, m.parent), (CREATE | DELETE | REV_PARENT, span))
        self.node.send(Message(REPLY | CREATE | ABORT | DELETE, 1, 1, m.msgid, 0,
                               rs.NO_ROUTE, b""))
        with self.assertRaises(rs.TransactionError) as caught:
            reply.result(5)
        self.assertEqual(caught.exception.name, "NO_ROUTE")
        # No answer in time: the client forces the call closed.
        with self.assertRaises(rs.CallTimeout):
            self.client.call(7, 1, b"slow", timeout=0.2)
        m = self.node.recv()
        forced = self.node.recv()
        self.assertEqual((forced.flags, forced.msgid, forced.error),
                         (ABORT | DELETE, m.msgid, rs.ABORTED))
        # A late answer to it, then a forced close crossing ours: both taken quietly.
        self.node.send(Message(REPLY | CREATE | DELETE, 1, 1, m.msgid, 0, 0, b"late"),
                       Message(REPLY | ABORT | DELETE, 1, 1, m.msgid, 0, rs.ABORTED, b""))
        self.assertIsNone(self.client.closed)
        self.assertEqual(self.client.routes(), [rs.Route(7, 1, 0, b"m")])

    def test_streamed_reply(self):
        self.hello_sent()
        self.node.open(rs.LINK_SPAN, advert(7, 1))
        self.assertTrue(self.client.wait_for_route(7, 1, 2))
        reply = self.later(self.client.call_messages, 7, 1, b"scan", 5)
        m = self.node.recv()
        self.node.send(Message(REPLY | CREATE, 1, 1, m.msgid, 0, 0, b"a=1"),
                       Message(REPLY, 1, 1, m.msgid, 0, 0, b"b=2"))
        self.node.send(Message(REPLY | DELETE, 1, 1, m.msgid, 0, 0, b""))
        self.assertEqual(reply.result(5), [b"a=1", b"b=2"])

    def test_link_close_ends_pending_calls(self):
        self.hello_sent()
        self.node.open(rs.LINK_SPAN, advert(7, 1))
        self.assertTrue(self.client.wait_for_route(7, 1, 2))
        reply = self.later(self.client.call, 7, 1, b"x", 5)
        self.node.recv()
        self.node.send(Message(0, 0, 1, 0, 0, 0, b"anything"),     # a ping: nothing answers
                       Message(0, 0, 2, 0, 0, rs.SHUTDOWN, b""))     # the close notice
        with self.assertRaises(rs.TransactionError) as caught:
            reply.result(5)
        self.assertEqual(caught.exception.code, rs.LOST_LINK)
        self.assertIn("SHUTDOWN", str(self.client.closed))

    def test_node_children_we_do_not_serve_are_refused_alone(self):
        self.hello_sent()
        # Under our LINK_CONN, and a top-level command we do not know.
        a = self.node.open((5, 1), b"", CREATE | REV_PARENT, parent=1)
        b = self.node.open((5, 1), b"", CREATE | DELETE)
        for msgid in (a, b):
            m = self.node.recv()
            self.assertEqual((m.flags, m.msgid, m.error, (m.proto, m.command)),
                             (REPLY | CREATE | ABORT | DELETE, msgid, rs.REFUSED, (5, 1)))
        self.node.send(Message(DELETE, 5, 1, a, 0, rs.REFUSED, b""))
        self.assertIsNone(self.client.closed)

    def test_keepalive_at_a_third_of_the_nodes_idle_timeout(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        node = FakeNode(theirs)
        node.open(rs.LINK_CONN, hello(idle_ms=90))
        client = rs.Client.connect(ours, timeout=5)
        try:
            node.recv()
            start = time.monotonic()
            m = node.recv(skip_pings=False)
            self.assertEqual((m.msgid, (m.proto, m.command)), (0, rs.LINK_PING))
            self.assertLess(time.monotonic() - start, 1.0)
        finally:
            client.close()
            theirs.close()


class Edges(FakeNodeTest):
    """Crossings and bounds."""

    def attach(self, **options):
        self.hello_sent()
        attached = self.later(self.client.attach, 7, 1)
        self.node.recv()
        self.node.send(Message(REPLY | CREATE, 0, 8, 2, 0, 0, b""))
        attached.result(5)

    def test_a_call_crossing_our_detach_is_refused(self):
        self.attach()
        detached = self.later(self.client.detach, 7, 1)
        self.assertEqual(self.node.recv().flags, DELETE)
        # The node opened a call before it saw our DELETE; then it answers the DELETE.
        call = self.node.open((1, 1), b"x", CREATE | DELETE | REV_PARENT, parent=2)
        self.node.send(Message(REPLY | DELETE, 0, 8, 2, 0, 0, b""))
        m = self.node.recv()
        self.assertEqual((m.flags, m.msgid, m.error),
                         (REPLY | CREATE | ABORT | DELETE, call, rs.REFUSED))
        detached.result(5)

    def test_calls_waiting_for_serve_are_bounded(self):
        self.client._max_pending = 2
        self.attach()
        calls = [self.node.open((1, 1), b"%d" % i, CREATE | DELETE | REV_PARENT, parent=2)
                 for i in range(3)]
        m = self.node.recv()
        self.assertEqual((m.flags, m.msgid, m.error),
                         (REPLY | CREATE | ABORT | DELETE, calls[2], rs.LIMIT_REACHED))
        self.client.serve(lambda c: c.payload, timeout=0.2)
        self.assertEqual([self.node.recv().payload for _ in range(2)], [b"0", b"1"])

    def test_a_caller_forcing_the_call_while_the_handler_works(self):
        self.attach()
        call = self.node.open((1, 1), b"x", CREATE | REV_PARENT, parent=2)
        self.node.send(Message(ABORT | DELETE, 1, 1, call, 0, rs.ABORTED, b""))
        # The client answers at once (6.5), before any handler runs.
        m = self.node.recv()
        self.assertEqual((m.flags, m.msgid, m.error),
                         (REPLY | CREATE | DELETE, call, rs.ABORTED))
        handled = []
        self.client.serve(handled.append, timeout=0.2)
        self.assertEqual(handled, [], "a call already over is not handed to the handler")
        self.node.sock.settimeout(0.3)
        with self.assertRaises((TimeoutError, socket.timeout)):
            self.node.recv(timeout=0.3)

    def test_long_payloads_go_as_several_messages(self):
        self.hello_sent()
        span = self.node.open(rs.LINK_SPAN, advert(7, 1))
        self.assertTrue(self.client.wait_for_route(7, 1, 2))
        big = bytes(range(256)) * 300          # 76,800 bytes: two messages
        reply = self.later(self.client.call, 7, 1, big, 5)
        first, second = self.node.recv(), self.node.recv()
        self.assertEqual((first.flags, first.parent, len(first.payload)),
                         (CREATE | REV_PARENT, span, rs.MESSAGE_PAYLOAD_MAX))
        self.assertEqual((second.flags, second.parent), (DELETE, 0))
        self.assertEqual(first.payload + second.payload, big)
        self.node.send(Message(REPLY | CREATE | DELETE, 1, 1, first.msgid, 0, 0, b"ok"))
        self.assertEqual(reply.result(5), b"ok")

    def test_replies_are_bounded(self):
        self.client._max_reply = 10
        self.hello_sent()
        self.node.open(rs.LINK_SPAN, advert(7, 1))
        self.assertTrue(self.client.wait_for_route(7, 1, 2))
        reply = self.later(self.client.call, 7, 1, b"x", 5)
        m = self.node.recv()
        self.node.send(Message(REPLY | CREATE, 1, 1, m.msgid, 0, 0, b"0123456789abc"))
        forced = self.node.recv()
        self.assertEqual((forced.flags, forced.error), (ABORT | DELETE, rs.LIMIT_REACHED))
        self.node.send(Message(REPLY | DELETE, 1, 1, m.msgid, 0, rs.LIMIT_REACHED, b""))
        with self.assertRaises(rs.TransactionError) as caught:
            reply.result(5)
        self.assertEqual(caught.exception.code, rs.LIMIT_REACHED)


class KvMaster(FakeNodeTest):
    """kv.py's master behind the fake node: the node opens calls in its LINK_ATTACH."""

    def test_put_get_scan(self):
        import kv
        self.hello_sent()
        attached = self.later(self.client.attach, kv.CLUSTER, kv.MOUNT, "master", b"kv/master")
        self.node.recv()
        self.node.send(Message(REPLY | CREATE, 0, 8, 2, 0, 0, b""))
        attached.result(5)
        serving = self.later(self.client.serve, kv.Store().handle)

        def ask(command, text):
            msgid = self.node.open(command, text, CREATE | DELETE | REV_PARENT, parent=2)
            out = []
            while True:
                m = self.node.recv()
                self.assertEqual((m.msgid, (m.proto, m.command), m.error),
                                 (msgid, command, 0))
                out.append(m.payload)
                if m.flags & DELETE:
                    return out
        self.assertEqual(ask(kv.PUT, b"fruit/kiwi=green"), [b"ok"])
        self.assertEqual(ask(kv.PUT, b"fruit/apple=red"), [b"ok"])
        self.assertEqual(ask(kv.GET, b"fruit/kiwi"), [b"green"])
        self.assertEqual(ask(kv.SCAN, b"fruit/"), [b"fruit/apple=red", b"fruit/kiwi=green", b""])
        msgid = self.node.open((2, 9), b"", CREATE | DELETE | REV_PARENT, parent=2)
        m = self.node.recv()
        self.assertEqual((m.flags, m.msgid, m.error),
                         (REPLY | CREATE | ABORT | DELETE, msgid, rs.REFUSED))
        self.client.close()
        self.assertIsNone(serving.result(5))


class FakeRelay(threading.Thread):
    """A fake node with two local links, enough to carry kv.py end to end: it answers
    attaches, advertises each attached mount on the other link, and relays calls opened in
    those spans into the attaching link's LINK_ATTACH transaction, and the replies back."""

    def __init__(self, socks):
        super().__init__(daemon=True)
        self.links = [FakeNode(s) for s in socks]
        self.mounts = {}     # (cluster, mount) -> (link index, its LINK_ATTACH msgid)
        self.spans = {}      # (link index, span msgid) -> (cluster, mount)
        self.circuits = {}   # (link index, msgid, replying) -> (link index, msgid, replying)
        self.replied = set()

    def run(self):
        for link in self.links:
            link.open(rs.LINK_CONN, hello())
        socks = [link.sock for link in self.links]
        while True:
            for s in select.select(socks, [], [])[0]:
                i = socks.index(s)
                try:
                    data = s.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for plain in self.links[i].reader.feed(data):
                    for m in rs.decode_messages(plain):
                        self.on_message(i, m)

    def on_message(self, i, m):
        link = self.links[i]
        if (m.proto, m.command) == rs.LINK_ATTACH and m.flags & CREATE:
            key = rs.decode_attach(m.payload)[:2]
            self.mounts[key] = (i, m.msgid)
            link.send(Message(REPLY | CREATE, 0, 8, m.msgid, 0, 0, b""))
            other = self.links[1 - i]
            self.spans[(1 - i, other.open(rs.LINK_SPAN, advert(key[0], key[1], b"kv")))] = key
        elif m.flags & CREATE and m.flags & REV_PARENT and (i, m.parent) in self.spans:
            j, attach = self.mounts[self.spans[(i, m.parent)]]
            msgid = self.links[j].open((m.proto, m.command), m.payload,
                                       CREATE | REV_PARENT | (m.flags & DELETE), attach)
            self.circuits[(j, msgid, True)] = (i, m.msgid)
        elif m.flags & REPLY and (i, m.msgid, True) in self.circuits:
            j, msgid = self.circuits[(i, m.msgid, True)]
            flags = REPLY | (m.flags & (DELETE | ABORT))
            if (j, msgid) not in self.replied:
                self.replied.add((j, msgid))
                flags |= CREATE
            self.links[j].send(Message(flags, m.proto, m.command, msgid, 0, m.error, m.payload))


class EndToEnd(unittest.TestCase):
    def test_kv_master_and_client_through_a_relay(self):
        import kv
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        relay = FakeRelay([theirs for _, theirs in pairs])
        relay.start()
        master = rs.Client.connect(pairs[0][0])
        user = rs.Client.connect(pairs[1][0])
        try:
            master.attach(kv.CLUSTER, kv.MOUNT, "master", b"kv/master")
            serving = threading.Thread(target=master.serve, args=(kv.Store().handle,))
            serving.start()
            self.assertTrue(user.wait_for_route(kv.CLUSTER, kv.MOUNT, 5))
            self.assertEqual(user.routes(), [rs.Route(kv.CLUSTER, kv.MOUNT, 0, b"kv")])
            for pair in ["fruit/apple=red", "fruit/kiwi=green", "veg/leek=white"]:
                self.assertEqual(kv.ask(user, kv.PUT, pair), ["ok"])
            self.assertEqual(kv.ask(user, kv.GET, "fruit/kiwi"), ["green"])
            self.assertEqual(kv.ask(user, kv.GET, "nothing"), [])
            self.assertEqual(kv.ask(user, kv.SCAN, "fruit/"), ["fruit/apple=red",
                                                               "fruit/kiwi=green"])
            with self.assertRaises(rs.TransactionError) as caught:
                user.call(kv.CLUSTER, kv.MOUNT, b"", 5, (2, 99))
            self.assertEqual(caught.exception.name, "REFUSED")
        finally:
            user.close()
            master.close()
            for ours, theirs in pairs:
                theirs.close()
        serving.join(5)
        self.assertFalse(serving.is_alive())


class Violations(unittest.TestCase):
    """Unexpected input closes the link with a ProtocolError; nothing crashes or hangs."""

    def connect(self, first=()):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        node = FakeNode(theirs)
        node.open(rs.LINK_CONN, hello())
        client = rs.Client.connect(ours, timeout=5)
        node.recv()
        return client, node

    def closes_with(self, bytes_or_messages, text):
        client, node = self.connect()
        try:
            if isinstance(bytes_or_messages, bytes):
                node.sock.sendall(bytes_or_messages)
            else:
                node.send(*bytes_or_messages)
            deadline = time.monotonic() + 5
            while client.closed is None and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertIsInstance(client.closed, rs.ProtocolError)
            self.assertIn(text, str(client.closed))
            with self.assertRaises(rs.RingspanError):
                client.call(7, 1, b"x")
        finally:
            client.close()
            node.sock.close()

    def test_bad_record_length(self):
        self.closes_with(struct.pack("<IB3x", 17, 0) + bytes(17), "record length")

    def test_bad_message(self):
        data = bytearray(block("message-ping"))
        data[31] = 1
        self.closes_with(rs.encode_record(bytes(data)), "reserved word")

    def test_message_on_unknown_transaction(self):
        self.closes_with([Message(DELETE, 0, 4, 99, 0, 0, b"")], "unknown transaction")

    def test_second_hello(self):
        self.closes_with([Message(CREATE, 0, 3, 7, 0, 0, hello())], "second LINK_CONN")

    def test_bad_advert(self):
        self.closes_with([Message(CREATE, 0, 4, 7, 0, 0, b"short")], "advertisement")

    def test_update_naming_another_mount(self):
        self.closes_with([Message(CREATE, 0, 4, 7, 0, 0, advert(1, 1)),
                          Message(0, 0, 4, 7, 0, 0, advert(1, 2))], "another mount")

    def test_unknown_parent(self):
        self.closes_with([Message(CREATE | REV_PARENT, 1, 1, 7, 50, 0, b"")], "unknown parent")

    def test_late_forced_close_is_dropped(self):
        client, node = self.connect()
        try:
            node.send(Message(REPLY | ABORT | DELETE, 1, 1, 77, 0, rs.ABORTED, b""))
            node.open(rs.LINK_SPAN, advert(7, 1))
            self.assertTrue(client.wait_for_route(7, 1, 2))
            self.assertIsNone(client.closed)
        finally:
            client.close()
            node.sock.close()


if __name__ == "__main__":
    unittest.main()
