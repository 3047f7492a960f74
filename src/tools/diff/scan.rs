//! A JSON structure scanner over a byte stream: it walks objects and arrays token by token and
//! cuts each value it is asked for out of its buffer as one slice (a bracket scan that only
//! tracks strings and depth), which serde_json then parses from the slice. serde_json's own
//! stream reader (`from_reader`) reads byte by byte through `io::Read` with line and column
//! tracking, which was most of `diff`'s time on a 139 MB dump; parsing a slice is several times
//! faster. Only the value being cut out is held, so memory stays that of the largest item (a
//! virtual host, a cluster), never the document's.
//!
//! Every value handed out or skipped is parsed by serde_json (skipped ones as `IgnoredAny`), so
//! a document this scanner accepts is valid JSON, and one it refuses is refused by serde_json
//! too (the caller then tries the whole-document path, as before).

use std::io::Read;

use serde::de::{DeserializeOwned, IgnoredAny};

/// What a value starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    Object,
    Array,
    /// A string, number, `true`, `false` or `null`.
    Scalar,
}

/// Reads JSON structure from `r` through a buffer.
pub(super) struct Scanner<R> {
    r: R,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

/// How much is read at once, and how much consumed text is dropped at once.
const CHUNK: usize = 1 << 16;

fn syntax(what: &str) -> String {
    format!("not JSON: {what}")
}

impl<R: Read> Scanner<R> {
    pub(super) fn new(r: R) -> Scanner<R> {
        Scanner {
            r,
            buf: Vec::with_capacity(CHUNK),
            pos: 0,
            eof: false,
        }
    }

    /// Reads more into the buffer; false at the end of the input.
    fn more(&mut self) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let n = loop {
            match self.r.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(format!("reading: {e}"));
                }
            }
        };
        self.buf.truncate(len + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// Drops the text already consumed (between tokens only: no slice is pending then).
    fn compact(&mut self) {
        if self.pos >= 4 * CHUNK {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// The next byte that is not whitespace (not consumed); None at the end of the input.
    fn peek(&mut self) -> Result<Option<u8>, String> {
        self.compact();
        loop {
            while let Some(&b) = self.buf.get(self.pos) {
                if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                    return Ok(Some(b));
                }
                self.pos += 1;
            }
            if !self.more()? {
                return Ok(None);
            }
        }
    }

    /// What the next value starts with.
    pub(super) fn start(&mut self) -> Result<Start, String> {
        match self.peek()? {
            Some(b'{') => Ok(Start::Object),
            Some(b'[') => Ok(Start::Array),
            Some(_) => Ok(Start::Scalar),
            None => Err(syntax("unexpected end of input")),
        }
    }

    /// Consumes `b` (after whitespace), or fails.
    fn expect(&mut self, b: u8, what: &str) -> Result<(), String> {
        if self.peek()? == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(syntax(what))
        }
    }

    /// Enters the object that comes next; then [`Scanner::next_key`] until it says None.
    pub(super) fn begin_object(&mut self) -> Result<Entries, String> {
        self.expect(b'{', "expected an object")?;
        Ok(Entries { first: true })
    }

    /// The object's next key (its value comes next), None at its end.
    pub(super) fn next_key(&mut self, at: &mut Entries) -> Result<Option<String>, String> {
        if !self.more_items(at, b'}')? {
            return Ok(None);
        }
        let key: String = self.value()?;
        self.expect(b':', "expected `:` after an object key")?;
        Ok(Some(key))
    }

    /// Enters the array that comes next; then [`Scanner::next_item`] until it says false.
    pub(super) fn begin_array(&mut self) -> Result<Entries, String> {
        self.expect(b'[', "expected an array")?;
        Ok(Entries { first: true })
    }

    /// True when the array has another item (which comes next).
    pub(super) fn next_item(&mut self, at: &mut Entries) -> Result<bool, String> {
        self.more_items(at, b']')
    }

    fn more_items(&mut self, at: &mut Entries, close: u8) -> Result<bool, String> {
        let b = self.peek()?;
        if b == Some(close) {
            self.pos += 1;
            return Ok(false);
        }
        if !at.first {
            if b != Some(b',') {
                return Err(syntax("expected `,` or the end of an object or array"));
            }
            self.pos += 1;
            if self.peek()? == Some(close) {
                return Err(syntax("trailing comma"));
            }
        }
        at.first = false;
        Ok(true)
    }

    /// The next value, parsed by serde_json from its slice.
    pub(super) fn value<T: DeserializeOwned>(&mut self) -> Result<T, String> {
        let (from, to) = self.cut()?;
        let v = serde_json::from_slice(&self.buf[from..to]).map_err(|e| syntax(&e.to_string()));
        self.pos = to;
        v
    }

    /// Skips the next value (still checked to be JSON).
    pub(super) fn skip(&mut self) -> Result<(), String> {
        self.value::<IgnoredAny>().map(|_| ())
    }

    /// Checks that only whitespace is left.
    pub(super) fn end(&mut self) -> Result<(), String> {
        match self.peek()? {
            None => Ok(()),
            Some(_) => Err(syntax("trailing characters")),
        }
    }

    /// The byte at `i`, reading more when needed; None at the end of the input.
    fn at(&mut self, i: usize) -> Result<Option<u8>, String> {
        while i >= self.buf.len() {
            if !self.more()? {
                return Ok(None);
            }
        }
        Ok(Some(self.buf[i]))
    }

    /// The extent of the next value in the buffer (read in full): a bracket scan that tracks
    /// strings (and their escapes) and depth; serde_json checks the rest.
    fn cut(&mut self) -> Result<(usize, usize), String> {
        self.peek()?;
        let from = self.pos;
        let mut i = from;
        let mut depth = 0usize;
        loop {
            let Some(b) = self.at(i)? else {
                return Err(syntax("unexpected end of input"));
            };
            match b {
                b'"' => i = self.string_end(i + 1)?,
                b'{' | b'[' => {
                    depth += 1;
                    i += 1;
                }
                b'}' | b']' => {
                    if depth == 0 {
                        return Err(syntax("unexpected end of an object or array"));
                    }
                    depth -= 1;
                    i += 1;
                }
                _ if depth == 0 => {
                    // A number or literal: up to the next delimiter.
                    while let Some(c) = self.at(i)? {
                        if matches!(c, b',' | b'}' | b']' | b':' | b' ' | b'\n' | b'\r' | b'\t') {
                            break;
                        }
                        i += 1;
                    }
                    return Ok((from, i));
                }
                _ => {
                    // Scan the run of plain bytes in the buffer at once.
                    i += 1;
                    while let Some(&c) = self.buf.get(i) {
                        if matches!(c, b'"' | b'{' | b'[' | b'}' | b']') {
                            break;
                        }
                        i += 1;
                    }
                }
            }
            if depth == 0 {
                return Ok((from, i));
            }
        }
    }

    /// The index after the closing quote of the string whose contents start at `i`.
    fn string_end(&mut self, mut i: usize) -> Result<usize, String> {
        loop {
            while let Some(&c) = self.buf.get(i) {
                match c {
                    b'"' => return Ok(i + 1),
                    b'\\' => i += 2,
                    _ => i += 1,
                }
            }
            if !self.more()? {
                return Err(syntax("unterminated string"));
            }
        }
    }
}

/// Where the scanner is in an object or array: whether the next entry is its first.
pub(super) struct Entries {
    first: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A reader that hands out one byte at a time: every value spans reads.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), out.first_mut()) {
                (Some((&b, rest)), Some(o)) => {
                    *o = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    /// Walks a whole document and rebuilds it from the values it cuts out.
    fn rebuild<R: Read>(s: &mut Scanner<R>) -> Result<Value, String> {
        match s.start()? {
            Start::Object => {
                let mut at = s.begin_object()?;
                let mut m = serde_json::Map::new();
                while let Some(k) = s.next_key(&mut at)? {
                    let v = rebuild(s)?;
                    m.insert(k, v);
                }
                Ok(Value::Object(m))
            }
            Start::Array => {
                let mut at = s.begin_array()?;
                let mut items = Vec::new();
                while s.next_item(&mut at)? {
                    items.push(rebuild(s)?);
                }
                Ok(Value::Array(items))
            }
            Start::Scalar => s.value(),
        }
    }

    fn walk(text: &str) -> Result<Value, String> {
        let mut s = Scanner::new(Trickle(text.as_bytes()));
        let v = rebuild(&mut s)?;
        s.end()?;
        Ok(v)
    }

    #[test]
    fn walks_what_serde_json_reads_and_refuses_what_it_refuses() {
        for text in [
            r#"{"a": [1, -2.5e3, true, null, "x\"]}{", {"\u0040k": {}}], "b": []}"#,
            " [ ] ",
            r#""just a string""#,
            "7",
            r#"{"k\\": "v\\", "e": "\u00e9 \n"}"#,
        ] {
            let expected: Value = serde_json::from_str(text).unwrap();
            assert_eq!(walk(text), Ok(expected), "{text}");
        }
        for text in [
            "",
            "{",
            "[1,]",
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{"a": 1,}"#,
            "[1]]",
            "[1] x",
            "tru",
            r#"["abc"#,
            "}",
            "[01]",
        ] {
            assert!(walk(text).is_err(), "{text:?} was accepted");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn skipped_values_are_checked_too() {
        let mut s = Scanner::new(&br#"{"a": [1, 2,], "b": 1}"#[..]);
        let mut at = s.begin_object().unwrap();
        assert_eq!(s.next_key(&mut at).unwrap().as_deref(), Some("a"));
        assert!(s.skip().is_err());
    }
}
