//! A link's own protocol, apart from sockets and the clock.
//!
//! A link is one authenticated, encrypted connection between two nodes. What belongs to it
//! whatever carries its bytes — its deadlines, and its byte streams (records cut from received
//! bytes, records built and sealed, in buffers from a pool); its record keys and transaction
//! table as they move here from the engine — lives in this module, sans-IO: fed with the time
//! and what happened, it answers what to do. The engine (`ring`) drives it in production; unit
//! tests drive it on a fixed clock.

pub mod clock;
pub mod pool;
pub mod stream;

pub use clock::{Deadline, Expiry, Fired, LinkClock, Periods, RxState};
