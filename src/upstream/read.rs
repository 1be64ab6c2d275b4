//! Socket reads that keep no read buffer while a connection waits.

use bytes::BytesMut;
use tokio::io::AsyncRead;

/// Size of the per-thread scratch buffer reads land in.
const SCRATCH_SIZE: usize = 64 << 10;

/// Reads what the socket has and appends it to `buf`; returns how many bytes
/// came (0 at the end of the stream). The bytes land in a per-thread scratch
/// buffer and are copied into `buf`, which so grows to exactly what arrived:
/// a connection waiting on a slow peer holds no buffer, and one that got
/// 4 KB holds 4 KB, not a 64 KiB read buffer (the copy is cheap next to the
/// memory it saves under thousands of connections in flight).
///
/// Read through `poll_read`, not `readable` + `try_read`: tokio clears a
/// socket's readiness after a short read, which saves the extra `recvfrom`
/// that would otherwise end every exchange in `EAGAIN`.
pub async fn read_some<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Box<[u8]>> =
            std::cell::RefCell::new(vec![0u8; SCRATCH_SIZE].into_boxed_slice());
    }
    std::future::poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut rb = tokio::io::ReadBuf::new(scratch);
            match std::pin::Pin::new(&mut *io).poll_read(cx, &mut rb) {
                std::task::Poll::Ready(Ok(())) => {
                    buf.extend_from_slice(rb.filled());
                    std::task::Poll::Ready(Ok(rb.filled().len()))
                }
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
    })
    .await
}
