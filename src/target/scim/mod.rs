//! `kind = "scim"`: a SCIM 2.0 service provider (placeholder, being written).

use async_trait::async_trait;

use super::{ApiId, Created, RemoteAccount, RemoteGroup, SubjectContext, TargetApi, TargetError, TargetResult};
use crate::event::Attributes;
use crate::http::HttpClient;

pub mod config;

pub struct ScimTarget {
    #[allow(dead_code)]
    config: config::ScimConfig,
    #[allow(dead_code)]
    http: HttpClient,
}

impl ScimTarget {
    pub fn new(config: config::ScimConfig, http: HttpClient) -> Self {
        ScimTarget { config, http }
    }
}

fn todo_err() -> TargetError {
    TargetError::permanent("scim adapter: being written")
}

#[async_trait]
impl TargetApi for ScimTarget {
    fn match_value(&self, subject: &str, _attributes: &Attributes) -> TargetResult<String> {
        Ok(subject.to_lowercase())
    }
    async fn lookup_account(&self, _ctx: &SubjectContext) -> TargetResult<Option<ApiId>> {
        Err(todo_err())
    }
    async fn get_account(&self, _api_id: &str) -> TargetResult<Option<RemoteAccount>> {
        Err(todo_err())
    }
    async fn create_account(&self, _ctx: &SubjectContext) -> TargetResult<Created> {
        Err(todo_err())
    }
    async fn update_account(&self, _api_id: &str, _ctx: &SubjectContext) -> TargetResult<()> {
        Err(todo_err())
    }
    async fn deprovision_account(&self, _api_id: &str, _ctx: &SubjectContext) -> TargetResult<()> {
        Err(todo_err())
    }
    async fn list_accounts(&self) -> TargetResult<Vec<RemoteAccount>> {
        Err(todo_err())
    }
    async fn list_groups(&self) -> TargetResult<Vec<RemoteGroup>> {
        Err(todo_err())
    }
    async fn list_members(&self, _group_id: &str) -> TargetResult<Vec<RemoteAccount>> {
        Err(todo_err())
    }
    async fn add_member(&self, _g: &RemoteGroup, _api_id: &str, _ctx: &SubjectContext) -> TargetResult<()> {
        Err(todo_err())
    }
    async fn remove_member(&self, _g: &RemoteGroup, _api_id: &str, _ctx: &SubjectContext) -> TargetResult<()> {
        Err(todo_err())
    }
}
