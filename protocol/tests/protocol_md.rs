//! Keeps `PROTOCOL.md` true: every WebSocket frame it shows must decode with this crate's
//! types, and every server frame must re-encode to exactly the bytes shown.
//!
//! Frames appear in ```json blocks (one JSON value per block) and in ```text blocks as lines
//! `→ {…}` (client to server) and `← {…}` (server to client), possibly followed by a comment.

use quiz_protocol::client::{
    ClientMessage, DEFAULT_MAX_FRAME, decode_client, decode_server, encode_server,
};

const DOC: &str = include_str!("../PROTOCOL.md");
const CLIENT_TYPES: &[&str] = &["join", "answer", "next", "leave", "host", "ping"];

/// The JSON object starting at the first `{` of `line`, by brace matching outside strings.
fn object_in(line: &str) -> Option<&str> {
    let start = line.find('{')?;
    let (mut depth, mut in_string, mut escaped) = (0, false, false);
    for (i, c) in line[start..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return Some(&line[start..start + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

#[derive(Debug, PartialEq)]
enum Dir {
    Client,
    Server,
    /// An HTTP body or another JSON value: only checked to be JSON.
    Other,
}

fn frames() -> Vec<(Dir, String)> {
    let mut out = Vec::new();
    let mut block: Option<&str> = None;
    let mut json_block = String::new();
    for line in DOC.lines() {
        if let Some(lang) = line.strip_prefix("```") {
            match block {
                None => block = Some(lang),
                Some(_) => {
                    if block == Some("json") {
                        out.push((Dir::Other, std::mem::take(&mut json_block)));
                    }
                    block = None;
                }
            }
            continue;
        }
        match block {
            Some("json") => {
                json_block.push_str(line);
                json_block.push('\n');
            }
            Some(_) => {
                let t = line.trim_start();
                let dir = if t.starts_with('→') {
                    Dir::Client
                } else if t.starts_with('←') {
                    Dir::Server
                } else {
                    continue;
                };
                if let Some(obj) = object_in(t) {
                    out.push((dir, obj.to_owned()));
                }
            }
            None => {}
        }
    }
    // A json block holding a frame is classified by its `type`.
    out.into_iter()
        .map(|(dir, text)| {
            if dir != Dir::Other {
                return (dir, text);
            }
            let value: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("PROTOCOL.md has invalid JSON ({e}):\n{text}"));
            match value.get("type").and_then(|t| t.as_str()) {
                Some(t) if CLIENT_TYPES.contains(&t) => (Dir::Client, text.trim().to_owned()),
                Some(_) if value.get("code").is_none() => (Dir::Server, text.trim().to_owned()),
                _ => (Dir::Other, text),
            }
        })
        .collect()
}

#[test]
fn every_frame_in_the_protocol_document_is_real() {
    let frames = frames();
    let clients = frames.iter().filter(|f| f.0 == Dir::Client).count();
    let servers = frames.iter().filter(|f| f.0 == Dir::Server).count();
    assert!(
        clients >= 15 && servers >= 30,
        "found {clients} client and {servers} server frames"
    );
    for (dir, text) in &frames {
        match dir {
            Dir::Client => {
                let msg = decode_client(text.as_bytes(), DEFAULT_MAX_FRAME)
                    .unwrap_or_else(|e| panic!("client frame does not decode ({e}): {text}"));
                if let ClientMessage::Answer(a) = msg {
                    a.answer()
                        .unwrap_or_else(|e| panic!("answer frame is not valid ({e}): {text}"));
                }
            }
            Dir::Server => {
                let msg = decode_server(text.as_bytes())
                    .unwrap_or_else(|e| panic!("server frame does not decode ({e}): {text}"));
                let again = String::from_utf8(encode_server(&msg)).unwrap();
                assert_eq!(&again, text, "the server would send different bytes");
            }
            Dir::Other => {}
        }
    }
}
