//! One connection's two halves, as a byte stream of `[u16 len][body]` transport
//! messages whatever the transport: TCP carries them as they are; WebSocket carries
//! one body per binary message, so reading adds the length and writing strips it.

use std::io;
use std::pin::Pin;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
        match &mut self.0 {
            ReadKind::Stream(r) => r.read(buf).await,
            ReadKind::Ws(r) => loop {
                match r.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Binary(body))) => {
                        let len = u16::try_from(body.len())
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| {
                                io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    "WebSocket message of 0 or over 65535 bytes",
                                )
                            })?;
                        let out = buf.get_mut(..2 + body.len()).ok_or_else(|| {
                            io::Error::new(io::ErrorKind::InvalidInput, "read buffer too small")
                        })?;
                        out[..2].copy_from_slice(&len.to_be_bytes());
                        out[2..].copy_from_slice(&body);
                        return Ok(out.len());
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Text(_))) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "text WebSocket message",
                        ));
                    }
                    Some(Err(e)) => return Err(ws_err(e)),
                }
            },
        }
    }
}

/// The smallest buffer [`ReadHalf::read`] accepts: a whole transport message.
pub const READ_BUFFER: usize = 2 + 65535;

impl WriteHalf {
    /// Write one transmission (`[u16 len][body]`, as `poll_transmit` produced it).
    pub async fn write(&mut self, transmit: &[u8]) -> io::Result<()> {
        match &mut self.0 {
            WriteKind::Stream(w) => w.write_all(transmit).await,
            WriteKind::Ws(w) => {
                let body = transmit.get(2..).unwrap_or_default();
                w.send(Message::binary(body.to_vec())).await.map_err(ws_err)
            }
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
