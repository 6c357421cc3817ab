// SPDX-License-Identifier: MPL-2.0
//! The error texts the documentation quotes are made here by the code
//! itself, and each must appear verbatim in docs/design.md (and the ones the
//! README's troubleshooting quotes, there too), so the two cannot drift.

use std::path::Path;

use gstvsssummarize::chunker::ChunkParams;
use gstvsssummarize::config::{self, Env, UserSettings};

fn resolve_err(user: &UserSettings, env: &[(&str, &str)]) -> String {
    config::resolve(user, Env::from_pairs(env.iter().copied()))
        .unwrap_err()
        .to_string()
}

/// (text, also quoted in the README)
fn documented_errors() -> Vec<(String, bool)> {
    let none = UserSettings::default();
    let mut v = vec![
        (resolve_err(&none, &[]), true),
        (
            resolve_err(&none, &[("VIA_VLM_ENDPOINT", "localhost:8000")]),
            true,
        ),
        (
            resolve_err(&none, &[("VLM_MODEL_TO_USE", "vila-1.5")]),
            false,
        ),
        (
            resolve_err(
                &none,
                &[
                    ("VIA_VLM_ENDPOINT", "http://localhost:8000/v1"),
                    ("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", "4000000000"),
                ],
            ),
            false,
        ),
        (
            ChunkParams::new(10_000_000_000, 10_000_000_000, 8)
                .unwrap_err()
                .to_string(),
            false,
        ),
        (
            ChunkParams::new(1_000_000_000, 999_999_999, 8)
                .unwrap_err()
                .to_string(),
            false,
        ),
    ];
    // A model-name the server does not serve (the start-up check).
    let ep = config::resolve(
        &UserSettings {
            endpoint: Some("http://localhost:8000/v1".into()),
            model_name: Some("qwen-vl".into()),
            ..Default::default()
        },
        Env::default(),
    )
    .unwrap()
    .endpoint
    .unwrap();
    let served = gstvsssummarize::backend::probe::classify_models(
        &ep,
        &["Qwen/Qwen2.5-VL-7B-Instruct".to_string()],
    );
    v.push((served.message(), true));
    // A quantization the in-process loader does not handle.
    #[cfg(feature = "cosmos")]
    {
        let config = serde_json::json!({"quantization_config": {"quant_method": "awq"}});
        let e = gstvsssummarize::backend::cosmos::fp8::detect(Some(&config), None).unwrap_err();
        v.push((e, false));
    }
    v
}

fn normalized(path: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    // Markdown may wrap a quoted line; compare with whitespace folded.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn documented_error_texts_are_the_real_ones() {
    let design = normalized("docs/design.md");
    let readme = normalized("README.md");
    let mut missing = Vec::new();
    for (e, in_readme) in documented_errors() {
        let e1 = e.split_whitespace().collect::<Vec<_>>().join(" ");
        if !design.contains(&e1) {
            missing.push(format!("docs/design.md lacks: {e}"));
        }
        if in_readme && !readme.contains(&e1) {
            missing.push(format!("README.md lacks: {e}"));
        }
    }
    assert!(missing.is_empty(), "\n{}", missing.join("\n"));
}
