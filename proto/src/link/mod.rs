//! A link's own protocol, apart from sockets and the clock.
//!
//! A link is one authenticated, encrypted connection between two nodes. What belongs to it
//! whatever carries its bytes — its deadlines, and its byte streams (records cut from received
//! bytes, records built and sealed, in buffers from a pool), its record keys, its transaction
//! table and its span protocol state (`span::SpanLink`), all in one [`Link`] — lives in this
//! module, sans-IO: fed with the time and what
//! happened, it answers what to do. The engine (`ring`) drives it in production; unit tests and
//! the simulator drive it on a virtual clock.

pub mod clock;
pub mod pool;
mod state;
pub mod stream;

pub use clock::{Deadline, Expiry, Fired, LinkClock, Periods, RxState};
pub use state::{
    CloseReason, Crypto, EndTurn, Input, Link, LinkMeta, LinkStats, Parts, RecordIn, RecordsIn,
    Timeout,
};
pub use stream::{Chunk, Lent};
