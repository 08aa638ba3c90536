//! [`Deflate`] between tungstenite and a stream: what the stream types (`Transport`,
//! `LinkStream`) call from their `Read` and `Write`, with the connection's deflate layer
//! when compression was negotiated (`None`: straight through to the socket).
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};

use super::codec::Deflate;

/// Compressed output held back before a `write` reports `WouldBlock` (backpressure: the
/// caller stops producing until the socket takes it).
const OUTPUT_CAP: usize = 64 * 1024;

/// Reads from `inner` until frames for tungstenite are ready, then hands them over. The
/// socket's bytes are read into `buf` itself (tungstenite's read buffer) before they are
/// taken in, so no buffer of this layer's own sits on the connection thread's stack.
pub(crate) fn read(
    d: Option<&mut Deflate>,
    inner: &mut impl Read,
    buf: &mut [u8],
) -> io::Result<usize> {
    let Some(d) = d else {
        return inner.read(buf);
    };
    loop {
        let n = d.read_ready(buf);
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        let got = inner.read(buf)?;
        if got == 0 {
            return Ok(0);
        }
        d.take_input(&buf[..got]);
    }
}

/// Takes `buf` (tungstenite's frames) unless too much compressed output still waits.
pub(crate) fn write(
    d: Option<&mut Deflate>,
    inner: &mut impl Write,
    buf: &[u8],
) -> io::Result<usize> {
    let Some(d) = d else {
        return inner.write(buf);
    };
    let _ = drain(d, inner);
    if d.output().len() > OUTPUT_CAP {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    d.take_output(buf);
    match drain(d, inner) {
        Ok(()) => Ok(buf.len()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(buf.len()),
        Err(e) => Err(e),
    }
}

/// Writes every compressed byte out, then flushes `inner`; `WouldBlock` while some wait.
pub(crate) fn flush(d: Option<&mut Deflate>, inner: &mut impl Write) -> io::Result<()> {
    if let Some(d) = d {
        drain(d, inner)?;
    }
    inner.flush()
}

fn drain(d: &mut Deflate, inner: &mut impl Write) -> io::Result<()> {
    while d.has_output() {
        match inner.write(d.output()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => d.consume(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
