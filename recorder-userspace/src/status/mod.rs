//! The status socket: a Unix socket speaking HTTP/1.1 that reports the agent's progress.
//!
//! The agent owns a [`StatusHandle`] and updates it as it goes; [`serve`] answers
//! `GET /status` (JSON), `GET /metrics` (Prometheus text) and `POST /stop` (fires a
//! [`StopSignal`] the agent awaits). [`client`] is the other end, used by `recorder status`.

pub mod client;
mod metrics;
mod report;
mod server;
mod state;
mod stop;
pub(crate) mod time;

pub use report::{Counters, StatusHandle, StatusReport};
pub use server::{ServeError, ServerHandle, serve};
pub use state::{State, StateChange, UnknownState};
pub use stop::StopSignal;
