//! The message parser (`wire::Messages`, `Message::new_checked`, `Repr`) and the record header
//! parser (`RecordHeader::parse`, `peek_wire_len`, `Record::new_checked`) against reference
//! parsers written from `docs/PROTOCOL.md` (sections 4.2, 4.3, 5.8), on arbitrary bytes, on
//! messages built from arbitrary field values, and on those with bytes changed:
//! - each parser accepts exactly what the reference accepts, and refuses the rest with the
//!   exact error the protocol lists, in its order;
//! - a message that parses re-emits (through `Repr::parse` and `Repr::emit` into a buffer
//!   filled with 0xa5, and through the `Vec` sink) to the same bytes, its accessors read what
//!   the reference reads, and `Messages` stops after the first error;
//! - any field values the rules admit emit and parse back to themselves; a valid record header
//!   re-emits to the same 8 bytes.

use ringspan::error::{Error, Malformed};
use ringspan::ids::MsgId;
use ringspan::limits::{
    MESSAGE_HEADER_LEN, MESSAGE_PAYLOAD_MAX, RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX,
    RECORD_TAG_LEN,
};
use ringspan::wire::record::{RecordHeader, peek_wire_len};
use ringspan::wire::{Command, ErrorCode, Flags, Message, Messages, Record, Repr, Sink};

use crate::input::Input;

const CREATE: u8 = 0x01;
const REPLY: u8 = 0x04;
const REV_PARENT: u8 = 0x10;

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The message rules of PROTOCOL.md 5.8 on (flags, msgid, parent).
fn rules_hold(flags: u8, msgid: u64, parent: u64) -> bool {
    if msgid == 0 {
        return flags == 0 && parent == 0;
    }
    let opener_create = flags & CREATE != 0 && flags & REPLY == 0;
    if !opener_create && (parent != 0 || flags & REV_PARENT != 0) {
        return false;
    }
    !(flags & REV_PARENT != 0 && parent == 0)
}

/// The reference message parser: the message's length, or the refusal PROTOCOL.md 5.8 lists
/// first for it.
fn reference_message(bytes: &[u8]) -> Result<usize, Malformed> {
    if bytes.len() < MESSAGE_HEADER_LEN {
        return Err(Malformed::MessageHeaderTruncated(bytes.len()));
    }
    let length = le32(bytes, 4);
    let available = bytes.len() - MESSAGE_HEADER_LEN;
    let padded = (length as usize).div_ceil(8) * 8;
    if length as usize > 65_504 || padded > available {
        return Err(Malformed::MessagePayloadTruncated { length, available });
    }
    if bytes[0] & 0xe0 != 0 {
        return Err(Malformed::MessageFlags(bytes[0]));
    }
    if le32(bytes, 28) != 0 {
        return Err(Malformed::MessageReserved(le32(bytes, 28)));
    }
    let end = MESSAGE_HEADER_LEN + length as usize;
    if bytes[end..MESSAGE_HEADER_LEN + padded].iter().any(|&b| b != 0) {
        return Err(Malformed::MessagePadding);
    }
    if !rules_hold(bytes[0], le64(bytes, 8), le64(bytes, 16)) {
        // The rule's wording is the code's; only the variant is compared.
        return Err(Malformed::MessageInconsistent(""));
    }
    Ok(MESSAGE_HEADER_LEN + padded)
}

/// The reference record header parser (PROTOCOL.md 4.2, 4.3): the record's wire length.
fn reference_record(bytes: &[u8]) -> Result<Option<usize>, Malformed> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Ok(None);
    }
    let length = le32(bytes, 0);
    let n = (length as usize).wrapping_sub(16);
    if (length as usize) < 16 + 32 || n > 65_536 || !length.is_multiple_of(8) {
        return Err(Malformed::RecordLength(length));
    }
    if bytes[4] & 0xfe != 0 || bytes[5..8] != [0, 0, 0] {
        return Err(Malformed::RecordReserved(bytes[4]));
    }
    Ok(Some(8 + length as usize))
}

fn same_refusal(got: Error, expected: Malformed) -> bool {
    match (got, expected) {
        (
            Error::Malformed(Malformed::MessageInconsistent(_)),
            Malformed::MessageInconsistent(_),
        ) => true,
        (got, expected) => got == Error::Malformed(expected),
    }
}

/// Walks a record plaintext with `Messages` and with the reference, message by message.
fn check_plaintext(bytes: &[u8]) {
    let mut messages = Messages::new(bytes);
    let mut at = 0;
    loop {
        let got = messages.next();
        if at == bytes.len() {
            assert!(got.is_none(), "a message past the end");
            return;
        }
        let got = got.unwrap_or_else(|| panic!("Messages stopped at {at} of {}", bytes.len()));
        let single = Message::new_checked(&bytes[at..]);
        match (reference_message(&bytes[at..]), got) {
            (Ok(len), Ok(message)) => {
                let single = single.expect("Message::new_checked refused what Messages took");
                assert_eq!(single.wire_len(), len);
                check_message(&bytes[at..at + len], &message);
                at += len;
            }
            (Err(expected), Err(error)) => {
                assert!(same_refusal(error, expected), "at {at}: {error:?}, not {expected:?}");
                assert_eq!(single.unwrap_err(), error);
                assert!(error.closes_link());
                assert!(messages.next().is_none(), "Messages went on after an error");
                return;
            }
            (expected, got) => panic!("at {at}: reference {expected:?}, parser {got:?}"),
        }
    }
}

/// One parsed message: its accessors, and its re-emission.
fn check_message(bytes: &[u8], message: &Message<&[u8]>) {
    assert_eq!(message.wire_len(), bytes.len());
    assert_eq!(message.wire_len() % 8, 0);
    let length = le32(bytes, 4) as usize;
    assert!(length <= MESSAGE_PAYLOAD_MAX);
    assert_eq!(message.flags().bits(), bytes[0]);
    assert_eq!(message.command(), Command::new(bytes[1], u16::from_le_bytes([bytes[2], bytes[3]])));
    assert_eq!(message.payload_len() as usize, length);
    assert_eq!(message.msgid(), MsgId(le64(bytes, 8)));
    assert_eq!(message.parent(), MsgId(le64(bytes, 16)));
    assert_eq!(message.error(), ErrorCode(le32(bytes, 24)));
    assert_eq!(message.payload(), &bytes[MESSAGE_HEADER_LEN..MESSAGE_HEADER_LEN + length]);
    let repr = Repr::parse(message);
    assert_eq!(repr.wire_len(), bytes.len());
    let mut out = vec![0xa5; bytes.len()];
    repr.emit(message.payload(), &mut out);
    assert_eq!(out, bytes, "re-emitted message differs");
    let mut sink = Vec::new();
    sink.put(&repr, message.payload());
    assert_eq!(sink, bytes, "message through the Vec sink differs");
}

/// An id: zero, small, one of a few, or anything.
fn id(input: &mut Input<'_>) -> u64 {
    match input.below(4) {
        0 => 0,
        1 => 1 + input.below(4) as u64,
        2 => u64::MAX - input.below(2) as u64,
        _ => input.u64(),
    }
}

/// Appends one message built from field values the input chooses (valid by the rules or not;
/// its padding and reserved word zero unless the input says otherwise). Returns whether the
/// reference accepts it.
fn build(input: &mut Input<'_>, out: &mut Vec<u8>) -> bool {
    let flags = if input.one_in(8) { input.u8() } else { input.u8() & 0x1f };
    let (msgid, parent) = (id(input), id(input));
    let command = Command::new(input.u8(), input.u16());
    let error = ErrorCode(if input.bool() { input.below(8) as u32 } else { input.u32() });
    let len = match input.below(8) {
        0 => input.below_wide(MESSAGE_PAYLOAD_MAX + 1),
        _ => input.below(80),
    };
    let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ flags).collect();
    let at = out.len();
    if let Some(valid) = Flags::from_bits(flags).filter(|_| rules_hold(flags, msgid, parent)) {
        let repr = Repr {
            flags: valid,
            command,
            msgid: MsgId(msgid),
            parent: MsgId(parent),
            error,
            payload_len: len as u32,
        };
        out.put(&repr, &payload);
        let message = Message::new_checked(&out[at..]).expect("an emitted valid message");
        assert_eq!(Repr::parse(&message), repr, "emit then parse");
        assert_eq!(message.payload(), &payload[..]);
    } else {
        // Written by hand: `Repr::emit` refuses what the rules do not admit.
        out.resize(at + MESSAGE_HEADER_LEN + len.div_ceil(8) * 8, 0);
        let m = &mut out[at..];
        m[0] = flags;
        m[1] = command.proto;
        m[2..4].copy_from_slice(&command.code.to_le_bytes());
        m[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        m[8..16].copy_from_slice(&msgid.to_le_bytes());
        m[16..24].copy_from_slice(&parent.to_le_bytes());
        m[24..28].copy_from_slice(&error.0.to_le_bytes());
        m[MESSAGE_HEADER_LEN..MESSAGE_HEADER_LEN + len].copy_from_slice(&payload);
    }
    if input.one_in(16) {
        // Something in the reserved word or the padding.
        let m = &mut out[at..];
        let spare = m.len() - MESSAGE_HEADER_LEN - len;
        let offset =
            if spare > 0 && input.bool() { MESSAGE_HEADER_LEN + len } else { 28 + input.below(4) };
        m[offset] |= 1 << input.below(8);
    }
    reference_message(&out[at..]).is_ok()
}

/// A record header from the input, checked against the reference, with a body after it.
fn check_record(input: &mut Input<'_>) {
    let mut header = [0u8; RECORD_HEADER_LEN];
    if input.bool() {
        header.iter_mut().for_each(|b| *b = input.u8());
    } else {
        let units = input.below_wide(RECORD_PLAINTEXT_MAX / 8 + 3);
        let length = (units * 8 + RECORD_TAG_LEN) as u32 ^ u32::from(input.u8() & 0x0f);
        header[..4].copy_from_slice(&length.to_le_bytes());
        let mask = if input.one_in(4) { 0xff } else { 0x01 };
        header[4] = input.u8() & mask;
    }
    let body = input.below_wide(RECORD_PLAINTEXT_MAX + 64);
    let mut record = header.to_vec();
    record.resize(RECORD_HEADER_LEN + body, 0);
    let cut = input.below(RECORD_HEADER_LEN + 1);
    assert_eq!(peek_wire_len(&record[..cut.min(7)]), Ok(None));
    let expected = reference_record(&record);
    match (expected, peek_wire_len(&record)) {
        (Ok(expected), Ok(got)) => assert_eq!(expected, got),
        (Err(expected), Err(got)) => assert_eq!(got, Error::Malformed(expected)),
        (expected, got) => panic!("header {header:02x?}: reference {expected:?}, parser {got:?}"),
    }
    match (expected, RecordHeader::parse(&header), Record::new_checked(&record[..])) {
        (Ok(Some(len)), Ok(parsed), checked) => {
            assert_eq!(parsed.wire_len(), len);
            let mut out = [0xa5; RECORD_HEADER_LEN];
            parsed.emit(&mut out);
            assert_eq!(out, header, "re-emitted record header differs");
            match checked {
                Ok(r) => {
                    assert!(len <= record.len());
                    assert_eq!(r.wire_len(), len);
                    assert_eq!(r.aad(), &header);
                    assert_eq!(r.body().len() + RECORD_TAG_LEN + RECORD_HEADER_LEN, len);
                    assert_eq!(r.tag().len(), RECORD_TAG_LEN);
                }
                Err(error) => {
                    assert!(len > record.len());
                    let expected =
                        Malformed::RecordTruncated { expected: len, actual: record.len() };
                    assert_eq!(error, Error::Malformed(expected));
                }
            }
        }
        (Err(expected), Err(error), Err(checked)) => {
            assert_eq!(error, Error::Malformed(expected));
            assert_eq!(checked, error);
            assert!(error.closes_link());
        }
        (expected, parsed, checked) => {
            panic!("header {header:02x?}: reference {expected:?}, {parsed:?}, {checked:?}")
        }
    }
}

/// Runs the parsers on one input; panics on any broken rule.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    match input.below(3) {
        0 => {
            // Arbitrary bytes as a record plaintext.
            check_plaintext(input.bytes(usize::MAX));
        }
        1 => {
            // Messages from field values, then a few bytes changed.
            let mut plaintext = Vec::new();
            for _ in 0..1 + input.below(8) {
                if plaintext.len() > RECORD_PLAINTEXT_MAX {
                    break;
                }
                build(&mut input, &mut plaintext);
            }
            check_plaintext(&plaintext);
            for _ in 0..input.below(4) {
                if plaintext.is_empty() {
                    break;
                }
                let at = input.below_wide(plaintext.len());
                plaintext[at] ^= input.u8();
                check_plaintext(&plaintext);
            }
            if input.bool() {
                plaintext.truncate(input.below_wide(plaintext.len() + 1));
                check_plaintext(&plaintext);
            }
        }
        _ => {
            while !input.is_empty() {
                check_record(&mut input);
            }
        }
    }
}
