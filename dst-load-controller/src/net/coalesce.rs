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
//! coming.

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
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes held for the writer before writes wait for it to send them.
pub const MAX_HELD: usize = 1 << 20;

/// How long the writer of a closed connection may take to send what it held.
const DRAIN: Duration = Duration::from_secs(5);

/// The writer keeps a buffer up to this size between rounds.
const KEPT_CAPACITY: usize = 64 * 1024;

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
    /// Wakes the writer: bytes held, or the connection closing.
    work: Notify,
}

#[derive(Default)]
struct State {
    held: BytesMut,
    /// The writer's failure; every later write, flush and shutdown gets it.
    failed: Option<(io::ErrorKind, String)>,
    /// Shut down or dropped: the writer sends what it holds, shuts its side
    /// down and ends.
    closing: bool,
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
    /// An accepted connection, its writer spawned on the current runtime.
    pub fn tcp(tcp: TcpStream) -> Self {
        let info = tcp.connect_info();
        let (read, write) = tcp.into_split();
        Self::new(read, write, MAX_HELD).with_info(info)
    }
}

impl<R> Coalesced<R> {
    /// Reads from `read`; writes reach `write` through a writer task spawned
    /// on the current runtime; writes wait once `limit` bytes are held.
    pub fn new<W>(read: R, write: W, limit: usize) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Notify::new(),
        });
        tokio::spawn(writer(write, shared.clone()));
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
}

/// Sends what the connection hands it, all it holds in each write, until
/// the connection closes or a write fails.
async fn writer<W: AsyncWrite + Unpin>(mut out: W, shared: Arc<Shared>) {
    let mut sending = BytesMut::new();
    loop {
        let closing = {
            let mut s = shared.state();
            std::mem::swap(&mut s.held, &mut sending);
            // The held buffer is empty again: room for a waiting write.
            s.wake_waiting();
            s.closing
        };
        if sending.is_empty() {
            if closing {
                let _ = tokio::time::timeout(DRAIN, out.shutdown()).await;
                let mut s = shared.state();
                s.ended = true;
                s.wake_waiting();
                return;
            }
            shared.work.notified().await;
            // Let the rest of this round's frames join the write.
            tokio::task::yield_now().await;
            continue;
        }
        let sent = if closing {
            tokio::time::timeout(DRAIN, out.write_all(&sending))
                .await
                .unwrap_or_else(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer read nothing while the connection closed",
                    ))
                })
        } else {
            out.write_all(&sending).await
        };
        if let Err(e) = sent {
            let mut s = shared.state();
            s.failed = Some((e.kind(), e.to_string()));
            s.ended = true;
            s.held.clear();
            s.wake_waiting();
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
        if s.closing {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "a write after the connection's shutdown",
            )));
        }
        let mut room = self.limit.saturating_sub(s.held.len());
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
        s.closing = true;
        s.waiting = Some(cx.waker().clone());
        drop(s);
        self.shared.work.notify_one();
        Poll::Pending
    }
}

impl<R> Drop for Coalesced<R> {
    /// The writer sends what it holds (for at most [`DRAIN`]) and ends.
    fn drop(&mut self) {
        self.shared.state().closing = true;
        self.shared.work.notify_one();
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
        let mut io = Coalesced::new(tokio::io::empty(), rec.clone(), MAX_HELD);
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
        let mut io = Coalesced::new(read, write, MAX_HELD);
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
        let mut io = Coalesced::new(tokio::io::empty(), rec.clone(), MAX_HELD);
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
        let mut io = Coalesced::new(read, write, 8);
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
        let mut io = Coalesced::new(tokio::io::empty(), Broken, MAX_HELD);
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
        let mut io = Coalesced::new(read, write, MAX_HELD);
        io.write_all(b"held").await.unwrap();
        drop(io);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), theirs.read_to_end(&mut got))
            .await
            .expect("in time")
            .unwrap();
        assert_eq!(got, b"held");
    }
}
