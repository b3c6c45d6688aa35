//! How a member's two listeners take connections: a bounded number at
//! once (one more is closed as it arrives), Nagle's algorithm off, and,
//! with TLS, a handshake that must finish within a time limit. What comes
//! out is a stream of connections for tonic's `serve_with_incoming`.
//!
//! A stranger can open connections without end and never finish a TLS
//! handshake (tonic's own TLS has no time limit): each would hold a task
//! and a file descriptor for good. Here every connection holds a permit
//! from the listener's budget until it closes, and a handshake that takes
//! too long is dropped.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tracing::warn;

/// How a listener bounds its connections.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Most connections open at once (TLS handshakes in progress count).
    pub max_connections: usize,
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
}

/// An accepted connection; its permit returns to the listener's budget
/// when it closes.
pub struct Conn<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: Connected> Connected for Conn<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Connections of a plaintext listener.
pub fn plain(
    listener: TcpListener,
    what: &'static str,
    budget: Budget,
) -> impl Stream<Item = io::Result<Conn<TcpStream>>> {
    incoming(listener, what, budget, |stream, permit, tx, _| async move {
        let _ = tx
            .send(Ok(Conn {
                inner: stream,
                _permit: permit,
            }))
            .await;
    })
}

/// Connections of a TLS listener, handshake done; handshakes run side by
/// side, each within `budget.handshake_timeout`.
pub fn tls(
    listener: TcpListener,
    what: &'static str,
    budget: Budget,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = io::Result<Conn<TlsStream<TcpStream>>>> {
    let acceptor = TlsAcceptor::from(config);
    incoming(listener, what, budget, move |stream, permit, tx, refusals| {
        let acceptor = acceptor.clone();
        async move {
            let peer = stream.peer_addr().ok();
            // Its own task: a slow handshake holds only its permit.
            tokio::spawn(async move {
                match tokio::time::timeout(budget.handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx
                            .send(Ok(Conn {
                                inner: tls,
                                _permit: permit,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => refusals.connection(peer, &format!("TLS handshake failed: {e}")),
                    Err(_) => refusals.connection(
                        peer,
                        &format!("TLS handshake not finished within {:?}", budget.handshake_timeout),
                    ),
                }
            });
        }
    })
}

type Tx<S> = mpsc::Sender<io::Result<Conn<S>>>;

impl Refusals {
    /// A refused connection: counted in the metrics and noted.
    fn connection(&self, peer: Option<std::net::SocketAddr>, why: &str) {
        crate::metrics::connection_refused(self.what);
        self.note(peer, why);
    }
}

/// Accepts on `listener` until the returned stream is dropped; `take`
/// hands each connection, with its permit, on to the stream. The accept
/// task ends with the stream, and the stream ends if the task dies, which
/// ends tonic's server: the member's listener watch then stops the member.
fn incoming<S, F, Fut>(
    listener: TcpListener,
    what: &'static str,
    budget: Budget,
    take: F,
) -> impl Stream<Item = io::Result<Conn<S>>>
where
    S: Send + 'static,
    F: Fn(TcpStream, OwnedSemaphorePermit, Tx<S>, Arc<Refusals>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(budget.max_connections));
    let refusals = Arc::new(Refusals::new(what));
    tokio::spawn(async move {
        loop {
            let (stream, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, say: this connection is
                        // lost, the listener goes on once the moment passes.
                        refusals.connection(None, &format!("accept failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                refusals.connection(
                    Some(addr),
                    &format!(
                        "{} connections are open already (the limit)",
                        budget.max_connections
                    ),
                );
                continue;
            };
            if let Err(e) = stream.set_nodelay(true) {
                warn!(%e, listener = what, "could not turn off Nagle's algorithm on a connection");
            }
            take(stream, permit, tx.clone(), refusals.clone()).await;
        }
    });
    ReceiverStream::new(rx)
}

/// Refused connections, logged as a summary: one WARN for the first, then
/// at most one line per interval with the count, so a flood can not flood
/// the log too.
pub struct Refusals {
    what: &'static str,
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
}

const SUMMARY_EVERY: Duration = Duration::from_secs(10);

impl Refusals {
    /// Refusals of `what` (a listener's name, say).
    pub fn new(what: &'static str) -> Self {
        Refusals {
            what,
            count: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// Counts a refusal; logs it when the last line is old enough.
    pub fn note(&self, peer: Option<std::net::SocketAddr>, why: &str) {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= SUMMARY_EVERY) {
            *last = Some(Instant::now());
            let peer = peer.map_or_else(|| "-".to_string(), |p| p.to_string());
            warn!(listener = self.what, %peer, refused_so_far = count, "connection refused: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_stream::StreamExt;

    /// Past the limit a connection is closed at once; once one closes,
    /// another is taken again.
    #[tokio::test]
    async fn connections_past_the_limit_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let budget = Budget {
            max_connections: 2,
            handshake_timeout: Duration::from_secs(1),
        };
        let mut conns = Box::pin(plain(listener, "test", budget));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let first = conns.next().await.unwrap().unwrap();
        let _second = conns.next().await.unwrap().unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("the third connection is closed, not left hanging")
            .unwrap_or(0);
        assert_eq!(n, 0, "the third connection reads end of stream");
        drop(first);
        let _d = TcpStream::connect(addr).await.unwrap();
        let fourth = tokio::time::timeout(Duration::from_secs(5), conns.next()).await;
        assert!(
            matches!(fourth, Ok(Some(Ok(_)))),
            "a freed permit takes a new connection"
        );
    }
}
