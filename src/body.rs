//! Request bodies that can be sent a second time.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Empty, Full};
use pin_project_lite::pin_project;

use crate::error::BoxError;

/// The maximum number of frames that one poll of a [`ReplayBody`] takes from its source.
const MAX_FRAMES_PER_POLL: usize = 64;

/// The default maximum number of body bytes kept for a replay: 64 KiB.
pub const DEFAULT_MAX_REPLAY_BODY: usize = 64 * 1024;

/// A request body that the retry layers can send again.
///
/// A retry layer calls [`clone_for_replay`](ReplayableBody::clone_for_replay) before it
/// sends a request, and sends the copy only if [`can_replay`](ReplayableBody::can_replay)
/// still returns `true` once the response calls for a replay.
pub trait ReplayableBody: Body + Sized {
    /// Returns a body that will yield the same bytes, or `None` when that is impossible.
    fn clone_for_replay(&self) -> Option<Self>;

    /// Returns `true` when a copy made by [`clone_for_replay`](Self::clone_for_replay) can
    /// be sent now. Bodies that are cloned whole always can.
    fn can_replay(&self) -> bool {
        true
    }
}

impl<D: Buf + Clone> ReplayableBody for Full<D> {
    fn clone_for_replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D: Buf> ReplayableBody for Empty<D> {
    fn clone_for_replay(&self) -> Option<Self> {
        Some(Empty::new())
    }
}

impl ReplayableBody for String {
    fn clone_for_replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

pin_project! {
    /// A body that records the frames of the body it wraps as they are sent, so that the
    /// request can be sent again with the same bytes.
    ///
    /// [`BearerAuth`](crate::BearerAuth) wraps every request body in one, so the inner
    /// service receives `Request<ReplayBody<B>>`. The recording keeps at most a configured
    /// number of bytes (64 KiB by default). A replay is possible only when the original body
    /// was read to its end, within that limit and without an error. Otherwise the response
    /// that asked for a replay goes back to the caller, so an empty or partial body is never
    /// sent in place of the original.
    ///
    /// Each poll takes every frame that the wrapped body has ready, up to the limit. A body
    /// whose frames are all ready at once, such as `Full` or a unary tonic request, is
    /// therefore recorded in full on the first poll, even when the server responds before
    /// the sender has polled it to its end.
    ///
    /// Data frames are kept as [`Bytes`]; for bodies whose data already is `Bytes`, such as
    /// `Full<Bytes>`, recording copies nothing.
    pub struct ReplayBody<B> {
        #[pin]
        source: Option<B>,
        recording: Arc<Mutex<Recording>>,
        next_frame: usize,
        trailers_sent: bool,
        prefetch: Prefetch,
    }
}

/// Frames that the original body has taken from its source and recorded but not yet sent.
#[derive(Debug, Default)]
struct Prefetch {
    frames: VecDeque<Frame<Bytes>>,
    /// The source error to send after `frames`.
    error: Option<BoxError>,
    source_ended: bool,
}

impl Prefetch {
    /// Returns what to send next, or `None` when the source has to be polled.
    fn next(&mut self) -> Option<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Some(Some(Ok(frame)));
        }
        if let Some(error) = self.error.take() {
            return Some(Some(Err(error)));
        }
        self.source_ended.then_some(None)
    }

    /// Takes and records every frame that `source` has ready, until it is pending or ends or
    /// the recording overflows. The recording is then complete even when the sender stops
    /// polling after the last data frame, as hyper's HTTP/2 client does when the server resets
    /// the stream right after its response.
    fn fill<B>(&mut self, mut source: Pin<&mut B>, cx: &mut Context<'_>, recording: &mut Recording)
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        // A bound on the frames taken per poll keeps a body that always has an empty frame
        // ready from looping here forever.
        for _ in 0..MAX_FRAMES_PER_POLL {
            let Poll::Ready(polled) = source.as_mut().poll_frame(cx) else {
                return;
            };
            let frame = match polled {
                None => {
                    recording.complete = true;
                    self.source_ended = true;
                    return;
                }
                Some(Err(error)) => {
                    recording.failed = true;
                    self.error = Some(error.into());
                    return;
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    recording.record_data(&bytes);
                    self.frames.push_back(Frame::data(bytes));
                }
                Err(frame) => {
                    // Trailers are the last frame. Any other kind of frame ends the body too.
                    if let Ok(trailers) = frame.into_trailers() {
                        recording.trailers = Some(trailers.clone());
                        recording.complete = true;
                        self.frames.push_back(Frame::trailers(trailers));
                    }
                    self.source_ended = true;
                    return;
                }
            }
            if source.is_end_stream() {
                recording.complete = true;
                self.source_ended = true;
                return;
            }
            if recording.overflowed {
                return;
            }
        }
    }

    /// Returns the number of data bytes waiting in `frames`.
    fn data_len(&self) -> u64 {
        self.frames
            .iter()
            .filter_map(Frame::data_ref)
            .map(|data| data.len() as u64)
            .sum()
    }
}

#[derive(Debug)]
struct Recording {
    frames: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    len: usize,
    max_len: usize,
    complete: bool,
    overflowed: bool,
    failed: bool,
}

impl Recording {
    fn replayable(&self) -> bool {
        self.complete && !self.overflowed && !self.failed
    }

    fn record_data(&mut self, data: &Bytes) {
        if self.overflowed {
            return;
        }
        self.len = self.len.saturating_add(data.len());
        if self.len > self.max_len {
            self.overflowed = true;
            self.frames = Vec::new();
        } else {
            self.frames.push(data.clone());
        }
    }
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping at most `max_len` bytes for a replay.
    pub fn new(body: B, max_len: usize) -> Self {
        let exact = body.size_hint().exact();
        let recording = Recording {
            frames: Vec::new(),
            trailers: None,
            len: 0,
            max_len,
            complete: body.is_end_stream(),
            overflowed: exact.is_some_and(|len| len > max_len as u64),
            failed: false,
        };
        ReplayBody {
            source: Some(body),
            recording: Arc::new(Mutex::new(recording)),
            next_frame: 0,
            trailers_sent: false,
            prefetch: Prefetch::default(),
        }
    }
}

impl<B> ReplayBody<B> {
    fn lock(&self) -> MutexGuard<'_, Recording> {
        lock(&self.recording)
    }
}

/// Locks the recording. A panic while it was held cannot leave it inconsistent, because
/// every update is a single assignment or push, so a poisoned lock is used as it is.
fn lock(recording: &Mutex<Recording>) -> MutexGuard<'_, Recording> {
    recording
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<B> ReplayableBody for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    /// Always returns a copy, so that a retry policy still receives the response. A copy of
    /// a body over the limit reports `false` from [`can_replay`](Self::can_replay).
    fn clone_for_replay(&self) -> Option<Self> {
        Some(ReplayBody {
            source: None,
            recording: Arc::clone(&self.recording),
            next_frame: 0,
            trailers_sent: false,
            prefetch: Prefetch::default(),
        })
    }

    fn can_replay(&self) -> bool {
        self.lock().replayable()
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut source = this.source;
        let Some(inner) = source.as_mut().as_pin_mut() else {
            let recording = lock(this.recording);
            return Poll::Ready(replay_frame(
                &recording,
                this.next_frame,
                this.trailers_sent,
            ));
        };
        if let Some(next) = this.prefetch.next() {
            return Poll::Ready(next);
        }
        this.prefetch.fill(inner, cx, &mut lock(this.recording));
        match this.prefetch.next() {
            Some(next) => Poll::Ready(next),
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Some(source) => {
                let prefetch = &self.prefetch;
                prefetch.frames.is_empty()
                    && prefetch.error.is_none()
                    && (prefetch.source_ended || source.is_end_stream())
            }
            None => {
                let recording = self.lock();
                self.next_frame >= recording.frames.len()
                    && (self.trailers_sent || recording.trailers.is_none())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Some(source) => {
                let queued = self.prefetch.data_len();
                let remaining = source.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(remaining.lower().saturating_add(queued));
                if let Some(upper) = remaining.upper() {
                    hint.set_upper(upper.saturating_add(queued));
                }
                hint
            }
            None => SizeHint::with_exact(self.lock().len as u64),
        }
    }
}

/// Returns the next recorded frame for a replaying copy.
fn replay_frame(
    recording: &Recording,
    next_frame: &mut usize,
    trailers_sent: &mut bool,
) -> Option<Result<Frame<Bytes>, BoxError>> {
    if !recording.replayable() {
        return Some(Err(
            "the request body was not recorded in full, so it cannot be \
                         sent again"
                .into(),
        ));
    }
    if let Some(data) = recording.frames.get(*next_frame) {
        *next_frame += 1;
        return Some(Ok(Frame::data(data.clone())));
    }
    if !*trailers_sent {
        *trailers_sent = true;
        if let Some(trailers) = &recording.trailers {
            return Some(Ok(Frame::trailers(trailers.clone())));
        }
    }
    None
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let recording = self.lock();
        f.debug_struct("ReplayBody")
            .field("replaying", &self.source.is_none())
            .field("recorded_len", &recording.len)
            .field("max_len", &recording.max_len)
            .field("complete", &recording.complete)
            .field("overflowed", &recording.overflowed)
            .finish()
    }
}

/// Copies a request for a replay: method, URI, version, headers, extensions and a body
/// from [`ReplayableBody::clone_for_replay`].
pub(crate) fn clone_request<B: ReplayableBody>(
    request: &http::Request<B>,
) -> Option<http::Request<B>> {
    let body = request.body().clone_for_replay()?;
    let mut clone = http::Request::new(body);
    *clone.method_mut() = request.method().clone();
    *clone.uri_mut() = request.uri().clone();
    *clone.version_mut() = request.version();
    *clone.headers_mut() = request.headers().clone();
    *clone.extensions_mut() = request.extensions().clone();
    Some(clone)
}
