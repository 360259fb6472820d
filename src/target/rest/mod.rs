//! `kind = "rest"`: a JSON REST API described entirely in the provisioner
//! file (`[rest]`, docs/configuration.md). Each call renders its operation's templates, sends it, and
//! reads the status against the operation's `ok`, `absent` and `exists`
//! lists; any other status becomes [`HttpResponse::error`], which alone
//! decides between transient and permanent.

use std::collections::HashSet;

use async_trait::async_trait;
use serde_json::Value as Json;

use super::{
    ApiId, Created, Desired, Found, RemoteAccount, RemoteGroup, Removal, SubjectContext, TargetApi,
    TargetError, TargetResult,
};
use crate::event::Attributes;
use crate::http::{HttpClient, HttpRequest, HttpResponse};

pub mod config;
pub mod mapping;

use config::{Operation, Paging, RestConfig};
use mapping::Vars;

/// Pages read at most in one list: a target whose paging never ends must not
/// keep a worker busy forever, and a truncated list must not pass as whole.
pub const MAX_PAGES: usize = 10_000;

pub struct RestTarget {
    config: RestConfig,
    http: HttpClient,
}

/// How the target answered, per the operation's status lists.
enum Answer {
    Ok(HttpResponse),
    Absent,
    Exists,
}

impl RestTarget {
    pub fn new(config: RestConfig, http: HttpClient) -> Self {
        RestTarget { config, http }
    }

    fn op<'a>(&self, op: &'a Option<Operation>, key: &str) -> TargetResult<&'a Operation> {
        op.as_ref().ok_or_else(|| {
            TargetError::permanent(format!(
                "`[rest.{key}]` is not configured but this provisioner needs it"
            ))
        })
    }

    /// Renders the operation's URL (or takes `target`, a next link) and body.
    fn request(
        &self,
        op: &Operation,
        vars: &Vars<'_>,
        target: Option<String>,
    ) -> TargetResult<HttpRequest> {
        let ctx = vars.context();
        let templates = &self.config.templates;
        let path_and_query = match target {
            Some(t) => t,
            None => templates
                .render_url(&op.url, &ctx)
                .map_err(|e| TargetError::permanent(format!("{}: URL: {e}", op.name)))?,
        };
        let body = op
            .body
            .as_ref()
            .map(|b| templates.render_body(b, &ctx))
            .transpose()
            .map_err(|e| TargetError::permanent(format!("{}: body: {e}", op.name)))?;
        Ok(HttpRequest {
            operation: op.name.to_string(),
            path_template: op.url.source().clone(),
            method: op.method.clone(),
            path_and_query,
            body,
            actor: vars.actor.map(str::to_string),
            ..HttpRequest::default()
        })
    }

    async fn call(&self, op: &Operation, vars: &Vars<'_>) -> TargetResult<Answer> {
        let req = self.request(op, vars, None)?;
        let resp = self.http.send(req).await?;
        classify(op, resp)
    }

    /// Hands every item of a list operation to `each`, page by page, with its
    /// index in the whole list; no page is kept once read, so a listing of
    /// 100,000 accounts holds what `each` keeps of them, not their JSON.
    async fn for_each_item(
        &self,
        op: &Operation,
        vars: &Vars<'_>,
        each: &mut (dyn FnMut(usize, &Json) + Send),
    ) -> TargetResult<()> {
        let items_pointer = op.items.as_deref().unwrap_or_default();
        let first = self.request(op, vars, None)?;
        let mut target = first.path_and_query.clone();
        if let Some(Paging::PageNumber { param, .. }) = &op.paging {
            target = mapping::set_query_param(&target, param, "1");
        }
        let mut index = 0usize;
        let mut seen_links: HashSet<String> = HashSet::from([target.clone()]);
        let (mut page, mut offset) = (1u64, 0u64);
        if let Some(Paging::Offset { start, .. }) = &op.paging {
            offset = *start;
        }
        for _ in 0..MAX_PAGES {
            if let Some(Paging::Offset {
                param,
                size_param,
                size,
                ..
            }) = &op.paging
            {
                target =
                    mapping::set_query_param(&first.path_and_query, param, &offset.to_string());
                if let Some(sp) = size_param {
                    target = mapping::set_query_param(&target, sp, &size.to_string());
                }
            }
            let req = HttpRequest {
                path_and_query: target.clone(),
                ..first.clone()
            };
            let resp = self.http.send(req).await?;
            let resp = match classify(op, resp)? {
                Answer::Ok(r) => r,
                Answer::Absent | Answer::Exists => return Err(unexpected(op)),
            };
            let json = resp.json(op.name)?;
            let page_items = mapping::items(&json, items_pointer)
                .map_err(|e| TargetError::permanent(format!("{}: {e}", op.name)))?;
            let count = page_items.len() as u64;
            for item in page_items {
                each(index, item);
                index += 1;
            }
            let more = match &op.paging {
                None => false,
                Some(Paging::PageNumber { param, last_page }) => {
                    let last = last_page
                        .as_deref()
                        .and_then(|p| mapping::pointer_count(&json, p));
                    page += 1;
                    target = mapping::set_query_param(&target, param, &page.to_string());
                    count > 0 && last.is_none_or(|last| page <= last)
                }
                Some(Paging::Offset {
                    size,
                    size_param,
                    total,
                    start,
                    ..
                }) => {
                    offset += count;
                    let total = total
                        .as_deref()
                        .and_then(|p| mapping::pointer_count(&json, p));
                    match total {
                        // A server may cap the page size below ours, so a
                        // short page ends the list only when no total is known.
                        Some(total) => count > 0 && offset - start < total,
                        None => count > 0 && (size_param.is_none() || count >= *size),
                    }
                }
                Some(Paging::NextLink { next }) => match mapping::pointer_text(&json, next) {
                    None => false,
                    Some(link) => {
                        target =
                            mapping::resolve_link(&self.http.url_prefixes(), &target, &link)
                                .map_err(|e| TargetError::permanent(format!("{}: {e}", op.name)))?;
                        if !seen_links.insert(target.clone()) {
                            return Err(TargetError::permanent(format!(
                                "{}: the next link repeats a page already read",
                                op.name
                            )));
                        }
                        true
                    }
                },
            };
            if !more {
                return Ok(());
            }
        }
        Err(TargetError::permanent(format!(
            "{}: paging did not end after {MAX_PAGES} pages",
            op.name
        )))
    }

    /// The accounts of a list operation (`accounts.list`, `groups.members`),
    /// each compared with its subject's desired state when `desired` has one.
    async fn list_accounts_of(
        &self,
        op: &Operation,
        vars: &Vars<'_>,
        desired: Option<Desired<'_>>,
    ) -> TargetResult<Vec<RemoteAccount>> {
        let (id, match_pointer) = (
            op.id.as_deref().unwrap_or_default(),
            op.match_pointer.as_deref().unwrap_or_default(),
        );
        let mut accounts = Vec::new();
        self.for_each_item(op, vars, &mut |index, item| {
            let Some(mut account) = mapping::account(op.name, index, item, id, match_pointer)
            else {
                return;
            };
            if let Some(ctx) = desired.and_then(|d| d(&account.match_value)) {
                account.in_step = self.in_step(item, &account.api_id, &ctx);
            }
            accounts.push(account);
        })
        .await?;
        Ok(accounts)
    }

    /// Whether the update `ctx` would send changes nothing on `item`, the
    /// account `api_id` as the target showed it. Without an update body
    /// there is nothing to compare, so an update is never called needless.
    fn in_step(&self, item: &Json, api_id: &str, ctx: &SubjectContext) -> bool {
        let Some(op) = &self.config.accounts.update else {
            return false;
        };
        let Some(body) = &op.body else {
            return false;
        };
        let vars = Vars {
            api_id: Some(api_id),
            ..Self::subject_vars(ctx)
        };
        // A body that does not render is not equal to anything; the update
        // itself will say why.
        match self.config.templates.render_body(body, &vars.context()) {
            Ok(rendered) => mapping::in_step(&rendered, item, op.compare.as_deref()),
            Err(_) => false,
        }
    }

    fn subject_vars<'a>(ctx: &'a SubjectContext) -> Vars<'a> {
        Vars {
            subject: Some(&ctx.subject),
            match_value: Some(&ctx.match_value),
            attributes: Some(&ctx.attributes),
            actor: ctx.actor.as_deref(),
            ..Vars::default()
        }
    }

    /// What a membership operation sees: the account, the group and the subject.
    fn member_vars<'a>(
        group: &'a RemoteGroup,
        api_id: &'a str,
        ctx: &'a SubjectContext,
    ) -> Vars<'a> {
        Vars {
            api_id: Some(api_id),
            group: Some(&group.name),
            group_id: Some(&group.api_id),
            ..Self::subject_vars(ctx)
        }
    }
}

fn classify(op: &Operation, resp: HttpResponse) -> TargetResult<Answer> {
    if op.ok.contains(&resp.status) {
        Ok(Answer::Ok(resp))
    } else if op.absent.contains(&resp.status) {
        Ok(Answer::Absent)
    } else if op.exists.contains(&resp.status) {
        Ok(Answer::Exists)
    } else {
        Err(resp.error(op.name))
    }
}

// Validation allows `absent` and `exists` only where they mean something, so
// this is a configuration/adapter mismatch rather than a target answer.
fn unexpected(op: &Operation) -> TargetError {
    TargetError::permanent(format!("{}: status list not applicable here", op.name))
}

/// The answer of a removal (`accounts.deprovision`, `groups.remove_member`).
fn removal(op: &Operation, answer: Answer) -> TargetResult<Removal> {
    match answer {
        Answer::Ok(_) => Ok(Removal::Removed),
        Answer::Absent => Ok(Removal::Absent),
        Answer::Exists => Err(unexpected(op)),
    }
}

/// The API ID in a create's answer, when the operation says where (`id`).
fn created_id(op: &Operation, resp: &HttpResponse) -> TargetResult<Option<ApiId>> {
    match op.id.as_deref() {
        Some(p) => Ok(mapping::pointer_text(&resp.json(op.name)?, p)),
        None => Ok(None),
    }
}

fn missing(op: &Operation, what: &str, pointer: &str) -> TargetError {
    TargetError::permanent(format!(
        "{}: the response has no {what} at `{pointer}`",
        op.name
    ))
}

#[async_trait]
impl TargetApi for RestTarget {
    fn match_value(&self, subject: &str, attributes: &Attributes) -> TargetResult<String> {
        let vars = Vars {
            subject: Some(subject),
            attributes: Some(attributes),
            ..Vars::default()
        };
        let value = self
            .config
            .templates
            .render(&self.config.match_template, &vars.context())
            .map_err(|e| TargetError::permanent(format!("rest.match: {e}")))?;
        let value = value.trim();
        if value.is_empty() {
            // An empty match value would match nothing, or everything.
            return Err(TargetError::permanent(format!(
                "rest.match gives an empty match value for `{subject}` (missing attribute?)"
            )));
        }
        Ok(value.to_string())
    }

    async fn lookup_account(&self, ctx: &SubjectContext) -> TargetResult<Option<Found>> {
        let op = self.op(&self.config.accounts.lookup, "accounts.lookup")?;
        let resp = match self.call(op, &Self::subject_vars(ctx)).await? {
            Answer::Ok(r) => r,
            Answer::Absent => return Ok(None),
            Answer::Exists => return Err(unexpected(op)),
        };
        let json = resp.json(op.name)?;
        let id = op.id.as_deref().unwrap_or_default();
        let found = |item: &Json, api_id: String| Found {
            in_step: self.in_step(item, &api_id, ctx),
            api_id,
        };
        let Some(items_pointer) = op.items.as_deref() else {
            return mapping::pointer_text(&json, id)
                .map(|api_id| Some(found(&json, api_id)))
                .ok_or_else(|| missing(op, "ID", id));
        };
        // A search: the items matching the subject, or all of them when the
        // search itself is exact.
        let items = mapping::items(&json, items_pointer)
            .map_err(|e| TargetError::permanent(format!("{}: {e}", op.name)))?;
        let wanted = ctx.match_value.to_lowercase();
        let mut matches: Vec<(String, &Json)> = Vec::new();
        for item in items {
            if let Some(m) = op.match_pointer.as_deref() {
                let found = mapping::pointer_text(item, m).map(|v| v.to_lowercase());
                if found.as_deref() != Some(wanted.as_str()) {
                    continue;
                }
            }
            match mapping::pointer_text(item, id) {
                Some(i) if !matches.iter().any(|(seen, _)| *seen == i) => matches.push((i, item)),
                Some(_) => {}
                None => tracing::warn!(operation = op.name, "search result has no ID; skipped"),
            }
        }
        match matches.len() {
            0 => Ok(None),
            1 => Ok(matches.pop().map(|(api_id, item)| found(item, api_id))),
            n => Err(TargetError::permanent(format!(
                "{}: {n} accounts match `{}`",
                op.name, ctx.match_value
            ))),
        }
    }

    async fn create_account(&self, ctx: &SubjectContext) -> TargetResult<Created> {
        let op = self.op(&self.config.accounts.create, "accounts.create")?;
        match self.call(op, &Self::subject_vars(ctx)).await? {
            // Without an ID in the answer the engine looks the account up.
            Answer::Ok(resp) => Ok(Created::New(created_id(op, &resp)?)),
            Answer::Exists => Ok(Created::AlreadyExists),
            Answer::Absent => Err(unexpected(op)),
        }
    }

    async fn update_account(&self, api_id: &str, ctx: &SubjectContext) -> TargetResult<()> {
        let op = self.op(&self.config.accounts.update, "accounts.update")?;
        let vars = Vars {
            api_id: Some(api_id),
            ..Self::subject_vars(ctx)
        };
        match self.call(op, &vars).await? {
            Answer::Ok(_) => Ok(()),
            Answer::Absent | Answer::Exists => Err(unexpected(op)),
        }
    }

    async fn deprovision_account(
        &self,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<Removal> {
        let op = self.op(&self.config.accounts.deprovision, "accounts.deprovision")?;
        let vars = Vars {
            api_id: Some(api_id),
            ..Self::subject_vars(ctx)
        };
        removal(op, self.call(op, &vars).await?)
    }

    async fn list_accounts(
        &self,
        desired: Option<Desired<'_>>,
    ) -> TargetResult<Vec<RemoteAccount>> {
        let op = self.op(&self.config.accounts.list, "accounts.list")?;
        self.list_accounts_of(op, &Vars::default(), desired).await
    }

    async fn list_groups(&self) -> TargetResult<Vec<RemoteGroup>> {
        let op = self.op(&self.config.groups.list, "groups.list")?;
        let (id, name) = (
            op.id.as_deref().unwrap_or_default(),
            op.name_pointer.as_deref().unwrap_or_default(),
        );
        let mut groups = Vec::new();
        self.for_each_item(op, &Vars::default(), &mut |index, item| {
            groups.extend(mapping::group(op.name, index, item, id, name));
        })
        .await?;
        Ok(groups)
    }

    async fn create_group(&self, name: &str) -> TargetResult<Option<ApiId>> {
        let Some(op) = &self.config.groups.create else {
            return Ok(None);
        };
        let vars = Vars {
            group: Some(name),
            ..Vars::default()
        };
        let id = match self.call(op, &vars).await? {
            Answer::Ok(resp) => created_id(op, &resp)?,
            Answer::Exists => None,
            Answer::Absent => return Err(unexpected(op)),
        };
        if id.is_some() {
            return Ok(id);
        }
        // Created (or already there) but unnamed in the answer: read it back.
        let found = self
            .list_groups()
            .await?
            .into_iter()
            .find(|g| g.name == name)
            .map(|g| g.api_id);
        match found {
            Some(id) => Ok(Some(id)),
            None => Err(TargetError::transient(format!(
                "{}: group `{name}` was created but is not listed yet",
                op.name
            ))),
        }
    }

    async fn list_members(&self, group_id: &str) -> TargetResult<Vec<RemoteAccount>> {
        let op = self.op(&self.config.groups.members, "groups.members")?;
        let vars = Vars {
            group_id: Some(group_id),
            ..Vars::default()
        };
        self.list_accounts_of(op, &vars, None).await
    }

    async fn add_member(
        &self,
        group: &RemoteGroup,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<()> {
        let op = self.op(&self.config.groups.add_member, "groups.add_member")?;
        let vars = Self::member_vars(group, api_id, ctx);
        match self.call(op, &vars).await? {
            Answer::Ok(_) | Answer::Exists => Ok(()),
            Answer::Absent => Err(unexpected(op)),
        }
    }

    async fn remove_member(
        &self,
        group: &RemoteGroup,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<Removal> {
        let op = self.op(&self.config.groups.remove_member, "groups.remove_member")?;
        let vars = Self::member_vars(group, api_id, ctx);
        removal(op, self.call(op, &vars).await?)
    }
}

#[cfg(test)]
mod tests;
