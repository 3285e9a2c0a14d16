//! The rogue's side of the wire: what it reads from the node and handles (the transaction
//! layer's messages, the span protocol, its policy's answers), and how it seals and writes.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use ringspan::limits::{RECORD_HEADER_LEN, RECORD_TAG_LEN};
use ringspan::span::{Advert, Hello};
use ringspan::txn::{Delivery, Event, Received};
use ringspan::wire::record::{peek_wire_len, record_plaintexts};
use ringspan::wire::{Command, ErrorCode, Message, Messages};

use super::{CloseSeen, Delivered, POLL_WAIT, Rogue, Seen, Withheld, now};

impl Rogue {
    pub(super) fn keepalive_due(&self) -> Duration {
        match self.policy.keepalive {
            // Never zero: a zero read timeout means "block" to the socket.
            Some(every) => (self.last_sent + every)
                .saturating_duration_since(now())
                .max(Duration::from_millis(1)),
            None => POLL_WAIT,
        }
    }

    pub(super) fn keepalive(&mut self) {
        let due = self.policy.keepalive.is_some_and(|every| now() >= self.last_sent + every);
        if due && self.closed.is_none() {
            let _ = self
                .send(|link, out| link.send_oneway(out, Command::LINK_PING, ErrorCode::NONE, &[]));
        }
    }

    /// One read, waiting up to `wait`; what arrived is handled.
    pub(super) fn read_some(&mut self, wait: Duration) {
        if self.closed.is_some() {
            return;
        }
        if self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).is_err() {
            return;
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let read = self.stream.read(&mut buf);
        match read {
            Ok(0) => self.lost(CloseSeen::Eof),
            Ok(len) => self.received(&buf[..len]),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => self.lost(CloseSeen::Io(error.kind())),
        }
        self.read_buf = buf;
    }

    /// Handles received bytes: every whole record in them, in order; the answers go out after.
    pub(super) fn received(&mut self, bytes: &[u8]) {
        let mut rx = std::mem::take(&mut self.rx);
        rx.extend_from_slice(bytes);
        let mut at = 0;
        while self.closed.is_none() {
            let len = match peek_wire_len(&rx[at..]) {
                Ok(Some(len)) if rx.len() - at >= len => len,
                Ok(_) => break,
                Err(error) => {
                    self.refuse(error);
                    break;
                }
            };
            match self.opener.open(&mut rx[at..at + len]) {
                Ok(plaintext) => {
                    self.records_in += 1;
                    self.handle_plaintext(plaintext);
                }
                Err(error) => self.refuse(error),
            }
            at += len;
        }
        rx.drain(..at);
        self.rx = rx;
        self.flush();
    }

    pub(super) fn handle_plaintext(&mut self, plaintext: &[u8]) {
        for message in Messages::new(plaintext) {
            if self.closed.is_some() {
                return;
            }
            match message {
                Ok(message) => self.handle_message(&message),
                Err(error) => self.refuse(error),
            }
        }
    }

    pub(super) fn handle_message(&mut self, message: &Message<&[u8]>) {
        let mut answers = Vec::new();
        let received = match self.link.handle_message(&mut answers, message) {
            Ok(received) => received,
            Err(error) => return self.refuse(error),
        };
        match received {
            // A late forced close, dropped by the transaction layer.
            None => {}
            Some(Received::OneWay { command, error, payload }) => {
                if command == Command::LINK_PING {
                    self.pings += 1;
                } else if command == Command::LINK_CLOSE {
                    return self.lost(CloseSeen::Notice(error));
                } else {
                    let payload = payload.to_vec();
                    self.log.push(Seen::OneWay { command, error, payload });
                }
            }
            Some(Received::Txn(delivery)) => {
                if delivery.is_forced_close()
                    && !self.policy.answer_forced_closes
                    && !answers.is_empty()
                {
                    self.withheld.push(Withheld::Bytes(std::mem::take(&mut answers)));
                }
                self.outbox.extend_from_slice(&answers);
                self.span_protocol(&delivery);
                self.log.push(Seen::Delivery(Delivered::new(&delivery, false)));
            }
        }
        self.drain_events();
    }

    /// What the rogue keeps of the node's span protocol: its hello, its spans and their
    /// updates, and its retractions (answered per the [`Policy`]).
    pub(super) fn span_protocol(&mut self, delivery: &Delivery<'_>) {
        if delivery.parent.is_some() {
            return;
        }
        let txn = delivery.txn;
        if delivery.opens() {
            if delivery.command == Command::LINK_CONN {
                match Hello::decode(delivery.payload) {
                    Ok(hello) => self.peer_hello = Some((txn, hello)),
                    Err(error) => self.refuse(error),
                }
            } else if delivery.command == Command::LINK_SPAN {
                match Advert::decode(delivery.payload) {
                    Ok(advert) => {
                        self.spans.insert(advert.mount, (txn, advert));
                        self.span_mounts.insert(txn, advert.mount);
                    }
                    Err(error) => self.refuse(error),
                }
            }
            return;
        }
        let Some(&mount) = self.span_mounts.get(&txn) else { return };
        if delivery.closes() {
            if self.spans.get(&mount).is_some_and(|(span, _)| *span == txn) {
                self.spans.remove(&mount);
            }
            if delivery.is_forced_close() {
                // Answered by the transaction layer (or withheld above).
            } else if self.policy.answer_retractions {
                let mut out = std::mem::take(&mut self.outbox);
                if let Err(error) = self.link.close(&mut out, txn, ErrorCode::NONE) {
                    panic!("rogue: cannot answer the retraction of {txn}: {error}");
                }
                self.outbox = out;
            } else {
                self.withheld.push(Withheld::Retraction(txn));
            }
        } else if delivery.command == Command::LINK_SPAN {
            match Advert::decode(delivery.payload) {
                Ok(advert) if advert.mount == mount => {
                    self.spans.insert(mount, (txn, advert));
                }
                Ok(_) => self.refuse(ringspan::Error::PeerMisbehaved(
                    ringspan::error::Violation::LinkProtocol("a span update naming another mount"),
                )),
                Err(error) => self.refuse(error),
            }
        }
    }

    pub(super) fn drain_events(&mut self) {
        while let Some(event) = self.link.poll_event() {
            match event {
                Event::Delivery(delivery) => {
                    self.log.push(Seen::Delivery(Delivered::new(&delivery, true)));
                }
                Event::Ended { txn, error } => {
                    self.span_mounts.remove(&txn);
                    self.our_spans.remove(&txn);
                    self.log.push(Seen::Ended { txn, error });
                }
            }
        }
    }

    /// The node broke the protocol as the rogue checks it: close, as a peer would.
    pub(super) fn refuse(&mut self, error: ringspan::Error) {
        self.lost(CloseSeen::Refused(error));
    }

    /// The link is over: every transaction ends (section 6.6), the connection is shut.
    pub(super) fn lost(&mut self, close: CloseSeen) {
        if self.closed.is_none() {
            self.closed = Some(close);
        }
        self.link.handle_link_down(ErrorCode::LOST_LINK);
        self.spans.clear();
        self.outbox.clear();
        self.drain_events();
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Seals what waits in the outbox into records and sends them.
    pub(super) fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let outbox = std::mem::take(&mut self.outbox);
        let mut wire = Vec::with_capacity(outbox.len() + 64);
        for plaintext in record_plaintexts(&outbox) {
            self.seal_into(plaintext, &mut wire);
        }
        self.write(&wire);
    }

    pub(super) fn seal_into(&mut self, plaintext: &[u8], wire: &mut Vec<u8>) {
        let start = wire.len();
        wire.resize(start + RECORD_HEADER_LEN, 0);
        wire.extend_from_slice(plaintext);
        wire.resize(wire.len() + RECORD_TAG_LEN, 0);
        if let Err(error) = self.sealer.seal(&mut wire[start..], plaintext.len()) {
            panic!("rogue: cannot seal {} plaintext bytes: {error}", plaintext.len());
        }
        self.records_out += 1;
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        match self.stream.write_all(bytes) {
            Ok(()) => self.last_sent = now(),
            Err(error) => self.lost(CloseSeen::Io(error.kind())),
        }
    }
}
