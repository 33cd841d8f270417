//! One connection's two halves, as a byte stream of `[u16 len][body]` transport
//! messages whatever the transport: TCP carries them as they are; WebSocket carries
//! one body per binary message, so reading adds the length and writing strips it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tungstenite::Message;

type WsError = tungstenite::Error;
type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;
type BoxWsRead = Pin<Box<dyn Stream<Item = Result<Message, WsError>> + Send>>;
type BoxWsWrite = Pin<Box<dyn Sink<Message, Error = WsError> + Send>>;

/// The reading half of a connection.
pub struct ReadHalf(ReadKind);

enum ReadKind {
    Stream(BoxRead),
    Ws(BoxWsRead),
}

/// The writing half of a connection.
pub struct WriteHalf(WriteKind);

enum WriteKind {
    Stream(BoxWrite),
    Ws(BoxWsWrite),
}

/// A connected socket of either transport.
pub struct MeshStream {
    /// Reads transport bytes.
    pub reader: ReadHalf,
    /// Writes whole transmissions from `poll_transmit`.
    pub writer: WriteHalf,
}

impl MeshStream {
    /// A byte stream (TCP) from its two halves.
    pub fn from_io(
        reader: impl AsyncRead + Send + 'static,
        writer: impl AsyncWrite + Send + 'static,
    ) -> MeshStream {
        MeshStream {
            reader: ReadHalf(ReadKind::Stream(Box::pin(reader))),
            writer: WriteHalf(WriteKind::Stream(Box::pin(writer))),
        }
    }

    /// A WebSocket (from tokio-tungstenite or async-tungstenite).
    pub fn from_ws<S>(ws: S) -> MeshStream
    where
        S: Stream<Item = Result<Message, WsError>>
            + Sink<Message, Error = WsError>
            + Send
            + 'static,
    {
        let (sink, stream) = ws.split();
        MeshStream {
            reader: ReadHalf(ReadKind::Ws(Box::pin(stream))),
            writer: WriteHalf(WriteKind::Ws(Box::pin(sink))),
        }
    }
}

/// Turn a WebSocket error into an I/O error with a readable message.
fn ws_err(e: WsError) -> io::Error {
    io::Error::other(e)
}

impl ReadHalf {
    /// Read some bytes into `buf` (at least [`READ_BUFFER`] bytes long); `Ok(0)` is the
    /// end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        futures::future::poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Poll for some bytes, as [`ReadHalf::read`].
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            ReadKind::Stream(r) => r.as_mut().poll_read(cx, buf),
            ReadKind::Ws(r) => loop {
                let body = match ready!(r.as_mut().poll_next(cx)) {
                    None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(0)),
                    Some(Ok(Message::Binary(body))) => body,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Text(_))) => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "text WebSocket message",
                        )));
                    }
                    Some(Err(e)) => return Poll::Ready(Err(ws_err(e))),
                };
                let Some(len) = u16::try_from(body.len()).ok().filter(|n| *n > 0) else {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket message of 0 or over 65535 bytes",
                    )));
                };
                let Some(out) = buf.get_mut(..2 + body.len()) else {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "read buffer too small",
                    )));
                };
                out[..2].copy_from_slice(&len.to_be_bytes());
                out[2..].copy_from_slice(&body);
                return Poll::Ready(Ok(out.len()));
            },
        }
    }
}

/// The smallest buffer [`ReadHalf::read`] accepts: a whole transport message.
pub const READ_BUFFER: usize = 2 + 65535;

impl WriteHalf {
    /// Write one transmission (`[u16 len][body]`, as `poll_transmit` produced it).
    pub async fn write(&mut self, transmit: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < transmit.len() {
            done += futures::future::poll_fn(|cx| self.poll_write(cx, &transmit[done..])).await?;
        }
        futures::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Start writing one transmission, or the rest of one (`[u16 len][body]` as
    /// `poll_transmit` produced it): how many bytes were taken. A WebSocket takes a
    /// whole transmission as one binary message (call it with whole transmissions only).
    pub fn poll_write(&mut self, cx: &mut Context<'_>, transmit: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            WriteKind::Stream(w) => match w.as_mut().poll_write(cx, transmit) {
                Poll::Ready(Ok(0)) if !transmit.is_empty() => {
                    Poll::Ready(Err(io::ErrorKind::WriteZero.into()))
                }
                other => other,
            },
            WriteKind::Ws(w) => {
                if let Err(e) = ready!(w.as_mut().poll_ready(cx)) {
                    return Poll::Ready(Err(ws_err(e)));
                }
                let body = transmit.get(2..).unwrap_or_default();
                w.as_mut()
                    .start_send(Message::binary(body.to_vec()))
                    .map_err(ws_err)?;
                Poll::Ready(Ok(transmit.len()))
            }
        }
    }

    /// Push out what a WebSocket buffered (a byte stream buffers nothing).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            WriteKind::Stream(w) => w.as_mut().poll_flush(cx),
            WriteKind::Ws(w) => w.as_mut().poll_flush(cx).map_err(ws_err),
        }
    }

    /// Flush and close the connection's sending side.
    pub async fn close(&mut self) -> io::Result<()> {
        match &mut self.0 {
            WriteKind::Stream(w) => w.close().await,
            WriteKind::Ws(w) => w.close().await.map_err(ws_err),
        }
    }
}

/// WebSocket limits for both runtimes: a body is at most 65535 bytes, so anything
/// much larger is refused before it is buffered.
pub fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(1 << 17))
        .max_frame_size(Some(1 << 17))
}

/// The server-side upgrade check: only requests for `path` are accepted (404 otherwise).
// The large `Err` (an HTTP response) is the signature tungstenite's callback requires.
#[allow(clippy::result_large_err)]
pub fn ws_path_check(
    path: String,
) -> impl FnOnce(
    &tungstenite::handshake::server::Request,
    tungstenite::handshake::server::Response,
) -> Result<
    tungstenite::handshake::server::Response,
    tungstenite::handshake::server::ErrorResponse,
> + Unpin {
    move |req, resp| {
        if req.uri().path() == path {
            Ok(resp)
        } else {
            let mut not_found =
                tungstenite::handshake::server::ErrorResponse::new(Some("no mesh here".into()));
            *not_found.status_mut() = tungstenite::http::StatusCode::NOT_FOUND;
            Err(not_found)
        }
    }
}
