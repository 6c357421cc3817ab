// SPDX-License-Identifier: MPL-2.0
//! The framed pipe protocol between the element and its Python worker.
//!
//! A message is `b"VSSF"`, a little-endian `u32` length, that many bytes of
//! a JSON object (the header), then the binary blobs whose lengths the header
//! lists in `"blobs": [n0, n1, …]`, back to back. Frames travel as blobs
//! (raw RGB or JPEG bytes), never inside JSON. `worker.py` implements the
//! other end.

use std::io::{self, Read, Write};

use serde_json::{Map, Value};

pub const MAGIC: &[u8; 4] = b"VSSF";
/// Headers are small; anything bigger means the stream is corrupt.
const MAX_HEADER: usize = 16 << 20;
/// No blob is bigger than a chunk of 8K frames.
const MAX_BLOB: u64 = 4 << 30;

/// A received message.
#[derive(Debug, Default)]
pub struct Message {
    pub header: Map<String, Value>,
    pub blobs: Vec<Vec<u8>>,
}

impl Message {
    pub fn op(&self) -> &str {
        self.header.get("op").and_then(Value::as_str).unwrap_or("")
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(Value::as_str)
    }
}

/// Writes one message. Each blob is given as the parts it is made of, so
/// frames are written straight from their buffers without being joined.
pub fn write_msg<W: Write>(
    w: &mut W,
    mut header: Map<String, Value>,
    blobs: &[Vec<&[u8]>],
) -> io::Result<()> {
    let lens: Vec<Value> = blobs
        .iter()
        .map(|parts| Value::from(parts.iter().map(|p| p.len() as u64).sum::<u64>()))
        .collect();
    header.insert("blobs".into(), Value::Array(lens));
    let json = serde_json::to_vec(&Value::Object(header))?;
    let len = u32::try_from(json.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "header too large"))?;
    let mut head = Vec::with_capacity(8 + json.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&len.to_le_bytes());
    head.extend_from_slice(&json);
    w.write_all(&head)?;
    for parts in blobs {
        for p in parts {
            w.write_all(p)?;
        }
    }
    w.flush()
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads one message. `UnexpectedEof` at a message boundary means the peer
/// closed the pipe (exited).
pub fn read_msg<R: Read>(r: &mut R) -> io::Result<Message> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    if &head[..4] != MAGIC {
        return Err(corrupt(format!(
            "bad frame start {:?} (something else wrote to the protocol pipe)",
            String::from_utf8_lossy(&head[..4])
        )));
    }
    let len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER {
        return Err(corrupt(format!("header of {len} bytes")));
    }
    let mut json = vec![0u8; len];
    r.read_exact(&mut json)?;
    let header = match serde_json::from_slice::<Value>(&json) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(corrupt("header is not a JSON object".into())),
        Err(e) => return Err(corrupt(format!("header is not JSON: {e}"))),
    };
    let lens: Vec<u64> = match header.get("blobs") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_u64().filter(|n| *n <= MAX_BLOB))
            .collect::<Option<_>>()
            .ok_or_else(|| corrupt("bad blob lengths".into()))?,
        Some(_) => return Err(corrupt("bad blob lengths".into())),
    };
    let mut blobs = Vec::with_capacity(lens.len());
    for n in lens {
        let mut b = vec![0u8; n as usize];
        r.read_exact(&mut b)?;
        blobs.push(b);
    }
    Ok(Message { header, blobs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn round_trip_with_split_blobs() {
        let mut buf = Vec::new();
        let a = [1u8, 2, 3];
        let b = [4u8; 5];
        write_msg(
            &mut buf,
            obj(json!({"op": "generate", "id": 7})),
            &[vec![&a[..], &b[..]], vec![], vec![&a[1..]]],
        )
        .unwrap();
        write_msg(&mut buf, obj(json!({"op": "ping"})), &[]).unwrap();
        let mut r = &buf[..];
        let m = read_msg(&mut r).unwrap();
        assert_eq!(m.op(), "generate");
        assert_eq!(m.header["id"], 7);
        assert_eq!(
            m.blobs,
            vec![vec![1, 2, 3, 4, 4, 4, 4, 4], vec![], vec![2, 3]]
        );
        let m = read_msg(&mut r).unwrap();
        assert_eq!(m.op(), "ping");
        assert!(m.blobs.is_empty());
        assert_eq!(
            read_msg(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let mut r = &b"hello world, not a frame"[..];
        let e = read_msg(&mut r).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("protocol pipe"), "{e}");

        let mut buf = Vec::new();
        write_msg(&mut buf, obj(json!({"op": "x"})), &[vec![&[9u8; 10][..]]]).unwrap();
        // Truncated blob.
        let mut r = &buf[..buf.len() - 3];
        assert_eq!(
            read_msg(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        // Header that is not an object.
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&2u32.to_le_bytes());
        bad.extend_from_slice(b"[]");
        assert_eq!(
            read_msg(&mut &bad[..]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
