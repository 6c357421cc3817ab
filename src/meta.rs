// SPDX-License-Identifier: MPL-2.0
//! `VssSummaryMeta`: a GstCustomMeta carrying one chunk's record as a
//! `vss-summary` structure, readable by name from any language
//! (`buffer.get_custom_meta("VssSummaryMeta").get_structure()` in Python).

use gst::glib;

use crate::record::CaptionRecord;

pub const META_NAME: &str = "VssSummaryMeta";
pub const STRUCTURE_NAME: &str = "vss-summary";

/// Registers the meta (idempotent). It has no tags, so elements that
/// transform video keep it, and buffer copies copy it.
pub fn register() {
    if !gst::meta::CustomMeta::is_registered(META_NAME) {
        gst::meta::CustomMeta::register(META_NAME, &[]);
    }
}

/// The record as a `vss-summary` structure; field names and meanings are the
/// same as in the JSON output. `reasoning` and `error` appear only when set.
pub fn to_structure(r: &CaptionRecord) -> gst::Structure {
    let times = gst::Array::new(r.frame_times.iter().map(|t| t.to_send_value()));
    let mut s = gst::Structure::builder(STRUCTURE_NAME)
        .field("kind", r.kind.as_str())
        .field("stream-id", r.stream_id.as_str())
        .field("chunk-index", r.chunk_index)
        .field("start", r.start)
        .field("end", r.end)
        .field("frame-times", times)
        .field("text", r.text.as_str())
        .field("backend", r.backend.as_str())
        .field("model", r.model.as_str())
        .field("latency", r.latency)
        .field("input-tokens", r.input_tokens)
        .field("output-tokens", r.output_tokens)
        .build();
    if let Some(x) = &r.reasoning {
        s.set("reasoning", x.as_str());
    }
    if let (Some(a), Some(b)) = (&r.start_time, &r.end_time) {
        s.set("start-time", a.as_str());
        s.set("end-time", b.as_str());
    }
    if let Some(e) = &r.alert_error {
        s.set("alert-error", e.as_str());
    }
    if let Some(e) = &r.error {
        s.set("error", e.as_str());
    }
    if r.text_truncated {
        s.set("text-truncated", true);
    }
    if let Some(v) = &r.embedding {
        let a = gst::Array::new(v.iter().map(|x| f64::from(*x).to_send_value()));
        s.set("embedding", a);
    }
    if let Some(e) = &r.embedding_error {
        s.set("embedding-error", e.as_str());
    }
    if let Some(e) = &r.endpoint {
        s.set("endpoint", e.as_str());
    }
    if let Some(i) = r.same_as {
        s.set("same-as", i);
    }
    if let Some(c) = r.change {
        s.set("change", c);
    }
    if let Some(x) = &r.reason {
        s.set("reason", x.as_str());
    }
    s.set("prompt-id", r.prompt_id);
    s
}

/// A record given as a JSON object (summaries, alerts) as a structure named
/// `name`, with the same field names: strings, booleans, numbers (integers
/// as `u64`/`i64`, others as `f64`) and arrays of them (`gst::Array`);
/// `null` fields are left out, nested objects become their JSON text.
pub fn structure_from_json(name: &str, v: &serde_json::Value) -> gst::Structure {
    let mut s = gst::Structure::new_empty(name);
    if let Some(o) = v.as_object() {
        for (k, v) in o {
            if let Some(x) = json_value(v) {
                s.set_value(k.as_str(), x);
            }
        }
    }
    s
}

fn json_value(v: &serde_json::Value) -> Option<glib::SendValue> {
    use serde_json::Value;
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_send_value(),
        Value::Number(n) => {
            if n.is_f64() {
                n.as_f64().unwrap_or(0.0).to_send_value()
            } else if let Some(u) = n.as_u64() {
                u.to_send_value()
            } else {
                n.as_i64().unwrap_or(0).to_send_value()
            }
        }
        Value::String(t) => t.as_str().to_send_value(),
        Value::Array(a) => gst::Array::new(a.iter().filter_map(json_value)).to_send_value(),
        Value::Object(_) => v.to_string().to_send_value(),
    })
}

/// Attaches one record to a buffer.
pub fn add(buffer: &mut gst::BufferRef, s: &gst::Structure) -> Result<(), glib::BoolError> {
    let mut m = gst::meta::CustomMeta::add(buffer, META_NAME)?;
    let ms = m.mut_structure();
    ms.set_name(STRUCTURE_NAME);
    for (name, value) in s.iter() {
        ms.set_value(name, value.clone());
    }
    Ok(())
}

/// The record attached to a buffer, if any.
pub fn read(buffer: &gst::BufferRef) -> Option<gst::Structure> {
    gst::meta::CustomMeta::from_buffer(buffer, META_NAME)
        .ok()
        .map(|m| m.structure().to_owned())
}

use glib::prelude::ToSendValue as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_records_become_structures_with_the_same_names() {
        gst::init().unwrap();
        let v = serde_json::json!({
            "kind": "summary", "summary-index": 2, "start": 120.0, "end": 150.5,
            "chunk-indices": [12, 13], "missing-chunks": [], "error": null, "ok": true,
        });
        let s = structure_from_json(STRUCTURE_NAME, &v);
        assert_eq!(s.get::<&str>("kind").unwrap(), "summary");
        assert_eq!(s.get::<u64>("summary-index").unwrap(), 2);
        assert_eq!(s.get::<f64>("start").unwrap(), 120.0);
        assert_eq!(s.get::<gst::Array>("chunk-indices").unwrap().len(), 2);
        assert_eq!(s.get::<gst::Array>("missing-chunks").unwrap().len(), 0);
        assert!(!s.has_field("error"));
        assert!(s.get::<bool>("ok").unwrap());
    }

    #[test]
    fn embedding_rides_on_the_buffer_as_a_float_list() {
        gst::init().unwrap();
        register();
        let r = CaptionRecord {
            chunk_index: 2,
            text: "t".into(),
            embedding: Some(vec![0.5, -1.25, 3.0]),
            ..Default::default()
        };
        let mut buf = gst::Buffer::new();
        add(buf.get_mut().unwrap(), &to_structure(&r)).unwrap();
        let s = read(&buf).expect("meta");
        assert_eq!(s.name(), STRUCTURE_NAME);
        let a = s.get::<gst::Array>("embedding").unwrap();
        let v: Vec<f64> = a.iter().map(|x| x.get::<f64>().unwrap()).collect();
        assert_eq!(v, vec![0.5, -1.25, 3.0]);
        assert!(!s.has_field("embedding-error") && !s.has_field("error"));
        // Without an embedding there is no field.
        let s = to_structure(&CaptionRecord::default());
        assert!(!s.has_field("embedding"));
    }
}
