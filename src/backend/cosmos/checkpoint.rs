// SPDX-License-Identifier: MPL-2.0
//! Checkpoint files shared by both model families: which `*.safetensors`
//! files hold the weights, and reading the small JSON files beside them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::CosmosError;

/// A JSON file, `None` when it does not exist.
pub fn read_json(p: &Path) -> Result<Option<Value>, CosmosError> {
    match std::fs::read_to_string(p) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
            CosmosError::Checkpoint(format!("'{}' is not valid JSON: {e}", p.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CosmosError::Checkpoint(format!(
            "cannot read '{}': {e}",
            p.display()
        ))),
    }
}

/// The `*.safetensors` files of a checkpoint (sharded with an index, or one).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, CosmosError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| CosmosError::Checkpoint(format!("{}: {e}", index.display())))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CosmosError::Checkpoint(format!("{}: {e}", index.display())))?;
        let mut files: Vec<PathBuf> = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                CosmosError::Checkpoint(format!("{} has no weight_map", index.display()))
            })?
            .values()
            .filter_map(|f| f.as_str().map(|f| dir.join(f)))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(CosmosError::Checkpoint(format!(
        "'{}' has neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )))
}
