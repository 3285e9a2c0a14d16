//! [`Session`]: one link's handshake, then its record layer. Sans-IO.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use snow::params::NoiseParams;

use super::identity::{Identity, PublicKey};
use super::record::{RecordOpener, RecordSealer, RekeyLimits};
use super::resolver::AwsLcResolver;
use crate::error::{Error, Handshake, Misuse};
use crate::limits::{
    HANDSHAKE_FRAME_HEADER_LEN, HANDSHAKE_FRAME_MAX, HANDSHAKE_MESSAGE_MAX, HANDSHAKE_TIMEOUT_MS,
};
use crate::wire::handshake::{HandshakeHeader, message_len};

/// The Noise protocol name. See the module doc of [`crate::cipher`] for why XX.
pub const NOISE_PATTERN: &str = "Noise_XX_25519_AESGCM_SHA256";

/// The Noise prologue: binds the protocol version into the handshake hash, so peers of two
/// versions never agree on keys.
pub const PROLOGUE: &[u8] = b"ringspan/1";

/// What a node accepts and how it keys its links. Shared by all of the node's sessions.
#[derive(Clone, Debug)]
pub struct Config {
    identity: Identity,
    params: NoiseParams,
    /// Static public keys of peers we accept.
    pub allowlist: HashSet<PublicKey>,
    /// Accept peers whose keys are not in the allowlist (they are still authenticated: the
    /// session knows their key). For listeners that serve clients, as satellites do.
    pub accept_unknown_keys: bool,
    /// Time from a session's start to the end of its handshake.
    pub handshake_timeout: Duration,
    /// When record keys change.
    pub rekey: RekeyLimits,
}

impl Config {
    /// A configuration for `identity` with an empty allowlist, unknown keys refused, and the
    /// default timeout and rekey limits from `src/limits.rs`.
    pub fn new(identity: Identity) -> Result<Config, Error> {
        let params = NOISE_PATTERN.parse().map_err(|_| Error::Crypto("noise protocol name"))?;
        Ok(Config {
            identity,
            params,
            allowlist: HashSet::new(),
            accept_unknown_keys: false,
            handshake_timeout: Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
            rekey: RekeyLimits::default(),
        })
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn authorize(&self, peer: &PublicKey, expected: Option<&PublicKey>) -> Result<(), Error> {
        match expected {
            Some(expected) if expected != peer => Err(Handshake::WrongKey.into()),
            Some(_) => Ok(()),
            None if self.accept_unknown_keys || self.allowlist.contains(peer) => Ok(()),
            None => Err(Handshake::UnknownKey.into()),
        }
    }
}

/// One link's secure session: a Noise XX handshake, then AES-256-GCM records.
///
/// # Calling contract
///
/// Sans-IO: the session never touches a socket or reads the clock. Time only moves forward.
///
/// 1. Create it with [`Session::initiator`] (the side that dialled) or [`Session::responder`].
/// 2. Until [`Session::is_established`]: call [`Session::poll_transmit`] and send what it gives
///    until it gives 0 bytes; feed every received byte to [`Session::handle_handshake_bytes`],
///    which says how many it consumed (bytes after the last handshake frame are records); call
///    [`Session::handle_timeout`] when [`Session::poll_timeout`] passes.
/// 3. Once established (after draining `poll_transmit` one last time: the initiator's final
///    handshake message), [`Session::seal`] and [`Session::open`] records in place, and keep
///    calling `handle_timeout` at `poll_timeout` (time-based rekeying).
///
/// Any error is final: every later call returns it, and the link must be closed.
pub struct Session {
    config: Arc<Config>,
    state: State,
    /// The handshake deadline; `None` if the timeout reaches past what an `Instant` holds.
    deadline: Option<Instant>,
    expected_peer: Option<PublicKey>,
    peer: Option<PublicKey>,
    /// The key the peer proved, accepted or not (see [`Session::proven_peer`]).
    proven: Option<PublicKey>,
    incoming: [u8; HANDSHAKE_FRAME_MAX],
    incoming_len: usize,
    /// The header of the frame arriving, once its 4 bytes have arrived and passed the checks.
    incoming_header: Option<HandshakeHeader>,
    outgoing: [u8; HANDSHAKE_FRAME_MAX],
    outgoing_len: usize,
}

/// Where the session is, named for what it expects next.
// The established state holds the record keys inline: they are on the per-record path, while
// the handshake states (the rare ones) are boxed.
#[allow(clippy::large_enum_variant)]
enum State {
    /// Initiator: sent message 1, waits for the responder's message 2.
    ExpectResponderHello(Box<snow::HandshakeState>),
    /// Responder: waits for the initiator's message 1.
    ExpectInitiatorHello(Box<snow::HandshakeState>),
    /// Responder: sent message 2, waits for the initiator's message 3 (its identity).
    ExpectInitiatorIdentity(Box<snow::HandshakeState>),
    /// Handshake done; records flow.
    Established { sealer: RecordSealer, opener: RecordOpener },
    /// Failed for good.
    Failed(Error),
}

impl Session {
    /// Starts a handshake as the dialling side, at `now`. With `expected_peer`, only that key is
    /// accepted from the responder ([`Handshake::WrongKey`] otherwise); without, the allowlist
    /// decides ([`Handshake::UnknownKey`]). Message 1 is ready in [`Session::poll_transmit`].
    pub fn initiator(
        config: Arc<Config>,
        expected_peer: Option<PublicKey>,
        now: Instant,
    ) -> Result<Session, Error> {
        let hs = build(builder(&config)?, true)?;
        Session::start_initiator(config, expected_peer, hs, now)
    }

    /// Starts a handshake as the accepting side, at `now`.
    pub fn responder(config: Arc<Config>, now: Instant) -> Result<Session, Error> {
        let hs = build(builder(&config)?, false)?;
        Ok(Session::new(config, None, now, State::ExpectInitiatorHello(hs)))
    }

    /// [`Session::initiator`] with `ephemeral` as its ephemeral private key instead of a fresh
    /// random one: the handshake, and so its frames and record keys, are then a function of the
    /// two static and two ephemeral keys alone. Only for reproducing known-answer vectors
    /// (`docs/PROTOCOL.md` section 2.9); it exists only with the non-default `test-vectors`
    /// feature, because a fixed ephemeral key gives up the handshake's forward secrecy.
    #[cfg(feature = "test-vectors")]
    pub fn initiator_with_ephemeral(
        config: Arc<Config>,
        expected_peer: Option<PublicKey>,
        ephemeral: &[u8; 32],
        now: Instant,
    ) -> Result<Session, Error> {
        let hs = build(builder(&config)?.fixed_ephemeral_key_for_testing_only(ephemeral), true)?;
        Session::start_initiator(config, expected_peer, hs, now)
    }

    /// [`Session::responder`] with a fixed ephemeral private key: see
    /// [`Session::initiator_with_ephemeral`].
    #[cfg(feature = "test-vectors")]
    pub fn responder_with_ephemeral(
        config: Arc<Config>,
        ephemeral: &[u8; 32],
        now: Instant,
    ) -> Result<Session, Error> {
        let hs = build(builder(&config)?.fixed_ephemeral_key_for_testing_only(ephemeral), false)?;
        Ok(Session::new(config, None, now, State::ExpectInitiatorHello(hs)))
    }

    /// An initiator whose handshake state is built: message 1 goes into the outgoing frame.
    fn start_initiator(
        config: Arc<Config>,
        expected_peer: Option<PublicKey>,
        mut hs: Box<snow::HandshakeState>,
        now: Instant,
    ) -> Result<Session, Error> {
        let mut session =
            Session::new(config, expected_peer, now, State::Failed(Handshake::Timeout.into()));
        session.write_frame(&mut hs, 1)?;
        session.state = State::ExpectResponderHello(hs);
        Ok(session)
    }

    fn new(
        config: Arc<Config>,
        expected_peer: Option<PublicKey>,
        now: Instant,
        state: State,
    ) -> Session {
        Session {
            deadline: now.checked_add(config.handshake_timeout),
            config,
            state,
            expected_peer,
            peer: None,
            proven: None,
            incoming: [0; HANDSHAKE_FRAME_MAX],
            incoming_len: 0,
            incoming_header: None,
            outgoing: [0; HANDSHAKE_FRAME_MAX],
            outgoing_len: 0,
        }
    }

    /// Feeds bytes received from the peer during the handshake. Returns how many were
    /// consumed: all of them while the handshake goes on, fewer once it finishes (the rest are
    /// records, to [`Session::open`]). Returns `Ok(0)` once established.
    pub fn handle_handshake_bytes(&mut self, bytes: &[u8], now: Instant) -> Result<usize, Error> {
        match &self.state {
            State::Failed(error) => return Err(*error),
            State::Established { .. } => return Ok(0),
            _ => {}
        }
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            return Err(self.fail(Handshake::Timeout.into()));
        }
        let mut consumed = 0;
        while consumed < bytes.len() && !self.is_established() {
            let wanted = match self.incoming_header {
                None => HANDSHAKE_FRAME_HEADER_LEN,
                Some(header) => header.frame_len(),
            };
            let take = (wanted - self.incoming_len).min(bytes.len() - consumed);
            self.incoming[self.incoming_len..self.incoming_len + take]
                .copy_from_slice(&bytes[consumed..consumed + take]);
            self.incoming_len += take;
            consumed += take;
            if self.incoming_header.is_none() && self.incoming_len == HANDSHAKE_FRAME_HEADER_LEN {
                let mut header = [0u8; HANDSHAKE_FRAME_HEADER_LEN];
                header.copy_from_slice(&self.incoming[..HANDSHAKE_FRAME_HEADER_LEN]);
                match HandshakeHeader::parse(&header, self.expected_step()) {
                    Ok(header) => self.incoming_header = Some(header),
                    Err(error) => return Err(self.fail(error)),
                }
            }
            if let Some(header) = self.incoming_header
                && self.incoming_len == header.frame_len()
            {
                self.incoming_len = 0;
                self.incoming_header = None;
                if let Err(error) = self.handle_frame(header, now) {
                    return Err(self.fail(error));
                }
            }
        }
        Ok(consumed)
    }

    /// Copies the next handshake frame to send into `out` and returns its length, or 0 when
    /// there is nothing to send. `out` must hold [`HANDSHAKE_FRAME_MAX`] bytes.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        let len = self.outgoing_len;
        if len == 0 {
            return Ok(0);
        }
        let actual = out.len();
        let dest = out
            .get_mut(..len)
            .ok_or(Error::Misuse(Misuse::BufferTooSmall { needed: len, actual }))?;
        dest.copy_from_slice(&self.outgoing[..len]);
        self.outgoing_len = 0;
        Ok(len)
    }

    /// Tells the session the time is `now`. Fails the handshake if its deadline has passed;
    /// once established, switches the sending key if it has reached its age.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        let result = match &mut self.state {
            State::Failed(error) => return Err(*error),
            State::Established { sealer, .. } => sealer.handle_timeout(now),
            _ if self.deadline.is_some_and(|deadline| now >= deadline) => {
                Err(Handshake::Timeout.into())
            }
            _ => Ok(()),
        };
        result.map_err(|error| self.fail(error))
    }

    /// The next time [`Session::handle_timeout`] must be called: the handshake deadline, then
    /// the sending key's age limit. `None` once failed (or for a limit configured past what an
    /// `Instant` can hold).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Failed(_) => None,
            State::Established { sealer, .. } => sealer.poll_timeout(),
            _ => self.deadline,
        }
    }

    /// Whether the handshake has finished and records may flow.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established { .. })
    }

    /// The peer's authenticated static key, once established.
    pub fn peer(&self) -> Option<PublicKey> {
        self.peer
    }

    /// The static key the peer proved, as soon as the handshake message carrying it
    /// authenticated, whether it was then accepted or refused ([`Handshake::UnknownKey`],
    /// [`Handshake::WrongKey`]): a refusal can name the key it refused. [`Session::peer`] is
    /// the key accepted.
    pub fn proven_peer(&self) -> Option<PublicKey> {
        self.proven
    }

    /// Seals one record in place: see [`RecordSealer::seal`].
    pub fn seal(&mut self, buf: &mut [u8], plaintext_len: usize) -> Result<usize, Error> {
        match &mut self.state {
            State::Established { sealer, .. } => sealer.seal(buf, plaintext_len),
            State::Failed(error) => Err(*error),
            _ => Err(Misuse::HandshakeNotDone.into()),
        }
    }

    /// Opens one record in place and returns its plaintext: see [`RecordOpener::open`]. A
    /// failure is final.
    pub fn open<'a>(&mut self, record: &'a mut [u8]) -> Result<&'a mut [u8], Error> {
        let result = match &mut self.state {
            State::Established { opener, .. } => opener.open(record),
            State::Failed(error) => return Err(*error),
            _ => return Err(Misuse::HandshakeNotDone.into()),
        };
        match result {
            Ok(plaintext) => Ok(plaintext),
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Splits an established session into its sending and receiving halves, for a caller that
    /// drives the two directions apart. `None` if not established.
    pub fn into_record_layer(self) -> Option<(RecordSealer, RecordOpener)> {
        match self.state {
            State::Established { sealer, opener } => Some((sealer, opener)),
            _ => None,
        }
    }

    fn fail(&mut self, error: Error) -> Error {
        self.state = State::Failed(error);
        self.outgoing_len = 0;
        self.incoming_len = 0;
        self.incoming_header = None;
        error
    }

    fn expected_step(&self) -> u8 {
        match self.state {
            State::ExpectInitiatorHello(_) => 1,
            State::ExpectResponderHello(_) => 2,
            _ => 3,
        }
    }

    /// Handles one whole frame, already checked, in `self.incoming`.
    fn handle_frame(&mut self, header: HandshakeHeader, now: Instant) -> Result<(), Error> {
        let step = header.step;
        let message = &self.incoming[HANDSHAKE_FRAME_HEADER_LEN..header.frame_len()];
        let mut payload = [0u8; HANDSHAKE_MESSAGE_MAX];
        let state = core::mem::replace(&mut self.state, State::Failed(Handshake::Timeout.into()));
        match state {
            State::ExpectInitiatorHello(mut hs) => {
                hs.read_message(message, &mut payload).map_err(|_| Handshake::Garbage(step))?;
                self.write_frame(&mut hs, 2)?;
                self.state = State::ExpectInitiatorIdentity(hs);
            }
            State::ExpectResponderHello(mut hs) => {
                hs.read_message(message, &mut payload).map_err(|_| Handshake::Garbage(step))?;
                let peer = remote_static(&hs)?;
                self.proven = Some(peer);
                self.config.authorize(&peer, self.expected_peer.as_ref())?;
                self.write_frame(&mut hs, 3)?;
                self.establish(hs, peer, now)?;
            }
            State::ExpectInitiatorIdentity(mut hs) => {
                hs.read_message(message, &mut payload).map_err(|_| Handshake::Garbage(step))?;
                let peer = remote_static(&hs)?;
                self.proven = Some(peer);
                self.config.authorize(&peer, None)?;
                self.establish(hs, peer, now)?;
            }
            State::Established { .. } | State::Failed(_) => {
                // Unreachable: `handle_handshake_bytes` stops at these states. Keep the state.
                self.state = state;
            }
        }
        Ok(())
    }

    fn write_frame(&mut self, hs: &mut snow::HandshakeState, step: u8) -> Result<(), Error> {
        let len = hs.write_message(&[], &mut self.outgoing[HANDSHAKE_FRAME_HEADER_LEN..]).map_err(
            |error| match error {
                // A DH refused while writing is a DH with the peer's ephemeral key from the
                // previous message (a low-order point): that message was garbage.
                snow::Error::Dh => Handshake::Garbage(step.saturating_sub(1)).into(),
                _ => Error::Crypto("noise write_message"),
            },
        )?;
        debug_assert_eq!(Some(len), message_len(step));
        let len = u16::try_from(len).map_err(|_| Error::Crypto("noise message length"))?;
        let header = HandshakeHeader { len, step };
        header.emit(&mut self.outgoing);
        self.outgoing_len = header.frame_len();
        Ok(())
    }

    fn establish(
        &mut self,
        mut hs: Box<snow::HandshakeState>,
        peer: PublicKey,
        now: Instant,
    ) -> Result<(), Error> {
        if !hs.is_handshake_finished() {
            return Err(Error::Crypto("noise handshake not finished after its last message"));
        }
        let mut hash = [0u8; 32];
        let h = hs.get_handshake_hash();
        hash.copy_from_slice(h.get(..32).ok_or(Error::Crypto("handshake hash length"))?);
        // Noise's Split: the first key is for initiator-to-responder traffic.
        let (i2r, r2i) = hs.dangerously_get_raw_split();
        let (send, receive) = if hs.is_initiator() { (i2r, r2i) } else { (r2i, i2r) };
        let limits = self.config.rekey;
        self.state = State::Established {
            sealer: RecordSealer::new(&send, &hash, limits, now)?,
            opener: RecordOpener::new(&receive, &hash, limits)?,
        };
        self.peer = Some(peer);
        Ok(())
    }
}

/// A Noise builder for the node's pattern, resolver, static key and prologue.
fn builder(config: &Config) -> Result<snow::Builder<'_>, Error> {
    let resolver = Box::new(AwsLcResolver::with_identity(&config.identity));
    snow::Builder::with_resolver(config.params.clone(), resolver)
        .local_private_key(config.identity.private_key().as_bytes())
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(|_| Error::Crypto("noise builder"))
}

fn build(builder: snow::Builder<'_>, initiator: bool) -> Result<Box<snow::HandshakeState>, Error> {
    let hs = if initiator { builder.build_initiator() } else { builder.build_responder() };
    hs.map(Box::new).map_err(|_| Error::Crypto("noise build"))
}

fn remote_static(hs: &snow::HandshakeState) -> Result<PublicKey, Error> {
    hs.get_remote_static()
        .and_then(|key| <[u8; 32]>::try_from(key).ok())
        .map(PublicKey)
        .ok_or(Error::Crypto("noise gave no remote static key"))
}
