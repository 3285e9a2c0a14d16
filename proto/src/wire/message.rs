//! Messages: what a record's plaintext is made of.
//!
//! ```text
//!  0     1     2       4        8         16        24      28        32
//!  +-----+-----+-------+--------+---------+---------+-------+---------+----------------+
//!  |flags|proto|command| length | msgid   | parent  | error |reserved | payload, pad 8 |
//!  +-----+-----+-------+--------+---------+---------+-------+---------+----------------+
//!    u8    u8   u16 LE  u32 LE   u64 LE    u64 LE    u32 LE  u32 zero
//! ```
//!
//! `length` is the exact payload length; the payload is followed by zero bytes up to the next
//! multiple of 8, where the next message (if any) begins. `docs/PROTOCOL.md` gives the rules
//! that tie flags and ids together; [`Message::check`] enforces the ones that need no state.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign};

use crate::error::{Error, Malformed};
use crate::ids::MsgId;
use crate::limits::{MESSAGE_HEADER_LEN, MESSAGE_PAYLOAD_MAX};

use super::{align_up, get_u16, get_u32, get_u64};

mod field {
    use core::ops::Range;

    pub const FLAGS: usize = 0;
    pub const PROTO: usize = 1;
    pub const COMMAND: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..8;
    pub const MSGID: Range<usize> = 8..16;
    pub const PARENT: Range<usize> = 16..24;
    pub const ERROR: Range<usize> = 24..28;
    pub const RESERVED: Range<usize> = 28..32;
    pub const PAYLOAD: usize = 32;
}

/// The flag byte of a message.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u8);

impl Flags {
    /// No flags: a message in the middle of a transaction's stream, or a one-way message.
    pub const NONE: Flags = Flags(0);
    /// The first message of this direction of a transaction.
    pub const CREATE: Flags = Flags(0x01);
    /// The last message of this direction of a transaction.
    pub const DELETE: Flags = Flags(0x02);
    /// Sent by the side that did not open the transaction; so `msgid` is the *receiver's* id.
    pub const REPLY: Flags = Flags(0x04);
    /// Alone: an advisory request to cut the stream short. With DELETE: a forced close.
    pub const ABORT: Flags = Flags(0x08);
    /// On a CREATE: `parent` is a transaction the *receiver* opened.
    pub const REV_PARENT: Flags = Flags(0x10);
    /// Every defined bit.
    pub const ALL: Flags = Flags(0x1f);

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Flags from a byte, or `None` if it uses reserved bits.
    pub const fn from_bits(bits: u8) -> Option<Flags> {
        if bits & !Flags::ALL.0 == 0 { Some(Flags(bits)) } else { None }
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set.
    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    /// `self` without the flags of `other`.
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl BitAnd for Flags {
    type Output = Flags;
    fn bitand(self, rhs: Flags) -> Flags {
        Flags(self.0 & rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(Flags, &str); 5] = [
            (Flags::CREATE, "CREATE"),
            (Flags::DELETE, "DELETE"),
            (Flags::REPLY, "REPLY"),
            (Flags::ABORT, "ABORT"),
            (Flags::REV_PARENT, "REV_PARENT"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("NONE")?;
        }
        Ok(())
    }
}

/// What a message asks for: a protocol number and a command within it. The transaction layer
/// carries commands without interpreting them; upper layers give them meaning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Command {
    /// Protocol: 0 is the link protocol; see `docs/PROTOCOL.md` for the assigned numbers.
    pub proto: u8,
    /// Command within the protocol.
    pub code: u16,
}

impl Command {
    /// A command of a protocol.
    pub const fn new(proto: u8, code: u16) -> Command {
        Command { proto, code }
    }

    /// Link protocol: keepalive, a one-way message answered by nothing.
    pub const LINK_PING: Command = Command::new(0, 1);
    /// Link protocol: a one-way close notice; its error code says why the sender closes the
    /// link. Nothing follows it on the link.
    pub const LINK_CLOSE: Command = Command::new(0, 2);
    /// Link protocol: the transaction each side opens right after the handshake, saying what it
    /// is and which spans it wants; it stays open for the link's life.
    pub const LINK_CONN: Command = Command::new(0, 3);
    /// Link protocol: a span, the transaction that advertises one mount (CREATE), streams its
    /// updates, and retracts it (DELETE). Circuits to the mount open inside it.
    pub const LINK_SPAN: Command = Command::new(0, 4);
    /// Link protocol: a seqno request, sent inside a span in the reply direction (toward the
    /// mount's originator).
    pub const LINK_SPAN_REQUEST: Command = Command::new(0, 5);
    /// Link protocol, between two planes of one node only (PROTOCOL.md 9.9): a one-way note
    /// naming who holds the next circuit the sender opens on the link (the link it came into
    /// the node on). Dropped when a peer sends it, like any one-way message.
    pub const LINK_HOLDER: Command = Command::new(0, 6);
    /// Link protocol: a trace (PROTOCOL.md 8.10), a circuit opened inside a span like a call,
    /// which every node on its path answers for itself with a report instead of carrying it to
    /// an application.
    pub const LINK_TRACE: Command = Command::new(0, 7);
    /// Link protocol, on a local link only (PROTOCOL.md 8.11): an application attaches a
    /// mount as the node's own. The transaction stays open while the mount is attached; calls
    /// to the mount open inside it, toward the application; its close detaches the mount.
    pub const LINK_ATTACH: Command = Command::new(0, 8);
}

/// An error code carried in a message header: why a transaction ended or was refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// No error.
    pub const NONE: ErrorCode = ErrorCode(0);
    /// The link carrying the transaction (or a link further along its circuit) was lost.
    pub const LOST_LINK: ErrorCode = ErrorCode(1);
    /// No route to the mount the transaction was addressed to.
    pub const NO_ROUTE: ErrorCode = ErrorCode(2);
    /// The peer refused the transaction.
    pub const REFUSED: ErrorCode = ErrorCode(3);
    /// A limit was reached (transactions, bytes queued, depth).
    pub const LIMIT_REACHED: ErrorCode = ErrorCode(4);
    /// Aborted by the application, with no more specific reason.
    pub const ABORTED: ErrorCode = ErrorCode(5);
    /// The node is shutting down.
    pub const SHUTDOWN: ErrorCode = ErrorCode(6);
    /// The link duplicates another link between the same two nodes (closed: one link per
    /// adjacency).
    pub const DUPLICATE: ErrorCode = ErrorCode(7);
    /// The circuit carried nothing for longer than the node's idle bound.
    pub const IDLE: ErrorCode = ErrorCode(8);
    /// A request the node answers itself (a `LINK_TRACE`, a `LINK_ATTACH`) was malformed:
    /// refused alone.
    pub const MALFORMED: ErrorCode = ErrorCode(9);
    /// Codes from here on belong to applications.
    pub const APPLICATION_BASE: u32 = 0x1_0000;

    /// Whether this is [`ErrorCode::NONE`].
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ErrorCode::NONE => f.write_str("none"),
            ErrorCode::LOST_LINK => f.write_str("lost link"),
            ErrorCode::NO_ROUTE => f.write_str("no route"),
            ErrorCode::REFUSED => f.write_str("refused"),
            ErrorCode::LIMIT_REACHED => f.write_str("limit reached"),
            ErrorCode::ABORTED => f.write_str("aborted"),
            ErrorCode::SHUTDOWN => f.write_str("shutting down"),
            ErrorCode::DUPLICATE => f.write_str("duplicate link"),
            ErrorCode::IDLE => f.write_str("idle"),
            ErrorCode::MALFORMED => f.write_str("malformed request"),
            ErrorCode(code) => write!(f, "error {code:#x}"),
        }
    }
}

/// A view of one message at the start of a buffer (which may hold more messages after it).
#[derive(Debug, Clone)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Wraps a buffer without checking it. Accessors may panic if the buffer is too short; use
    /// this only on buffers being built, never on input.
    pub const fn new_unchecked(buffer: T) -> Message<T> {
        Message { buffer }
    }

    /// Wraps untrusted bytes, after [`Message::check`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Message<T>, Error> {
        let message = Message::new_unchecked(buffer);
        message.check()?;
        Ok(message)
    }

    /// Checks everything that can be checked without a link's state: the header and the padded
    /// payload are present, no reserved bit is set, padding is zero, and flags and ids agree
    /// (`docs/PROTOCOL.md`, "Message rules"). After it succeeds no accessor panics.
    #[inline]
    pub fn check(&self) -> Result<(), Error> {
        let bytes = self.buffer.as_ref();
        if bytes.len() < MESSAGE_HEADER_LEN {
            return Err(Malformed::MessageHeaderTruncated(bytes.len()).into());
        }
        let length = get_u32(bytes, field::LENGTH.start);
        let available = bytes.len() - MESSAGE_HEADER_LEN;
        if length as usize > MESSAGE_PAYLOAD_MAX || align_up(length as usize) > available {
            return Err(Malformed::MessagePayloadTruncated { length, available }.into());
        }
        let Some(flags) = Flags::from_bits(bytes[field::FLAGS]) else {
            return Err(Malformed::MessageFlags(bytes[field::FLAGS]).into());
        };
        let reserved = get_u32(bytes, field::RESERVED.start);
        if reserved != 0 {
            return Err(Malformed::MessageReserved(reserved).into());
        }
        let end = field::PAYLOAD + length as usize;
        if bytes[end..field::PAYLOAD + align_up(length as usize)].iter().any(|&b| b != 0) {
            return Err(Malformed::MessagePadding.into());
        }
        let msgid = get_u64(bytes, field::MSGID.start);
        let parent = get_u64(bytes, field::PARENT.start);
        check_rules(flags, msgid, parent)
            .map_err(|rule| Malformed::MessageInconsistent(rule).into())
    }

    /// The flags. Reserved bits are dropped (a checked message has none).
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS] & Flags::ALL.0)
    }

    /// The command.
    pub fn command(&self) -> Command {
        let bytes = self.buffer.as_ref();
        Command::new(bytes[field::PROTO], get_u16(bytes, field::COMMAND.start))
    }

    /// The exact payload length, without padding.
    pub fn payload_len(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The transaction id (see [`Flags::REPLY`] for whose it is).
    pub fn msgid(&self) -> MsgId {
        MsgId(get_u64(self.buffer.as_ref(), field::MSGID.start))
    }

    /// The parent transaction's id, on a CREATE; zero otherwise.
    pub fn parent(&self) -> MsgId {
        MsgId(get_u64(self.buffer.as_ref(), field::PARENT.start))
    }

    /// The error code.
    pub fn error(&self) -> ErrorCode {
        ErrorCode(get_u32(self.buffer.as_ref(), field::ERROR.start))
    }

    /// Bytes this message takes in its record (header, payload and padding); the next message
    /// starts there.
    #[inline]
    pub fn wire_len(&self) -> usize {
        MESSAGE_HEADER_LEN + align_up(self.payload_len() as usize)
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<'a> Message<&'a [u8]> {
    /// The payload, borrowed for as long as the underlying buffer.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer[field::PAYLOAD..field::PAYLOAD + self.payload_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    /// Sets the transaction id (a relay rewrites it at every hop).
    pub fn set_msgid(&mut self, msgid: MsgId) {
        self.buffer.as_mut()[field::MSGID].copy_from_slice(&msgid.0.to_le_bytes());
    }

    /// Sets the parent id (a relay rewrites it on a CREATE).
    pub fn set_parent(&mut self, parent: MsgId) {
        self.buffer.as_mut()[field::PARENT].copy_from_slice(&parent.0.to_le_bytes());
    }

    /// Sets the flags.
    pub fn set_flags(&mut self, flags: Flags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    /// The payload, writable. Its length is the header's `length` field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.payload_len() as usize;
        &mut self.buffer.as_mut()[field::PAYLOAD..field::PAYLOAD + len]
    }
}

/// The message rules that need no state; `Err` names the rule broken.
#[inline]
fn check_rules(flags: Flags, msgid: u64, parent: u64) -> Result<(), &'static str> {
    if msgid == 0 {
        if flags != Flags::NONE {
            return Err("a one-way message (msgid 0) carries transaction flags");
        }
        if parent != 0 {
            return Err("a one-way message (msgid 0) names a parent");
        }
        return Ok(());
    }
    let opening = flags.contains(Flags::CREATE) && !flags.contains(Flags::REPLY);
    if !opening && (parent != 0 || flags.contains(Flags::REV_PARENT)) {
        return Err("only the opener's CREATE names a parent");
    }
    if parent == 0 && flags.contains(Flags::REV_PARENT) {
        return Err("REV_PARENT set on a top-level transaction");
    }
    Ok(())
}

/// The valid contents of a message header. Produced by [`Repr::parse`] from a checked message,
/// or built by a sender and written with [`Repr::emit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repr {
    /// Flags.
    pub flags: Flags,
    /// Command.
    pub command: Command,
    /// Transaction id; [`MsgId::ROOT`] for a one-way message.
    pub msgid: MsgId,
    /// Parent transaction id on the opener's CREATE; [`MsgId::ROOT`] otherwise.
    pub parent: MsgId,
    /// Error code.
    pub error: ErrorCode,
    /// Payload length in bytes.
    pub payload_len: u32,
}

impl Repr {
    /// Reads the header of a message that passed [`Message::check`].
    pub fn parse<T: AsRef<[u8]>>(message: &Message<T>) -> Repr {
        Repr {
            flags: message.flags(),
            command: message.command(),
            msgid: message.msgid(),
            parent: message.parent(),
            error: message.error(),
            payload_len: message.payload_len(),
        }
    }

    /// Bytes the message takes in a record, padding included.
    pub fn wire_len(&self) -> usize {
        MESSAGE_HEADER_LEN + align_up(self.payload_len as usize)
    }

    /// Writes the header, `payload` and the padding into `out[..self.wire_len()]`.
    ///
    /// # Panics
    /// If `payload.len()` differs from `payload_len` or `out` is too short: local bugs.
    pub fn emit(&self, payload: &[u8], out: &mut [u8]) {
        debug_assert_eq!(check_rules(self.flags, self.msgid.0, self.parent.0), Ok(()));
        assert_eq!(payload.len(), self.payload_len as usize, "payload length mismatch");
        let out = &mut out[..self.wire_len()];
        out[field::FLAGS] = self.flags.0;
        out[field::PROTO] = self.command.proto;
        out[field::COMMAND].copy_from_slice(&self.command.code.to_le_bytes());
        out[field::LENGTH].copy_from_slice(&self.payload_len.to_le_bytes());
        out[field::MSGID].copy_from_slice(&self.msgid.0.to_le_bytes());
        out[field::PARENT].copy_from_slice(&self.parent.0.to_le_bytes());
        out[field::ERROR].copy_from_slice(&self.error.0.to_le_bytes());
        out[field::RESERVED].fill(0);
        let (body, padding) = out[field::PAYLOAD..].split_at_mut(payload.len());
        body.copy_from_slice(payload);
        padding.fill(0);
    }
}

/// Where a link writes the messages it sends. The caller owns the buffer and decides how
/// messages are grouped into records (so one message never straddles two).
pub trait Sink {
    /// Appends one message.
    fn put(&mut self, repr: &Repr, payload: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, repr: &Repr, payload: &[u8]) {
        let start = self.len();
        self.resize(start + repr.wire_len(), 0);
        repr.emit(payload, &mut self[start..]);
    }
}

/// Iterates the messages of a record's plaintext. Stops after the first malformed message,
/// which it yields as an error; the link is then to be closed.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    /// Messages in `plaintext`.
    pub fn new(plaintext: &'a [u8]) -> Messages<'a> {
        Messages { rest: plaintext }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<&'a [u8]>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match Message::new_checked(self.rest) {
            Ok(message) => {
                let (this, rest) = self.rest.split_at(message.wire_len());
                self.rest = rest;
                Some(Ok(Message::new_unchecked(this)))
            }
            Err(error) => {
                self.rest = &[];
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reply CREATE|DELETE|ABORT on the receiver's transaction 0x0102030405060708, protocol 2,
    /// command 0x0304, error LOST_LINK, payload "hello" padded to 8.
    static GOLDEN: [u8; 40] = [
        0x0f, 0x02, 0x04, 0x03, // flags CREATE|DELETE|REPLY|ABORT, proto 2, command 0x0304
        0x05, 0x00, 0x00, 0x00, // length 5
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // msgid
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // parent
        0x01, 0x00, 0x00, 0x00, // error LOST_LINK
        0x00, 0x00, 0x00, 0x00, // reserved
        b'h', b'e', b'l', b'l', b'o', 0, 0, 0, // payload and padding
    ];

    fn golden_repr() -> Repr {
        Repr {
            flags: Flags::CREATE | Flags::DELETE | Flags::REPLY | Flags::ABORT,
            command: Command::new(2, 0x0304),
            msgid: MsgId(0x0102_0304_0506_0708),
            parent: MsgId::ROOT,
            error: ErrorCode::LOST_LINK,
            payload_len: 5,
        }
    }

    /// An opener's CREATE of transaction 9 under the receiver's transaction 7, no payload.
    static GOLDEN_STACKED: [u8; 32] = [
        0x11, 0x00, 0x01, 0x00, // CREATE|REV_PARENT, proto 0, command 1
        0x00, 0x00, 0x00, 0x00, // length 0
        0x09, 0, 0, 0, 0, 0, 0, 0, // msgid 9
        0x07, 0, 0, 0, 0, 0, 0, 0, // parent 7
        0x00, 0x00, 0x00, 0x00, // no error
        0x00, 0x00, 0x00, 0x00, // reserved
    ];

    #[test]
    fn deconstruct() {
        let message = Message::new_checked(&GOLDEN[..]).unwrap();
        assert_eq!(message.flags(), Flags::CREATE | Flags::DELETE | Flags::REPLY | Flags::ABORT);
        assert_eq!(message.command(), Command::new(2, 0x0304));
        assert_eq!(message.payload_len(), 5);
        assert_eq!(message.msgid(), MsgId(0x0102_0304_0506_0708));
        assert_eq!(message.parent(), MsgId::ROOT);
        assert_eq!(message.error(), ErrorCode::LOST_LINK);
        assert_eq!(message.payload(), b"hello");
        assert_eq!(message.wire_len(), 40);
        assert_eq!(Repr::parse(&message), golden_repr());

        let stacked = Message::new_checked(&GOLDEN_STACKED[..]).unwrap();
        assert_eq!(stacked.flags(), Flags::CREATE | Flags::REV_PARENT);
        assert_eq!(stacked.msgid(), MsgId(9));
        assert_eq!(stacked.parent(), MsgId(7));
        assert_eq!(stacked.payload(), b"");
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 40];
        golden_repr().emit(b"hello", &mut bytes);
        assert_eq!(bytes, GOLDEN);

        let mut bytes = [0xa5u8; 32];
        let stacked = Repr {
            flags: Flags::CREATE | Flags::REV_PARENT,
            command: Command::new(0, 1),
            msgid: MsgId(9),
            parent: MsgId(7),
            ..Repr::default()
        };
        stacked.emit(b"", &mut bytes);
        assert_eq!(bytes, GOLDEN_STACKED);
    }

    #[test]
    fn rewrite_ids_in_place() {
        let mut bytes = GOLDEN_STACKED;
        let mut message = Message::new_checked(&mut bytes[..]).unwrap();
        message.set_msgid(MsgId(0x55));
        message.set_parent(MsgId(0x66));
        message.set_flags(Flags::CREATE);
        let message = Message::new_checked(&bytes[..]).unwrap();
        assert_eq!((message.msgid(), message.parent()), (MsgId(0x55), MsgId(0x66)));
        assert_eq!(message.flags(), Flags::CREATE);
    }

    #[test]
    fn truncations_refused() {
        for len in 0..MESSAGE_HEADER_LEN {
            assert_eq!(
                Message::new_checked(&GOLDEN[..len]).unwrap_err(),
                Malformed::MessageHeaderTruncated(len).into()
            );
        }
        for len in MESSAGE_HEADER_LEN..GOLDEN.len() {
            assert_eq!(
                Message::new_checked(&GOLDEN[..len]).unwrap_err(),
                Malformed::MessagePayloadTruncated { length: 5, available: len - 32 }.into(),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn oversize_length_refused() {
        let mut bytes = vec![0u8; MESSAGE_HEADER_LEN + MESSAGE_PAYLOAD_MAX + 8];
        let len = (MESSAGE_PAYLOAD_MAX + 1) as u32;
        bytes[4..8].copy_from_slice(&len.to_le_bytes());
        assert_eq!(
            Message::new_checked(&bytes[..]).unwrap_err(),
            Malformed::MessagePayloadTruncated { length: len, available: bytes.len() - 32 }.into()
        );
    }

    #[test]
    fn reserved_bits_and_padding_refused() {
        let mut bytes = GOLDEN;
        bytes[0] |= 0x20;
        assert_eq!(
            Message::new_checked(&bytes[..]).unwrap_err(),
            Malformed::MessageFlags(0x2f).into()
        );

        let mut bytes = GOLDEN;
        bytes[31] = 1;
        assert_eq!(
            Message::new_checked(&bytes[..]).unwrap_err(),
            Malformed::MessageReserved(0x0100_0000).into()
        );

        let mut bytes = GOLDEN;
        bytes[39] = 1;
        assert_eq!(Message::new_checked(&bytes[..]).unwrap_err(), Malformed::MessagePadding.into());
    }

    #[test]
    fn inconsistent_headers_refused() {
        let refused = |flags: Flags, msgid: u64, parent: u64| {
            let repr =
                Repr { flags, msgid: MsgId(msgid), parent: MsgId(parent), ..Repr::default() };
            let mut bytes = [0u8; 32];
            // Bypass emit's debug assertion: write the fields by hand.
            bytes[0] = repr.flags.bits();
            bytes[8..16].copy_from_slice(&msgid.to_le_bytes());
            bytes[16..24].copy_from_slice(&parent.to_le_bytes());
            matches!(
                Message::new_checked(&bytes[..]),
                Err(Error::Malformed(Malformed::MessageInconsistent(_)))
            )
        };
        // One-way messages carry no transaction flags and no parent.
        assert!(refused(Flags::CREATE, 0, 0));
        assert!(refused(Flags::ABORT, 0, 0));
        assert!(refused(Flags::NONE, 0, 3));
        // Only the opener's CREATE names a parent.
        assert!(refused(Flags::NONE, 1, 3));
        assert!(refused(Flags::CREATE | Flags::REPLY, 1, 3));
        assert!(refused(Flags::DELETE | Flags::REV_PARENT, 1, 0));
        // REV_PARENT needs a parent.
        assert!(refused(Flags::CREATE | Flags::REV_PARENT, 1, 0));
        // And the valid ones pass.
        assert!(!refused(Flags::NONE, 0, 0));
        assert!(!refused(Flags::CREATE, 1, 3));
        assert!(!refused(Flags::CREATE | Flags::REV_PARENT, 1, 3));
        assert!(!refused(Flags::DELETE | Flags::ABORT | Flags::REPLY, 1, 0));
    }

    #[test]
    fn messages_iterates_a_record_and_stops_at_garbage() {
        let mut plaintext = Vec::new();
        plaintext.put(&golden_repr(), b"hello");
        plaintext.extend_from_slice(&GOLDEN_STACKED);
        plaintext.put(&Repr { payload_len: 3, ..Repr::default() }, b"abc");
        let found: Vec<_> = Messages::new(&plaintext).map(|m| m.unwrap().payload()).collect();
        assert_eq!(found, [&b"hello"[..], b"", b"abc"]);

        plaintext.extend_from_slice(&[0xff; 8]);
        let results: Vec<_> = Messages::new(&plaintext).collect();
        assert_eq!(results.len(), 4);
        assert!(results[3].is_err());
    }

    fn any_repr() -> impl Strategy<Value = Repr> {
        let flags = (0u8..0x20).prop_map(|bits| Flags::from_bits(bits).unwrap());
        (flags, any::<u8>(), any::<u16>(), any::<u64>(), any::<u64>(), any::<u32>())
            .prop_filter_map(
                "valid flag/id combination",
                |(flags, proto, code, msgid, parent, error)| {
                    check_rules(flags, msgid, parent).ok()?;
                    Some(Repr {
                        flags,
                        command: Command::new(proto, code),
                        msgid: MsgId(msgid),
                        parent: MsgId(parent),
                        error: ErrorCode(error),
                        payload_len: 0,
                    })
                },
            )
    }

    proptest! {
        #[test]
        fn emit_then_parse_round_trips(repr in any_repr(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let repr = Repr { payload_len: payload.len() as u32, ..repr };
            let mut bytes = Vec::new();
            bytes.put(&repr, &payload);
            prop_assert_eq!(bytes.len(), repr.wire_len());
            prop_assert_eq!(bytes.len() % 8, 0);
            let message = Message::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&message), repr);
            prop_assert_eq!(message.payload(), &payload[..]);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            // Every accessor is safe on a checked message.
            for message in Messages::new(&bytes).flatten() {
                let _ = (Repr::parse(&message), message.payload(), message.wire_len());
            }
            let _ = crate::wire::record::peek_wire_len(&bytes);
            let _ = crate::wire::Record::new_checked(&bytes[..]);
        }

        #[test]
        fn arbitrary_headers_with_valid_lengths_never_panic(
            header in proptest::array::uniform32(any::<u8>()),
            payload_len in 0usize..64,
        ) {
            let mut bytes = header.to_vec();
            bytes[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
            bytes.resize(32 + align_up(payload_len), 0);
            if let Ok(message) = Message::new_checked(&bytes[..]) {
                prop_assert_eq!(message.wire_len(), bytes.len());
                let _ = Repr::parse(&message);
            }
        }
    }
}
