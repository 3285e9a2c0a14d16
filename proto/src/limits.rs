//! Every bound in ringspan, in one place.
//!
//! Nothing a peer sends can make a table, queue or buffer grow past a number written here. Each
//! limit says why it has its value; `const` assertions at the bottom tie dependent limits together
//! so that changing one cannot silently break another.

/// Bytes of a record's header: length (4), flags (1), reserved (3). See `docs/PROTOCOL.md`.
pub const RECORD_HEADER_LEN: usize = 8;

/// Bytes of the AES-256-GCM tag that ends every record.
pub const RECORD_TAG_LEN: usize = 16;

/// Largest plaintext in one record. 64 KiB: large enough that a bulk stream pays the fixed
/// per-record AEAD cost (~110 ns here: `cargo bench --bench cipher -- seal/ours/64`) on at most
/// 0.2% of its bytes, small enough that a receive buffer for a whole record is cheap to pool.
pub const RECORD_PLAINTEXT_MAX: usize = 64 * 1024;

/// Largest record on the wire: header, plaintext and tag.
pub const RECORD_WIRE_MAX: usize = RECORD_HEADER_LEN + RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN;

/// Bytes of a message header. See `docs/PROTOCOL.md`.
pub const MESSAGE_HEADER_LEN: usize = 32;

/// Messages start on multiples of this within a record's plaintext; payloads are zero-padded to
/// it. Eight keeps every header field naturally aligned when the record buffer is.
pub const MESSAGE_ALIGN: usize = 8;

/// Largest payload of one message: a message never spans records. Larger application data is
/// streamed as several messages of one transaction.
pub const MESSAGE_PAYLOAD_MAX: usize = RECORD_PLAINTEXT_MAX - MESSAGE_HEADER_LEN;

/// Transactions the *peer* may have opened on one link at once (stacked ones included). One more
/// CREATE closes the link with `LimitReached`. 65,536 covers a core link carrying thousands of
/// spans plus the circuits stacked in them; the table grows to what is used, so an idle link
/// costs nothing for this bound.
pub const PEER_TXNS_PER_LINK_MAX: usize = 65_536;

/// Transactions *we* may have opened on one link at once; one more local open is refused. Kept
/// at half the peer bound: each end frees a transaction at a different moment (whichever DELETE
/// comes last), so the peer may still hold transactions we have already freed. The difference
/// is the room for those, and a correct node never reaches its peer's bound.
pub const LOCAL_TXNS_PER_LINK_MAX: usize = PEER_TXNS_PER_LINK_MAX / 2;

/// How deep transactions may be stacked, in the transaction layer: bounds every walk over a
/// transaction's ancestors. A ringspan node itself accepts from a peer no deeper than a circuit
/// inside a span (depth 2) and refuses any other child (PROTOCOL.md 6.2); the layer allows more
/// for other users of it.
pub const TXN_DEPTH_MAX: u32 = 8;

/// The link protocol version: the first byte after the length of every handshake frame, and
/// bound into the Noise prologue (`b"ringspan/1"`), so two versions never derive the same keys.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes of a handshake frame's header: length (u16 LE), version (u8), step (u8).
pub const HANDSHAKE_FRAME_HEADER_LEN: usize = 4;

/// Largest Noise message in a handshake frame. Version 1 carries no handshake payloads, so every
/// message has one exact length (32, 96 and 64 bytes for the three XX messages); anything
/// longer is refused before Noise sees it. 96 is the longest; a version with payloads raises it.
pub const HANDSHAKE_MESSAGE_MAX: usize = 96;

/// Largest handshake frame: what a session buffers at most while a frame arrives.
pub const HANDSHAKE_FRAME_MAX: usize = HANDSHAKE_FRAME_HEADER_LEN + HANDSHAKE_MESSAGE_MAX;

/// Default time from the start of a handshake to its end, after which it fails with
/// `Handshake::Timeout`. 10 s: three messages over a slow intercontinental path take well under
/// a second; WireGuard retries after 5 s (REKEY_TIMEOUT) but we do not retry within a
/// connection, so allow two such periods before giving a slot back under a reconnect storm.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Default records sealed under one key before the sender switches to the next key. RFC 8446
/// §5.5 allows 2^24.5 full-size TLS records (16 KiB, 2^10 AES blocks each) per AES-GCM key: a
/// bound of 2^34.5 blocks. Our records hold up to 64 KiB (2^12 blocks), so the same bound is
/// 2^22.5 (5.9 M) of ours; 2^21 (2.1 M, 128 GiB at full size) keeps us at about a third of it.
pub const RECORDS_PER_KEY: u64 = 1 << 21;

/// Records a receiver accepts under one key before refusing the peer (`Limit::PeerKeyUse`):
/// 2^22 (4.2 M) is under the 2^22.5 full-size records that RFC 8446 §5.5's bound allows
/// (see [`RECORDS_PER_KEY`]) and leaves room for a sender configured with twice our default.
pub const RECORDS_PER_KEY_REJECT: u64 = 1 << 22;

/// Default age of a sending key after which the sender switches to the next key, in
/// milliseconds: WireGuard's REKEY_AFTER_TIME, 120 s. Bounds how much traffic a key
/// compromised later can reveal.
pub const REKEY_AFTER_MS: u64 = 120_000;

/// Submission queue entries per worker ring. Each link has at most three operations in flight
/// (receive, send, connect or cancel); 4,096 entries let a turn queue that many without an
/// intermediate submit, and the queue is flushed whenever it fills anyway.
pub const RING_ENTRIES: u32 = 4096;

/// Provided receive buffers per worker. Shared by every link of the worker: an idle link holds
/// none, and a buffer goes back to the kernel in the turn it was filled. 64 × 256 KiB = 16 MiB
/// per worker.
pub const RECV_BUFFERS: u16 = 64;

/// Of a worker's receive buffers, the share its sends may hold at once through records
/// forwarded from where they arrived (one record pins its whole buffer until its send
/// completes): one in `RECV_LENT_SHARE`, half. Past it a forwarded record is copied, so the
/// other half always remains for receiving, however slowly the next links drain.
pub const RECV_LENT_SHARE: u16 = 2;

/// Of a worker's receive buffers, the share one link's sends may hold through records
/// forwarded in place: one in `RECV_LENT_LINK_SHARE` (at least one record), a quarter. Past it
/// that link is sent copies, so a link whose peer reads slowly (or not at all) pins at most
/// this much of its worker's receive memory.
pub const RECV_LENT_LINK_SHARE: u16 = 4;

/// Bytes per provided receive buffer. Four maximum records: a receive takes whatever the
/// socket holds up to this, most records land whole and are opened where they landed, and only
/// the one cut by the buffer's end is copied to be reassembled.
pub const RECV_BUFFER_SIZE: u32 = 256 * 1024;

/// Record buffers pooled per worker, for records being built or sent and for records that
/// arrived split across receive buffers. A miss allocates and is counted, never fails.
pub const POOL_RECORDS: usize = 256;

/// Send descriptors (a `msghdr` and its iovecs, ~320 bytes, held by the kernel while a send is
/// in flight) made per worker at start: as many links may have a send in flight at once before
/// one more is allocated (and kept for reuse). Without them, the first time a keepalive's send
/// overlapped a busy link's, the worker allocated in the middle of its traffic.
pub const SEND_VECS: usize = 64;

/// Bytes of a small record buffer (see `link::pool`): a record starts in one and moves to a
/// full-size buffer only if it outgrows it. 512 holds every control record with room to
/// spare — a keepalive or close notice is 56 bytes on the wire, a handshake frame at most 100,
/// a client's hello 64, a span advert at most 176 — so a link that only keeps alive never
/// takes a 64 KiB buffer.
pub const SMALL_RECORD_BUF: usize = 512;

/// Small record buffers pooled per worker (2 MiB): a turn that writes a control record to
/// thousands of links (keepalives falling due together, a shutdown's close notices, an advert
/// to every client) finds them ready; a miss allocates 512 bytes and is counted.
pub const POOL_SMALL_RECORDS: usize = 4_096;

/// A link whose send has not completed for this long is closed: the peer does not read.
pub const SEND_STALL_TIMEOUT_MS: u64 = 30_000;

/// A record being reassembled in a full-size buffer (more than [`SMALL_RECORD_BUF`] bytes of
/// it arrived, the rest not yet) must complete within this long, or the link is closed
/// (`ring::Config::record_completion_timeout`; the engine checks once per period, so a buffer
/// is held at most twice this). Without it a peer could pin 64 KiB of a node's memory per link
/// for as long as it liked by sending 513 bytes of a record and then one byte per idle timeout.
/// 10 s asks a sender for 64 KiB in 10 s (6.5 KB/s, a 52 kbit/s path) once it has begun a
/// record, far below any link a cluster runs on, and bounds a stranger's pinned memory by
/// the handshake rate (each pin costs a new link) instead of by the links a node holds.
pub const RECORD_COMPLETION_TIMEOUT_MS: u64 = 10_000;

/// A link with more sealed bytes than this waiting to be sent is closed: its peer does not read
/// fast enough and the node will not buffer without bound. 8 MiB is 128 full records.
pub const SEND_QUEUE_MAX_BYTES: usize = 8 << 20;

/// A link that sent nothing for this long sends a keepalive. With [`IDLE_TIMEOUT_MS`] this finds
/// a silent dead link within 5 s (NATS takes up to 60–90 s by default).
pub const KEEPALIVE_INTERVAL_MS: u64 = 1_000;

/// A link that received nothing (not even a keepalive) for this long is closed.
pub const IDLE_TIMEOUT_MS: u64 = 5_000;

/// The shortest idle timeout a peer may ask for in its hello. Each end keeps alive at most a
/// third of the other's idle timeout apart (so two keepalives may be late), so a peer asking
/// for less than this would have us send a keepalive more often than every 10 ms; its link is
/// refused at the hello (`Limit::PeerIdleTimeout`) instead of being left to time out.
pub const PEER_IDLE_TIMEOUT_MIN_MS: u64 = 30;

/// The shortest keepalive interval a link may be given (`ring::WorkerCtx::set_keepalive`).
/// A link's interval follows the other end's idle timeout, which that end announces: without
/// a floor, a peer announcing a microsecond would have us seal a keepalive every turn. 10 ms
/// (100 keepalives a second, ~5.6 KB/s) is already more than any idle timeout a node would
/// set needs (a configuration's default is 1 s for 5 s).
pub const KEEPALIVE_INTERVAL_MIN_MS: u64 = 10;

/// On shutdown, links get this long to send their close notice before they are cut.
pub const SHUTDOWN_GRACE_MS: u64 = 2_000;

/// Commands queued to one worker from other threads before senders wait.
pub const MAILBOX_COMMANDS: usize = 1024;

/// Bytes of each lane between two workers of one engine (one per ordered pair: an engine of W
/// workers holds W × (W − 1) of them, 30 MiB at 16 workers). A full lane takes what fits and
/// the writer keeps the rest (DESIGN 7c.3).
pub const LANE_BYTES: usize = 128 << 10;

/// Bytes a worker's internal links may hold unsent (their lanes full: another worker does not
/// keep up) before the worker stops reading its sockets; it reads them again once they hold
/// less than [`LANE_QUEUE_RESUME_BYTES`]. So what a worker hands to another is bounded, and a
/// slow worker slows the peers feeding it, as a slow reader slows a TCP sender (DESIGN 7c.3).
pub const LANE_QUEUE_PAUSE_BYTES: usize = 4 << 20;

/// See [`LANE_QUEUE_PAUSE_BYTES`].
pub const LANE_QUEUE_RESUME_BYTES: usize = 1 << 20;

/// Records an internal link's send queue holds without allocating (made at start): what
/// [`LANE_QUEUE_PAUSE_BYTES`] and a turn's receives come to in records of a few KiB. A deeper
/// queue grows it once.
pub const LANE_QUEUE_RECORDS: usize = 4096;

/// Pending connections the kernel queues per listening socket.
pub const LISTEN_BACKLOG: i32 = 1024;

/// A link on which only keepalives have crossed for this long drops its expanded AES-GCM key
/// schedules (about 1 KiB for both directions) and keeps the 32-byte keys; the next record
/// rebuilds them in about a microsecond. One second: a busy link never pays, a link used now
/// and then pays a microsecond or two per burst, and an idle client stops paying for keys it
/// does not use. It also bounds how many links hold schedules during a reconnect storm (about
/// the handshake rate times this), which is what keeps a satellite's heap from being left
/// riddled with the freed schedules of every client once the storm is over.
pub const SHED_KEYS_AFTER_MS: u64 = 1_000;

/// Default bound on the links of one worker, established and handshaking together
/// (`ring::Config::max_links`); a connection accepted past it is closed at once, before any
/// handshake work. A node runs on one worker (DESIGN 7c.3) and a satellite is meant to hold a
/// million client links, so the default is 2^20: room for that goal, and still a ceiling a
/// flood of connections cannot push memory past (3.2 KiB of engine state per idle link, as
/// `tests/alloc/link_memory.rs` measures, so ~3.4 GiB at the bound). Where RLIMIT_NOFILE is
/// lower, descriptors run out first and accepting pauses instead (DESIGN 7.8).
pub const MAX_LINKS_PER_WORKER: usize = 1 << 20;

/// Local links (applications attached through the node's attach socket, `ring::Config::attach`)
/// an engine holds at once; one more connection is closed at once, counted. Only processes the
/// socket file's mode and the allowed uids/gids let in can connect, so this is not a defence
/// against strangers but a ceiling on what a runaway local client (one that reconnects in a
/// loop without closing) can pin: each local link is a link like any other (~3.2 KiB idle, see
/// [`MAX_LINKS_PER_WORKER`]) plus what its transactions hold within their shares. 1,024 is far
/// more applications than one host runs beside a node, and still a few MiB at most.
pub const ATTACH_LINKS_MAX: usize = 1_024;

/// Local links the processes of one uid hold at once: the share of [`ATTACH_LINKS_MAX`] one
/// local principal may take. The node tells its attached applications apart by the uid the
/// kernel gives (`SO_PEERCRED`), not by pid: processes of one uid can already signal and trace
/// each other, and a pid is had for a fork. A quarter, so that no one uid (a runaway service
/// reconnecting in a loop, or a compromised one) can keep the applications of other users out.
/// One more connection from that uid is closed at once, counted.
pub const ATTACH_LINKS_PER_UID_MAX: usize = ATTACH_LINKS_MAX / 4;

/// Default handshakes a worker starts per second on accepted connections
/// (`ring::Config::max_handshakes_per_sec`), a token bucket refilled continuously with a burst
/// of one second's worth; a connection accepted with no token is closed at once. An accepted
/// handshake costs the worker ~330 µs of CPU on the 2-vCPU EPYC VM (`ringspan-bench serve`
/// used 4.0 s while `ringspan-bench clients` opened 10,000 links at 1,500/s, kernel TCP work
/// and keepalives included; the responder's cryptography alone is ~127 µs, `cargo bench --bench
/// cipher -- handshake/session-responder-side`). 2,000 a second is therefore about two thirds
/// of a core: during a reconnect storm established links keep the rest, and a million clients
/// are back within nine minutes per worker. Dials are not limited: a node chooses its own.
pub const HANDSHAKES_PER_SEC: u32 = 2_000;

/// Default handshakes a worker starts per second, beyond [`HANDSHAKES_PER_SEC`], on
/// connections from trusted source addresses (`ring::Config::trusted_handshakes_per_sec`): a
/// second token bucket, used only when the common one is empty, that strangers never touch.
/// 250 a second is about 8% of a core at ~330 µs per handshake, so a storm of strangers and
/// trusted peers together take under three quarters of a core; it brings
/// [`CONFIG_PEERS_MAX`] peers back within 17 s even while strangers empty the common bucket.
pub const TRUSTED_HANDSHAKES_PER_SEC: u32 = 250;

/// Default link slots per worker that only connections from trusted source addresses may take
/// (`ring::Config::reserved_links`; strangers are refused at `max_links` minus these; at most
/// half of `max_links` is ever reserved, and nothing while no source is trusted). One for each
/// peer a configuration may list ([`CONFIG_PEERS_MAX`]), so every configured peer gets a link
/// however many strangers hold the rest: 0.4% of [`MAX_LINKS_PER_WORKER`].
pub const RESERVED_LINKS: usize = CONFIG_PEERS_MAX;

/// Default first wait before a node dials a lost peer again (a configuration's
/// `redial_min_ms`). `relay::redial` doubles the wait after each failure in a row, up to
/// [`REDIAL_MAX_MS`], and jitters each wait down by up to half, so peers that failed together
/// do not retry together; a link that was up for [`REDIAL_STABLE_MS`] and went down is
/// redialled after this first step.
pub const REDIAL_MIN_MS: u64 = 100;

/// Default longest wait between two dials of a lost peer (a configuration's `redial_max_ms`):
/// a peer that stays down costs one dial every few seconds, and one that comes back is
/// linked again within this long.
pub const REDIAL_MAX_MS: u64 = 5_000;

/// How long a link to a configured peer must stay up before its loss clears the redial
/// backoff (`relay::redial`); a link that goes down sooner counts as a failed dial, and the
/// next dial waits the next step. A peer that refuses us does so within a round trip or two of
/// the handshake: a node that does not allow our key closes the connection on reading the
/// handshake's last message, and one that refuses our hello answers it with `REFUSED`. Two
/// seconds is ten round trips of 200 ms (a link across the world) with room for a loaded
/// peer, and short beside the life of a working link, so a link that was of use and is lost is
/// still redialled after the first step. It is a constant rather than derived from
/// `redial_max_ms`: how fast a refusal arrives depends on the network, not on how patient the
/// node is configured to be; a working link lost within it only waits one step longer (at most
/// `redial_max_ms`).
pub const REDIAL_STABLE_MS: u64 = 2_000;

/// Host names of configured peers (`[[peer]] address = "host:port"`) waiting for a resolver
/// thread, per node (`daemon::resolve`). Each peer has at most one resolution in flight, so this
/// many is reached only by a node with more named peers than that dialling at once (and
/// resolutions that hang: an unresponsive DNS server). A dial whose name finds the queue full
/// fails at once ("resolver busy") and backs off like any failed dial, so the rest get their
/// turn; 256 is more named peers than a node dials at once, and under 100 KiB when full.
pub const RESOLVE_QUEUE_MAX: usize = 256;

/// Resolver threads per node at most: resolutions under way at once. A resolution blocks its
/// thread (`getaddrinfo`), for up to tens of seconds against an unresponsive DNS server (glibc
/// waits 5 s per server and attempt by default), so one slow name holds one thread while the
/// others go on. Four serve a node's named peers without a thread per name; idle threads end
/// after [`RESOLVER_IDLE_MS`].
pub const RESOLVER_THREADS_MAX: usize = 4;

/// How long a dial waits for its peer's name to resolve before it counts as failed ("cannot
/// resolve NAME: no answer within ..."), backing off as any failed dial. The resolution itself
/// cannot be cancelled: the peer waits for it (one in flight per peer) and takes its answer at
/// its next dial if it is still wanted then. Ten seconds lets glibc's default two attempts of
/// 5 s at the first DNS server end, as the handshake timeout lets a slow peer answer.
pub const RESOLVE_TIMEOUT_MS: u64 = 10_000;

/// Addresses kept of one resolution of a peer's name: dialled in turn across failed dials, and
/// trusted by admission. Eight covers a name's IPv4 and IPv6 addresses on several interfaces; a
/// name with more (round-robin DNS over a farm) is not one node.
pub const RESOLVED_ADDRS_MAX: usize = 8;

/// How long a resolver thread with nothing to resolve waits before it ends: a node with named
/// peers that are all linked keeps no resolver thread.
pub const RESOLVER_IDLE_MS: u64 = 10_000;

/// Shortest time between two log lines about links refused for one reason (a key not allowed,
/// a key not the one dialled, a hello claiming more than its key's role, the application's
/// refusal, another protocol error): each line names the peer's key and address and how many
/// refusals for that reason went unlogged since the previous one. A node refusing a flood of
/// strangers (every handshake from a key it does not allow) writes one line a second per
/// reason, five at most, instead of one per connection; an operator still sees at once that
/// refusals happen, whose, and how many. Kept per worker, in a fixed array of five slots.
pub const REFUSAL_LOG_INTERVAL_MS: u64 = 1_000;

/// Source addresses a worker trusts at run time beyond the configured ones
/// (`ring::WorkerCtx::trust_source`, called when a link from there proved an authorized key);
/// past it the least recently trusted is forgotten. Authorized keys are the configured peers'
/// ([`CONFIG_PEERS_MAX`]), and each has one address or a few (a new one after a NAT rebinding
/// or a move; a forgotten one is trusted again at its next proof): 4,096 holds one for every
/// peer and, at ~100 bytes each with the eviction order, costs under half a MiB when full.
pub const TRUSTED_SOURCES_MAX: usize = 4_096;

/// Default microseconds a worker keeps polling its ring after a turn that moved data, before
/// it sleeps (`ring::Config::busy_poll`; 0: sleep at once). Waking a sleeping thread costs
/// ~20 µs on the development VM, and a relayed request-reply sleeps and wakes at every hop in
/// both directions: polling through the gap between a request and its reply (~40 µs through
/// one relay) took the one-hop round trip's median from ~195 µs to ~40 µs there. Between looks
/// the worker yields the core to any other runnable thread, so the poll costs only cycles
/// nothing else wanted; an idle worker sleeps. See docs/DESIGN.md, "Polling before sleeping".
pub const BUSY_POLL_US: u64 = 100;

/// The longest busy poll a configuration may ask for: 10 ms.
pub const BUSY_POLL_US_MAX: u64 = 10_000;

/// Milliseconds a worker does not busy poll after it found its core taken by another thread
/// (`ring::Config::busy_poll_backoff`): it sleeps instead, so data wakes it and it preempts the
/// other thread rather than queueing behind it for a time slice. One second: a CPU-bound
/// neighbour costs a poller one slice per second, not one per message.
pub const BUSY_POLL_BACKOFF_MS: u64 = 1_000;

/// Mounts one span table holds that neighbours may hear of (local ones, and those reachable
/// through a router or satellite; clients' mounts count against [`CLIENT_MOUNTS_MAX`], and
/// tombstones of mounts that went away against [`DEPARTED_MAX`]). Each is advertised to every
/// neighbour as one span, i.e. one transaction we open on the link: 16,384 keeps all of them within half of [`LOCAL_TXNS_PER_LINK_MAX`], the
/// other half left for circuits. A HAMMER2 cluster has a handful of PFSs per node; this is room
/// for thousands of nodes' worth.
pub const SPAN_MOUNTS_MAX: usize = 16_384;

/// Clients' mounts one span table holds beyond [`SPAN_MOUNTS_MAX`]: a satellite uses them to
/// reach its clients and never advertises them, so they cost no transaction on any link, only
/// table memory (a few hundred bytes each). Two per client for a million clients.
pub const CLIENT_MOUNTS_MAX: usize = 1 << 21;

/// Spans (routes) one router or satellite neighbour may have in the table at once: its share
/// of [`SPAN_MOUNTS_MAX`]. One more span from it is refused alone (a forced close with
/// `LIMIT_REACHED` on that span; the link and the neighbour's other spans carry on). Half the
/// table: no one neighbour can fill it, so a full table always has room left by others, and a
/// node with one uplink still learns 8,192 mounts through it (a HAMMER2 cluster has a handful
/// of PFSs per node).
pub const SPANS_PER_NEIGHBOUR_MAX: usize = SPAN_MOUNTS_MAX / 2;

/// Span transactions one neighbour may hold open to us counting those retracted or refused and
/// not yet ended (a refused span lingers until the neighbour answers its forced close): twice
/// the table. Past it the link is closed (`Limit::NeighbourSpansHeld`): a correct neighbour
/// ends them as fast as it receives our answers.
pub const SPANS_HELD_PER_NEIGHBOUR_MAX: usize = 2 * SPAN_MOUNTS_MAX;

/// Client or cache mounts one client may advertise at once (a client is one application's node:
/// a mount or two per cluster it uses). One more is refused alone (`LIMIT_REACHED` on its span).
pub const CLIENT_MOUNTS_PER_CLIENT: usize = 16;

/// Transactions a client may have open on its link (the transaction layer's peer bound for
/// client links, in place of [`PEER_TXNS_PER_LINK_MAX`]): its calls, its spans and hello, and as
/// many again for calls the node refused and the client has not yet answered. 2,048 transactions
/// are ~200 KiB of state at most per client, where a router link may pin 6.5 MiB; one more closes
/// the client's link.
pub const CLIENT_TXNS_PER_LINK_MAX: usize = 2 * CLIENT_CALLS_MAX;

/// Mounts that went away (tombstones kept for their feasibility distance, so a stale
/// advertisement still in flight cannot form a loop) charged to one neighbour, the one whose
/// retraction or loss made them go. Past it the neighbour's oldest is forgotten, never another
/// neighbour's: a peer that advertises and retracts new mounts in a loop only churns its own
/// share. 256 tombstones are ~90 KiB per neighbour.
pub const DEPARTED_PER_NEIGHBOUR_MAX: usize = 256;

/// Tombstones in one span table, all nodes' together (each node's at most
/// [`DEPARTED_PER_NEIGHBOUR_MAX`]). Past it the node holding the most forgets its oldest, so a
/// node with few keeps them while many trusted routers churn: only more than 64 routers at their
/// full share reach it. ~5.6 MiB at most.
pub const DEPARTED_MAX: usize = SPAN_MOUNTS_MAX;

/// Seqno requests a neighbour may have served per second (a token bucket holding
/// [`SEQNO_REQUEST_BURST`]). Each request the originator honours re-floods the mount's
/// advertisement through the whole cluster, so a 40-byte request is a cluster-wide amplifier:
/// past its rate a neighbour's requests wait, coalesced one per mount, and are served as the
/// bucket refills (never dropped, so a starving node still recovers).
pub const SEQNO_REQUESTS_PER_SEC: u32 = 32;

/// Seqno requests a neighbour may have served at once after a quiet spell: a partition healing
/// may leave a neighbour starving for many mounts at once.
pub const SEQNO_REQUEST_BURST: u32 = 256;

/// An originator raises a mount's seqno on request at most once per this many milliseconds;
/// requests in between are coalesced into the next raise.
pub const SEQNO_RAISE_INTERVAL_MS: u64 = 200;

/// Neighbours of one span table: a satellite's clients are neighbours, so this is the number of
/// clients one node can hold (the goal is a million). A change to a mount that neighbours may
/// hear of walks every neighbour once (each needs its update anyway); a client's own mount is
/// never walked (`Table` keeps such mounts out of the walk), so per-client work stays constant.
pub const SPAN_NEIGHBOURS_MAX: usize = 1 << 20;

/// Peers one configuration file may list (each is a link the node keeps or accepts by key).
/// Clients connecting to a satellite are not listed (they are allowed by key or by
/// `accept_unknown_keys`), so this bounds the core's own mesh: 4,096 is more than one node links.
pub const CONFIG_PEERS_MAX: usize = 4_096;

/// Engine workers a configuration may ask for (`[node] workers`). 256 is more cores than a
/// node's host has; a larger number is surely a typo.
pub const CONFIG_WORKERS_MAX: usize = 256;

/// The longest duration a configuration's `[limits]` may give: one day, in milliseconds.
/// Longer values are surely typos, and would overflow deadline arithmetic long before they
/// made sense.
pub const CONFIG_MILLIS_MAX: u64 = 86_400_000;

/// Bytes of the longest control socket path a configuration may give: a Unix socket address
/// holds 108 bytes with the terminating NUL.
pub const CONTROL_PATH_MAX: usize = 107;

/// User ids, and group ids, a configuration may list as allowed to attach (`attach_uids`,
/// `attach_gids`): each list is searched at every attach, and a host has few accounts that
/// should reach a node. 64 of each is more than any sensible file.
pub const ATTACH_IDS_MAX: usize = 64;

/// Clusters a node may serve clients of (`client_clusters` in its configuration): each is one
/// aggregate span the core carries for the node, whatever its clients name. 64 is more than the
/// clusters one satellite serves.
pub const CLIENT_CLUSTERS_MAX: usize = 64;

/// Clusters a neighbour may list in its wants (beyond "all"). Bounds the filter check per span.
pub const SPAN_WANTED_CLUSTERS_MAX: usize = 64;

/// Bytes of a mount's label (HAMMER2's `pfs_label`, a human-readable name).
pub const SPAN_LABEL_MAX: usize = 64;

/// Mounts one application attaches through its local link (`LINK_ATTACH`, PROTOCOL.md 8.11):
/// its share of the node's table ([`SPAN_MOUNTS_MAX`]), so that no one application fills it.
pub const ATTACH_MOUNTS_PER_LINK_MAX: usize = 1024;

/// Bytes of the name a node announces in its hello (`[node] name`): a name for people, shown
/// beside its node id by neighbours whose configuration gives it none. Short: it rides in every
/// hello, and a neighbour keeps it per link (not for clients).
pub const NODE_NAME_MAX: usize = 32;

/// Circuits (relayed transaction pairs) and local calls open in one node at once. Each costs a
/// slab entry and two index entries (~100 bytes), so a full table is ~100 MiB. Shared max-min
/// fairly among the links circuits come in on (and the local application), like
/// [`RELAY_CIRCUITS_PER_LINK_MAX`]: when full, a holder with fewer takes the place of the biggest
/// holder's oldest circuit (aborted with `LIMIT_REACHED`), anyone else is refused with it. Per
/// link the transaction layer's own bounds apply first.
pub const CIRCUITS_MAX: usize = 1 << 20;

/// Calls one client link may have open through its node at once; one more is refused with
/// `LIMIT_REACHED` (the others carry on). A client is one application's node: 1,024 in flight is
/// far above what one needs, and keeps a misbehaving client to about 1,024 × 100 bytes of
/// circuit state in its satellite.
pub const CLIENT_CALLS_MAX: usize = 1_024;

/// Circuits and calls we may have open on one link (its outgoing share of the transactions we
/// may open there, [`LOCAL_TXNS_PER_LINK_MAX`], the rest being for our spans). Shared among the
/// peers whose circuits continue on that link max-min fairly: when the link is full, a peer
/// holding fewer than the biggest holder takes the place of the biggest holder's oldest circuit
/// (aborted with `LIMIT_REACHED`); anyone else is refused. No peer, or group of peers, can hold
/// a link so that a peer with fewer circuits on it cannot open one.
pub const RELAY_CIRCUITS_PER_LINK_MAX: usize = LOCAL_TXNS_PER_LINK_MAX - SPAN_MOUNTS_MAX;

/// Default milliseconds a circuit may carry nothing either way before the node aborts it
/// (`IDLE` both ways): a circuit a peer opened and forgot holds a slot on every hop.
/// Five minutes: longer than any request-reply, short enough that abandoned circuits do not
/// accumulate. A node checks every half of it, so a circuit goes after 1 to 1.5 times this.
pub const CIRCUIT_IDLE_MS: u64 = 300_000;

/// Default milliseconds a node drains before it stops on SIGTERM (a configuration's
/// `drain_grace_ms`; `ringspan drain`): its neighbours hear every span withdrawn and route new
/// circuits around it, and the circuits it carries go on until they end or this is over. Ten
/// seconds: a withdrawal is answered within a round trip or two, and request-reply calls end in
/// milliseconds; a streamed call longer than this ends with `SHUTDOWN` as before. Within
/// systemd's default stop timeout (90 s; `contrib/ringspan.service` sets 30).
pub const DRAIN_GRACE_MS: u64 = 10_000;

/// The most hops a trace (`LINK_TRACE`, PROTOCOL.md 8.10) goes: a request's hop limit is at most
/// this, and so is a report's hop number. Each node on a trace's path sends one report back, so
/// the caller's link carries at most 64 of them (64 × 56 bytes) for one 56-byte request; a
/// tracer keeps at most this many reports of one trace and aborts a trace that sends more.
/// Paths are loop-free and far shorter in practice (traceroute's default is 30).
pub const TRACE_HOPS_MAX: usize = 64;

const _: () = assert!(MESSAGE_HEADER_LEN.is_multiple_of(MESSAGE_ALIGN));
const _: () = assert!(RECORD_HEADER_LEN.is_multiple_of(MESSAGE_ALIGN));
const _: () = assert!(RECORD_PLAINTEXT_MAX.is_multiple_of(MESSAGE_ALIGN));
const _: () = assert!(MESSAGE_PAYLOAD_MAX.is_multiple_of(MESSAGE_ALIGN));
// A record length must fit its u32 field.
const _: () = assert!(RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN <= u32::MAX as usize);
// A handshake frame's length field is a u16.
const _: () = assert!(HANDSHAKE_MESSAGE_MAX <= u16::MAX as usize);
// The receiver's bound must not be stricter than the sender's default.
const _: () = assert!(RECORDS_PER_KEY < RECORDS_PER_KEY_REJECT);
// A link that keeps sending keepalives is never idle.
const _: () = assert!(KEEPALIVE_INTERVAL_MS * 2 < IDLE_TIMEOUT_MS);
// A small record buffer holds the largest handshake frame, and a message header in a record.
const _: () = assert!(SMALL_RECORD_BUF >= HANDSHAKE_FRAME_MAX);
const _: () = assert!(
    SMALL_RECORD_BUF >= RECORD_HEADER_LEN + MESSAGE_HEADER_LEN + RECORD_TAG_LEN
        && SMALL_RECORD_BUF < RECORD_WIRE_MAX
);
// A receive buffer holds a whole maximum record's plaintext.
const _: () = assert!(RECV_BUFFER_SIZE as usize >= RECORD_PLAINTEXT_MAX);
// Slot numbers are u32 in `TxnId`.
const _: () = assert!(PEER_TXNS_PER_LINK_MAX + LOCAL_TXNS_PER_LINK_MAX <= u32::MAX as usize);
// Every span we advertise on a link is a transaction we opened: they fit in half of our bound.
const _: () = assert!(SPAN_MOUNTS_MAX <= LOCAL_TXNS_PER_LINK_MAX / 2);
// Every span a neighbour advertises is a transaction it opened on the link.
const _: () = assert!(SPANS_HELD_PER_NEIGHBOUR_MAX < PEER_TXNS_PER_LINK_MAX);
const _: () = assert!(SPANS_PER_NEIGHBOUR_MAX <= SPANS_HELD_PER_NEIGHBOUR_MAX);
// A client's calls, mounts and hello fit its transaction bound.
const _: () = assert!(CLIENT_CALLS_MAX + CLIENT_MOUNTS_PER_CLIENT + 2 <= CLIENT_TXNS_PER_LINK_MAX);
// A third of the shortest idle timeout a peer may ask for is a keepalive a link may be given.
const _: () = assert!(PEER_IDLE_TIMEOUT_MIN_MS / 3 >= KEEPALIVE_INTERVAL_MIN_MS);
// The hello carries the idle timeout in milliseconds as a u32.
const _: () = assert!(IDLE_TIMEOUT_MS <= u32::MAX as u64);
// Our spans and circuits on a link fit the transactions we may open there.
const _: () = assert!(SPAN_MOUNTS_MAX + RELAY_CIRCUITS_PER_LINK_MAX <= LOCAL_TXNS_PER_LINK_MAX);
// A redial backs off from its first wait to its longest.
const _: () = assert!(REDIAL_MIN_MS <= REDIAL_MAX_MS);
// The default timers are durations a configuration may give.
const _: () = assert!(
    IDLE_TIMEOUT_MS <= CONFIG_MILLIS_MAX
        && HANDSHAKE_TIMEOUT_MS <= CONFIG_MILLIS_MAX
        && REDIAL_MAX_MS <= CONFIG_MILLIS_MAX
        && CIRCUIT_IDLE_MS <= CONFIG_MILLIS_MAX
);
