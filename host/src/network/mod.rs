//! The `network` room: outbound HTTP, allowed only to the destinations of
//! the module's `[network]` grant. `wit/http.rs` serves
//! `wasi:http/outgoing-handler` with it; nothing here knows wasm.
//!
//! Each request is decided at the call ([`decide`], a plain function over
//! the parsed grant): its scheme, host and port must match an `allow`
//! pattern. The host resolves the name itself and connects only to the
//! addresses it checked ([`usable`], [`address::is_internal`]): a granted
//! *name* never leads to an internal address; only a grant of the address
//! itself does. A redirect is a new request from the guest, decided anew.
//! Caps come from the grant: response bytes, time to the response's headers
//! and for the whole request, and requests open at once per module,
//! host-wide ([`send`]). Every request, sent or refused, is recorded on the
//! audit trail ([`entry`]).

pub mod address;
mod policy;
mod record;
mod send;
mod tls;

pub use policy::{Destination, ModuleNetwork, Refusal, Target, decide, usable};
pub use record::{NetworkCtx, Outcome, entry, subject_of};
pub use send::{Asked, Capped, Connection, NetworkError, Waited, send};
pub use tls::{NetworkOptions, TlsRootsError, client_config};
