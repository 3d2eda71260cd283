//! Incremental decoder of `Transfer-Encoding: chunked` request bodies (SPEC §2.2).
//!
//! Chunk extensions and trailer fields are accepted and ignored; bare LF is accepted as a
//! line ending. The decoder keeps no input: it reports body data as sub-slices of the
//! input it is given, so any split of the input gives the same decoded bytes.

/// Longest chunk-size line (size, extensions) and longest trailer section accepted.
const MAX_LINE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size { value: u64, digits: u32 },
    /// After the size: whitespace and extensions up to the end of the line.
    Ext { value: u64 },
    /// Saw CR at the end of the size line.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// After chunk data, expecting CR LF (or LF).
    DataCr,
    /// After chunk data and CR, expecting LF.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Saw CR at the start of a line in the trailer section: the final line.
    TrailerEndLf,
    /// The body is complete.
    Done,
}

/// What the decoder found next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// A chunk of this many bytes starts (announced before its data).
    Size(u64),
    /// Decoded body bytes.
    Data(&'a [u8]),
    /// All input was consumed; more is needed.
    NeedMore,
    /// The body (including trailers) is complete. Bytes after it are not consumed.
    Done,
    /// Malformed chunked framing.
    Error,
}

/// The chunked-body decoder.
#[derive(Debug)]
pub(crate) struct ChunkDecoder {
    state: State,
    /// Bytes of the current size line or of the trailer section so far.
    line_len: usize,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self { state: State::Size { value: 0, digits: 0 }, line_len: 0 }
    }
}

impl ChunkDecoder {
    /// Decodes from `input[*pos..]`, advancing `*pos` past what was consumed, up to the next event.
    pub fn next<'a>(&mut self, input: &'a [u8], pos: &mut usize) -> Event<'a> {
        loop {
            if let State::Done = self.state {
                return Event::Done;
            }
            if let State::Data { remaining } = self.state {
                let avail = input.len() - *pos;
                if avail == 0 {
                    return Event::NeedMore;
                }
                let take = remaining.min(avail as u64) as usize;
                let data = &input[*pos..*pos + take];
                *pos += take;
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 { State::DataCr } else { State::Data { remaining } };
                return Event::Data(data);
            }
            let Some(&b) = input.get(*pos) else {
                return Event::NeedMore;
            };
            *pos += 1;
            match self.step(b) {
                Ok(Some(ev)) => return ev,
                Ok(None) => {}
                Err(()) => return Event::Error,
            }
        }
    }

    /// Processes one framing byte.
    fn step(&mut self, b: u8) -> Result<Option<Event<'static>>, ()> {
        match self.state {
            State::Size { value, digits } => {
                self.bump_line()?;
                if let Some(d) = (b as char).to_digit(16) {
                    let value = value.checked_mul(16).and_then(|v| v.checked_add(u64::from(d))).unwrap_or(u64::MAX);
                    self.state = State::Size { value, digits: digits + 1 };
                    return Ok(None);
                }
                if digits == 0 {
                    return Err(());
                }
                match b {
                    b';' | b' ' | b'\t' => self.state = State::Ext { value },
                    b'\r' => self.state = State::SizeLf { value },
                    b'\n' => return Ok(self.size_line_done(value)),
                    _ => return Err(()),
                }
            }
            State::Ext { value } => {
                self.bump_line()?;
                match b {
                    b'\r' => self.state = State::SizeLf { value },
                    b'\n' => return Ok(self.size_line_done(value)),
                    b'\t' => {}
                    _ if b < 0x20 || b == 0x7f => return Err(()),
                    _ => {}
                }
            }
            State::SizeLf { value } => {
                if b != b'\n' {
                    return Err(());
                }
                return Ok(self.size_line_done(value));
            }
            State::DataCr => match b {
                b'\r' => self.state = State::DataLf,
                b'\n' => self.state = State::Size { value: 0, digits: 0 },
                _ => return Err(()),
            },
            State::DataLf => {
                if b != b'\n' {
                    return Err(());
                }
                self.state = State::Size { value: 0, digits: 0 };
            }
            State::TrailerStart => {
                self.bump_line()?;
                match b {
                    b'\r' => self.state = State::TrailerEndLf,
                    b'\n' => {
                        self.state = State::Done;
                        return Ok(Some(Event::Done));
                    }
                    _ => self.state = State::Trailer,
                }
            }
            State::Trailer => {
                self.bump_line()?;
                if b == b'\n' {
                    self.state = State::TrailerStart;
                }
            }
            State::TrailerEndLf => {
                if b != b'\n' {
                    return Err(());
                }
                self.state = State::Done;
                return Ok(Some(Event::Done));
            }
            // Handled by `next()` before a byte is taken.
            State::Data { .. } | State::Done => return Err(()),
        }
        Ok(None)
    }

    fn bump_line(&mut self) -> Result<(), ()> {
        self.line_len += 1;
        if self.line_len > MAX_LINE {
            Err(())
        } else {
            Ok(())
        }
    }

    fn size_line_done(&mut self, value: u64) -> Option<Event<'static>> {
        self.line_len = 0;
        if value == 0 {
            self.state = State::TrailerStart;
            None
        } else {
            self.state = State::Data { remaining: value };
            Some(Event::Size(value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<Vec<u8>, ()> {
        let mut d = ChunkDecoder::default();
        let mut out = Vec::new();
        let mut fed = 0;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let end = (fed + split).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
            let mut pos = 0;
            loop {
                match d.next(&buf, &mut pos) {
                    Event::Size(_) => {}
                    Event::Data(x) => out.extend_from_slice(x),
                    Event::NeedMore => break,
                    Event::Done => return Ok(out),
                    Event::Error => return Err(()),
                }
            }
            buf.drain(..pos);
            if fed == input.len() {
                return Err(());
            }
        }
    }

    #[test]
    fn chunked_basic_any_split() {
        let input = b"5;ext=1;q=\"x\"\r\nhello\r\n6\r\n world\r\na\nabcdefghij\n0\r\nTrailer: x\r\nOther: y\n\r\n";
        for split in 1..input.len() {
            assert_eq!(decode_all(input, split).unwrap(), b"hello worldabcdefghij", "split {split}");
        }
    }

    #[test]
    fn chunked_errors() {
        for bad in [&b"\r\n"[..], b"x\r\n", b"5\r\nhelloX\r\n0\r\n\r\n", b"5\rX", b"0\r\n\rX", b"5 \x01\r\n"] {
            assert_eq!(decode_all(bad, 100), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn chunked_huge_size_saturates() {
        let mut d = ChunkDecoder::default();
        let mut pos = 0;
        assert_eq!(d.next(b"ffffffffffffffffffff\r\n", &mut pos), Event::Size(u64::MAX));
    }
}
