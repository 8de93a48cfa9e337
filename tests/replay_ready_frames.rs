//! `ReplayBody` takes every frame the wrapped body has ready on each poll, so a request whose
//! sender stops after the first data frame can still be replayed in full.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use resq_auth::{BoxError, ReplayBody, ReplayableBody};

/// One step of a [`ScriptedBody`].
enum Step {
    Data(&'static [u8]),
    Pending,
    Fail,
}

/// A body that plays its steps in order and then ends. Like tonic's client request body, it
/// never reports its end before it is polled past the last frame.
struct ScriptedBody {
    steps: VecDeque<Step>,
}

impl ScriptedBody {
    fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        ScriptedBody {
            steps: steps.into_iter().collect(),
        }
    }
}

impl Body for ScriptedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.steps.pop_front() {
            None => Poll::Ready(None),
            Some(Step::Data(data)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(data))))),
            // The test never polls again after a pending step, so no waker is kept.
            Some(Step::Pending) => Poll::Pending,
            Some(Step::Fail) => Poll::Ready(Some(Err("scripted body failure".into()))),
        }
    }
}

async fn next_data(body: &mut ReplayBody<ScriptedBody>) -> Bytes {
    let frame = body.frame().await.unwrap().unwrap();
    frame.into_data().unwrap()
}

async fn collect(body: ReplayBody<ScriptedBody>) -> Bytes {
    body.collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn ready_frames_recorded_on_first_poll() {
    let body = ScriptedBody::new([Step::Data(b"mission-"), Step::Data(b"m-17")]);
    let mut original = ReplayBody::new(body, 1024);
    let copy = original.clone_for_replay().unwrap();

    let first = next_data(&mut original).await;
    // The sender stops here, as hyper's HTTP/2 client does when the server resets the stream
    // right after its response.
    drop(original);

    assert_eq!(first, Bytes::from_static(b"mission-"));
    assert!(copy.can_replay());
    assert_eq!(collect(copy).await, Bytes::from_static(b"mission-m-17"));
}

#[tokio::test]
async fn original_yields_frames_in_order() {
    let body = ScriptedBody::new([Step::Data(b"a"), Step::Data(b"b"), Step::Data(b"c")]);
    let original = ReplayBody::new(body, 1024);
    let copy = original.clone_for_replay().unwrap();

    assert_eq!(collect(original).await, Bytes::from_static(b"abc"));
    assert!(copy.can_replay());
    assert_eq!(collect(copy).await, Bytes::from_static(b"abc"));
}

#[tokio::test]
async fn pending_frame_stops_recording() {
    let body = ScriptedBody::new([
        Step::Data(b"chunk-1"),
        Step::Pending,
        Step::Data(b"chunk-2"),
    ]);
    let mut original = ReplayBody::new(body, 1024);
    let copy = original.clone_for_replay().unwrap();

    let first = next_data(&mut original).await;

    assert_eq!(first, Bytes::from_static(b"chunk-1"));
    assert!(!copy.can_replay());
}

#[tokio::test]
async fn frames_past_limit_still_sent_once() {
    let body = ScriptedBody::new([Step::Data(b"0123456789"), Step::Data(b"abcdefghij")]);
    let original = ReplayBody::new(body, 15);
    let copy = original.clone_for_replay().unwrap();

    let sent = collect(original).await;

    assert_eq!(sent, Bytes::from_static(b"0123456789abcdefghij"));
    assert!(!copy.can_replay());
}

#[tokio::test]
async fn error_follows_ready_frames() {
    let body = ScriptedBody::new([Step::Data(b"partial"), Step::Fail]);
    let mut original = ReplayBody::new(body, 1024);
    let copy = original.clone_for_replay().unwrap();

    let first = next_data(&mut original).await;
    let error = original.frame().await.unwrap().unwrap_err();

    assert_eq!(first, Bytes::from_static(b"partial"));
    assert_eq!(error.to_string(), "scripted body failure");
    assert!(original.frame().await.is_none());
    assert!(!copy.can_replay());
}
