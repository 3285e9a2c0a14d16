"""A pure-Python client for a ringspan node's local attach socket.

An application on the node's host connects to the node's attach socket (a Unix stream socket)
and speaks the link protocol of docs/PROTOCOL.md over it, without the handshake and without
encryption: records are framed as in section 4, but the plaintext goes as it is and the 16-byte
tag is all zeros. Everything above the records is as on any link: messages (section 5),
transactions (section 6), the hello (8.2), the node's spans (8.3), calls inside them (8.7, 8.8)
and LINK_ATTACH (8.11).

Standard library only, Python 3.9+. Layout of this module, bottom up:

- constants and names (limits, flags, commands, error codes, kinds);
- codecs: plain records, messages, hello, advertisement, attach request (pure functions, which
  the golden tests check against the document's hex examples);
- ``_Txn`` and ``Client``: the transaction layer and the client API, one reader thread per
  client; every public method may be called from any thread.

Usage::

    client = Client.connect("/run/ringspan/attach.sock")
    client.attach(7, 1, "master", b"kv/master")
    client.serve(lambda call: b"pong")            # in a thread of its own, typically
    reply = client.call(7, 1, b"ping", timeout=5)  # a one-shot call to a mount the node routes
"""

import collections
import os
import selectors
import socket
import struct
import threading
import time

__all__ = [
    "Client", "ServedCall", "Route", "Advert", "Hello", "Message",
    "RingspanError", "ProtocolError", "TransactionError", "CallTimeout",
    "encode_record", "RecordReader", "encode_message", "decode_messages",
    "encode_hello", "decode_hello", "encode_advert", "decode_advert",
    "encode_attach", "decode_attach", "error_name",
]

# --- Limits (PROTOCOL 3.3) ---------------------------------------------------------------

RECORD_HEADER_LEN = 8
RECORD_TAG_LEN = 16
RECORD_PLAINTEXT_MAX = 65536
RECORD_WIRE_MAX = RECORD_HEADER_LEN + RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN
MESSAGE_HEADER_LEN = 32
MESSAGE_ALIGN = 8
MESSAGE_PAYLOAD_MAX = RECORD_PLAINTEXT_MAX - MESSAGE_HEADER_LEN
PEER_TXNS_PER_LINK_MAX = 65536
CLIENT_TXNS_PER_LINK_MAX = 2048      # what the node lets a client link hold (3.3)
TXN_DEPTH_MAX = 8
RECORDS_PER_KEY = 1 << 21            # we flip our key phase this often (4.5)
SPAN_LABEL_MAX = 64
NODE_NAME_MAX = 32
SPAN_WANTED_CLUSTERS_MAX = 64
PEER_IDLE_TIMEOUT_MIN_MS = 30
KEEPALIVE_INTERVAL_MS = 1000
KEEPALIVE_INTERVAL_MIN_MS = 10
U128_MAX = (1 << 128) - 1

# --- Message flags (5.3) -------------------------------------------------------------------

CREATE = 0x01
DELETE = 0x02
REPLY = 0x04
ABORT = 0x08
REV_PARENT = 0x10
FLAGS_RESERVED = 0xE0

# --- Link protocol commands (5.4): (proto, command) ----------------------------------------

LINK_PING = (0, 1)
LINK_CLOSE = (0, 2)
LINK_CONN = (0, 3)
LINK_SPAN = (0, 4)
LINK_SPAN_REQUEST = (0, 5)
LINK_HOLDER = (0, 6)
LINK_TRACE = (0, 7)
LINK_ATTACH = (0, 8)

#: The command ringspan's own calls use (``daemon::CALL``, 8.8).
CALL = (1, 1)

# --- Error codes (5.7) ---------------------------------------------------------------------

NONE = 0
LOST_LINK = 1
NO_ROUTE = 2
REFUSED = 3
LIMIT_REACHED = 4
ABORTED = 5
SHUTDOWN = 6
DUPLICATE = 7
IDLE = 8
MALFORMED = 9
APPLICATION_BASE = 0x10000

ERROR_NAMES = {
    NONE: "NONE", LOST_LINK: "LOST_LINK", NO_ROUTE: "NO_ROUTE", REFUSED: "REFUSED",
    LIMIT_REACHED: "LIMIT_REACHED", ABORTED: "ABORTED", SHUTDOWN: "SHUTDOWN",
    DUPLICATE: "DUPLICATE", IDLE: "IDLE", MALFORMED: "MALFORMED",
}


def error_name(code):
    """The name of an error code: its protocol name, APPLICATION+n, or UNASSIGNED(n)."""
    if code in ERROR_NAMES:
        return ERROR_NAMES[code]
    if code >= APPLICATION_BASE:
        return "APPLICATION+%d" % (code - APPLICATION_BASE)
    return "UNASSIGNED(%d)" % code


# --- Roles and kinds (8.2) -----------------------------------------------------------------

ROLE_ROUTER, ROLE_SATELLITE, ROLE_CLIENT = 0, 1, 2
KINDS = ("master", "slave", "soft-master", "soft-slave", "cache", "client", "aggregate")
KINDS_ALL = 0x7F
ATTACH_KINDS = 5          # master .. cache may be attached (8.11)
HELLO_ALL_CLUSTERS = 0x01


def kind_index(kind):
    """A mount kind as its index, from an index or a name such as "master"."""
    if isinstance(kind, str):
        try:
            return KINDS.index(kind)
        except ValueError:
            raise ValueError("unknown mount kind %r" % kind) from None
    return int(kind)


# --- Errors --------------------------------------------------------------------------------

class RingspanError(Exception):
    """Base class of this module's errors."""


class ProtocolError(RingspanError):
    """The peer sent something the protocol does not allow; the link is closed."""


class TransactionError(RingspanError):
    """A transaction (a call, an attach) ended with an error code."""

    def __init__(self, code, what=""):
        self.code = code
        self.name = error_name(code)
        super().__init__("%s%s (%d)" % (what + ": " if what else "", self.name, code))


class CallTimeout(RingspanError):
    """No complete answer within the time given; the call was forced closed."""


def _check(condition, text):
    if not condition:
        raise ProtocolError(text)


def _align8(n):
    return (n + 7) & ~7


def _u128(data, at):
    low, high = struct.unpack_from("<QQ", data, at)
    return low | (high << 64)


def _put_u128(value):
    if not 0 <= value <= U128_MAX:
        raise ValueError("not a u128: %r" % (value,))
    return struct.pack("<QQ", value & 0xFFFFFFFFFFFFFFFF, value >> 64)


# --- Records (4.1-4.3), plain: the local link's framing ------------------------------------

def encode_record(plaintext, key_phase=0):
    """One plain record: header (sealed length, key phase), the plaintext, 16 zero bytes."""
    n = len(plaintext)
    if n < MESSAGE_HEADER_LEN or n > RECORD_PLAINTEXT_MAX or n % MESSAGE_ALIGN:
        raise ValueError("not a valid record plaintext length: %d" % n)
    header = struct.pack("<IB3x", n + RECORD_TAG_LEN, key_phase & 1)
    return header + bytes(plaintext) + bytes(RECORD_TAG_LEN)


def check_record_header(header):
    """The record's wire length, from its 8-byte header (sections 4.2, 4.3)."""
    length, flags, r0, r1, r2 = struct.unpack_from("<IBBBB", header, 0)
    n = length - RECORD_TAG_LEN
    _check(MESSAGE_HEADER_LEN <= n <= RECORD_PLAINTEXT_MAX and n % 8 == 0,
           "record length %d is not valid (4.2)" % length)
    _check(flags & 0xFE == 0 and (r0, r1, r2) == (0, 0, 0),
           "record reserved bits set: flags 0x%02x (4.3)" % flags)
    return RECORD_HEADER_LEN + length


class RecordReader:
    """Cuts a byte stream into plain records' plaintexts. Buffers one record at most."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data):
        """Adds bytes; returns the plaintexts of the records now complete, in order."""
        self._buf += data
        out = []
        while len(self._buf) >= RECORD_HEADER_LEN:
            wire = check_record_header(self._buf)
            if len(self._buf) < wire:
                break
            tag = self._buf[wire - RECORD_TAG_LEN:wire]
            # The node's sealer writes a zero tag on a local link; anything else means this is
            # not a plain link (a sealed one, or garbage).
            _check(not any(tag), "a record with a non-zero tag on a plain local link")
            out.append(bytes(self._buf[RECORD_HEADER_LEN:wire - RECORD_TAG_LEN]))
            del self._buf[:wire]
        return out

    def pending(self):
        """Bytes held of a record not yet complete."""
        return len(self._buf)


# --- Messages (5.1-5.8) ------------------------------------------------------------------

Message = collections.namedtuple(
    "Message", "flags proto command msgid parent error payload")
Message.__new__.__defaults__ = (0, 0, b"")


def encode_message(m):
    """A message's bytes: the 32-byte header, the payload, zero padding to 8."""
    payload = bytes(m.payload)
    if len(payload) > MESSAGE_PAYLOAD_MAX:
        raise ValueError("payload of %d bytes, above %d" % (len(payload), MESSAGE_PAYLOAD_MAX))
    header = struct.pack("<BBHIQQII", m.flags, m.proto, m.command, len(payload),
                         m.msgid, m.parent, m.error, 0)
    return header + payload + bytes(_align8(len(payload)) - len(payload))


def _check_rules(flags, msgid, parent):
    """The stateless rules of section 5.8."""
    _check(flags & FLAGS_RESERVED == 0, "reserved message flags 0x%02x (5.3)" % flags)
    if msgid == 0:
        _check(flags == 0 and parent == 0, "a one-way message with flags or a parent (5.8)")
    opener_create = flags & CREATE and not flags & REPLY
    _check(opener_create or (parent == 0 and not flags & REV_PARENT),
           "a parent on a message other than the opener's CREATE (5.8)")
    _check(not flags & REV_PARENT or parent != 0, "REV_PARENT without a parent (5.8)")


def decode_messages(plaintext):
    """The messages of a record's plaintext, each checked as section 5 says."""
    out = []
    at, end = 0, len(plaintext)
    while at < end:
        _check(end - at >= MESSAGE_HEADER_LEN, "message header truncated (5.1)")
        flags, proto, command, length, msgid, parent, error, reserved = struct.unpack_from(
            "<BBHIQQII", plaintext, at)
        _check(reserved == 0, "message reserved word 0x%08x (5.2)" % reserved)
        start = at + MESSAGE_HEADER_LEN
        padded = _align8(length)
        _check(length <= MESSAGE_PAYLOAD_MAX and start + padded <= end,
               "message payload truncated (5.5)")
        _check(not any(plaintext[start + length:start + padded]), "non-zero padding (5.5)")
        _check_rules(flags, msgid, parent)
        out.append(Message(flags, proto, command, msgid, parent, error,
                           bytes(plaintext[start:start + length])))
        at = start + padded
    return out


# --- Hello (8.2) ---------------------------------------------------------------------------

Hello = collections.namedtuple("Hello", "role kinds all_clusters clusters idle_timeout_ms name")


def encode_hello(role=ROLE_CLIENT, kinds=KINDS_ALL, clusters=None, idle_timeout_ms=5000,
                 name=b""):
    """A hello: ``clusters=None`` wants every cluster (ALL_CLUSTERS)."""
    clusters = list(clusters or [])
    if isinstance(name, str):
        name = name.encode()
    if not (0 <= role <= 2 and 0 <= kinds <= KINDS_ALL and len(name) <= NODE_NAME_MAX
            and len(clusters) <= SPAN_WANTED_CLUSTERS_MAX and 0 < idle_timeout_ms < 1 << 32):
        raise ValueError("not a valid hello")
    flags = HELLO_ALL_CLUSTERS if not clusters else 0
    out = struct.pack("<BBBBHHII", role, kinds, flags, len(name), len(clusters), 0,
                      idle_timeout_ms, 0)
    return out + b"".join(_put_u128(c) for c in clusters) + name


def decode_hello(payload):
    _check(len(payload) >= 16, "hello shorter than 16 bytes (8.2)")
    role, kinds, flags, name_len, count, r0, idle, r1 = struct.unpack_from("<BBBBHHII", payload)
    _check(role <= 2, "hello role %d (8.2)" % role)
    _check(kinds & 0x80 == 0 and flags & 0xFE == 0 and r0 == 0 and r1 == 0,
           "hello reserved bits set (8.2)")
    _check(name_len <= NODE_NAME_MAX and count <= SPAN_WANTED_CLUSTERS_MAX,
           "hello name or cluster list too long (8.2)")
    _check(not (flags & HELLO_ALL_CLUSTERS and count), "hello with ALL_CLUSTERS and a list")
    _check(idle != 0, "hello idle timeout of zero (8.2)")
    _check(len(payload) == 16 + 16 * count + name_len, "hello length (8.2)")
    clusters = [_u128(payload, 16 + 16 * i) for i in range(count)]
    name = bytes(payload[16 + 16 * count:])
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("hello name is not UTF-8 (8.2)") from None
    _check(not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text),
           "hello name with a control character (8.2)")
    return Hello(role, kinds, bool(flags & HELLO_ALL_CLUSTERS), clusters, idle, text)


# --- Advertisement (8.3) -------------------------------------------------------------------

Advert = collections.namedtuple("Advert", "cluster mount origin seqno metric kind label")
Route = collections.namedtuple("Route", "cluster mount kind label")


def encode_advert(a):
    label = bytes(a.label)
    if len(label) > SPAN_LABEL_MAX or not 0 <= a.kind <= 6 or a.metric == 0xFFFF:
        raise ValueError("not a valid advertisement")
    return (_put_u128(a.cluster) + _put_u128(a.mount) + _put_u128(a.origin)
            + struct.pack("<HHBB2x", a.seqno, a.metric, a.kind, len(label)) + label)


def decode_advert(payload):
    _check(len(payload) >= 56, "advertisement shorter than 56 bytes (8.3)")
    seqno, metric, kind, label_len, reserved = struct.unpack_from("<HHBBH", payload, 48)
    _check(metric != 0xFFFF, "advertisement metric 0xffff (8.3)")
    _check(kind <= 6, "advertisement kind %d (8.3)" % kind)
    _check(label_len <= SPAN_LABEL_MAX and reserved == 0, "advertisement label or reserved")
    _check(len(payload) == 56 + label_len, "advertisement length (8.3)")
    return Advert(_u128(payload, 0), _u128(payload, 16), _u128(payload, 32), seqno, metric,
                  kind, bytes(payload[56:]))


# --- Attach request (8.11) ----------------------------------------------------------------

def encode_attach(cluster, mount, kind, label=b""):
    kind = kind_index(kind)
    if isinstance(label, str):
        label = label.encode()
    if not 0 <= kind < ATTACH_KINDS or len(label) > SPAN_LABEL_MAX:
        raise ValueError("an attach takes kinds master..cache and labels up to 64 bytes")
    return _put_u128(cluster) + _put_u128(mount) + struct.pack("<BB6x", kind, len(label)) + label


def decode_attach(payload):
    _check(len(payload) >= 40, "attach request shorter than 40 bytes (8.11)")
    kind, label_len = payload[32], payload[33]
    _check(kind < ATTACH_KINDS and label_len <= SPAN_LABEL_MAX and not any(payload[34:40]),
           "attach request kind, label or reserved bytes (8.11)")
    _check(len(payload) == 40 + label_len, "attach request length (8.11)")
    return _u128(payload, 0), _u128(payload, 16), kind, bytes(payload[40:])


# --- Transactions (section 6) --------------------------------------------------------------

OURS, PEERS = "ours", "peers"


class _Txn:
    """One transaction's state at our end (section 6.3's 'both DELETEs and no children')."""

    def __init__(self, who, msgid, command, parent, role):
        self.who = who                # OURS: we opened it; PEERS: the node did
        self.msgid = msgid
        self.command = command        # (proto, command) it was opened with
        self.parent = parent          # the parent _Txn, or None at top level
        self.depth = 1 if parent is None else parent.depth + 1
        self.role = role              # "conn", "span", "attach", "call", "served", "refused"
        self.children = 0
        self.sent_create = who == OURS   # for the responder: its reply CREATE has gone
        self.got_create = who == PEERS   # for the opener: the reply CREATE has arrived
        self.sent_delete = False
        self.got_delete = False
        self.sent_force = False
        self.got_force = False
        self.error = NONE             # first non-zero code carried by a DELETE either way
        self.ended = False
        # Role data.
        self.replies = []             # payloads received (calls, served calls' stream)
        self.reply_bytes = 0
        self.advert = None            # spans: the advertisement as last heard
        self.mount = None             # attach: (cluster, mount); served: the mount
        self.state = None             # attach: None, "attached", "refused", "detached"

    def record_error(self, code):
        if self.error == NONE and code != NONE:
            self.error = code


class ServedCall:
    """A call opened to one of our attached mounts, given to a ``serve`` handler.

    ``payload`` is the first message's payload; ``done`` whether the caller's CREATE already
    carried DELETE. Answer with ``finish`` (or return the reply from the handler), stream with
    ``send`` first if you like, or refuse with ``abort(code)``."""

    def __init__(self, client, txn, first):
        self._client = client
        self._txn = txn
        self.cluster, self.mount = txn.mount
        self.proto, self.command = first.proto, first.command
        self.payload = first.payload
        self.done = bool(first.flags & DELETE)

    @property
    def finished(self):
        return self._txn.sent_delete

    def send(self, payload, command=None):
        """One reply message, more to follow."""
        self._client._send_on(self._txn, payload, command, last=False)

    def finish(self, payload=b"", command=None, error=NONE):
        """The last reply message (DELETE), with an optional error code."""
        self._client._send_on(self._txn, payload, command, last=True, error=error)

    def abort(self, error=ABORTED):
        """A forced close (ABORT|DELETE) with ``error``."""
        self._client._force(self._txn, error)

    def more(self):
        """Payloads the caller sent after its first message (if it streams), so far."""
        with self._client._cv:
            return list(self._txn.replies)


class Client:
    """One local link to a ringspan node. Create it with :meth:`Client.connect`."""

    def __init__(self, sock, name=b"", idle_timeout_ms=0xFFFFFFFF, max_reply_bytes=16 << 20,
                 max_pending_calls=1024):
        self._sock = sock
        self._cv = threading.Condition(threading.Lock())
        self._reader = RecordReader()
        self._next_msgid = 1
        self._ours = {}               # our msgid -> _Txn
        self._peers = {}              # node's msgid -> _Txn
        self._spans = {}              # (cluster, mount) -> the node's open span _Txn
        self._incoming = collections.deque()   # ServedCall waiting for serve()
        self._max_pending = max_pending_calls
        self._max_reply = max_reply_bytes
        self._idle_ms = idle_timeout_ms
        self._node_hello = None
        self._closed = None           # None while up; then the exception the link ended with
        self._peer_said = None        # the code of the node's LINK_CLOSE, if any
        self._records_sent = 0        # under the current key phase
        self._key_phase = 0
        self._last_sent = time.monotonic()
        self._last_recv = time.monotonic()
        self._out = []                # encoded messages queued, written by _flush_sends
        self._closed_by_us = False
        conn = self._open_locked(None, LINK_CONN, "conn",
                                 encode_hello(ROLE_CLIENT, KINDS_ALL, None, idle_timeout_ms,
                                              name), one_shot=False)
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="ringspan-reader", daemon=True)

    # -- Connecting and closing ------------------------------------------------------------

    @classmethod
    def connect(cls, path, timeout=5.0, **options):
        """Connects to the attach socket at ``path``, sends our hello and waits for the node's.

        ``sock`` may be given instead of a path (an already connected stream socket)."""
        sock = path if isinstance(path, socket.socket) else None
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(os.fspath(path))
            except OSError:
                sock.close()
                raise
        sock.settimeout(None)
        try:
            client = cls(sock, **options)
        except BaseException:
            sock.close()
            raise
        with client._cv:
            client._flush_sends()
        client._thread.start()
        try:
            with client._cv:
                client._wait(lambda: client._node_hello is not None, timeout,
                             "hello from the node")
        except BaseException:
            client.close()
            raise
        return client

    def close(self):
        """Says LINK_CLOSE (SHUTDOWN) and closes the link; pending waits end with LOST_LINK."""
        with self._cv:
            if self._closed is None:
                try:
                    self._queue(Message(0, LINK_CLOSE[0], LINK_CLOSE[1], 0, 0, SHUTDOWN))
                    self._flush_sends()
                except OSError:
                    pass
                self._closed_by_us = True
                self._lose(TransactionError(LOST_LINK, "closed by us"))
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def node_hello(self):
        return self._node_hello

    @property
    def closed(self):
        """None while the link is up; then the exception it ended with."""
        return self._closed

    # -- Routes ----------------------------------------------------------------------------

    def routes(self):
        """The mounts the node advertises to us: a list of Route(cluster, mount, kind, label)."""
        with self._cv:
            return sorted(Route(a.cluster, a.mount, a.kind, a.label)
                          for a in (t.advert for t in self._spans.values()))

    def adverts(self):
        """The advertisements as last heard (origin, seqno and metric too)."""
        with self._cv:
            return sorted(t.advert for t in self._spans.values())

    def wait_for_route(self, cluster, mount, timeout):
        """Whether the node advertises (cluster, mount) to us within ``timeout`` seconds."""
        with self._cv:
            try:
                self._wait(lambda: (cluster, mount) in self._spans, timeout, "a route")
            except CallTimeout:
                return False
            return True

    # -- Attaching -------------------------------------------------------------------------

    def attach(self, cluster, mount, kind="master", label=b"", timeout=5.0):
        """Attaches (cluster, mount) as the node's own; returns once the node says it is.

        Raises TransactionError with the node's code (REFUSED, MALFORMED, LIMIT_REACHED)."""
        payload = encode_attach(cluster, mount, kind, label)
        with self._cv:
            self._raise_if_closed()
            if any(t.role == "attach" and t.mount == (cluster, mount) and t.state != "detached"
                   for t in self._ours.values()):
                raise TransactionError(REFUSED, "already attached on this link")
            txn = self._open_locked(None, LINK_ATTACH, "attach", payload, one_shot=False)
            txn.mount = (cluster, mount)
            self._flush_sends()
            self._wait(lambda: txn.state is not None or txn.ended, timeout, "the attach answer",
                       on_timeout=lambda: self._force_locked(txn, ABORTED))
            if txn.state != "attached":
                raise TransactionError(txn.error or LOST_LINK, "attach refused") \
                    from self._closed

    def detach(self, cluster, mount, timeout=5.0):
        """Detaches a mount we attached (our DELETE); waits for the node's DELETE."""
        with self._cv:
            txn = next((t for t in self._ours.values() if t.role == "attach"
                        and t.mount == (cluster, mount) and t.state == "attached"), None)
            if txn is None:
                raise KeyError("not attached: %r" % ((cluster, mount),))
            txn.state = "detached"
            if not txn.sent_delete:
                self._send_locked(txn, b"", None, last=True)
                self._flush_sends()
            self._wait(lambda: txn.got_delete or self._closed is not None, timeout,
                       "the node's DELETE")

    def attached(self):
        """The mounts attached through this link: a list of (cluster, mount)."""
        with self._cv:
            return sorted(t.mount for t in self._ours.values()
                          if t.role == "attach" and t.state == "attached")

    # -- Serving ---------------------------------------------------------------------------

    def next_call(self, timeout=None):
        """The next call opened to one of our mounts, or None after ``timeout`` seconds."""
        with self._cv:
            def ready():
                # A call the caller forced closed while it waited is skipped: it is answered.
                while self._incoming and self._incoming[0].finished:
                    self._incoming.popleft()
                return self._incoming
            try:
                self._wait(ready, timeout, "a call", raise_closed=False)
            except CallTimeout:
                return None
            if self._incoming:
                return self._incoming.popleft()
            self._raise_if_closed()

    def serve(self, handler, timeout=None):
        """Hands each call to ``handler(call)`` until the link closes (or ``timeout`` passes
        without a call). The handler may answer with the call's methods, or return the reply
        payload (bytes or str; None for empty): it is then sent with DELETE. An exception
        from the handler becomes a forced close: ``TransactionError`` with its code, any other
        with ABORTED. Returns when we closed the link; raises what else ended it."""
        while True:
            try:
                call = self.next_call(timeout)
            except RingspanError:
                if self._closed_by_us:
                    return
                raise
            if call is None:
                return
            self._handle(handler, call)

    def _handle(self, handler, call):
        try:
            reply = handler(call)
        except TransactionError as e:
            self._guard(call.abort, e.code)
            return
        except RingspanError:
            self._guard(call.abort, ABORTED)
            return
        except Exception:
            self._guard(call.abort, ABORTED)
            raise
        if not call.finished:
            if isinstance(reply, str):
                reply = reply.encode()
            self._guard(call.finish, reply or b"")

    @staticmethod
    def _guard(method, *args):
        # Answering a call whose link is gone is not the handler's fault.
        try:
            method(*args)
        except RingspanError:
            pass

    # -- Calling ---------------------------------------------------------------------------

    def call(self, cluster, mount, payload=b"", timeout=5.0, command=CALL):
        """A one-shot call; the reply's payloads joined. Raises TransactionError (NO_ROUTE,
        LOST_LINK, REFUSED, ...) if the call ends with an error code, CallTimeout if the
        answer is not complete in time."""
        return b"".join(self.call_messages(cluster, mount, payload, timeout, command))

    def call_messages(self, cluster, mount, payload=b"", timeout=5.0, command=CALL):
        """As ``call``, but the reply's payloads one by one (a streamed answer)."""
        if isinstance(payload, str):
            payload = payload.encode()
        with self._cv:
            self._raise_if_closed()
            span = self._spans.get((cluster, mount))
            if span is None:
                # As a node with no route would answer (8.7), without asking it.
                raise TransactionError(NO_ROUTE, "call %d:%d" % (cluster, mount))
            txn = self._open_locked(span, command, "call", payload, one_shot=True)
            self._flush_sends()
            self._wait(lambda: txn.ended or txn.got_delete, timeout, "the reply",
                       on_timeout=lambda: self._force_locked(txn, ABORTED))
            if txn.error != NONE:
                raise TransactionError(txn.error, "call %d:%d" % (cluster, mount)) \
                    from self._closed
            return list(txn.replies)

    # -- Waiting ---------------------------------------------------------------------------

    def _wait(self, done, timeout, what, on_timeout=None, raise_closed=True):
        """Waits (holding the condition) until ``done()``; raises if the link closes first
        (when ``raise_closed``) or, after calling ``on_timeout``, when ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            if self._closed is not None:
                if raise_closed:
                    raise self._closed
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if on_timeout is not None:
                    on_timeout()
                    self._flush_sends()
                raise CallTimeout("no %s within %.3g s" % (what, timeout))
            self._cv.wait(left)

    def _raise_if_closed(self):
        if self._closed is not None:
            raise self._closed

    # -- Sending (all with the condition held, so state and wire keep one order) -----------

    def _open_locked(self, parent, command, role, payload, one_shot):
        """Opens a transaction of ours: its CREATE (and payload) is queued."""
        if len(self._ours) >= CLIENT_TXNS_PER_LINK_MAX:
            raise TransactionError(LIMIT_REACHED, "too many open transactions")
        if parent is not None and parent.sent_delete:
            raise TransactionError(NO_ROUTE, "the span was retracted")
        msgid = self._next_msgid
        self._next_msgid += 1            # never reused on the link (section 7)
        txn = _Txn(OURS, msgid, command, parent, role)
        if parent is not None:
            parent.children += 1
        self._ours[msgid] = txn
        flags = CREATE
        parent_id = 0
        if parent is not None:
            parent_id = parent.msgid
            if parent.who == PEERS:
                flags |= REV_PARENT
        chunks = _chunks(payload)
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            f = (flags if i == 0 else 0) | (DELETE if one_shot and last else 0)
            self._queue(Message(f, command[0], command[1], msgid, parent_id if i == 0 else 0,
                                0, chunk))
        if one_shot:
            txn.sent_delete = True
        return txn

    def _send_on(self, txn, payload, command, last, error=NONE):
        with self._cv:
            self._raise_if_closed()
            self._send_locked(txn, payload, command, last, error)
            self._flush_sends()

    def _send_locked(self, txn, payload, command, last, error=NONE):
        """Queues payload on our direction of ``txn`` (several messages past 65,504 bytes)."""
        if txn.sent_delete:
            raise TransactionError(txn.error or ABORTED, "our direction is already closed")
        if isinstance(payload, str):
            payload = payload.encode()
        command = command or txn.command
        chunks = _chunks(payload)
        for i, chunk in enumerate(chunks):
            end = last and i == len(chunks) - 1
            self._queue(Message(self._flags(txn) | (DELETE if end else 0), command[0],
                                command[1], txn.msgid, 0, error if end else 0, chunk))
        if last:
            txn.sent_delete = True
            txn.record_error(error)
            self._maybe_end(txn)

    def _flags(self, txn):
        """REPLY and CREATE as section 6.1 requires of our next message on ``txn``."""
        if txn.who == OURS:
            return 0
        flags = REPLY if txn.sent_create else REPLY | CREATE
        txn.sent_create = True
        return flags

    def _force(self, txn, error):
        """A forced close of ``txn`` and its subtree, children first (6.5)."""
        with self._cv:
            if self._closed is not None or txn.ended or txn.sent_force:
                return
            self._force_locked(txn, error)
            self._flush_sends()

    def _force_locked(self, txn, error):
        for child in [t for t in list(self._ours.values()) + list(self._peers.values())
                      if t.parent is txn]:
            if not child.sent_force:
                self._force_locked(child, error)
        if txn.sent_force or txn.ended or (txn.sent_delete and txn.got_delete):
            return
        self._queue(Message(self._flags(txn) | ABORT | DELETE, txn.command[0], txn.command[1],
                            txn.msgid, 0, error))
        txn.sent_force = txn.sent_delete = True
        txn.record_error(error)
        self._maybe_end(txn)

    def _queue(self, message):
        self._out.append(encode_message(message))

    def _flush_sends(self):
        """Packs the queued messages into records and writes them."""
        out, self._out = self._out, []
        if not out or self._closed is not None:
            return
        records, plain = [], bytearray()
        for m in out:
            if len(plain) + len(m) > RECORD_PLAINTEXT_MAX:
                records.append(self._record(plain))
                plain = bytearray()
            plain += m
        records.append(self._record(plain))
        try:
            self._sock.sendall(b"".join(records))
        except OSError as e:
            self._lose(TransactionError(LOST_LINK, "send failed: %s" % e))
            raise self._closed from e
        self._last_sent = time.monotonic()

    def _record(self, plaintext):
        # A sender switches key phase after RECORDS_PER_KEY records (4.5). With no keys, that
        # is only the bit; it keeps us within what any receiver accepts under one key.
        if self._records_sent >= RECORDS_PER_KEY:
            self._key_phase ^= 1
            self._records_sent = 0
        self._records_sent += 1
        return encode_record(bytes(plaintext), self._key_phase)

    # -- Receiving (the reader thread) -----------------------------------------------------

    def _run(self):
        """Reads records until the link ends; keeps it alive meanwhile."""
        # A selector, not select(): an application may hold descriptors past FD_SETSIZE.
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._sock, selectors.EVENT_READ)
            while self._closed is None:
                ready = selector.select(self._tick())
                if self._closed is not None:
                    return
                if not ready:
                    continue
                data = self._sock.recv(RECORD_WIRE_MAX)
                with self._cv:
                    if not data:
                        self._lose(TransactionError(LOST_LINK, "the node closed the link"))
                        return
                    self._last_recv = time.monotonic()
                    for plaintext in self._reader.feed(data):
                        for m in decode_messages(plaintext):
                            if self._closed is not None:
                                break
                            self._on_message(m)
                    self._flush_sends()
                    self._cv.notify_all()
        except ProtocolError as e:
            with self._cv:
                self._lose(e)
        except (OSError, ValueError) as e:
            with self._cv:
                self._lose(TransactionError(LOST_LINK, "link failed: %s" % e))
        except TransactionError as e:
            with self._cv:   # normally raised by a send that found the link gone
                self._lose(e)
        except Exception as e:   # a bug here must not leave waiters hanging
            with self._cv:
                self._lose(ProtocolError("internal error on input: %r" % e))
        finally:
            selector.close()
            self._sock.close()

    def _tick(self):
        """Sends a keepalive when due (5.4); enforces our idle timeout if we set one; returns
        how long the reader may sleep."""
        with self._cv:
            if self._closed is not None:
                return 0
            now = time.monotonic()
            interval = KEEPALIVE_INTERVAL_MS
            if self._node_hello is not None:
                interval = min(interval, self._node_hello.idle_timeout_ms // 3)
            interval = max(interval, KEEPALIVE_INTERVAL_MIN_MS) / 1000.0
            if now - self._last_sent >= interval:
                self._queue(Message(0, LINK_PING[0], LINK_PING[1], 0, 0, 0))
                self._flush_sends()
            if self._idle_ms != 0xFFFFFFFF and now - self._last_recv > self._idle_ms / 1000.0:
                self._lose(TransactionError(LOST_LINK, "nothing heard for the idle timeout"))
                return 0
            return max(0.0, interval - (time.monotonic() - self._last_sent))

    def _on_message(self, m):
        """One received message, checked against the link's state (6.7), then acted on."""
        if m.msgid == 0:
            self._on_oneway(m)
        elif m.flags & CREATE and not m.flags & REPLY:
            self._on_create(m)
        else:
            table = self._ours if m.flags & REPLY else self._peers
            txn = table.get(m.msgid)
            if txn is None:
                # A late forced close is the one message dropped silently (6.5).
                _check(m.flags & ABORT and m.flags & DELETE,
                       "message on unknown transaction %d (6.7 rule 7)" % m.msgid)
                return
            self._on_txn_message(txn, m)

    def _on_oneway(self, m):
        if (m.proto, m.command) == LINK_CLOSE:
            self._peer_said = m.error
            self._lose(TransactionError(LOST_LINK, "the node closed the link, saying %s"
                                        % error_name(m.error)))
        # LINK_PING needs no answer; any other one-way message is dropped (3.5, 8.9).

    def _on_create(self, m):
        _check(m.msgid not in self._peers, "duplicate CREATE %d (6.7 rule 1)" % m.msgid)
        parent = None
        if m.parent:
            parent = (self._ours if m.flags & REV_PARENT else self._peers).get(m.parent)
            _check(parent is not None, "unknown parent %d (6.7 rule 2)" % m.parent)
            _check(not parent.got_delete, "CREATE under a closed parent (6.7 rule 3)")
            _check(parent.depth < TXN_DEPTH_MAX, "transaction depth above 8 (6.7 rule 4)")
        _check(len(self._peers) < PEER_TXNS_PER_LINK_MAX, "too many peer transactions (6.7)")
        command = (m.proto, m.command)
        txn = _Txn(PEERS, m.msgid, command, parent, "refused")
        self._peers[m.msgid] = txn
        if parent is not None:
            parent.children += 1
        self._take_delete(txn, m)
        if parent is None and command == LINK_CONN:
            _check(self._node_hello is None, "a second LINK_CONN (8.1)")
            _check(not m.flags & (DELETE | ABORT), "LINK_CONN opened with DELETE (8.1)")
            txn.role = "conn"
            self._node_hello = decode_hello(m.payload)
            _check(self._node_hello.idle_timeout_ms >= PEER_IDLE_TIMEOUT_MIN_MS,
                   "the node's idle timeout is below 30 ms (8.2)")
        elif parent is None and command == LINK_SPAN:
            _check(self._node_hello is not None, "LINK_SPAN before the hello (8.1)")
            _check(not m.flags & (DELETE | ABORT), "LINK_SPAN opened with DELETE (8.1)")
            advert = decode_advert(m.payload)
            key = (advert.cluster, advert.mount)
            _check(key not in self._spans, "a second span for mount %d:%d (8.1)" % key)
            txn.role, txn.advert = "span", advert
            self._spans[key] = txn
        elif parent is not None and parent.role == "attach" and m.flags & REV_PARENT:
            self._serve_create(txn, parent, m)
        elif parent is not None and parent.sent_force:
            # The parent is being forced: the child goes with it (6.5).
            self._force_locked(txn, parent.error or ABORTED)
        else:
            # Nothing we serve: refused alone, as a node refuses it (8.9).
            self._force_locked(txn, REFUSED)
        self._answer_force(txn, m)
        self._maybe_end(txn)

    def _serve_create(self, txn, parent, m):
        """A call to one of our attached mounts (8.11): queued for serve()."""
        txn.role, txn.mount = "served", parent.mount
        if parent.state != "attached" or parent.sent_delete:
            self._force_locked(txn, REFUSED)   # detached: as a mount with no application
        elif m.flags & ABORT and m.flags & DELETE:
            pass                               # forced closed at once: answered, not served
        elif len(self._incoming) >= self._max_pending:
            self._force_locked(txn, LIMIT_REACHED)
        else:
            self._incoming.append(ServedCall(self, txn, m))

    def _on_txn_message(self, txn, m):
        forced = m.flags & ABORT and m.flags & DELETE
        if m.flags & CREATE:
            _check(not txn.got_create, "a second reply CREATE on %d (6.7 rule 8)" % m.msgid)
            txn.got_create = True
        else:
            _check(txn.got_create, "a reply before its CREATE on %d (6.7 rule 9)" % m.msgid)
        if txn.got_delete:
            _check(forced and not txn.got_force, "message after DELETE (6.7 rule 10)")
        self._take_delete(txn, m)
        getattr(self, "_on_" + txn.role)(txn, m)
        self._answer_force(txn, m)
        self._maybe_end(txn)

    def _take_delete(self, txn, m):
        if m.flags & DELETE:
            if m.flags & ABORT:
                txn.got_force = True
            txn.got_delete = True
            txn.record_error(m.error)

    def _answer_force(self, txn, m):
        """A forced close received: our DELETE goes at once, if we have not sent one (6.5)."""
        if m.flags & ABORT and m.flags & DELETE and not txn.sent_delete:
            self._queue(Message(self._flags(txn) | DELETE, txn.command[0], txn.command[1],
                                txn.msgid, 0, m.error))
            txn.sent_delete = True

    # What each role does with a message after the CREATE.

    def _on_conn(self, txn, m):
        raise ProtocolError("a message on a LINK_CONN after its CREATE (8.1)")

    def _on_span(self, txn, m):
        if m.flags & DELETE:
            # Retracted (or refused by the node): the route goes, our DELETE answers.
            self._spans.pop((txn.advert.cluster, txn.advert.mount), None)
            if not txn.sent_delete and not m.flags & ABORT:
                self._queue(Message(self._flags(txn) | DELETE, txn.command[0], txn.command[1],
                                    txn.msgid, 0, NONE))
                txn.sent_delete = True
        elif m.flags & ABORT:
            pass   # an advisory abort on a span has no meaning; nothing to stop
        else:
            _check((m.proto, m.command) == LINK_SPAN, "a span message of another command")
            advert = decode_advert(m.payload)
            _check((advert.cluster, advert.mount) == (txn.advert.cluster, txn.advert.mount),
                   "a span update naming another mount (8.1)")
            txn.advert = advert

    def _on_attach(self, txn, m):
        if m.flags & DELETE:
            # Refused (a forced close, before any answer), or ended by the node.
            txn.state = "refused" if txn.state is None else "detached"
            if not txn.sent_delete and not m.flags & ABORT:
                self._send_locked(txn, b"", None, last=True)
        elif txn.state is None and not m.flags & ABORT:
            txn.state = "attached"   # the empty LINK_ATTACH answer (8.11)

    def _on_call(self, txn, m):
        if m.payload:
            txn.reply_bytes += len(m.payload)
            if txn.reply_bytes > self._max_reply:
                txn.record_error(LIMIT_REACHED)
                self._force_locked(txn, LIMIT_REACHED)
            else:
                txn.replies.append(m.payload)

    def _on_served(self, txn, m):
        # More from a caller that streams: kept (bounded) for ServedCall.more().
        if m.payload:
            txn.reply_bytes += len(m.payload)
            if txn.reply_bytes > self._max_reply:
                self._force_locked(txn, LIMIT_REACHED)
            else:
                txn.replies.append(m.payload)

    def _on_refused(self, txn, m):
        pass   # the answers to our forced close; nothing to deliver

    def _maybe_end(self, txn):
        """Frees ``txn`` once both DELETEs have passed and no child remains (6.3)."""
        while txn is not None and not txn.ended and txn.sent_delete and txn.got_delete \
                and txn.children == 0:
            txn.ended = True
            (self._ours if txn.who == OURS else self._peers).pop(txn.msgid, None)
            parent, txn = txn.parent, txn.parent
            if parent is not None:
                parent.children -= 1

    def _lose(self, error):
        """The link is down: every transaction ends with LOST_LINK (6.6), waiters wake."""
        if self._closed is not None:
            return
        self._closed = error
        code = LOST_LINK
        for txn in list(self._ours.values()) + list(self._peers.values()):
            txn.record_error(code)
            if txn.role == "attach" and txn.state is None:
                txn.state = "refused"
            txn.ended = True
        self._ours.clear()
        self._peers.clear()
        self._spans.clear()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)   # wakes the reader, which closes it
        except OSError:
            pass
        if not self._thread.is_alive() or threading.current_thread() is self._thread:
            self._sock.close()
        self._cv.notify_all()


def _chunks(payload):
    """A payload as message payloads of at most 65,504 bytes (at least one, maybe empty)."""
    payload = bytes(payload)
    if len(payload) <= MESSAGE_PAYLOAD_MAX:
        return [payload]
    return [payload[i:i + MESSAGE_PAYLOAD_MAX] for i in range(0, len(payload), MESSAGE_PAYLOAD_MAX)]
