// SPDX-License-Identifier: MPL-2.0
//! VSS environment variables as defaults, `env-file`, and configuration
//! errors at NULL→READY. Own test binary, one test: it changes the process
//! environment, which is shared by all threads.

mod common;

use std::time::Duration;

use common::*;
use gst::prelude::*;

const VARS: &[&str] = &[
    "VLM_MODEL_TO_USE",
    "VIA_VLM_ENDPOINT",
    "VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME",
    "VIA_VLM_API_KEY",
    "OPENAI_API_KEY",
    "OPENAI_API_VERSION",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "VLM_INPUT_WIDTH",
    "VLM_INPUT_HEIGHT",
    "VLM_DEFAULT_NUM_FRAMES_PER_CHUNK",
    "VLM_SYSTEM_PROMPT",
    "MODEL_PATH",
    "MODEL_ROOT_DIR",
];

fn clear_env() {
    for v in VARS {
        std::env::remove_var(v);
    }
}

/// NULL→READY of a lone element; returns the error message, if any.
fn ready_error(props: &[(&str, &str)]) -> Option<String> {
    let mut b = gst::ElementFactory::make("vsssummarize");
    for (k, v) in props {
        b = b.property_from_str(k, v);
    }
    let e = b.build().unwrap();
    let bus = gst::Bus::new();
    e.set_bus(Some(&bus));
    let res = e.set_state(gst::State::Ready);
    let _ = e.set_state(gst::State::Null);
    match res {
        Ok(_) => None,
        Err(_) => {
            let msg = bus
                .pop_filtered(&[gst::MessageType::Error])
                .expect("error message");
            let gst::MessageView::Error(err) = msg.view() else {
                unreachable!()
            };
            Some(err.error().to_string())
        }
    }
}

fn one_chunk(props: &str) -> serde_json::Value {
    let v = Video::small(1);
    let r = run_video(props, &v, Duration::from_secs(60));
    let recs = r.outputs().json();
    r.stop();
    assert_eq!(recs.len(), 1);
    recs[0].clone()
}

#[test]
fn environment_defaults_env_file_and_errors() {
    init();
    clear_env();

    // 1. Missing key for api.openai.com (the default endpoint).
    let e = ready_error(&[]).expect("must fail without a key");
    assert!(e.contains("OPENAI_API_KEY") && e.contains("api-key"), "{e}");

    // 2. Unparsable endpoint from the environment names the variable.
    std::env::set_var("VIA_VLM_ENDPOINT", "localhost:8000/v1 oops");
    let e = ready_error(&[]).expect("must fail");
    assert!(e.contains("VIA_VLM_ENDPOINT"), "{e}");
    // ... and from the property names the property.
    let e = ready_error(&[("endpoint", "::bad::")]).expect("must fail");
    assert!(e.contains("endpoint property"), "{e}");
    clear_env();

    // 3. Unknown backend from VLM_MODEL_TO_USE.
    std::env::set_var("VLM_MODEL_TO_USE", "vila-1.5");
    std::env::set_var("VIA_VLM_ENDPOINT", "http://127.0.0.1:9/v1");
    let e = ready_error(&[]).expect("must fail");
    assert!(
        e.contains("VLM_MODEL_TO_USE") && e.contains("vila-1.5"),
        "{e}"
    );
    clear_env();

    // 4. The local backends without a model directory name what to set.
    let e = ready_error(&[("backend", "cosmos-reason1")]).expect("must fail");
    if cfg!(feature = "cosmos") {
        assert!(
            e.contains("cosmos-reason1") && e.contains("model-path") && e.contains("MODEL_PATH"),
            "{e}"
        );
    } else {
        assert!(e.contains("cosmos feature"), "{e}");
    }
    let e = ready_error(&[("backend", "custom")]).expect("must fail");
    assert!(e.contains("model-path") && e.contains("MODEL_PATH"), "{e}");

    // 5. VSS variables are the defaults.
    let server = MockServer::start();
    std::env::set_var("VIA_VLM_ENDPOINT", server.url());
    std::env::set_var(
        "VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME",
        "Qwen2.5VL-7B-instruct",
    );
    std::env::set_var("OPENAI_API_KEY", "env-key");
    std::env::set_var("VLM_INPUT_WIDTH", "32");
    std::env::set_var("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", "3");
    std::env::set_var("VLM_SYSTEM_PROMPT", "env system prompt");
    let rec = one_chunk("chunk-duration=1");
    assert!(rec.get("error").is_none(), "{rec}");
    assert_eq!(rec["model"], "Qwen2.5VL-7B-instruct");
    assert_eq!(rec["frame-times"].as_array().unwrap().len(), 3);
    let q = server.requests().pop().unwrap();
    assert_eq!(q.header("authorization"), Some("Bearer env-key"));
    assert_eq!(q.body["model"], "Qwen2.5VL-7B-instruct");
    assert_eq!(q.system.as_deref(), Some("env system prompt"));
    assert_eq!((q.images[0].width, q.images[0].height), (32, 24));

    // VIA_VLM_API_KEY wins over OPENAI_API_KEY.
    std::env::set_var("VIA_VLM_API_KEY", "via-key");
    one_chunk("chunk-duration=10");
    let q = server.requests().pop().unwrap();
    assert_eq!(q.header("authorization"), Some("Bearer via-key"));

    // 6. Properties win over the environment.
    let other = MockServer::start();
    let rec = one_chunk(&format!(
        "chunk-duration=1 endpoint={} model-name=prop-model num-frames-per-chunk=2 frame-width=16",
        other.url()
    ));
    assert_eq!(rec["model"], "prop-model");
    let q = other.requests().pop().unwrap();
    assert_eq!(q.images.len(), 2);
    assert_eq!(q.images[0].width, 16);

    // 7. env-file wins over the process environment; properties win over both.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vss.env");
    std::fs::write(
        &f,
        format!(
            "# VSS .env\nexport VIA_VLM_ENDPOINT={}\nexport VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME=\"file model\"\nexport VIA_VLM_API_KEY=file-key\n",
            other.url()
        ),
    )
    .unwrap();
    let rec = one_chunk(&format!("chunk-duration=10 env-file={}", f.display()));
    assert_eq!(rec["model"], "file model");
    let q = other.requests().pop().unwrap();
    assert_eq!(q.header("authorization"), Some("Bearer file-key"));
    let e = ready_error(&[("env-file", "/nonexistent/vss.env")]).expect("must fail");
    assert!(e.contains("env-file"), "{e}");

    // 8. Azure through AZURE_OPENAI_ENDPOINT, as in VSS.
    clear_env();
    std::env::set_var("AZURE_OPENAI_ENDPOINT", other.base());
    std::env::set_var("AZURE_OPENAI_API_KEY", "azure-key");
    std::env::set_var("VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME", "gpt-4o-deploy");
    one_chunk("chunk-duration=10");
    let q = other.requests().pop().unwrap();
    assert_eq!(q.path, "/openai/deployments/gpt-4o-deploy/chat/completions");
    assert!(q.query.as_deref().unwrap().starts_with("api-version="));
    assert_eq!(q.header("api-key"), Some("azure-key"));
    clear_env();
}
