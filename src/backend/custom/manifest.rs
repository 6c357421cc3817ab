// SPDX-License-Identifier: MPL-2.0
//! A VSS custom-model directory: where it may live (`model-root-dir`) and what
//! its `manifest.yaml` says. Free of GStreamer and of Python.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// The `input:` section of `manifest.yaml`, as VSS reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// `number_of_frames`: frames per chunk (VSS default 1). `None` = absent.
    pub number_of_frames: Option<u32>,
    /// `jpeg_encoded`: frames arrive as JPEG bytes (default false).
    pub jpeg_encoded: bool,
    /// `vlm_input_resolution: [w, h]`: the size frames are scaled to.
    pub resolution: Option<(u32, u32)>,
}

/// Keys VSS knows under `input:` but does not apply to custom models.
const IGNORED_KEYS: &[&str] = &["crop_size"];

impl Manifest {
    /// Parses manifest text. Unknown keys become warnings (the returned list),
    /// wrong types become errors that name the key.
    pub fn parse(text: &str) -> Result<(Manifest, Vec<String>), String> {
        let doc: Value =
            serde_yaml::from_str(text).map_err(|e| format!("is not valid YAML: {e}"))?;
        let mut warnings = Vec::new();
        let mut m = Manifest::default();
        let top = match doc {
            // An empty file: all defaults, as in VSS.
            Value::Null => return Ok((m, warnings)),
            Value::Mapping(map) => map,
            _ => return Err("must be a mapping with an 'input:' section".into()),
        };
        for (k, v) in top {
            let key = key_name(&k)?;
            if key != "input" {
                warnings.push(format!("unknown top-level key '{key}' ignored"));
                continue;
            }
            let input = match v {
                Value::Null => continue,
                Value::Mapping(map) => map,
                _ => return Err("'input' must be a mapping".into()),
            };
            for (k, v) in input {
                let key = key_name(&k)?;
                match key.as_str() {
                    "number_of_frames" => {
                        let max = crate::config::MAX_FRAMES_PER_CHUNK;
                        let n = v
                            .as_u64()
                            .filter(|n| (1..=u64::from(max)).contains(n))
                            .ok_or_else(|| {
                                format!(
                                    "input.number_of_frames must be an integer from 1 to {max} (as num-frames-per-chunk), found {}",
                                    show(&v)
                                )
                            })?;
                        m.number_of_frames = Some(n as u32);
                    }
                    "jpeg_encoded" => {
                        m.jpeg_encoded = v.as_bool().ok_or_else(|| {
                            format!(
                                "input.jpeg_encoded must be true or false, found {}",
                                show(&v)
                            )
                        })?;
                    }
                    "vlm_input_resolution" => {
                        let max = crate::config::MAX_FRAME_SIZE;
                        let bad = || {
                            format!(
                                "input.vlm_input_resolution must be [width, height] in pixels, each at most {max} (as frame-width / frame-height), found {}",
                                show(&v)
                            )
                        };
                        let seq = v.as_sequence().ok_or_else(bad)?;
                        let dims: Vec<u32> = seq
                            .iter()
                            .map(|x| {
                                x.as_u64()
                                    .filter(|n| *n <= u64::from(max))
                                    .map(|n| n as u32)
                            })
                            .collect::<Option<_>>()
                            .ok_or_else(bad)?;
                        match dims[..] {
                            [w, h] => m.resolution = Some((w, h)),
                            _ => return Err(bad()),
                        }
                    }
                    k if IGNORED_KEYS.contains(&k) => warnings.push(format!(
                        "input.{k} is ignored for custom models (as in VSS)"
                    )),
                    other => warnings.push(format!("unknown key 'input.{other}' ignored")),
                }
            }
        }
        Ok((m, warnings))
    }
}

// `String` error (issue 20, justified): a manifest error is a message for
// the user about their file; nothing decides on it, the element shows it.
fn key_name(k: &Value) -> Result<String, String> {
    k.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("keys must be strings, found {}", show(k)))
}

fn show(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{v:?}"))
}

/// Checks `model-path` (and `model-root-dir` when set) and returns the model
/// directory with `..` and symlinks resolved. Errors name both paths;
/// `holding` says what the directory should hold.
///
/// The error is a `String` (issue 20, justified): a settings message for
/// the user, wrapped in the element's settings error and never decided on.
pub fn contained_dir(
    model_path: Option<&Path>,
    root: Option<&Path>,
    backend: &str,
    holding: &str,
) -> Result<PathBuf, String> {
    let Some(path) = model_path else {
        return Err(format!(
            "backend '{backend}' needs a model directory: set model-path (or MODEL_PATH) to the directory holding {holding}"
        ));
    };
    let dir = path.canonicalize().map_err(|e| {
        format!(
            "model-path '{}' cannot be opened: {e}; set model-path (or MODEL_PATH) to the directory holding {holding}",
            path.display()
        )
    })?;
    if !dir.is_dir() {
        return Err(format!(
            "model-path '{}' is not a directory; point it at the directory holding {holding}",
            path.display()
        ));
    }
    if let Some(root) = root {
        let root_c = root.canonicalize().map_err(|e| {
            format!(
                "model-root-dir '{}' cannot be opened: {e}; fix model-root-dir (or MODEL_ROOT_DIR), or unset it",
                root.display()
            )
        })?;
        if !dir.starts_with(&root_c) {
            return Err(format!(
                "model-path '{}' resolves to '{}', which is outside model-root-dir '{}' ('{}'); move the model under the root or fix model-path / model-root-dir (MODEL_PATH / MODEL_ROOT_DIR)",
                path.display(),
                dir.display(),
                root.display(),
                root_c.display()
            ));
        }
    }
    Ok(dir)
}

/// [`contained_dir`] for a VSS custom model, which must hold `inference.py`
/// and `manifest.yaml`. A `String` error, as for [`contained_dir`].
pub fn resolve_model_dir(
    model_path: Option<&Path>,
    root: Option<&Path>,
) -> Result<PathBuf, String> {
    let dir = contained_dir(model_path, root, "custom", "inference.py and manifest.yaml")?;
    for f in ["inference.py", "manifest.yaml"] {
        if !dir.join(f).is_file() {
            return Err(format!(
                "model directory '{}' has no {f}; a VSS custom model needs inference.py (class Inference) and manifest.yaml",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// Reads and parses `dir/manifest.yaml`.
pub fn load(dir: &Path) -> Result<(Manifest, Vec<String>), String> {
    let p = dir.join("manifest.yaml");
    let text =
        std::fs::read_to_string(&p).map_err(|e| format!("cannot read '{}': {e}", p.display()))?;
    Manifest::parse(&text).map_err(|e| format!("'{}' {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vss_sample_manifests() {
        let (m, w) = Manifest::parse("input:\n  number_of_frames: 5\n").unwrap();
        assert_eq!(m.number_of_frames, Some(5));
        assert!(!m.jpeg_encoded && m.resolution.is_none() && w.is_empty());
        let (m, _) = Manifest::parse(
            "input:\n  number_of_frames: 1 # frames\n  jpeg_encoded: true\n  vlm_input_resolution: [640, 360]\n",
        )
        .unwrap();
        assert_eq!(m.number_of_frames, Some(1));
        assert!(m.jpeg_encoded);
        assert_eq!(m.resolution, Some((640, 360)));
        // Empty file and empty input: defaults.
        assert_eq!(Manifest::parse("").unwrap().0, Manifest::default());
        assert_eq!(Manifest::parse("input:\n").unwrap().0, Manifest::default());
    }

    #[test]
    fn unknown_keys_warn() {
        let (m, w) = Manifest::parse(
            "input:\n  number_of_frames: 2\n  crop_size: [224, 224]\n  fps: 3\nmodel: x\n",
        )
        .unwrap();
        assert_eq!(m.number_of_frames, Some(2));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w.iter().any(|x| x.contains("input.fps")));
        assert!(w.iter().any(|x| x.contains("crop_size")));
        assert!(w.iter().any(|x| x.contains("'model'")));
    }

    #[test]
    fn bad_manifests_name_the_key() {
        for (text, needle) in [
            ("input:\n  number_of_frames: 0\n", "number_of_frames"),
            ("input:\n  number_of_frames: 4000000000\n", "1 to 256"),
            ("input:\n  number_of_frames: 257\n", "1 to 256"),
            (
                "input:\n  vlm_input_resolution: [99999, 10]\n",
                "at most 16384",
            ),
            ("input:\n  number_of_frames: many\n", "number_of_frames"),
            ("input:\n  jpeg_encoded: maybe\n", "jpeg_encoded"),
            (
                "input:\n  vlm_input_resolution: [640]\n",
                "vlm_input_resolution",
            ),
            ("input: [1, 2]\n", "mapping"),
            ("- a\n- b\n", "mapping"),
            ("input:\n  number_of_frames: [\n", "YAML"),
        ] {
            let e = Manifest::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn model_dir_must_stay_under_root() {
        let base = std::env::temp_dir().join(format!("vss-manifest-{}", std::process::id()));
        let root = base.join("root");
        let inside = root.join("m");
        let outside = base.join("outside");
        for d in [&inside, &outside] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("inference.py"), "class Inference: pass\n").unwrap();
            std::fs::write(d.join("manifest.yaml"), "input:\n").unwrap();
        }
        let link = root.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&outside, &link).unwrap();

        let ok = resolve_model_dir(Some(&inside), Some(&root)).unwrap();
        assert_eq!(ok, inside.canonicalize().unwrap());
        // `..` escape.
        let dotdot = root.join("m/../../outside");
        let e = resolve_model_dir(Some(&dotdot), Some(&root)).unwrap_err();
        assert!(e.contains("outside model-root-dir"), "{e}");
        assert!(e.contains(&*dotdot.to_string_lossy()) && e.contains(&*root.to_string_lossy()));
        // Symlink escape.
        let e = resolve_model_dir(Some(&link), Some(&root)).unwrap_err();
        assert!(e.contains("outside model-root-dir"), "{e}");
        // No root: anywhere is fine.
        assert!(resolve_model_dir(Some(&link), None).is_ok());
        // Missing files and paths.
        std::fs::remove_file(inside.join("manifest.yaml")).unwrap();
        let e = resolve_model_dir(Some(&inside), Some(&root)).unwrap_err();
        assert!(e.contains("manifest.yaml"), "{e}");
        let e = resolve_model_dir(Some(&base.join("nope")), None).unwrap_err();
        assert!(e.contains("cannot be opened"), "{e}");
        assert!(resolve_model_dir(None, None)
            .unwrap_err()
            .contains("MODEL_PATH"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
