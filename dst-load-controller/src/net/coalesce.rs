//! One write per connection per round of work: the mock's connections hand
//! their bytes to a writer task of their own, which sends all it holds in one
//! write once the runtime has run its other ready tasks.
//!
//! h2 sends a DATA frame of 256 bytes or more from the frame's own buffer and
//! flushes before it takes the next one, so a change that reaches five
//! streams of one connection left in five writes. On loopback each write
//! also costs the sender the receiver's TCP work (the kernel delivers it in
//! the sender's context), which made the writes more than half the mock's CPU.
//! Here a flush hands the bytes over and returns; the writer, woken by the
//! first of them, yields once (Tokio runs deferred tasks after every ready
//! one), so the other streams' frames of the same change join the same write.
//! No timer is involved: nothing waits for more bytes than are already
//! coming. Once the connection is shut down or dropped, the writer has
//! [`DRAIN`] to send what it holds (a peer that reads nothing cannot keep
//! it), and keeps the connection's place under the mock's cap until then.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{BufMut, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpStream, tcp::OwnedReadHalf},
    sync::Notify,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes held for the writer (waiting, and being sent) before writes wait
/// for it: many rounds' worth of a connection's frames.
pub const MAX_HELD: usize = 256 * 1024;

/// How long the writer of a connection that closed may take to send what it
/// held, its shutdown included.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The writer keeps each of its two buffers (held, sending) up to this size
/// between rounds.
const KEPT_CAPACITY: usize = 32 * 1024;

/// A connection whose writes go out through its writer task: reads go to
/// `R`; writes are copied into a buffer that the writer sends.
pub struct Coalesced<R> {
    read: R,
    shared: Arc<Shared>,
    limit: usize,
    info: TcpConnectInfo,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: bytes held.
    work: Notify,
    /// Shut down or dropped: the writer sends what it holds within
    /// [`DRAIN`], shuts its side down and ends; a write in progress when
    /// this comes gets the same deadline.
    closed: CancellationToken,
}

#[derive(Default)]
struct State {
    held: BytesMut,
    /// Bytes the writer is sending now.
    sending: usize,
    /// The writer's failure; every later write, flush and shutdown gets it.
    failed: Option<(io::ErrorKind, String)>,
    /// The writer has ended.
    ended: bool,
    /// The connection's task, waiting for room or for the shutdown's end.
    waiting: Option<Waker>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn failure(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|(kind, why)| io::Error::new(*kind, why.clone()))
    }

    fn wake_waiting(&mut self) {
        if let Some(w) = self.waiting.take() {
            w.wake();
        }
    }
}

impl Coalesced<OwnedReadHalf> {
    /// An accepted connection, its writer spawned on the current runtime;
    /// `guard` (a place under a connection cap) is held until the writer
    /// has ended, the socket with it.
    pub fn tcp<G: Send + 'static>(tcp: TcpStream, guard: G) -> Self {
        let info = tcp.connect_info();
        let (read, write) = tcp.into_split();
        Self::new(read, write, MAX_HELD, guard).with_info(info)
    }
}

impl<R> Coalesced<R> {
    /// Reads from `read`; writes reach `write` through a writer task spawned
    /// on the current runtime, which holds `guard` until it ends; writes wait
    /// once `limit` bytes are held.
    pub fn new<W, G>(read: R, write: W, limit: usize, guard: G) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
        G: Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Notify::new(),
            closed: CancellationToken::new(),
        });
        let ending = Ending {
            shared: shared.clone(),
            // Until it ends otherwise: the task dropped with its runtime.
            why: Some(io::Error::other("the connection's writer stopped")),
            _guard: guard,
        };
        tokio::spawn(writer(write, ending));
        Self {
            read,
            shared,
            limit: limit.max(1),
            info: TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }

    fn with_info(mut self, info: TcpConnectInfo) -> Self {
        self.info = info;
        self
    }

    fn close(&self) {
        self.shared.closed.cancel();
    }
}

/// The writer's end, however it comes (a failed write, the shutdown done, or
/// the task dropped with its runtime): marks it ended, with its failure,
/// wakes the connection's task, and lets the guard go.
struct Ending<G> {
    shared: Arc<Shared>,
    /// Why the writer ended; `None` after a clean shutdown.
    why: Option<io::Error>,
    _guard: G,
}

impl<G> Drop for Ending<G> {
    fn drop(&mut self) {
        let mut s = self.shared.state();
        s.ended = true;
        s.held.clear();
        s.sending = 0;
        if let (None, Some(e)) = (&s.failed, &self.why) {
            s.failed = Some((e.kind(), e.to_string()));
        }
        s.wake_waiting();
    }
}

/// Runs `io` to its end, or, once the connection has closed, until the
/// drain deadline (set the first time the close is seen).
async fn bounded<T>(
    io: impl std::future::Future<Output = io::Result<T>>,
    closed: &CancellationToken,
    deadline: &mut Option<tokio::time::Instant>,
) -> io::Result<T> {
    tokio::pin!(io);
    if deadline.is_none() {
        tokio::select! {
            done = &mut io => return done,
            () = closed.cancelled() => *deadline = Some(tokio::time::Instant::now() + DRAIN),
        }
    }
    let until = deadline.expect("set above");
    tokio::time::timeout_at(until, io)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer read nothing for {DRAIN:?} after the connection closed"),
            ))
        })
}

/// Sends what the connection hands it, all it holds in each write, until
/// the connection closes or a write fails.
async fn writer<W: AsyncWrite + Unpin, G>(mut out: W, mut ending: Ending<G>) {
    let shared = ending.shared.clone();
    let mut sending = BytesMut::new();
    let mut deadline = None;
    loop {
        {
            let mut s = shared.state();
            std::mem::swap(&mut s.held, &mut sending);
            s.sending = sending.len();
            // The held buffer is empty again: room for a waiting write.
            s.wake_waiting();
        }
        if sending.is_empty() {
            if shared.closed.is_cancelled() {
                ending.why = bounded(out.shutdown(), &shared.closed, &mut deadline)
                    .await
                    .err();
                return;
            }
            tokio::select! {
                () = shared.work.notified() => {}
                () = shared.closed.cancelled() => continue,
            }
            // Let the rest of this round's frames join the write.
            tokio::task::yield_now().await;
            continue;
        }
        if let Err(e) = bounded(out.write_all(&sending), &shared.closed, &mut deadline).await {
            ending.why = Some(e);
            return;
        }
        if sending.capacity() > KEPT_CAPACITY {
            sending = BytesMut::new();
        } else {
            sending.clear();
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Coalesced<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for Coalesced<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.shared.state();
        if let Some(e) = s.failure() {
            return Poll::Ready(Err(e));
        }
        if self.shared.closed.is_cancelled() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "a write after the connection's shutdown",
            )));
        }
        let mut room = self.limit.saturating_sub(s.held.len() + s.sending);
        if room == 0 {
            s.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let was_empty = s.held.is_empty();
        let mut taken = 0;
        for b in bufs {
            let n = b.len().min(room);
            s.held.put_slice(&b[..n]);
            taken += n;
            room -= n;
            if room == 0 {
                break;
            }
        }
        drop(s);
        // Bytes held before these were announced already.
        if was_empty && taken > 0 {
            self.shared.work.notify_one();
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// The bytes are the writer's now: a flush waits for nothing more.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.shared.state().failure() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Waits until the writer has sent what it held and shut its side down.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.shared.state();
        if let Some(e) = s.failure() {
            return Poll::Ready(Err(e));
        }
        if s.ended {
            return Poll::Ready(Ok(()));
        }
        s.waiting = Some(cx.waker().clone());
        drop(s);
        self.close();
        Poll::Pending
    }
}

impl<R> Drop for Coalesced<R> {
    /// The writer sends what it holds (for at most [`DRAIN`]) and ends.
    fn drop(&mut self) {
        self.close();
    }
}

impl<R> Connected for Coalesced<R> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An inner writer that records each write it is given.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        shut: Arc<Mutex<bool>>,
    }

    impl Recorder {
        fn writes(&self) -> Vec<Vec<u8>> {
            self.writes.lock().unwrap().clone()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.lock().unwrap().push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            *self.shut.lock().unwrap() = true;
            Poll::Ready(Ok(()))
        }
    }

    /// Polls until `done` holds, yielding to the runtime in between; gives
    /// up after ten seconds of a busy machine.
    async fn until(mut done: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn writes_and_flushes_of_one_round_leave_in_one_write_in_order() {
        let rec = Recorder::default();
        let mut io = Coalesced::new(tokio::io::empty(), rec.clone(), MAX_HELD, ());
        // What h2 does with three frames of a change: each frame written
        // and flushed before the next, all within one poll of its task.
        for frame in [&b"first"[..], b"second", b"third"] {
            io.write_all(frame).await.unwrap();
            io.flush().await.unwrap();
        }
        assert!(
            rec.writes().is_empty(),
            "nothing is written before the round ends"
        );
        until(|| !rec.writes().is_empty()).await;
        assert_eq!(rec.writes(), vec![b"firstsecondthird".to_vec()]);

        // A later round is a write of its own.
        io.write_all(b"fourth").await.unwrap();
        until(|| rec.writes().len() == 2).await;
        assert_eq!(rec.writes()[1], b"fourth");
    }

    #[tokio::test]
    async fn flushed_bytes_reach_the_peer_with_nothing_more_written() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let (read, write) = tokio::io::split(ours);
        let mut io = Coalesced::new(read, write, MAX_HELD, ());
        io.write_all(b"hello").await.unwrap();
        io.flush().await.unwrap();
        let mut buf = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(10), theirs.read_exact(&mut buf))
            .await
            .expect("in time")
            .unwrap();
        assert_eq!(&buf, b"hello");
        // Reads go to the connection.
        theirs.write_all(b"back").await.unwrap();
        let mut buf = [0u8; 4];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");
    }

    #[tokio::test]
    async fn shutdown_returns_once_every_held_byte_is_sent_and_the_side_shut() {
        let rec = Recorder::default();
        let mut io = Coalesced::new(tokio::io::empty(), rec.clone(), MAX_HELD, ());
        io.write_all(b"last words").await.unwrap();
        io.shutdown().await.unwrap();
        assert_eq!(rec.writes(), vec![b"last words".to_vec()]);
        assert!(*rec.shut.lock().unwrap());
        let e = io.write_all(b"more").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn writes_wait_while_the_limit_is_held_and_go_on_as_the_peer_reads() {
        // The peer reads nothing at first: 16 bytes fit in the pipe, 8 are
        // held, and the next write waits.
        let (ours, mut theirs) = tokio::io::duplex(16);
        let (read, write) = tokio::io::split(ours);
        let mut io = Coalesced::new(read, write, 8, ());
        let data: Vec<u8> = (0..64).collect();
        let mut written = 0;
        let stuck = tokio::time::timeout(Duration::from_millis(200), async {
            while written < data.len() {
                written += io.write(&data[written..]).await.unwrap();
            }
        })
        .await;
        assert!(stuck.is_err(), "the writes wait for the peer");
        assert!(
            written <= 16 + 8 + 8,
            "at most the pipe and the limit: {written}"
        );

        // As the peer reads, everything goes through, in order.
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 64];
            theirs.read_exact(&mut got).await.unwrap();
            got
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            io.write_all(&data[written..]).await.unwrap();
            io.flush().await.unwrap();
        })
        .await
        .expect("in time");
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("in time")
            .unwrap();
        assert_eq!(got, data);
    }

    /// An inner writer that fails every write.
    struct Broken;

    impl AsyncWrite for Broken {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "reset by peer",
            )))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_later_write_flush_and_shutdown() {
        let mut io = Coalesced::new(tokio::io::empty(), Broken, MAX_HELD, ());
        io.write_all(b"lost").await.unwrap();
        let shared = io.shared.clone();
        until(|| shared.state().ended).await;
        for e in [
            io.write_all(b"more").await.unwrap_err(),
            io.flush().await.unwrap_err(),
            io.shutdown().await.unwrap_err(),
        ] {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
            assert_eq!(e.to_string(), "reset by peer");
        }
    }

    #[tokio::test]
    async fn a_dropped_connection_sends_what_it_held_then_closes() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let (read, write) = tokio::io::split(ours);
        let mut io = Coalesced::new(read, write, MAX_HELD, ());
        io.write_all(b"held").await.unwrap();
        drop(io);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), theirs.read_to_end(&mut got))
            .await
            .expect("in time")
            .unwrap();
        assert_eq!(got, b"held");
    }

    /// A connection whose peer reads nothing, its writer stuck in a write
    /// of 64 bytes (16 fit in the pipe); and the guard's release.
    async fn stuck() -> (
        Coalesced<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        tokio::io::DuplexStream,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        let (ours, theirs) = tokio::io::duplex(16);
        let (read, write) = tokio::io::split(ours);
        let (guard, released) = tokio::sync::oneshot::channel::<()>();
        let mut io = Coalesced::new(read, write, MAX_HELD, guard);
        io.write_all(&[7u8; 64]).await.unwrap();
        let shared = io.shared.clone();
        until(|| shared.state().sending == 64).await;
        (io, theirs, released)
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_connection_whose_peer_reads_nothing_lets_go_after_the_drain() {
        let (io, _theirs, released) = stuck().await;
        let start = tokio::time::Instant::now();
        drop(io);
        // The writer ends, and lets its guard (the socket's place) go.
        released.await.unwrap_err();
        let waited = start.elapsed();
        assert!(waited >= DRAIN, "never before the drain: {waited:?}");
        assert!(waited < DRAIN * 2, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_whose_peer_reads_nothing_fails_after_the_drain() {
        let (mut io, _theirs, released) = stuck().await;
        let start = tokio::time::Instant::now();
        let e = io.shutdown().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("read nothing for 5s"), "{e}");
        assert!(start.elapsed() >= DRAIN, "never before the drain");
        released.await.unwrap_err();
    }
}
