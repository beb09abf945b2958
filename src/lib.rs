//! portcullis: a reverse-proxy authentication gateway.
//!
//! A request travels: [`server::listener`] (accept, TLS, HTTP/1.1 or HTTP/2) ->
//! [`pipeline`] (route, strip spoofable headers, authenticate with [`auth`], check
//! [`revocation`], inject identity, forward) -> the upstream. [`config`] validates everything
//! before a socket binds; [`telemetry`] logs and counts.
//!
//! `main.rs` is a thin CLI over [`start`]; integration tests call [`start`] directly with a
//! config bound to port 0.

pub mod access;
pub mod admin;
pub mod allocator;
pub mod apikeys;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod durable;
pub mod gateway;
pub mod hex;
pub mod ids;
pub mod jose;
pub mod pipeline;
pub mod ratelimit;
pub mod response;
pub mod revocation;
pub mod routing;
pub mod server;
pub mod signin;
pub mod telemetry;
pub mod tls;
pub mod upstream;

pub use config::Config;
pub use gateway::{start, Gateway};
