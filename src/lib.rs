//! portcullis: a reverse-proxy authentication gateway.
//!
//! A request travels: [`server::listener`] (accept, TLS, HTTP/1.1 or HTTP/2) ->
//! [`pipeline`] (route, strip spoofable headers, authenticate with [`auth`], check
//! [`revocation`], inject identity, forward) -> the upstream. [`config`] validates everything
//! before a socket binds; [`telemetry`] logs and counts.
//!
//! `main.rs` is a thin CLI over [`start`]; integration tests call [`start`] directly with a
//! config bound to port 0.

pub mod admin;
pub mod auth;
pub mod config;
pub mod durable;
pub mod pipeline;
pub mod revocation;
pub mod server;
pub mod signin;
pub mod telemetry;

pub use config::Config;
pub use server::{start, Gateway};
