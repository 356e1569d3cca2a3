//! A connection's first request head, read before hyper takes the connection over.
//!
//! hyper gives every connection an 8 KiB write buffer when it starts serving it and an 8 KiB
//! read buffer at its first read, so a client that opens a connection and sends half a head
//! holds 16 KiB of the server's memory until the head deadline. Reading the first head here,
//! into a buffer the size of what the client actually sent, and starting hyper only once the
//! head is complete keeps such a connection down to its task and socket. hyper then reads the
//! bytes already read first, through [`Rewind`], so it parses exactly what the client sent.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes one read takes from the socket: as much as hyper's own first read, so a head
/// that has arrived whole is read in one system call, as hyper would.
const READ_CHUNK: usize = 8192;

/// How reading a connection's first head ended; the bytes read are in the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FirstHead {
    /// The buffer holds a complete head, and whatever the client sent after it in the same
    /// reads.
    Complete,
    /// The buffer reached the limit without a complete head (hyper answers it 431).
    Full,
    /// The client closed its side before the head was complete (hyper decides what the bytes
    /// sent so far get, as when it read them itself).
    Closed,
}

/// Reads from `io` into `head` until it holds a complete request head, reaches `limit` bytes,
/// or the client closes its side. `head` grows with what arrives, to at most twice that: a
/// client that sends half a head holds a few dozen bytes, not a read buffer.
pub(super) async fn read_first_head<S: AsyncRead + Unpin>(
    io: &mut S,
    head: &mut Vec<u8>,
    limit: usize,
) -> io::Result<FirstHead> {
    let limit = limit.max(1);
    loop {
        if head.len() >= limit {
            return Ok(FirstHead::Full);
        }
        let before = head.len();
        // The chunk lives on the stack of one poll, not in this future, so a connection
        // waiting for its head holds no read buffer.
        let read = std::future::poll_fn(|cx| {
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let room = (limit - head.len()).min(READ_CHUNK);
            let mut buf = ReadBuf::uninit(&mut chunk[..room]);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
            append(head, buf.filled(), limit);
            Poll::Ready(Ok::<usize, io::Error>(buf.filled().len()))
        })
        .await?;
        if read == 0 {
            return Ok(FirstHead::Closed);
        }
        if ends_head(head, before.saturating_sub(2)) {
            return Ok(FirstHead::Complete);
        }
    }
}

/// Appends `bytes` to `head`, growing it to at most twice its length and never past `limit`:
/// the first read gets a buffer of exactly its size.
fn append(head: &mut Vec<u8>, bytes: &[u8], limit: usize) {
    if head.capacity() - head.len() < bytes.len() {
        let grow = head.capacity().max(bytes.len()).min(limit - head.len());
        head.reserve_exact(grow.max(bytes.len()));
    }
    head.extend_from_slice(bytes);
}

/// Whether `bytes` hold the end of a request head at or after `from`: a line feed followed by
/// an empty line. httparse, hyper's parser, also ends lines with a bare line feed, so "\n\n"
/// counts as well as "\n\r\n". Seeing an end too early (blank lines before a request line)
/// only starts hyper sooner; it never loses a byte.
fn ends_head(bytes: &[u8], from: usize) -> bool {
    let mut at = from;
    while let Some(offset) = bytes
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
    {
        let newline = at + offset;
        match bytes.get(newline + 1..) {
            Some([b'\n', ..]) | Some([b'\r', b'\n', ..]) => return true,
            _ => at = newline + 1,
        }
    }
    false
}

/// A stream that yields `prefix` before reading from `inner`, and writes to `inner`: hyper
/// reads the bytes of the first head already read as if they had just arrived.
pub(super) struct Rewind<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Rewind<S> {
    /// A stream that replays `prefix`, then reads `inner`.
    pub(super) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let left = this.prefix.len() - this.at;
        if left > 0 && buf.remaining() > 0 {
            let n = left.min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                // Replayed: free it rather than hold it for the life of the connection.
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    // hyper writes a response in one `writev` when the stream says it can: say what the
    // socket says.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client as the server sees it: each chunk arrives in a read of its own, after a read
    /// that finds nothing; then the client closes its side.
    struct Client {
        chunks: VecDeque<Vec<u8>>,
        waiting: bool,
        written: Vec<u8>,
    }

    impl Client {
        fn sending(chunks: &[&[u8]]) -> Self {
            Self {
                chunks: chunks.iter().map(|c| c.to_vec()).collect(),
                waiting: false,
                written: Vec::new(),
            }
        }

        /// Bytes not read yet.
        fn unread(&self) -> Vec<u8> {
            self.chunks.iter().flatten().copied().collect()
        }
    }

    impl AsyncRead for Client {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.waiting = !this.waiting;
            if this.waiting {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Some(mut chunk) = this.chunks.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    this.chunks.push_front(chunk.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Client {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn read_all<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        all
    }

    const HEAD: &[u8] = b"GET /recommendations?cart=22423 HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test]
    async fn a_head_split_across_many_reads_is_read_up_to_its_end() {
        let mut chunks: Vec<&[u8]> = HEAD.chunks(3).collect();
        let next: &[u8] = b"GET /healthz HTTP/1.1\r\n\r\n";
        chunks.push(next);
        let mut client = Client::sending(&chunks);
        let mut head = Vec::new();
        let first = read_first_head(&mut client, &mut head, 4096).await.unwrap();
        assert_eq!((first, head.as_slice()), (FirstHead::Complete, HEAD));
        assert!(head.capacity() <= 2 * head.len(), "{}", head.capacity());
        // It stopped at the end of the head: the next request is still the client's.
        assert_eq!(client.unread(), next);
        let mut rewound = Rewind::new(head, client);
        assert_eq!(read_all(&mut rewound).await, [HEAD, next].concat());
    }

    #[tokio::test]
    async fn bytes_after_the_head_are_replayed_after_it() {
        let body: &[u8] = b"POST /events HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]";
        let pipelined = [HEAD, body].concat();
        let later: &[u8] = b"GET /healthz HTTP/1.1\r\n\r\n";
        let mut client = Client::sending(&[&pipelined, later]);
        let mut head = Vec::new();
        let first = read_first_head(&mut client, &mut head, 4096).await.unwrap();
        assert_eq!((first, &head), (FirstHead::Complete, &pipelined));
        // hyper may read into small buffers: the replay goes on where the last read ended.
        let mut rewound = Rewind::new(head, client);
        let mut seen = Vec::new();
        let mut small = [0u8; 7];
        loop {
            let n = rewound.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&small[..n]);
        }
        assert_eq!(seen, [pipelined.as_slice(), later].concat());
    }

    #[tokio::test]
    async fn a_head_longer_than_the_limit_is_read_only_up_to_the_limit() {
        let long = [
            b"GET /healthz HTTP/1.1\r\nX-Long: ".as_slice(),
            &[b'a'; 300],
        ]
        .concat();
        let mut client = Client::sending(&[&long[..40], &long[40..]]);
        let mut head = Vec::new();
        let first = read_first_head(&mut client, &mut head, 64).await.unwrap();
        assert_eq!((first, head.as_slice()), (FirstHead::Full, &long[..64]));
        assert!(head.capacity() <= 64, "{}", head.capacity());
        assert_eq!(client.unread(), long[64..]);
        // hyper reads the same bytes it would have read itself, then the rest.
        let mut rewound = Rewind::new(head, client);
        assert_eq!(read_all(&mut rewound).await, long);
    }

    #[tokio::test]
    async fn a_client_that_closes_mid_head_leaves_what_it_sent_then_the_end() {
        let half: &[u8] = b"GET /healthz HTTP/1.1\r\nHo";
        let mut client = Client::sending(&[&half[..10], &half[10..]]);
        let mut head = Vec::new();
        let first = read_first_head(&mut client, &mut head, 4096).await.unwrap();
        assert_eq!((first, head.as_slice()), (FirstHead::Closed, half));
        assert_eq!(read_all(&mut Rewind::new(head, client)).await, half);

        let mut silent = Client::sending(&[]);
        let mut head = Vec::new();
        let first = read_first_head(&mut silent, &mut head, 4096).await.unwrap();
        assert_eq!((first, head.len()), (FirstHead::Closed, 0));
    }

    #[tokio::test]
    async fn a_half_sent_head_holds_a_buffer_its_size() {
        // The client sends half a head, then nothing, and keeps its side open.
        let (mut client, mut server) = tokio::io::duplex(1024);
        let half: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        client.write_all(half).await.unwrap();
        let mut head = Vec::new();
        let waiting = read_first_head(&mut server, &mut head, 61_440);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), waiting)
                .await
                .is_err(),
            "an incomplete head was taken as complete"
        );
        assert_eq!(head, half);
        assert_eq!(head.capacity(), half.len());
    }

    #[test]
    fn a_head_ends_at_an_empty_line_whatever_the_line_ends() {
        assert!(ends_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0));
        assert!(ends_head(b"GET / HTTP/1.1\nHost: x\n\n", 0));
        assert!(ends_head(b"GET / HTTP/1.1\r\n\r\nGET", 0));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 0));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r", 0));
        assert!(!ends_head(b"", 0));
        // Searching from two bytes before the newest read finds an end split across reads.
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(ends_head(head, head.len() - 3));
        assert!(!ends_head(head, head.len() - 1));
    }

    #[test]
    fn the_buffer_grows_at_most_to_twice_its_length_and_never_past_the_limit() {
        let mut head = Vec::new();
        append(&mut head, b"GET / HTTP/1.1\r\n", 100);
        assert_eq!(head.capacity(), 16);
        for _ in 0..5 {
            append(&mut head, b"X-A: b\r\n", 100);
            assert!(
                head.capacity() <= 2 * head.len().max(16),
                "{}",
                head.capacity()
            );
        }
        append(&mut head, &[b'a'; 44], 100);
        assert_eq!(head.len(), 100);
        assert!(head.capacity() <= 100, "{}", head.capacity());
    }

    #[tokio::test]
    async fn writes_go_to_the_stream_underneath() {
        let mut rewound = Rewind::new(b"GET".to_vec(), Client::sending(&[]));
        rewound.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        rewound.flush().await.unwrap();
        assert_eq!(rewound.inner.written, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            rewound.is_write_vectored(),
            rewound.inner.is_write_vectored()
        );
    }
}
