//! A stack of idle pooled connections, shared by both kinds the HTTP/1.1 pool keeps (hyper's
//! senders and the wire path's sockets, see [`super::h1`]): the most recently used is taken
//! first, a connection idle past the timeout is closed, at most `max` are kept.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections, the most recently used on top (its socket is the warmest).
pub struct Stack<T> {
    idle: Mutex<VecDeque<(T, Instant)>>,
    max: usize,
    timeout: Duration,
}

impl<T> Stack<T> {
    pub fn new(max: usize, timeout: Duration) -> Stack<T> {
        Stack {
            idle: Mutex::new(VecDeque::new()),
            max,
            timeout,
        }
    }

    /// The most recently used connection that `usable` accepts; expired and refused ones are
    /// dropped (closed) on the way.
    pub fn pop(&self, usable: impl Fn(&T) -> bool) -> Option<T> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop_back() {
            if since.elapsed() < self.timeout && usable(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// On top of the stack (the next checkout takes it), after closing the connections at
    /// the bottom that sat idle past the timeout: under steady traffic the bottom is never
    /// reached by a checkout, and without this its sockets would stay open until the
    /// upstream closes them.
    pub fn push(&self, conn: T) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= self.timeout)
        {
            idle.pop_front();
        }
        if idle.len() < self.max {
            idle.push_back((conn, now));
        }
    }
}
