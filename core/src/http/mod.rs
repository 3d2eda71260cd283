//! Incremental HTTP/1.1 server codec (SPEC §2).
//!
//! A [`Connection`] is the state machine of one client connection. The caller (an adapter)
//! feeds it received bytes with [`Connection::handle_input`], end of input with
//! [`Connection::handle_eof`] and the passage of time with [`Connection::handle_timeout`];
//! it drains output with [`Connection::poll_transmit`] / [`Connection::consume`] and
//! asks for the next deadline with [`Connection::poll_timeout`]. The connection calls a
//! [`Handler`] (the router and the endpoint handlers, see `crate::api`) to turn complete
//! requests into responses. It never touches a socket or a clock.
//!
//! ```text
//!   bytes in ──► parse head ──► Handler::on_head ──► body (buffered | streamed | discarded)
//!                                   │                        │
//!                                   └── early Response       └──► Handler::on_request ──► Response
//!                                                                                            │
//!   bytes out ◄── poll_transmit/consume ◄── rendered head + body (bytes | segment memory | stream)
//! ```

mod chunked;
mod conn;
mod output;
mod parse;
mod render;
#[cfg(test)]
mod tests;
mod types;

pub use conn::{Connection, Limits};
pub use types::*;
