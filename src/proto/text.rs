//! Protobuf text format (prototxt) reading with `file:line:col` errors.
//!
//! Parsing itself is prost-reflect's; this module adds what Caffe users need around it: positions
//! in every message, a refusal of binary input, and the opt-in `--allow-unknown-fields` mode that
//! drops fields our schema does not know (forks of Caffe add many) with a warning per field.

use anyhow::{anyhow, bail, Result};
use miette::Diagnostic;
use prost_reflect::{DynamicMessage, MessageDescriptor};

use super::descriptor_pool;

/// How strictly to treat fields the schema does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Drop unknown fields with a warning instead of failing (Caffe itself fails).
    pub allow_unknown_fields: bool,
}

/// A field dropped under `allow_unknown_fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedField {
    pub field: String,
    pub message: String,
    pub line: usize,
    pub col: usize,
}

/// Result of a text parse: the message plus the warnings a user must see.
#[derive(Debug)]
pub struct Parsed<T> {
    pub message: T,
    pub dropped: Vec<DroppedField>,
}

/// 1-based line and column of a byte offset (columns count characters, as editors do).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Refuses input that is not text: a NUL byte or invalid UTF-8 means a binary file was given
/// where a prototxt was expected (the usual mistake: a .caffemodel passed as --model).
pub fn ensure_text<'a>(bytes: &'a [u8], file: &str) -> Result<&'a str> {
    if bytes.is_empty() {
        bail!("{file}: file is empty");
    }
    let looks_binary = bytes
        .iter()
        .take(1 << 16)
        .any(|&b| b == 0 || (b < 0x09) || (0x0e..0x20).contains(&b) && b != 0x1b);
    match std::str::from_utf8(bytes) {
        Ok(s) if !looks_binary => Ok(s),
        _ => bail!(
            "{file}: this is a binary file, not a text prototxt (a .caffemodel, .solverstate or \
             .binaryproto? use `crema inspect` to see what it holds)"
        ),
    }
}

/// Parses `text` as the message named `full_name` (e.g. "caffe.NetParameter").
pub fn parse_dynamic(
    text: &str,
    full_name: &str,
    file: &str,
    opts: TextOptions,
) -> Result<Parsed<DynamicMessage>> {
    let desc: MessageDescriptor = descriptor_pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| anyhow!("internal: message {full_name} missing from the schema"))?;
    // Dropped fields are blanked out with spaces (newlines kept) so every offset stays valid.
    let mut work = text.to_string();
    let mut dropped = Vec::new();
    loop {
        match DynamicMessage::parse_text_format(desc.clone(), &work) {
            Ok(m) => {
                // Caffe's parser refuses unset proto2 `required` fields; prost-reflect does not.
                let mut missing = Vec::new();
                missing_required(&m, "", &mut missing);
                if !missing.is_empty() {
                    bail!(
                        "{file}: message of type \"{full_name}\" is missing required fields: {}",
                        missing.join(", ")
                    );
                }
                return Ok(Parsed {
                    message: m,
                    dropped,
                });
            }
            Err(e) => {
                let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
                let msg = e.to_string();
                if let (true, Some(off)) = (opts.allow_unknown_fields, offset) {
                    if let Some((field, message)) = unknown_field_names(&msg) {
                        let end = skip_field(&work, off).ok_or_else(|| {
                            located(
                                text,
                                file,
                                Some(off),
                                &format!(
                                    "cannot skip unknown field '{field}' in {message}: its value \
                                     is malformed or a block it opens is not closed"
                                ),
                            )
                        })?;
                        let (line, col) = line_col(text, off);
                        dropped.push(DroppedField {
                            field,
                            message,
                            line,
                            col,
                        });
                        blank(&mut work, off, end);
                        if dropped.len() > 100_000 {
                            bail!("{file}: too many unknown fields");
                        }
                        continue;
                    }
                }
                return Err(located(text, file, offset, &describe(&msg, text, offset)));
            }
        }
    }
}

/// Paths of unset `required` fields in `m` and the messages below it.
fn missing_required(m: &DynamicMessage, path: &str, out: &mut Vec<String>) {
    use prost_reflect::{Cardinality, ReflectMessage, Value};
    for f in m.descriptor().fields() {
        let name = if path.is_empty() {
            f.name().to_string()
        } else {
            format!("{path}.{}", f.name())
        };
        if !m.has_field(&f) {
            if f.cardinality() == Cardinality::Required {
                out.push(name);
            }
            continue;
        }
        match &*m.get_field(&f) {
            Value::Message(sub) => missing_required(sub, &name, out),
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    if let Value::Message(sub) = v {
                        missing_required(sub, &format!("{name}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Parses text into a generated prost type through its descriptor.
pub fn parse<T>(text: &str, full_name: &str, file: &str, opts: TextOptions) -> Result<Parsed<T>>
where
    T: prost::Message + Default,
{
    let parsed = parse_dynamic(text, full_name, file, opts)?;
    let message = parsed
        .message
        .transcode_to::<T>()
        .map_err(|e| anyhow!("{file}: internal transcode error: {e}"))?;
    Ok(Parsed {
        message,
        dropped: parsed.dropped,
    })
}

fn describe(msg: &str, text: &str, offset: Option<usize>) -> String {
    // prost-reflect's "found ''" and end-of-input messages are clearer when they say which block
    // was left open.
    if offset.is_none() && msg.contains("end of input") {
        let depth = open_depth(text);
        if depth > 0 {
            return format!("{msg} ({depth} block(s) opened with '{{' are not closed)");
        }
    }
    msg.replace("not found for message", "not found in")
}

fn located(text: &str, file: &str, offset: Option<usize>, msg: &str) -> anyhow::Error {
    let offset = match offset {
        Some(o) => o,
        // No position (unterminated input): point at the last non-blank line.
        None => text.trim_end().len(),
    };
    let (line, col) = line_col(text, offset);
    let src_line = text.lines().nth(line - 1).unwrap_or("");
    anyhow!(
        "{file}:{line}:{col}: {msg}\n    {src_line}\n    {:>width$}",
        "^",
        width = col
    )
}

fn unknown_field_names(msg: &str) -> Option<(String, String)> {
    let rest = msg.strip_prefix("field '")?;
    let (field, rest) = rest.split_once('\'')?;
    let message = rest.split('\'').nth(1)?.to_string();
    Some((field.to_string(), message))
}

fn blank(work: &mut String, start: usize, end: usize) {
    let replaced: String = work[start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    // Multi-byte characters become several spaces so that later offsets stay put.
    let mut bytes = std::mem::take(work).into_bytes();
    let mut fill = Vec::with_capacity(end - start);
    for c in replaced.chars() {
        fill.push(if c == '\n' { b'\n' } else { b' ' });
    }
    fill.resize(end - start, b' ');
    bytes.splice(start..end, fill);
    *work = String::from_utf8(bytes).expect("ASCII replacement keeps UTF-8");
}

/// Counts braces left open, ignoring those in comments and strings.
fn open_depth(text: &str) -> i64 {
    let mut lex = Lexer::new(text, 0);
    let mut depth = 0i64;
    while let Some(tok) = lex.next() {
        match tok {
            Tok::Open(_) => depth += 1,
            Tok::Close(_) => depth -= 1,
            _ => {}
        }
    }
    depth.max(0)
}

/// Byte offset just past the field that starts at `start` (name, optional ':', then a scalar, a
/// `{...}`/`<...>` block or a `[...]` list), or None if the text there is malformed.
fn skip_field(text: &str, start: usize) -> Option<usize> {
    let mut lex = Lexer::new(text, start);
    match lex.next()? {
        Tok::Word => {}
        _ => return None,
    }
    let mut tok = lex.next()?;
    if tok == Tok::Colon {
        tok = lex.next()?;
    }
    match tok {
        Tok::Open(_) => {
            let mut depth = 1;
            while depth > 0 {
                match lex.next()? {
                    Tok::Open(_) => depth += 1,
                    Tok::Close(_) => depth -= 1,
                    _ => {}
                }
            }
            Some(lex.pos)
        }
        Tok::ListOpen => loop {
            match lex.next()? {
                Tok::ListClose => return Some(lex.pos),
                Tok::Open(_) => {
                    let mut depth = 1;
                    while depth > 0 {
                        match lex.next()? {
                            Tok::Open(_) => depth += 1,
                            Tok::Close(_) => depth -= 1,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        },
        Tok::Word | Tok::Str => {
            // Adjacent string literals concatenate; a leading '-' is part of the word.
            let mut end = lex.pos;
            while tok == Tok::Str && lex.next() == Some(Tok::Str) {
                end = lex.pos;
            }
            Some(end)
        }
        _ => None,
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Tok {
    Word,
    Str,
    Colon,
    Open(u8),
    Close(u8),
    ListOpen,
    ListClose,
    Sep,
}

/// Just enough of a prototxt lexer to step over one field's value.
struct Lexer<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str, pos: usize) -> Self {
        Lexer {
            b: text.as_bytes(),
            pos,
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let b = self.b;
        loop {
            while self.pos < b.len() && b[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if self.pos < b.len() && b[self.pos] == b'#' {
                while self.pos < b.len() && b[self.pos] != b'\n' {
                    self.pos += 1;
                }
                continue;
            }
            break;
        }
        let c = *b.get(self.pos)?;
        self.pos += 1;
        Some(match c {
            b':' => Tok::Colon,
            b'{' | b'<' => Tok::Open(c),
            b'}' | b'>' => Tok::Close(c),
            b'[' => Tok::ListOpen,
            b']' => Tok::ListClose,
            b',' | b';' => Tok::Sep,
            b'"' | b'\'' => {
                while self.pos < b.len() && b[self.pos] != c {
                    if b[self.pos] == b'\\' {
                        self.pos += 1;
                    }
                    if b.get(self.pos) == Some(&b'\n') {
                        return None;
                    }
                    self.pos += 1;
                }
                if self.pos >= b.len() {
                    return None;
                }
                self.pos += 1;
                Tok::Str
            }
            _ => {
                while self.pos < b.len() {
                    let d = b[self.pos];
                    if d.is_ascii_whitespace() || b":{}<>[],;#\"'".contains(&d) {
                        break;
                    }
                    self.pos += 1;
                }
                Tok::Word
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "a: 1\n  bb: 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 7), (2, 3));
    }

    #[test]
    fn skip_field_handles_blocks_lists_and_scalars() {
        let t = "color: true next: 1";
        assert_eq!(&t[..skip_field(t, 0).unwrap()], "color: true");
        let t = "aug { a: 1 b { c: \"}\" } } x: 2";
        assert_eq!(
            &t[..skip_field(t, 0).unwrap()],
            "aug { a: 1 b { c: \"}\" } }"
        );
        let t = "v: [1, 2, 3] w: 1";
        assert_eq!(&t[..skip_field(t, 0).unwrap()], "v: [1, 2, 3]");
        let t = "s: 'a' \"b\" t: 1";
        assert_eq!(&t[..skip_field(t, 0).unwrap()], "s: 'a' \"b\"");
        assert!(skip_field("x { a: 1", 0).is_none());
    }
}
