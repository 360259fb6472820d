//! `[rest]`: the API description of `kind = "rest"` (placeholder, being written).

use serde::Deserialize;

use crate::config::{Needs, Problems};

#[derive(Debug, Clone, Deserialize)]
pub struct RestFile(pub toml::Table);

#[derive(Debug, Clone)]
pub struct RestConfig {}

pub fn validate(_file: RestFile, _p: &mut Problems<'_>) -> Option<RestConfig> {
    Some(RestConfig {})
}

pub fn missing_operations(_rest: &RestConfig, _needs: Needs) -> Vec<(String, String, String)> {
    Vec::new()
}
