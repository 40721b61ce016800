//! One response stream's queue: the messages the mock has for the stream and
//! has not sent yet, up to a capacity.
//!
//! Every stream has exactly one sender (the store's sink, or a task of its
//! own) and one receiver (the response body). So a lock around a `VecDeque`
//! costs one uncontended lock a message on each side, where a bounded channel
//! adds a semaphore, its own lock on every receive and cooperative budgeting.
//! The receiver ends at the server's shutdown, once what is queued is sent
//! (nothing is queued after it: the tasks that queue end at it too). It
//! waits on a child of the shutdown token, and only when its queue is empty:
//! waiting on a token of its own does not share one lock between every
//! stream of the server, as waiting on the shutdown token itself does, and
//! a stream with messages to send takes no token's lock at all.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
};

use futures::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A queue of at most `capacity` messages (at least one) whose receiver
/// ends at `shutdown`.
pub fn queue<T>(capacity: usize, shutdown: &CancellationToken) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            receiver: None,
            closing: None,
            sender_gone: false,
            receiver_gone: false,
        }),
        capacity: capacity.max(1),
    });
    let receiver = Receiver {
        shared: shared.clone(),
        stop: Box::pin(shutdown.child_token().cancelled_owned()),
        ended: false,
        held: None,
    };
    (Sender(shared), receiver)
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The queue holds its capacity.
    #[error("the stream's queue is full")]
    Full,
    /// The stream has ended.
    #[error("the stream has ended")]
    Closed,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// The receiver waiting for a message.
    receiver: Option<Waker>,
    /// The sender waiting for the stream to end.
    closing: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl<T> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding it; a poisoned state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps a waker unless the one kept already wakes the same task.
fn keep(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// The sending side. Dropping it ends the stream after what it queued.
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or the stream has ended.
    pub fn try_send(&self, item: T) -> Result<(), Refused> {
        let mut state = self.0.state();
        if state.receiver_gone {
            return Err(Refused::Closed);
        }
        if state.items.len() >= self.0.capacity {
            return Err(Refused::Full);
        }
        state.items.push_back(item);
        let waiting = state.receiver.take();
        drop(state);
        if let Some(w) = waiting {
            w.wake();
        }
        Ok(())
    }

    /// Whether the stream has ended (its receiver dropped, or shut down).
    pub fn is_closed(&self) -> bool {
        self.0.state().receiver_gone
    }

    /// Completes when the stream has ended.
    pub async fn closed(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.0.state();
            if state.receiver_gone {
                return Poll::Ready(());
            }
            keep(&mut state.closing, cx);
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.sender_gone = true;
        let waiting = state.receiver.take();
        drop(state);
        if let Some(w) = waiting {
            w.wake();
        }
    }
}

/// The receiving side: the queued messages in order, until nothing is left
/// and either the sender is dropped or the shutdown has come.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
    held: Option<Box<dyn Send>>,
}

impl<T> Receiver<T> {
    /// Keeps `value` for as long as the receiver lives (a guard counting
    /// the stream open, or a sender that never sends again).
    pub fn holding(mut self, value: impl Send + 'static) -> Self {
        self.held = Some(Box::new(value));
        self
    }

    /// Ends the stream: drops what is queued and tells the sender.
    fn end(&mut self) {
        self.ended = true;
        let mut state = self.shared.state();
        state.receiver_gone = true;
        let items = std::mem::take(&mut state.items);
        let closing = state.closing.take();
        drop(state);
        drop(items);
        if let Some(w) = closing {
            w.wake();
        }
    }
}

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let mut state = this.shared.state();
        if let Some(item) = state.items.pop_front() {
            return Poll::Ready(Some(item));
        }
        let sender_gone = state.sender_gone;
        if !sender_gone {
            keep(&mut state.receiver, cx);
        }
        drop(state);
        // A message queued from here on wakes this task again.
        if sender_gone || this.stop.as_mut().poll(cx).is_ready() {
            this.end();
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if !self.ended {
            self.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    /// Long enough that a wake which never comes is not mistaken for a
    /// slow one on a loaded machine.
    const PATIENCE: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn messages_come_in_order_up_to_the_capacity() {
        let (tx, mut rx) = queue(2, &CancellationToken::new());
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(Refused::Full));
        assert_eq!(rx.next().await, Some(1));
        assert_eq!(tx.try_send(4), Ok(()));
        assert_eq!(rx.next().await, Some(2));
        assert_eq!(rx.next().await, Some(4));
        assert!(!tx.is_closed());
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_message_and_by_the_end() {
        let (tx, mut rx) = queue(4, &CancellationToken::new());
        let reader = tokio::spawn(async move {
            let first = rx.next().await;
            let second = rx.next().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        tx.try_send("a").unwrap();
        drop(tx);
        let read = tokio::time::timeout(PATIENCE, reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, (Some("a"), None));
    }

    #[tokio::test]
    async fn dropping_the_sender_ends_the_stream_after_what_it_queued() {
        let (tx, rx) = queue(4, &CancellationToken::new());
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        drop(tx);
        assert_eq!(rx.collect::<Vec<_>>().await, vec![1, 2]);
    }

    #[tokio::test]
    async fn dropping_the_receiver_closes_the_sender() {
        let (tx, rx) = queue(4, &CancellationToken::new());
        let tx = Arc::new(tx);
        let waiter = tokio::spawn({
            let tx = tx.clone();
            async move { tx.closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(rx);
        tokio::time::timeout(PATIENCE, waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(1), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn the_shutdown_ends_the_stream_after_what_is_queued_and_closes_the_sender() {
        let shutdown = CancellationToken::new();
        let (tx, mut rx) = queue(4, &shutdown);
        let (idle_tx, idle_rx) = queue::<u32>(4, &shutdown);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        // A waiting receiver is woken by the shutdown.
        let idle = tokio::spawn(idle_rx.collect::<Vec<_>>());
        tokio::task::yield_now().await;
        assert!(!idle.is_finished());
        shutdown.cancel();
        let read = tokio::time::timeout(PATIENCE, idle).await.unwrap().unwrap();
        assert!(read.is_empty());
        assert!(idle_tx.is_closed());
        // The queued ones are sent, then the stream ends, its sender alive.
        assert!(!tx.is_closed());
        assert_eq!(rx.next().await, Some(1));
        assert_eq!(rx.next().await, Some(2));
        assert_eq!(rx.next().await, None);
        assert_eq!(rx.next().await, None);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(3), Err(Refused::Closed));
        // A queue made after the shutdown ends as soon as it is empty.
        let (late_tx, mut late) = queue(4, &shutdown);
        late_tx.try_send(4).unwrap();
        assert_eq!(late.next().await, Some(4));
        assert_eq!(late.next().await, None);
    }

    #[tokio::test]
    async fn a_held_value_lives_as_long_as_the_receiver() {
        let (tx, rx) = queue::<u32>(1, &CancellationToken::new());
        let held = Arc::new(());
        let rx = rx.holding(held.clone());
        assert_eq!(Arc::strong_count(&held), 2);
        drop(tx);
        drop(rx);
        assert_eq!(Arc::strong_count(&held), 1);
    }
}
