//! `[scim]`: overrides for `kind = "scim"` (placeholder, being written).

use serde::Deserialize;

use crate::config::{Needs, Problems};

/// The `[scim]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimFile {}

#[derive(Debug, Clone, Default)]
pub struct ScimConfig {}

pub fn validate(_file: ScimFile, _p: &mut Problems<'_>) -> Option<ScimConfig> {
    Some(ScimConfig {})
}

pub fn missing_operations(_scim: &ScimConfig, _needs: Needs) -> Vec<(String, String, String)> {
    Vec::new()
}
