//! Reading `hex name=NAME` blocks out of a Markdown document (see `tests/protocol_doc.rs`).

/// One named block of bytes.
#[derive(Debug)]
pub struct Block {
    pub name: String,
    /// The document line of its opening fence (1-based).
    pub line: usize,
    pub bytes: Vec<u8>,
}

/// Whether a token is one byte: exactly two hex digits.
fn is_byte(token: &str) -> bool {
    token.len() == 2 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The longest run of byte tokens in `text` (split at white space).
fn longest_byte_run(text: &str) -> usize {
    let (mut best, mut run) = (0, 0);
    for token in text.split_whitespace() {
        run = if is_byte(token) { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// Every `hex name=NAME` block of `doc`. Refuses a malformed block, and hex bytes outside such
/// blocks: a line of 8 or more byte tokens in another fenced block, or 4 or more in an inline
/// code span.
pub fn blocks(doc: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut lines = doc.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((number, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            check_prose(number, line)?;
            continue;
        };
        let info = info.trim();
        let mut body = Vec::new();
        let mut closed = false;
        for (n, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                closed = true;
                break;
            }
            body.push((n, l));
        }
        if !closed {
            return Err(format!("line {number}: a fenced block that never closes"));
        }
        let mut words = info.split_whitespace();
        if words.next() != Some("hex") {
            for (n, l) in &body {
                if longest_byte_run(l) >= 8 {
                    return Err(format!(
                        "line {n}: hex bytes in a block not marked `hex name=...`: {l:?}"
                    ));
                }
            }
            continue;
        }
        let name = words
            .find_map(|w| w.strip_prefix("name="))
            .filter(|n| !n.is_empty())
            .ok_or(format!("line {number}: a hex block without a name= in its info string"))?;
        let mut bytes = Vec::new();
        for (n, l) in body {
            parse_line(l, &mut bytes).map_err(|e| format!("line {n}: {e}: {l:?}"))?;
        }
        if bytes.is_empty() {
            return Err(format!("line {number}: hex block {name} holds no bytes"));
        }
        out.push(Block { name: name.to_string(), line: number, bytes });
    }
    Ok(out)
}

/// One line of a hex block: `[offset:] byte* [# comment]`.
fn parse_line(line: &str, bytes: &mut Vec<u8>) -> Result<(), String> {
    let code = line.split_once('#').map_or(line, |(code, _)| code);
    let mut tokens = code.split_whitespace().peekable();
    if let Some(offset) = tokens.peek().and_then(|t| t.strip_suffix(':')) {
        let at = usize::from_str_radix(offset, 16).map_err(|_| format!("bad offset {offset}"))?;
        if at != bytes.len() {
            return Err(format!("offset {offset} but {:#x} bytes come before it", bytes.len()));
        }
        tokens.next();
    }
    for token in tokens {
        if !is_byte(token) {
            return Err(format!("{token:?} is not a byte (comments start with #)"));
        }
        bytes.push(u8::from_str_radix(token, 16).map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// Refuses hex bytes in an inline code span of a prose line.
fn check_prose(number: usize, line: &str) -> Result<(), String> {
    for (i, span) in line.split('`').enumerate() {
        if i % 2 == 1 && longest_byte_run(span) >= 4 {
            return Err(format!("line {number}: hex bytes in prose, not in a hex block: `{span}`"));
        }
    }
    Ok(())
}

/// A block as the document should hold it: 16 bytes a line, each after its offset.
pub fn format_block(name: &str, bytes: &[u8]) -> String {
    let mut text = format!("```hex name={name}\n");
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let (first, second) = hex.split_at(hex.len().min(8));
        let mut line = format!("{:02x}:  {}", i * 16, first.join(" "));
        if !second.is_empty() {
            line.push_str("  ");
            line.push_str(&second.join(" "));
        }
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str("```");
    text
}
