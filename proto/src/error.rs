//! The crate's error type. Every variant says whose fault it is: bytes that do not parse, a peer
//! that broke the protocol, a limit reached, or a local caller's mistake. Network-facing errors
//! close the link they came on, with the error as the logged reason; local misuse does not.
//!
//! Errors are small `Copy` values: building one never allocates, so a hot path may return them.

use crate::ids::{MsgId, TxnId};

/// Anything that can go wrong in ringspan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bytes from the peer do not parse. The link is closed.
    #[error("malformed input: {0}")]
    Malformed(#[from] Malformed),
    /// The bytes parse but break the protocol. The link is closed.
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(#[from] Violation),
    /// A bound from `src/limits.rs` would be exceeded.
    #[error("limit reached: {0}")]
    LimitReached(#[from] Limit),
    /// The local caller asked for something the protocol does not allow. Nothing was sent.
    #[error("local misuse: {0}")]
    Misuse(#[from] Misuse),
    /// A record from the peer failed authentication: tampered with, replayed, reordered, or
    /// after a dropped record (the nonce is an implicit counter), or sealed with another key.
    /// The peer (or whoever is between us) is at fault. The link is closed; the record's body
    /// is garbage.
    #[error("record failed authentication (tampered, replayed, reordered, dropped or wrong key)")]
    Decrypt,
    /// The handshake failed. The link is closed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] Handshake),
    /// A key file was refused. Local configuration, not a link.
    #[error("key file refused: {0}")]
    KeyFile(#[from] KeyFile),
    /// The local crypto library failed (random source, key setup). Not the peer's fault; the
    /// link it happened on cannot go on.
    #[error("local crypto failure: {0}")]
    Crypto(&'static str),
}

impl Error {
    /// Whether this error means the link it came from must be closed.
    pub fn closes_link(&self) -> bool {
        match self {
            Error::Malformed(_) | Error::PeerMisbehaved(_) => true,
            Error::LimitReached(limit) => limit.caused_by_peer(),
            Error::Misuse(_) | Error::KeyFile(_) => false,
            Error::Decrypt | Error::Handshake(_) | Error::Crypto(_) => true,
        }
    }
}

/// Which part of the input failed to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Fewer bytes than a record header.
    #[error("record shorter than its {0}-byte header")]
    RecordHeaderTruncated(usize),
    /// The record length field is outside the allowed range or not aligned.
    #[error(
        "record length {0} is not a sealed length between the tag plus one message header and the maximum, in whole 8-byte units"
    )]
    RecordLength(u32),
    /// A reserved record header bit or byte is not zero.
    #[error("record header reserved bits set (flags {0:#04x})")]
    RecordReserved(u8),
    /// Fewer bytes than the record's length field announced.
    #[error("record of {expected} bytes truncated to {actual}")]
    RecordTruncated {
        /// Bytes the header announced (header, body and tag).
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// Fewer bytes than a message header where a message should start.
    #[error("message header truncated: {0} bytes left in the record")]
    MessageHeaderTruncated(usize),
    /// The payload (with its padding) runs past the end of the record.
    #[error("message payload of {length} bytes runs past the record ({available} bytes left)")]
    MessagePayloadTruncated {
        /// Payload length from the header.
        length: u32,
        /// Bytes left in the record after the header.
        available: usize,
    },
    /// Unknown flag bits are set.
    #[error("message flags {0:#04x} use reserved bits")]
    MessageFlags(u8),
    /// The reserved header word is not zero.
    #[error("message reserved word is {0:#x}, not zero")]
    MessageReserved(u32),
    /// Padding after the payload is not all zero bytes.
    #[error("message padding is not zero")]
    MessagePadding,
    /// The flags and ids do not form a valid message (see `docs/PROTOCOL.md`, "Message rules").
    #[error("message header inconsistent: {0}")]
    MessageInconsistent(&'static str),
    /// A link-protocol payload (a hello, an advertisement, a seqno request) does not parse.
    #[error("{what} payload: {reason}")]
    LinkPayload {
        /// Which payload.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A protocol rule the peer broke. One variant per rule, so the logged reason is precise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// CREATE for a transaction id the peer already has open.
    #[error("duplicate CREATE for peer transaction {0}")]
    DuplicateCreate(MsgId),
    /// A second reply CREATE on one of our transactions.
    #[error("duplicate reply CREATE for our transaction {0}")]
    DuplicateReplyCreate(MsgId),
    /// A message names a transaction that is not open on this link.
    #[error("message for unknown transaction {0}")]
    UnknownTransaction(MsgId),
    /// A reply to one of our transactions came before the reply CREATE.
    #[error("reply on our transaction {0} before its reply CREATE")]
    ReplyBeforeCreate(MsgId),
    /// A message on a transaction after the peer's DELETE on it.
    #[error("message on transaction {0} after the peer's DELETE")]
    MessageAfterDelete(MsgId),
    /// CREATE names a parent that is not open on this link.
    #[error("CREATE under unknown parent transaction {0}")]
    UnknownParent(MsgId),
    /// CREATE under a parent on which the peer has already sent DELETE.
    #[error("CREATE under parent {0} after the peer's DELETE on it")]
    CreateUnderClosedParent(MsgId),
    /// A span label longer than [`crate::limits::SPAN_LABEL_MAX`] bytes.
    #[error("span label of {0} bytes is too long")]
    SpanLabel(usize),
    /// Wants that list more clusters than [`crate::limits::SPAN_WANTED_CLUSTERS_MAX`].
    #[error("wants list {0} clusters, too many")]
    SpanWants(usize),
    /// The peer's hello claimed a role its key was not granted (a client key saying router).
    #[error("hello claims role {claimed}, but its key is granted only {granted}")]
    RoleNotGranted {
        /// The role the hello claimed.
        claimed: &'static str,
        /// The role the node's configuration grants the peer's key.
        granted: &'static str,
    },
    /// A link-protocol message out of order: a span before the hello, a second hello, a span
    /// update naming another mount, a seqno request outside a span we opened, and so on.
    #[error("link protocol: {0}")]
    LinkProtocol(&'static str),
}

/// A bound from `src/limits.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    /// Transactions the peer opened on one link
    /// ([`crate::limits::PEER_TXNS_PER_LINK_MAX`]); it opened one too many.
    #[error("peer opened more than {0} transactions on one link")]
    PeerTransactions(usize),
    /// Transactions we opened on one link ([`crate::limits::LOCAL_TXNS_PER_LINK_MAX`]); a local
    /// open was refused.
    #[error("link already has {0} transactions open")]
    LocalTransactions(usize),
    /// Stacking depth ([`crate::limits::TXN_DEPTH_MAX`]) by the peer.
    #[error("peer stacked transactions deeper than {0}")]
    PeerDepth(u32),
    /// Stacking depth by the local caller.
    #[error("transactions stacked deeper than {0}")]
    LocalDepth(u32),
    /// A payload larger than [`crate::limits::MESSAGE_PAYLOAD_MAX`] was to be sent.
    #[error("payload of {0} bytes exceeds the {max}-byte message maximum", max = crate::limits::MESSAGE_PAYLOAD_MAX)]
    PayloadTooLarge(usize),
    /// Our send counter would wrap: no more records can be sealed under this session. The link
    /// must be re-established (rekeying makes this unreachable unless it is disabled).
    #[error("send record counter exhausted: refusing to wrap the nonce")]
    SendCounter,
    /// The peer's records reached the counter or key-use bound of one key without switching
    /// keys ([`crate::limits::RECORDS_PER_KEY_REJECT`]); opening another would wrap or overuse
    /// the key.
    #[error("peer sent {0} records under one key without rekeying")]
    PeerKeyUse(u64),
    /// A neighbour advertised more spans than its share
    /// ([`crate::limits::SPANS_PER_NEIGHBOUR_MAX`]): that span is refused, the link carries on.
    #[error("neighbour already has its share of {0} spans")]
    NeighbourSpans(usize),
    /// A neighbour held more span transactions open, retracted or refused ones included, than
    /// [`crate::limits::SPANS_HELD_PER_NEIGHBOUR_MAX`]: the link is closed.
    #[error("neighbour holds more than {0} span transactions")]
    NeighbourSpansHeld(usize),
    /// A neighbour's advertisement would grow the span table past
    /// [`crate::limits::SPAN_MOUNTS_MAX`] mounts: that span is refused, the link carries on.
    #[error("span table full: {0} mounts")]
    SpanMounts(usize),
    /// A client advertised more mounts than its share
    /// ([`crate::limits::CLIENT_MOUNTS_PER_CLIENT`]): that span is refused.
    #[error("client already has its share of {0} mounts")]
    ClientMountsPerClient(usize),
    /// The node's directory of clients' mounts is full ([`crate::limits::CLIENT_MOUNTS_MAX`]):
    /// the span is refused.
    #[error("client mount directory full: {0} mounts")]
    ClientMounts(usize),
    /// The peer's hello asks for keepalives more often than the node sends them at the most
    /// ([`crate::limits::PEER_IDLE_TIMEOUT_MIN_MS`]): the link is closed.
    #[error("peer's idle timeout of {0} ms is too short to keep its link alive")]
    PeerIdleTimeout(u32),
    /// A local attach would grow the span table past [`crate::limits::SPAN_MOUNTS_MAX`] mounts.
    #[error("span table full: cannot attach beyond {0} mounts")]
    LocalMounts(usize),
    /// Circuits and calls open in one node ([`crate::limits::CIRCUITS_MAX`]).
    #[error("{0} circuits already open")]
    Circuits(usize),
    /// More neighbours than [`crate::limits::SPAN_NEIGHBOURS_MAX`] in one span table.
    #[error("span table already has {0} neighbours")]
    SpanNeighbours(usize),
}

impl Limit {
    /// Whether the peer hit the limit (so the link is closed) rather than the local caller.
    pub fn caused_by_peer(&self) -> bool {
        matches!(
            self,
            Limit::PeerTransactions(_)
                | Limit::PeerDepth(_)
                | Limit::PeerKeyUse(_)
                | Limit::NeighbourSpansHeld(_)
                | Limit::PeerIdleTimeout(_)
        )
    }
}

/// Something the local caller asked for that the protocol does not allow. Nothing was sent and
/// no state changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Misuse {
    /// The handle names no live transaction (it ended, or belongs to another link).
    #[error("{0} is not open")]
    UnknownTransaction(TxnId),
    /// Our direction of the transaction is already closed by our DELETE.
    #[error("{0} is already closed in our direction")]
    AlreadyClosed(TxnId),
    /// The link is down: every transaction on it has ended.
    #[error("the link is down")]
    LinkDown,
    /// A new transaction under a parent whose our direction is closed.
    #[error("cannot open a transaction under {0}: our direction of it is closed")]
    ParentClosed(TxnId),
    /// Records were sealed or opened before the handshake finished.
    #[error("the handshake has not finished")]
    HandshakeNotDone,
    /// The buffer given for a record or a handshake frame is too small for it.
    #[error("buffer of {actual} bytes too small: {needed} needed")]
    BufferTooSmall {
        /// Bytes the operation needs.
        needed: usize,
        /// Bytes the buffer has.
        actual: usize,
    },
    /// A record plaintext length outside what a record may carry (see
    /// [`crate::wire::record::RecordHeader::parse`]).
    #[error("record plaintext of {0} bytes is not a valid record length")]
    RecordLength(usize),
    /// A span table was given a neighbour it does not have (never up, or already down).
    #[error("{0} is not up in this span table")]
    UnknownNeighbour(crate::ids::NeighbourId),
    /// A span table was told a neighbour came up twice.
    #[error("{0} is already up in this span table")]
    DuplicateNeighbour(crate::ids::NeighbourId),
    /// A client's advertisement was given to the span table: clients' mounts are kept in the
    /// node's client directory, never as routes.
    #[error("a client's mount is not a route")]
    ClientAdvert,
    /// Detach of a mount that is not attached here.
    #[error("mount is not attached here")]
    NotAttached,
    /// Attach of a mount an application holds through its local link (`LINK_ATTACH`).
    #[error("an application attached to the node holds the mount")]
    HeldByApplication,
    /// The relay was given a link it does not know (never up, or already down).
    #[error("{0} is not up in this node")]
    UnknownLink(crate::ids::LinkId),
    /// No route to the mount a call was opened to.
    #[error("no route to the mount")]
    NoRoute,
    /// The call handle names no live call.
    #[error("the call is not open")]
    UnknownCall,
    /// Our direction of the call is already closed.
    #[error("the call is already closed in our direction")]
    CallClosed,
}

/// Why a handshake failed. Each variant is a distinct cause, so that the logged reason (and the
/// tests) can tell a misconfigured peer from an attacker from a slow network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Handshake {
    /// The peer speaks another protocol version (the frame's version byte).
    #[error("peer speaks protocol version {0}, we speak {ours}", ours = crate::limits::PROTOCOL_VERSION)]
    Version(u8),
    /// A frame for another step of the handshake than the one expected.
    #[error("expected handshake message {expected}, got {got}")]
    UnexpectedStep {
        /// The step (1, 2 or 3) we wait for.
        expected: u8,
        /// The step the frame announced.
        got: u8,
    },
    /// A handshake message shorter than its step requires.
    #[error("handshake message {step} truncated to {len} bytes")]
    Truncated {
        /// Which message (1, 2 or 3).
        step: u8,
        /// Its length.
        len: u16,
    },
    /// A handshake message longer than its step allows.
    #[error("handshake message {step} of {len} bytes is too long")]
    TooLong {
        /// Which message (1, 2 or 3).
        step: u8,
        /// Its length.
        len: u16,
    },
    /// A handshake message failed to authenticate or carried an invalid key: garbage, a
    /// tampered message, or a peer bound to another prologue.
    #[error("handshake message {0} failed authentication")]
    Garbage(u8),
    /// The peer proved a static key that is not in our allowlist.
    #[error("peer's static key is not in the allowlist")]
    UnknownKey,
    /// The peer proved a static key other than the one we dialled.
    #[error("peer's static key is not the one expected for this peer")]
    WrongKey,
    /// The handshake did not finish before its deadline.
    #[error("handshake timed out")]
    Timeout,
}

/// Why a key file (or key text) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyFile {
    /// The text is not base64 (standard alphabet, padded) followed by at most one newline.
    #[error("not base64 text (expected 44 base64 characters and a newline)")]
    Encoding,
    /// The decoded key does not have 32 bytes.
    #[error("key of {0} bytes, expected 32")]
    Length(usize),
    /// The file can be read or written by its group or others (mode shown, octal).
    #[error(
        "permissions {0:#o} are too open: the key must not be accessible by group or others (chmod 600)"
    )]
    Permissions(u32),
    /// The file exists: keys are never overwritten.
    #[error("file exists; refusing to overwrite a key")]
    Exists,
    /// Reading or writing the file failed.
    #[error("I/O error: {0}")]
    Io(std::io::ErrorKind),
}
