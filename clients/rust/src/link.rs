//! The client's side of the local link: what it writes goes to the outbox and leaves in one
//! write per batch; what it reads is handled record by record, where it was read.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use ringspan_proto::ids::TxnId;
use ringspan_proto::limits::{RECORD_HEADER_LEN, RECORD_TAG_LEN};
use ringspan_proto::span::Advert;
use ringspan_proto::txn::{self, Delivery, Event, Received};
use ringspan_proto::wire::record::{peek_wire_len, record_plaintexts};
use ringspan_proto::wire::{Command, ErrorCode, Flags, Message, Messages};

use crate::{AttachState, Client, ClientError, Request, check_payload, now};

impl Client {
    /// Writes with the transaction layer into the outbox; sent by the next wait or flush.
    pub(crate) fn write_with<R>(
        &mut self,
        f: impl FnOnce(&mut txn::Link, &mut Vec<u8>) -> Result<R, ringspan_proto::Error>,
    ) -> Result<R, ClientError> {
        if let Some(why) = &self.closed {
            return Err(ClientError::Io(io::Error::new(io::ErrorKind::NotConnected, why.clone())));
        }
        let mut out = std::mem::take(&mut self.outbox);
        let result = f(&mut self.link, &mut out);
        self.outbox = out;
        self.events();
        result.map_err(|error| match error {
            ringspan_proto::Error::Misuse(misuse) => ClientError::Misuse(misuse.to_string()),
            ringspan_proto::Error::LimitReached(_) => {
                ClientError::Refused(ErrorCode::LIMIT_REACHED)
            }
            other => ClientError::Protocol(other.to_string()),
        })
    }

    /// A message on a call to one of our mounts: sent at once unless more requests wait.
    pub(crate) fn answer(
        &mut self,
        request: &Request,
        command: Command,
        payload: &[u8],
        last: bool,
    ) -> Result<(), ClientError> {
        check_payload(payload)?;
        let txn = request.txn;
        if !self.serving.contains_key(&txn) {
            // The call is over: the caller ended it, or the link went.
            return Err(ClientError::Refused(ErrorCode::LOST_LINK));
        }
        let flags = if last { Flags::DELETE } else { Flags::NONE };
        self.write_with(|link, out| link.send(out, txn, command, payload, flags, ErrorCode::NONE))?;
        if self.requests.is_empty() { self.send_outbox() } else { Ok(()) }
    }

    /// A forced close of a call to one of our mounts: sent as an answer is.
    pub(crate) fn force_close(&mut self, txn: TxnId, code: ErrorCode) -> Result<(), ClientError> {
        if !self.serving.contains_key(&txn) {
            return Err(ClientError::Refused(ErrorCode::LOST_LINK));
        }
        self.write_with(|link, out| link.abort(out, txn, code))?;
        if self.requests.is_empty() { self.send_outbox() } else { Ok(()) }
    }

    /// Forgets a call given up on: its end, when the node answers the abort, reaches no one.
    pub(crate) fn forget(&mut self, txn: TxnId) {
        self.calls.remove(&txn);
        self.ended.retain(|&t| t != txn);
    }

    /// A call's outcome, taken: the messages of its answer, or the code it ended with.
    pub(crate) fn take_ended(&mut self, txn: TxnId) -> Option<Result<Vec<Vec<u8>>, ErrorCode>> {
        let code = self.calls.get(&txn)?.ended?;
        let call = self.calls.remove(&txn)?;
        Some(if code == ErrorCode::NONE { Ok(call.parts) } else { Err(code) })
    }

    /// Sends what is queued, then reads and handles what the node sends until `done` holds or
    /// `timeout` passes.
    pub(crate) fn pump_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Client) -> bool,
    ) -> Result<(), ClientError> {
        // A timeout too long to add is no deadline at all.
        let deadline = now().checked_add(timeout);
        let mut buf = std::mem::take(&mut self.read_buf);
        let result = self.pump_into(&mut buf, deadline, &mut done);
        self.read_buf = buf;
        result
    }

    /// [`Client::pump_until`]'s loop, reading into `buf`.
    fn pump_into(
        &mut self,
        buf: &mut [u8],
        deadline: Option<Instant>,
        done: &mut impl FnMut(&Client) -> bool,
    ) -> Result<(), ClientError> {
        let left = || deadline.map(|d| d.saturating_duration_since(now()));
        let mut first = true;
        loop {
            if done(self) {
                return Ok(());
            }
            // Checked on every turn, not only when the socket is empty: a stream of other
            // traffic (calls to our mounts while we wait for an answer) must not hold us past it.
            if !first && left().is_some_and(|l| l.is_zero()) {
                return Err(ClientError::TimedOut);
            }
            first = false;
            if let Some(why) = &self.closed {
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    why.clone(),
                )));
            }
            self.send_outbox()?;
            // Read first: under load the answers are often there already. Only an empty
            // socket costs a poll.
            match self.stream.read(buf) {
                Ok(0) => self.lost("the node closed the socket".into()),
                Ok(len) => {
                    self.counters.reads += 1;
                    self.received(&buf[..len])?
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if left().is_some_and(|l| l.is_zero()) {
                        return Err(ClientError::TimedOut);
                    }
                    self.wait_for(PollFlags::IN, left())?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.lost(e.to_string()),
            }
        }
    }

    /// Waits until the socket is ready for `events`, or `timeout` passes.
    fn wait_for(&self, events: PollFlags, timeout: Option<Duration>) -> Result<(), ClientError> {
        let timeout = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: t.subsec_nanos().into(),
        });
        let mut fds = [PollFd::new(&self.stream, events)];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(errno) => Err(ClientError::Io(errno.into())),
        }
    }

    /// Handles every whole record in what arrived. Answers the protocol asks for (a span's
    /// close) wait in the outbox for the next send.
    fn received(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut rx = std::mem::take(&mut self.rx);
        rx.extend_from_slice(bytes);
        let mut at = 0;
        let mut failed = None;
        // Nothing after the node's close (or a fault) is read.
        while failed.is_none() && self.closed.is_none() {
            let len = match peek_wire_len(&rx[at..]) {
                Ok(Some(len)) if rx.len() - at >= len => len,
                Ok(_) => break,
                Err(error) => {
                    failed = Some(error.to_string());
                    break;
                }
            };
            match self.opener.open(&mut rx[at..at + len]) {
                Ok(plaintext) => {
                    if let Err(error) = self.handle_plaintext(plaintext) {
                        failed = Some(error);
                    }
                }
                Err(error) => failed = Some(error.to_string()),
            }
            at += len;
        }
        rx.drain(..at);
        self.rx = rx;
        if let Some(why) = failed {
            self.lost(why.clone());
            return Err(ClientError::Protocol(why));
        }
        Ok(())
    }

    fn handle_plaintext(&mut self, plaintext: &[u8]) -> Result<(), String> {
        for message in Messages::new(plaintext) {
            if self.closed.is_some() {
                break;
            }
            let message = message.map_err(|e| e.to_string())?;
            self.handle_message(&message)?;
        }
        Ok(())
    }

    fn handle_message(&mut self, message: &Message<&[u8]>) -> Result<(), String> {
        let mut out = std::mem::take(&mut self.outbox);
        let received = self.link.handle_message(&mut out, message);
        self.outbox = out;
        match received.map_err(|e| e.to_string())? {
            Some(Received::OneWay { command, error, .. }) if command == Command::LINK_CLOSE => {
                self.lost(format!("the node closed the link: {error}"));
            }
            // Keepalives and other one-way messages: nothing answers them.
            Some(Received::OneWay { .. }) | None => {}
            Some(Received::Txn(delivery)) => self.delivery(&delivery)?,
        }
        self.events();
        Ok(())
    }

    /// What a delivery means to the client: the node's spans, answers to its attaches and
    /// calls, calls to its mounts.
    fn delivery(&mut self, d: &Delivery<'_>) -> Result<(), String> {
        let txn = d.txn;
        if d.parent.is_none() && d.opens() && d.command == Command::LINK_SPAN {
            let advert = Advert::decode(d.payload).map_err(|e| e.to_string())?;
            self.spans.insert(advert.mount, (txn, advert));
            self.span_mounts.insert(txn, advert.mount);
            return Ok(());
        }
        if let Some(&mount) = self.span_mounts.get(&txn) {
            if d.closes() {
                self.spans.retain(|_, (span, _)| *span != txn);
                if !d.is_forced_close() {
                    // The node retracted the span: our close answers it.
                    let mut out = std::mem::take(&mut self.outbox);
                    let _ = self.link.close(&mut out, txn, ErrorCode::NONE);
                    self.outbox = out;
                }
            } else if d.command == Command::LINK_SPAN
                && let Ok(advert) = Advert::decode(d.payload)
                && advert.mount == mount
            {
                self.spans.insert(mount, (txn, advert));
            }
            return Ok(());
        }
        if let Some((_, state)) = self.attaches.get_mut(&txn) {
            if *state == AttachState::Asked {
                // Closed before it was attached: refused, and the code says why (kept for
                // `attach` to read). Otherwise the answer: attached.
                *state =
                    if d.closes() { AttachState::Ended(d.error) } else { AttachState::Attached };
            }
            // After that, a close is the detach's end: the entry goes when the transaction ends.
            return Ok(());
        }
        let served = match (d.parent, d.opens()) {
            (Some(parent), true) => self.attaches.get(&parent).map(|&(mount, _)| mount),
            (_, false) => self.serving.get(&txn).copied(),
            (None, true) => None,
        };
        if let Some(mount) = served {
            self.serving.insert(txn, mount);
            self.requests.push_back(Request {
                mount,
                command: d.command,
                payload: d.payload.to_vec(),
                first: d.opens(),
                last: d.closes(),
                forced: d.is_forced_close(),
                error: d.error,
                txn,
            });
            return Ok(());
        }
        if let Some(call) = self.calls.get_mut(&txn)
            && !d.flags.contains(Flags::ABORT)
            && !(d.closes() && d.payload.is_empty())
        {
            call.parts.push(d.payload.to_vec());
        }
        Ok(())
    }

    /// Transactions that ended: our calls' outcomes, our attaches', the node's spans.
    fn events(&mut self) {
        while let Some(event) = self.link.poll_event() {
            match event {
                Event::Ended { txn, error } => {
                    if let Some(call) = self.calls.get_mut(&txn) {
                        call.ended = Some(error);
                        self.ended.push_back(txn);
                    }
                    match self.attaches.get(&txn).map(|&(_, state)| state) {
                        // Ended before any answer: refused, or the link went.
                        Some(AttachState::Asked) => {
                            if let Some((_, state)) = self.attaches.get_mut(&txn) {
                                *state = AttachState::Ended(error);
                            }
                        }
                        // Detached.
                        Some(AttachState::Attached) => {
                            self.attaches.remove(&txn);
                        }
                        // Kept for `attach` to read.
                        Some(AttachState::Ended(_)) | None => {}
                    }
                    self.serving.remove(&txn);
                    if let Some(mount) = self.span_mounts.remove(&txn) {
                        self.spans.retain(|m, (span, _)| !(*m == mount && *span == txn));
                    }
                }
                Event::Delivery(d) => {
                    let _ = self.delivery(&d);
                }
            }
        }
    }

    /// The link is over: the socket is shut down (the node then ends this link's calls and
    /// detaches its mounts at once, not when the client is dropped), and so is every
    /// transaction on it.
    pub(crate) fn lost(&mut self, why: String) {
        if self.closed.is_none() {
            self.closed = Some(why);
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
        self.link.handle_link_down(ErrorCode::LOST_LINK);
        self.spans.clear();
        self.outbox.clear();
        self.events();
    }

    /// Frames what waits in the outbox into records and writes them in one write.
    pub(crate) fn send_outbox(&mut self) -> Result<(), ClientError> {
        if self.outbox.is_empty() || self.closed.is_some() {
            return Ok(());
        }
        let outbox = std::mem::take(&mut self.outbox);
        let mut wire = std::mem::take(&mut self.wire);
        wire.clear();
        let mut framed = Ok(());
        for plaintext in record_plaintexts(&outbox) {
            framed = framed.and_then(|()| self.frame(plaintext, &mut wire));
        }
        self.outbox = outbox;
        self.outbox.clear();
        self.counters.writes += 1;
        let written = framed.and_then(|()| self.write_all(&wire));
        self.wire = wire;
        if let Err(error) = written {
            self.lost(error.to_string());
            return Err(error);
        }
        Ok(())
    }

    /// Writes all of `wire` on the non-blocking socket, waiting while the node's side is full.
    fn write_all(&mut self, mut wire: &[u8]) -> Result<(), ClientError> {
        while !wire.is_empty() {
            match self.stream.write(wire) {
                Ok(0) => return Err(ClientError::Io(io::ErrorKind::WriteZero.into())),
                Ok(len) => wire = &wire[len..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait_for(PollFlags::OUT, None)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
        Ok(())
    }

    fn frame(&mut self, plaintext: &[u8], wire: &mut Vec<u8>) -> Result<(), ClientError> {
        let start = wire.len();
        wire.resize(start + RECORD_HEADER_LEN, 0);
        wire.extend_from_slice(plaintext);
        wire.resize(wire.len() + RECORD_TAG_LEN, 0);
        self.sealer
            .seal(&mut wire[start..], plaintext.len())
            .map(|_| ())
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }
}
