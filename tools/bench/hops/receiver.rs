//! The receiver's side of `ringspan-bench hops`: it serves the mount its host attached,
//! answering one-shot requests with their payload, counting one-way streams and echoing
//! request-reply streams, and reports each stream's count when it ends (see `app.rs`).

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use ringspan::relay::{CallId, Node};
use ringspan::ring::WorkerCtx;
use ringspan::wire::{ErrorCode, Flags};

use super::app::{
    ACK, ACK_EVERY_MAX, DATA, DEFAULT_ACK_EVERY, Input, MARK, OPEN_ECHO, OPEN_STREAM, REPORT,
    REPORT_LEN, next_input, refuse,
};
use super::plan::StreamSummary;

/// A one-way stream at the receiver.
#[derive(Debug, Default)]
struct Inbound {
    echo: bool,
    received: u64,
    out_of_order: u64,
    ack_every: u64,
    since_ack: u64,
    marks: [Option<(Instant, u64)>; 2],
}

impl Inbound {
    fn window(&self) -> (u64, Duration) {
        match self.marks {
            [Some((t0, n0)), Some((t1, n1))] => (n1 - n0, t1.saturating_duration_since(t0)),
            _ => (0, Duration::ZERO),
        }
    }

    fn summary(&self, error: ErrorCode) -> StreamSummary {
        let (window_messages, window) = self.window();
        StreamSummary {
            kind: if self.echo { "echo" } else { "one-way" },
            received: self.received,
            out_of_order: self.out_of_order,
            window_messages,
            window_seconds: window.as_secs_f64(),
            error: error.0,
        }
    }
}

/// A receiver's state: its streams.
pub struct Receiving {
    summaries: Option<Sender<StreamSummary>>,
    streams: HashMap<CallId, Inbound, foldhash::fast::RandomState>,
}

impl Receiving {
    /// A receiver sending each stream's summary to `summaries` when it ends.
    pub fn new(summaries: Option<Sender<StreamSummary>>) -> Receiving {
        Receiving { summaries, streams: HashMap::default() }
    }

    /// Handles what the node has for the application; `scratch` holds each event's payload.
    pub fn tick(
        &mut self,
        node: &mut Node,
        scratch: &mut Vec<u8>,
        now: Instant,
        worker: &mut WorkerCtx<'_>,
    ) {
        loop {
            // A stream's data is counted by its sequence number alone: the rest of the payload
            // is not copied (64 KiB a message in bulk), unless it is echoed.
            let streams = &self.streams;
            let counted = |call: CallId| streams.get(&call).is_some_and(|s| !s.echo);
            let Some(input) = next_input(node, scratch, counted) else { return };
            let payload = &scratch[..];
            match input {
                Input::Opened { call, command, flags } if flags.contains(Flags::DELETE) => {
                    // A one-shot request: answer with its payload.
                    let _ =
                        node.send(call, command, payload, Flags::DELETE, ErrorCode::NONE, worker);
                }
                Input::Opened { call, command: OPEN_STREAM, .. } => {
                    let ack_every = payload
                        .get(..4)
                        .map_or(DEFAULT_ACK_EVERY, |b| {
                            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        })
                        .clamp(1, ACK_EVERY_MAX);
                    self.streams.insert(call, Inbound { ack_every, ..Inbound::default() });
                }
                Input::Opened { call, command: OPEN_ECHO, .. } => {
                    self.streams.insert(call, Inbound { echo: true, ..Inbound::default() });
                }
                Input::Opened { call, command, .. } => {
                    refuse(node, call, command, worker);
                }
                Input::Message { call, command, flags } => {
                    let Some(stream) = self.streams.get_mut(&call) else { continue };
                    if flags.contains(Flags::ABORT) {
                        continue;
                    }
                    if flags.contains(Flags::DELETE) {
                        // The sender's last: answer with the counts, and close.
                        let (window_messages, window) = stream.window();
                        let mut report = [0u8; REPORT_LEN];
                        for (i, value) in [
                            stream.received,
                            stream.out_of_order,
                            window_messages,
                            window.as_nanos().min(u128::from(u64::MAX)) as u64,
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            report[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
                        }
                        let _ = node.send(
                            call,
                            REPORT,
                            &report,
                            Flags::DELETE,
                            ErrorCode::NONE,
                            worker,
                        );
                        continue;
                    }
                    if stream.echo {
                        stream.received += 1;
                        let _ =
                            node.send(call, command, payload, Flags::NONE, ErrorCode::NONE, worker);
                        continue;
                    }
                    match command {
                        DATA => {
                            if let Some(seq) = payload.get(..8) {
                                let mut raw = [0u8; 8];
                                raw.copy_from_slice(seq);
                                if u64::from_le_bytes(raw) != stream.received {
                                    stream.out_of_order += 1;
                                }
                            }
                            stream.received += 1;
                            stream.since_ack += 1;
                            if stream.since_ack >= stream.ack_every {
                                stream.since_ack = 0;
                                let count = stream.received.to_le_bytes();
                                let _ = node.send(
                                    call,
                                    ACK,
                                    &count,
                                    Flags::NONE,
                                    ErrorCode::NONE,
                                    worker,
                                );
                            }
                        }
                        MARK => {
                            if let Some(slot) = stream.marks.iter_mut().find(|m| m.is_none()) {
                                *slot = Some((now, stream.received));
                            }
                        }
                        _ => {}
                    }
                }
                Input::Ended { call, error } => {
                    if let Some(stream) = self.streams.remove(&call)
                        && let Some(summaries) = &self.summaries
                    {
                        let _ = summaries.send(stream.summary(error));
                    }
                }
            }
        }
    }
}
