//! The bodies of an upstream exchange. The request's: the client's, streamed (cut at the
//! route's `max_body_bytes` when set), or nothing. A body that may have to go to a second
//! target is *reclaimable*: if the first attempt drops it before reading a byte (the
//! connection could not be made), it is handed back for the retry, so a retried request never
//! loses or duplicates body bytes.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a body is made of.
pub enum Source {
    Empty,
    Stream(Incoming),
    Limited(Limited<Incoming>),
}

/// Where an unread body goes back to when its attempt fails before reading it.
pub type Slot = Arc<Mutex<Option<Source>>>;

/// The request body of one attempt.
pub struct UpstreamBody {
    source: Option<Source>,
    /// Set on reclaimable bodies (retries possible and a body to keep).
    reclaim: Option<Slot>,
    read: bool,
}

impl UpstreamBody {
    /// The client's body, cut at `limit` bytes when set.
    pub fn new(body: Incoming, limit: Option<u64>) -> UpstreamBody {
        let source = match limit {
            Some(limit) => Source::Limited(Limited::new(
                body,
                usize::try_from(limit).unwrap_or(usize::MAX),
            )),
            None => Source::Stream(body),
        };
        UpstreamBody::from_source(source)
    }

    pub fn empty() -> UpstreamBody {
        UpstreamBody::from_source(Source::Empty)
    }

    pub fn from_source(source: Source) -> UpstreamBody {
        UpstreamBody {
            source: Some(source),
            reclaim: None,
            read: false,
        }
    }

    /// Make this body reclaimable; the slot receives it if it is dropped unread.
    pub fn reclaimable(mut self) -> (UpstreamBody, Slot) {
        let slot: Slot = Arc::new(Mutex::new(None));
        self.reclaim = Some(slot.clone());
        (self, slot)
    }
}

/// Take back a body from its slot, if the attempt dropped it unread.
pub fn take_back(slot: &Slot) -> Option<Source> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let (Some(slot), false) = (&self.reclaim, self.read) {
            if let Some(source) = self.source.take() {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.read = true;
        match this.source.as_mut() {
            None | Some(Source::Empty) => Poll::Ready(None),
            Some(Source::Stream(b)) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Some(Source::Limited(b)) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            None | Some(Source::Empty) => true,
            Some(Source::Stream(b)) => b.is_end_stream(),
            Some(Source::Limited(b)) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            None | Some(Source::Empty) => SizeHint::with_exact(0),
            Some(Source::Stream(b)) => b.size_hint(),
            Some(Source::Limited(b)) => b.size_hint(),
        }
    }
}

/// The body of an upstream's answer: hyper's (`Left`), or read from the socket by
/// [`super::wire`] (`Right`).
pub type ResponseBody = http_body_util::Either<Incoming, super::wire::WireBody>;
