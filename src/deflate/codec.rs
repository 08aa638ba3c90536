//! The frame transformer: bytes from the socket in, bytes for tungstenite out (inflated,
//! RSV1 cleared), and the reverse for what tungstenite writes (deflated, RSV1 set). Frames
//! are parsed and formatted only with tungstenite's public `FrameHeader` and `Frame`.
#![forbid(unsafe_code)]

use std::io::Cursor;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

use super::params::{Params, Settings};
use super::pool;

/// What RFC 7692 §7.2.1 removes from the end of every compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Inflated bytes are produced at most this many at a time (into the message's own buffer,
/// never past its budget).
const INFLATE_CHUNK: usize = 8 * 1024;
/// A buffer emptied with more capacity than this is given back, so a connection that once
/// carried a large message does not keep its size.
const KEEP_CAPACITY: usize = 4 * 1024;

/// Empties `v`, keeping at most [`KEEP_CAPACITY`] of capacity.
fn empty(v: &mut Vec<u8>) {
    if v.capacity() > KEEP_CAPACITY {
        *v = Vec::new();
    } else {
        v.clear();
    }
}

/// One connection's permessage-deflate state.
#[derive(Debug)]
pub(crate) struct Deflate {
    params: Params,
    min_size: usize,
    level: u32,
    max_message: usize,
    inbound: Inbound,
    outbound: Outbound,
}

#[derive(Debug, Default)]
struct Inbound {
    raw: Vec<u8>,
    ready: Vec<u8>,
    ready_pos: usize,
    /// Kept between frames of a message, and between messages with peer context takeover;
    /// otherwise dropped at the message's end.
    inflater: Option<Decompress>,
    /// Inside a compressed message (its first frame had RSV1): its inflated length so far.
    message: Option<usize>,
    /// Something went wrong (unparseable frames, a bomb): bytes pass through untouched so
    /// tungstenite reports the error itself.
    passthrough: bool,
    /// A bomb was stopped: nothing more is handed on.
    refused: bool,
}

#[derive(Debug, Default)]
struct Outbound {
    raw: Vec<u8>,
    ready: Vec<u8>,
    ready_pos: usize,
    /// Kept between messages with our context takeover.
    compressor: Option<Compress>,
    /// Inside a fragmented message tungstenite is sending (sent as it is).
    fragmented: bool,
}

/// The unmasked payload of a frame (`Frame::format` applies a header's mask; masking is its
/// own inverse, so formatting a masked payload with its mask yields the plain one).
fn unmasked(header: &FrameHeader, payload: &[u8]) -> Vec<u8> {
    let Some(mask) = header.mask else {
        return payload.to_vec();
    };
    let plain_header = FrameHeader {
        mask: Some(mask),
        ..header.clone()
    };
    let mut out = Vec::with_capacity(payload.len() + 14);
    let frame = Frame::from_payload(plain_header, Bytes::copy_from_slice(payload));
    frame
        .format(&mut out)
        .expect("formatting into a Vec cannot fail");
    let header_len = header.len(payload.len() as u64);
    out.split_off(header_len)
}

/// Appends a frame of `header` around `payload` (masked when the header says so).
fn push_frame(out: &mut Vec<u8>, header: FrameHeader, payload: Vec<u8>) {
    Frame::from_payload(header, Bytes::from(payload))
        .format(out)
        .expect("formatting into a Vec cannot fail");
}

/// How inflating a frame went.
enum Inflated {
    Data(Vec<u8>),
    /// Past MaxMessageSize.
    TooLarge,
    /// Not valid DEFLATE.
    Corrupt,
}

impl Deflate {
    /// The state for a connection that negotiated `params`.
    pub(crate) fn new(params: Params, settings: &Settings, max_message: usize) -> Deflate {
        Deflate {
            params,
            min_size: settings.min_size,
            level: settings.level.clamp(1, 9),
            max_message,
            inbound: Inbound::default(),
            outbound: Outbound::default(),
        }
    }

    /// Bytes read from the socket.
    pub(crate) fn take_input(&mut self, bytes: &[u8]) {
        if self.inbound.refused {
            return;
        }
        if self.inbound.passthrough {
            self.inbound.ready.extend_from_slice(bytes);
            return;
        }
        self.inbound.raw.extend_from_slice(bytes);
        let mut pos = 0;
        while let Some(len) = self.next_inbound_frame(pos) {
            pos += len;
        }
        if pos == self.inbound.raw.len() {
            empty(&mut self.inbound.raw);
        } else {
            self.inbound.raw.drain(..pos);
        }
        if self.inbound.passthrough || self.inbound.refused {
            let rest = std::mem::take(&mut self.inbound.raw);
            if !self.inbound.refused {
                self.inbound.ready.extend_from_slice(&rest);
            }
        }
    }

    /// Copies bytes ready for tungstenite into `buf`; 0 when none are.
    pub(crate) fn read_ready(&mut self, buf: &mut [u8]) -> usize {
        take_ready(&mut self.inbound.ready, &mut self.inbound.ready_pos, buf)
    }

    /// Handles the frame at `raw[pos..]` if it is complete; its length, or `None` to wait
    /// for more bytes (or when passthrough began).
    fn next_inbound_frame(&mut self, pos: usize) -> Option<usize> {
        if self.inbound.passthrough || self.inbound.refused {
            return None;
        }
        let mut cursor = Cursor::new(&self.inbound.raw[pos..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return None,
            Err(_) => {
                self.inbound.passthrough = true;
                return None;
            }
        };
        let header_len = cursor.position() as usize;
        if len > self.max_message as u64 {
            // tungstenite refuses it by its size (1009).
            self.inbound.passthrough = true;
            return None;
        }
        let total = header_len + len as usize;
        if self.inbound.raw.len() - pos < total {
            return None;
        }
        let frame = pos..pos + total;
        self.inbound_frame(header, header_len, frame);
        Some(total)
    }

    fn inbound_frame(
        &mut self,
        header: FrameHeader,
        header_len: usize,
        frame: std::ops::Range<usize>,
    ) {
        let is_data = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        let starts = header.rsv1 && is_data && self.inbound.message.is_none();
        let continues = self.inbound.message.is_some()
            && header.opcode == OpCode::Data(Data::Continue)
            && !header.rsv1;
        if !starts && !continues {
            // Control frames, uncompressed messages, and anything RSV1 where it is not
            // allowed (tungstenite refuses those itself).
            let raw = &self.inbound.raw[frame];
            self.inbound.ready.extend_from_slice(raw);
            return;
        }
        let payload = unmasked(
            &header,
            &self.inbound.raw[frame.start + header_len..frame.end],
        );
        let so_far = self.inbound.message.unwrap_or(0);
        match self.inflate(&payload, header.is_final, self.max_message - so_far) {
            Inflated::Data(plain) => {
                self.inbound.message = (!header.is_final).then_some(so_far + plain.len());
                let h = FrameHeader {
                    rsv1: false,
                    ..header
                };
                push_frame(&mut self.inbound.ready, h, plain);
            }
            Inflated::TooLarge => {
                // A header announcing one byte more than allowed: tungstenite closes 1009.
                let h = FrameHeader {
                    rsv1: false,
                    mask: None,
                    ..header
                };
                let _ = h.format(self.max_message as u64 + 1, &mut self.inbound.ready);
                self.inbound.refused = true;
                self.drop_inflater();
            }
            Inflated::Corrupt => {
                // As it came, RSV1 and all: tungstenite fails the connection (1002).
                let raw = self.inbound.raw[frame].to_vec();
                self.inbound.ready.extend_from_slice(&raw);
                self.inbound.passthrough = true;
                self.drop_inflater();
            }
        }
    }

    /// Inflates one frame's payload (and the tail at the message's end), at most `budget`
    /// bytes of output.
    fn inflate(&mut self, payload: &[u8], last: bool, budget: usize) -> Inflated {
        let mut inflater = self.inbound.inflater.take().unwrap_or_else(pool::inflater);
        let mut out = Vec::new();
        let mut ended = false;
        for input in [payload, if last { &TAIL[..] } else { &[][..] }] {
            match inflate_into(&mut inflater, input, &mut out, budget) {
                Ok(stream_end) => ended |= stream_end,
                // Stopped mid-stream: this inflater is not reused.
                Err(outcome) => return outcome,
            }
        }
        // Kept only for this connection's own next frame or message; never shared (its
        // window holds this client's plaintext, see `pool`).
        if !last || (self.params.peer_context_takeover && !ended) {
            self.inbound.inflater = Some(inflater);
        }
        Inflated::Data(out)
    }

    /// Forgets the inflater of a message that did not end cleanly.
    fn drop_inflater(&mut self) {
        self.inbound.inflater = None;
    }

    /// Bytes tungstenite writes.
    pub(crate) fn take_output(&mut self, bytes: &[u8]) {
        self.outbound.raw.extend_from_slice(bytes);
        let mut pos = 0;
        loop {
            let mut cursor = Cursor::new(&self.outbound.raw[pos..]);
            let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) else {
                break;
            };
            let header_len = cursor.position() as usize;
            let total = header_len + len as usize;
            if self.outbound.raw.len() - pos < total {
                break;
            }
            self.outbound_frame(header, pos, header_len, total);
            pos += total;
        }
        if pos == self.outbound.raw.len() {
            empty(&mut self.outbound.raw);
        } else {
            self.outbound.raw.drain(..pos);
        }
    }

    /// Bytes ready for the socket (after [`Deflate::take_output`]); `consume` them once
    /// written.
    pub(crate) fn output(&self) -> &[u8] {
        &self.outbound.ready[self.outbound.ready_pos..]
    }

    /// `n` bytes of [`Deflate::output`] reached the socket.
    pub(crate) fn consume(&mut self, n: usize) {
        self.outbound.ready_pos += n;
        if self.outbound.ready_pos >= self.outbound.ready.len() {
            empty(&mut self.outbound.ready);
            self.outbound.ready_pos = 0;
        }
    }

    fn outbound_frame(&mut self, header: FrameHeader, pos: usize, header_len: usize, total: usize) {
        let is_data = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        let raw = pos..pos + total;
        let candidate = is_data && header.is_final && !header.rsv1 && !self.outbound.fragmented;
        if is_data && !header.is_final {
            self.outbound.fragmented = true;
        } else if header.opcode == OpCode::Data(Data::Continue) && header.is_final {
            self.outbound.fragmented = false;
        }
        if !candidate || total - header_len < self.min_size {
            let bytes = &self.outbound.raw[raw];
            self.outbound.ready.extend_from_slice(bytes);
            return;
        }
        let plain = unmasked(&header, &self.outbound.raw[pos + header_len..pos + total]);
        let packed = self.compress(&plain);
        if packed.len() >= plain.len() {
            let bytes = &self.outbound.raw[raw];
            self.outbound.ready.extend_from_slice(bytes);
            return;
        }
        let h = FrameHeader {
            rsv1: true,
            ..header
        };
        push_frame(&mut self.outbound.ready, h, packed);
    }

    /// One message, compressed and without its tail. Without context takeover the input is
    /// cut into window-sized pieces, each ending in a full flush, so no back-reference
    /// reaches further than the window (or into an earlier message).
    fn compress(&mut self, plain: &[u8]) -> Vec<u8> {
        let level = self.level;
        let mut c = self
            .outbound
            .compressor
            .take()
            .unwrap_or_else(|| pool::compressor(level));
        let mut out = Vec::with_capacity(plain.len() / 2 + 64);
        let piece = 1usize << self.params.own_window_bits.clamp(8, 15);
        if self.params.own_context_takeover {
            deflate_into(&mut c, plain, &mut out, FlushCompress::Sync);
        } else {
            // A full flush empties the dictionary (miniz_oxide clears it in place; a
            // `reset` would build a new state on this thread's small stack): nothing later
            // refers back past it, whichever connection the compressor serves next.
            for chunk in plain.chunks(piece) {
                deflate_into(&mut c, chunk, &mut out, FlushCompress::Full);
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.params.own_context_takeover {
            self.outbound.compressor = Some(c);
        } else {
            pool::give_back_compressor(level, c);
        }
        out
    }

    /// Whether bytes wait for the socket.
    pub(crate) fn has_output(&self) -> bool {
        self.outbound.ready_pos < self.outbound.ready.len()
    }
}

fn take_ready(ready: &mut Vec<u8>, pos: &mut usize, buf: &mut [u8]) -> usize {
    let n = buf.len().min(ready.len() - *pos);
    buf[..n].copy_from_slice(&ready[*pos..*pos + n]);
    *pos += n;
    if *pos == ready.len() {
        empty(ready);
        *pos = 0;
    }
    n
}

/// Inflates `input` onto `out`, failing once `out` would pass `budget` (before the bytes
/// are kept). `Ok(true)` when the DEFLATE stream ended (a final block).
fn inflate_into(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    budget: usize,
) -> Result<bool, Inflated> {
    loop {
        // Room for one more chunk, never past the budget (plus one byte, to notice).
        let room = INFLATE_CHUNK.min(budget + 1 - out.len().min(budget));
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let len = out.len();
        out.resize(len + room, 0);
        let status = d.decompress(input, &mut out[len..], FlushDecompress::Sync);
        out.truncate(len + (d.total_out() - out_before) as usize);
        let status = status.map_err(|_| Inflated::Corrupt)?;
        let consumed = (d.total_in() - in_before) as usize;
        let produced = (d.total_out() - out_before) as usize;
        input = &input[consumed..];
        if out.len() > budget {
            return Err(Inflated::TooLarge);
        }
        if status == Status::StreamEnd {
            return if input.is_empty() {
                Ok(true)
            } else {
                Err(Inflated::Corrupt)
            };
        }
        if (input.is_empty() && produced < room) || (consumed == 0 && produced == 0) {
            return Ok(false);
        }
    }
}

/// Compresses `input` onto `out` with `flush` (sync or full: the result ends with the tail).
fn deflate_into(c: &mut Compress, input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) {
    let start = c.total_in();
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        let done = (c.total_in() - start) as usize;
        c.compress_vec(&input[done..], out, flush)
            .expect("compressing into a Vec cannot fail");
        let consumed = (c.total_in() - start) as usize;
        if consumed == input.len() && out.len() < out.capacity() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::Control;

    fn params() -> Params {
        Params {
            own_window_bits: 15,
            own_context_takeover: false,
            peer_context_takeover: false,
        }
    }

    fn frame_bytes(header: FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        push_frame(&mut v, header, payload.to_vec());
        v
    }

    fn text_header(rsv1: bool, fin: bool, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            is_final: fin,
            rsv1,
            opcode: OpCode::Data(Data::Text),
            mask,
            ..FrameHeader::default()
        }
    }

    fn parse_all(bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut out = Vec::new();
        let mut cursor = Cursor::new(bytes);
        while let Ok(Some((h, len))) = FrameHeader::parse(&mut cursor) {
            let at = cursor.position() as usize;
            let p = unmasked(&h, &bytes[at..at + len as usize]);
            cursor.set_position((at + len as usize) as u64);
            out.push((h, p));
        }
        out
    }

    #[test]
    fn what_one_side_deflates_the_other_inflates() {
        let text = br#"{"type":"event","channel":"print","data":{"progress":42,"temps":[210,210,210,60,60,60]}}"#.repeat(8);
        let mut server = Deflate::new(params(), &Settings::default(), 1 << 20);
        let mut client = Deflate::new(params(), &Settings::default(), 1 << 20);
        // The server's unmasked frame, compressed; the client inflates it.
        server.take_output(&frame_bytes(text_header(false, true, None), &text));
        let wire = server.output().to_vec();
        let sent = parse_all(&wire);
        assert!(
            sent[0].0.rsv1 && sent[0].1.len() < text.len() / 4,
            "{}",
            sent[0].1.len()
        );
        client.take_input(&wire[..5]);
        client.take_input(&wire[5..]);
        let mut got = vec![0u8; 4096];
        let n = client.read_ready(&mut got);
        let frames = parse_all(&got[..n]);
        assert_eq!(frames.len(), 1);
        assert!(!frames[0].0.rsv1);
        assert_eq!(frames[0].1, text);
    }

    #[test]
    fn masked_fragmented_messages_inflate_and_small_ones_pass() {
        let text = b"hello hello hello hello hello hello".repeat(20);
        let mut c = Compress::new(flate2::Compression::fast(), false);
        let mut packed = Vec::new();
        deflate_into(&mut c, &text, &mut packed, FlushCompress::Sync);
        packed.truncate(packed.len() - 4);
        let mask = Some([1, 2, 3, 4]);
        let (a, b) = packed.split_at(packed.len() / 2);
        let mut wire = frame_bytes(text_header(true, false, mask), a);
        wire.extend(frame_bytes(
            FrameHeader {
                opcode: OpCode::Control(Control::Ping),
                mask,
                ..FrameHeader::default()
            },
            b"p",
        ));
        wire.extend(frame_bytes(
            FrameHeader {
                is_final: true,
                opcode: OpCode::Data(Data::Continue),
                mask,
                ..FrameHeader::default()
            },
            b,
        ));
        let mut server = Deflate::new(params(), &Settings::default(), 1 << 20);
        server.take_input(&wire);
        let mut got = vec![0u8; 8192];
        let n = server.read_ready(&mut got);
        let frames = parse_all(&got[..n]);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].1, b"p");
        let whole: Vec<u8> = [frames[0].1.clone(), frames[2].1.clone()].concat();
        assert_eq!(whole, text);
        // Below MinSize: sent as it is.
        let mut s = Deflate::new(params(), &Settings::default(), 1 << 20);
        let small = frame_bytes(text_header(false, true, None), b"{\"small\":1}");
        s.take_output(&small);
        assert_eq!(s.output(), &small[..]);
    }

    #[test]
    fn a_bomb_is_refused_without_allocating_it() {
        let zeros = vec![0u8; 4 << 20];
        let mut c = Compress::new(flate2::Compression::best(), false);
        let mut packed = Vec::new();
        deflate_into(&mut c, &zeros, &mut packed, FlushCompress::Sync);
        packed.truncate(packed.len() - 4);
        assert!(packed.len() < 8192, "{}", packed.len());
        let mut server = Deflate::new(params(), &Settings::default(), 65536);
        server.take_input(&frame_bytes(
            text_header(true, true, Some([9, 9, 9, 9])),
            &packed,
        ));
        let mut got = vec![0u8; 64];
        let n = server.read_ready(&mut got);
        let mut cursor = Cursor::new(&got[..n]);
        let (h, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(!h.rsv1 && len == 65537, "{len}");
        assert_eq!(n, cursor.position() as usize, "no payload follows");
        server.take_input(b"more");
        assert_eq!(server.read_ready(&mut got), 0, "nothing after a refusal");
    }

    #[test]
    fn a_small_window_compresses_in_window_sized_pieces() {
        let p = Params {
            own_window_bits: 9,
            ..params()
        };
        let text: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("{},", i % 300).into_bytes())
            .collect();
        let mut s = Deflate::new(p, &Settings::default(), 1 << 20);
        s.take_output(&frame_bytes(text_header(false, true, None), &text));
        let wire = s.output().to_vec();
        let mut client = Deflate::new(params(), &Settings::default(), 1 << 20);
        client.take_input(&wire);
        let mut got = vec![0u8; 64 * 1024];
        let n = client.read_ready(&mut got);
        assert_eq!(parse_all(&got[..n])[0].1, text);
    }
}

#[cfg(test)]
mod isolation {
    use super::*;

    /// The `deflate` fuzz target's find: an input that inflates "successfully" but leaves the
    /// inflater inside a block. With inflaters pooled, the next connection's well-formed
    /// message was decoded from that state (garbage, or another client's window). Now no
    /// inflater outlives its connection's message.
    #[test]
    fn one_clients_message_cannot_disturb_the_next_clients() {
        let seed = include_bytes!("../../tests/fuzz/seeds/deflate/pooled-inflater-left-mid-block");
        let p = Params {
            own_window_bits: 15,
            own_context_takeover: false,
            peer_context_takeover: false,
        };
        let s = Settings {
            min_size: 0,
            ..Settings::default()
        };
        for _ in 0..3 {
            let mut hostile = Deflate::new(p, &s, 1 << 20);
            hostile.take_input(&seed[1..]);
            let mut sink = [0u8; 4096];
            while hostile.read_ready(&mut sink) > 0 {}
        }
        let text =
            b"{\"type\":\"command\",\"id\":\"2\",\"channel\":\"system\",\"action\":\"auth\"}"
                .repeat(4);
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        let mut frame = Vec::new();
        push_frame(&mut frame, header, text.clone());
        let mut sender = Deflate::new(p, &s, 1 << 20);
        sender.take_output(&frame);
        let mut innocent = Deflate::new(p, &s, 1 << 20);
        innocent.take_input(sender.output());
        let mut got = vec![0u8; 4096];
        let n = innocent.read_ready(&mut got);
        assert_eq!(&got[..n], &frame[..]);
    }
}
