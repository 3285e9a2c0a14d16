//! `Pair`: two transaction endpoints joined by an in-memory byte pipe, on a virtual clock.
//!
//! Each side's messages go into its [`Peer::out`] (the pending record plaintext), are framed
//! into records on [`Pair::transmit`], and arrive at the other side `latency` later, through the
//! same deframer and message parser as a real link. The application is a closure that sees every
//! delivery and event and may send in reply. Nothing here reads the real clock: time advances
//! only to the next arrival.
//!
//! Records are framed but not yet sealed (the tag is zeros): the cipher layer plugs in here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::limits::{RECORD_PLAINTEXT_MAX, RECORD_TAG_LEN};
use crate::txn::{Event, Link, Received};
use crate::wire::record::{RecordHeader, peek_wire_len};
use crate::wire::{ErrorCode, Message, Messages, Record};

/// One end of a [`Pair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The first end.
    A,
    /// The second end.
    B,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// What an end's application is shown.
#[derive(Debug)]
pub enum Output<'a> {
    /// A message arrived.
    Received(Received<'a>),
    /// A lifecycle event from the link.
    Event(Event),
    /// This end found the peer misbehaving and closed the link with this reason.
    Closed(Error),
}

/// An endpoint: its transaction table and what it has sent but not yet framed.
#[derive(Debug, Default)]
pub struct Peer {
    /// The transaction state machine.
    pub link: Link,
    /// Messages sent since the last [`Pair::transmit`]: pass `&mut peer.out` as the sink.
    pub out: Vec<u8>,
}

/// One direction of the pipe.
#[derive(Debug, Default)]
struct Wire {
    /// Framed records in flight; `bytes[..read]` has been consumed.
    bytes: Vec<u8>,
    read: usize,
    /// `(time, end)`: the bytes up to `end` have arrived at `time`.
    arrivals: VecDeque<(Instant, usize)>,
    /// Bytes up to here have arrived.
    arrived: usize,
}

/// The outcome of a bounded drive that did not settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Livelock {
    /// Delivery rounds run.
    pub rounds: usize,
}

/// Counters over a pair's life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Records framed.
    pub records: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Bytes framed.
    pub bytes: u64,
}

/// Two endpoints over an in-memory pipe with a fake clock.
#[derive(Debug)]
pub struct Pair {
    /// End A.
    pub a: Peer,
    /// End B.
    pub b: Peer,
    /// `[A to B, B to A]`.
    wires: [Wire; 2],
    now: Instant,
    latency: Duration,
    connected: bool,
    stats: Stats,
}

impl Pair {
    /// A connected pair whose messages take `latency` to cross.
    pub fn new(latency: Duration) -> Pair {
        // The epoch of virtual time. It is read once and only ever compared with itself plus
        // durations, so runs stay deterministic.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Pair {
            a: Peer::default(),
            b: Peer::default(),
            wires: Default::default(),
            now,
            latency,
            connected: true,
            stats: Stats::default(),
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the link is still up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// One end.
    pub fn peer(&mut self, side: Side) -> &mut Peer {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Frames what both ends have sent into records on the wire, arriving after the latency.
    pub fn transmit(&mut self) {
        if !self.connected {
            self.a.out.clear();
            self.b.out.clear();
            return;
        }
        let arrival = self.now + self.latency;
        let [a_to_b, b_to_a] = &mut self.wires;
        for (peer, wire) in [(&mut self.a, a_to_b), (&mut self.b, b_to_a)] {
            let before = wire.bytes.len();
            let mut start = 0;
            while start < peer.out.len() {
                // Take whole messages up to the record maximum.
                let mut end = start;
                while end < peer.out.len() {
                    let len = Message::new_unchecked(&peer.out[end..]).wire_len();
                    if end + len - start > RECORD_PLAINTEXT_MAX {
                        break;
                    }
                    end += len;
                }
                let header = RecordHeader { plaintext_len: end - start, key_phase: false };
                let at = wire.bytes.len();
                wire.bytes.resize(at + header.wire_len(), 0);
                header.emit(&mut wire.bytes[at..]);
                wire.bytes[at + 8..at + 8 + (end - start)].copy_from_slice(&peer.out[start..end]);
                self.stats.records += 1;
                self.stats.bytes += (header.wire_len()) as u64;
                start = end;
            }
            peer.out.clear();
            if wire.bytes.len() > before {
                wire.arrivals.push_back((arrival, wire.bytes.len()));
            }
        }
    }

    /// Delivers every record that has arrived by now, in both directions, calling `app` for each
    /// delivery and event. Returns whether anything was delivered.
    pub fn deliver(&mut self, app: &mut impl FnMut(Side, &mut Peer, Output<'_>)) -> bool {
        let mut delivered = false;
        for direction in 0..2 {
            let (side, peer) = match direction {
                0 => (Side::B, &mut self.b),
                _ => (Side::A, &mut self.a),
            };
            let wire = &mut self.wires[direction];
            while let Some(&(time, end)) = wire.arrivals.front() {
                if time > self.now {
                    break;
                }
                wire.arrived = end;
                wire.arrivals.pop_front();
            }
            let mut failure = None;
            while failure.is_none() {
                let stream = &wire.bytes[wire.read..wire.arrived];
                let record = match peek_wire_len(stream) {
                    Ok(Some(len)) if len <= stream.len() => Record::new_checked(&stream[..len]),
                    Ok(_) => break,
                    Err(error) => Err(error),
                };
                let record = match record {
                    Ok(record) => record,
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                };
                wire.read += record.wire_len();
                let plaintext = record.body();
                debug_assert_eq!(record.tag(), &[0; RECORD_TAG_LEN]);
                for message in Messages::new(plaintext) {
                    let result = message
                        .and_then(|message| peer.link.handle_message(&mut peer.out, &message));
                    match result {
                        Ok(Some(received)) => {
                            self.stats.messages += 1;
                            delivered = true;
                            app(side, peer, Output::Received(received));
                        }
                        Ok(None) => self.stats.messages += 1,
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                    while let Some(event) = peer.link.poll_event() {
                        app(side, peer, Output::Event(event));
                    }
                }
            }
            // Drop what was consumed (a move within the buffer, never an allocation).
            if wire.read > 0 {
                let read = wire.read;
                wire.bytes.drain(..read);
                wire.read = 0;
                wire.arrived -= read;
                for (_, end) in &mut wire.arrivals {
                    *end -= read;
                }
            }
            if let Some(error) = failure {
                app(side, peer, Output::Closed(error));
                self.cut(app);
                return true;
            }
        }
        delivered
    }

    /// Transmits and delivers until nothing is in flight, advancing virtual time to each
    /// arrival. Fails after `max_rounds` rounds: a livelock in the protocol or the application.
    pub fn drive_bounded(
        &mut self,
        max_rounds: usize,
        app: &mut impl FnMut(Side, &mut Peer, Output<'_>),
    ) -> Result<(), Livelock> {
        for _ in 0..max_rounds {
            self.transmit();
            self.deliver(app);
            if self.a.out.is_empty() && self.b.out.is_empty() {
                match self.next_arrival() {
                    None => return Ok(()),
                    Some(time) => self.now = self.now.max(time),
                }
            }
        }
        Err(Livelock { rounds: max_rounds })
    }

    /// [`Pair::drive_bounded`] with a generous bound, panicking on livelock (for tests).
    pub fn drive(&mut self, app: &mut impl FnMut(Side, &mut Peer, Output<'_>)) {
        if let Err(livelock) = self.drive_bounded(100_000, app) {
            panic!("pair did not settle: {livelock:?}");
        }
    }

    /// Moves virtual time forward.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Cuts the link: everything in flight is lost and both ends end every transaction with
    /// [`ErrorCode::LOST_LINK`].
    pub fn cut(&mut self, app: &mut impl FnMut(Side, &mut Peer, Output<'_>)) {
        self.connected = false;
        for wire in &mut self.wires {
            *wire = Wire::default();
        }
        for (side, peer) in [(Side::A, &mut self.a), (Side::B, &mut self.b)] {
            peer.out.clear();
            peer.link.handle_link_down(ErrorCode::LOST_LINK);
            while let Some(event) = peer.link.poll_event() {
                app(side, peer, Output::Event(event));
            }
        }
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.wires.iter().filter_map(|wire| wire.arrivals.front().map(|&(time, _)| time)).min()
    }
}
