//! `kind = "scim"`: a SCIM 2.0 service provider (RFC 7643 / RFC 7644), Users
//! and Groups under `url_prefix`. The wire format lives in [`mapping`] (pure
//! functions); this file sends the requests and reads the statuses. What a
//! status the operation did not expect means (transient or permanent) is
//! decided by [`TargetError::from_status`] through [`HttpResponse::error`].
//! docs/scim.md lists every request made.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use reqwest::Method;
use serde_json::Value;

use super::{
    ApiId, Created, Desired, Found, RemoteAccount, RemoteGroup, Removal, SubjectContext, TargetApi,
    TargetError, TargetResult,
};
use crate::event::Attributes;
use crate::http::{HttpClient, HttpRequest, HttpResponse};
use crate::template::TemplateRef;

pub mod config;
pub mod mapping;

use config::{Deprovision, MemberMatch, ScimConfig, UpdateMethod};
use mapping::{AttrPath, Paging};

const USERS: &str = "/Users";
const GROUPS: &str = "/Groups";

/// The SCIM adapter of one provisioner.
pub struct ScimTarget {
    config: ScimConfig,
    http: HttpClient,
}

/// What templates see (docs/scim.md). Values not known are undefined, which
/// renders as nothing rather than as `none`.
fn template_context(
    subject: &str,
    match_value: Option<&str>,
    attributes: &Attributes,
    actor: Option<&str>,
    user_name: Option<&str>,
) -> minijinja::Value {
    let opt = |v: Option<&str>| v.map_or(minijinja::Value::UNDEFINED, minijinja::Value::from);
    let mut ctx = BTreeMap::new();
    ctx.insert("subject", minijinja::Value::from(subject));
    ctx.insert("match", opt(match_value));
    ctx.insert("attributes", minijinja::Value::from_serialize(attributes));
    ctx.insert("actor", opt(actor));
    ctx.insert("user_name", opt(user_name));
    ctx.into_iter().collect()
}

fn permanent(operation: &str, problem: impl std::fmt::Display) -> TargetError {
    TargetError::permanent(format!("{operation}: {problem}"))
}

/// An answer's JSON for reading an id or a SCIM error out of it; a body that
/// is not JSON simply carries neither.
fn answer_json(resp: &HttpResponse, operation: &str) -> Value {
    resp.json(operation).unwrap_or(Value::Null)
}

/// The answer to a POST that creates a resource (a user, a group): created,
/// with its `id` when the answer names it, or already there
/// ([`mapping::is_uniqueness`]).
fn created(resp: &HttpResponse, operation: &str) -> TargetResult<Created> {
    let status = resp.status;
    if matches!(status, 200 | 201) {
        let id = mapping::resource_id(&answer_json(resp, operation));
        Ok(Created::New(id))
    } else if is_client_error(status)
        && mapping::is_uniqueness(status, &answer_json(resp, operation))
    {
        Ok(Created::AlreadyExists)
    } else {
        Err(resp.error(operation))
    }
}

fn is_client_error(status: u16) -> bool {
    (400..500).contains(&status)
}

/// `{collection}/{id}`. An empty, `.` or `..` id would address the
/// collection or its parent (URL parsers resolve even `%2E%2E`), so it is
/// refused rather than sent.
fn resource_path(collection: &str, api_id: &str) -> TargetResult<String> {
    if matches!(api_id, "" | "." | "..") {
        return Err(TargetError::permanent(format!(
            "scim: `{api_id}` is not a usable resource id"
        )));
    }
    Ok(format!("{collection}/{}", mapping::encode(api_id)))
}

fn user_path(api_id: &str) -> TargetResult<String> {
    resource_path(USERS, api_id)
}

fn group_path(api_id: &str) -> TargetResult<String> {
    resource_path(GROUPS, api_id)
}

impl ScimTarget {
    pub fn new(config: ScimConfig, http: HttpClient) -> Self {
        ScimTarget { config, http }
    }

    async fn send(
        &self,
        operation: &str,
        method: Method,
        path_and_query: String,
        body: Option<Value>,
        actor: Option<&str>,
    ) -> TargetResult<HttpResponse> {
        self.http
            .send(HttpRequest {
                operation: operation.to_string(),
                path_template: mapping::path_template(&path_and_query).into(),
                method,
                path_and_query,
                body,
                actor: actor.map(str::to_string),
                content_type: Some(mapping::CONTENT_TYPE),
                accept: Some(mapping::ACCEPT),
            })
            .await
    }

    /// One list response (RFC 7644 §3.4.2): a page of a listing or the
    /// answer of a filter.
    async fn get_list(
        &self,
        operation: &str,
        path_and_query: String,
        actor: Option<&str>,
    ) -> TargetResult<mapping::ListPage> {
        let resp = self
            .send(operation, Method::GET, path_and_query, None, actor)
            .await?;
        if resp.status != 200 {
            return Err(resp.error(operation));
        }
        mapping::parse_list(&resp.json(operation)?).map_err(|e| permanent(operation, e))
    }

    fn render(
        &self,
        key: &str,
        template: &TemplateRef,
        ctx: &minijinja::Value,
    ) -> TargetResult<String> {
        self.config
            .templates
            .render(template, ctx)
            .map(|s| s.trim().to_string())
            .map_err(|e| TargetError::permanent(format!("scim: template `{key}` failed: {e}")))
    }

    fn user_name(&self, ctx: &minijinja::Value, subject: &str) -> TargetResult<String> {
        let user_name = self.render("scim.user_name", &self.config.user_name, ctx)?;
        if user_name.is_empty() {
            return Err(TargetError::permanent(format!(
                "scim: `scim.user_name` renders empty for subject `{subject}`"
            )));
        }
        Ok(user_name)
    }

    /// The User resource for a subject: userName, mapped attributes, `active: true`.
    fn user_resource(&self, ctx: &SubjectContext) -> TargetResult<Value> {
        let (user_name, values) = self.user_values(ctx)?;
        mapping::build_user(&user_name, &values).map_err(|e| permanent("scim.accounts", e))
    }

    /// What a subject's User holds: its userName and the rendered value of
    /// each mapped path (empty when the subject has none).
    fn user_values(
        &self,
        ctx: &SubjectContext,
    ) -> TargetResult<(String, Vec<(&AttrPath, String)>)> {
        let tctx = template_context(
            &ctx.subject,
            Some(&ctx.match_value),
            &ctx.attributes,
            ctx.actor.as_deref(),
            None,
        );
        let user_name = self.user_name(&tctx, &ctx.subject)?;
        let tctx = template_context(
            &ctx.subject,
            Some(&ctx.match_value),
            &ctx.attributes,
            ctx.actor.as_deref(),
            Some(&user_name),
        );
        let mut values: Vec<(&AttrPath, String)> = Vec::with_capacity(self.config.attributes.len());
        for m in &self.config.attributes {
            values.push((&m.path, self.render(&m.key, &m.template, &tctx)?));
        }
        Ok((user_name, values))
    }

    /// Whether the update `ctx` would send changes nothing on `resource`, the
    /// User as the provider showed it. A subject whose values do not render
    /// is never in step: the update will say why.
    fn in_step(&self, resource: &Value, ctx: &SubjectContext) -> bool {
        let clears_empty = self.config.update_method == UpdateMethod::Put;
        self.user_values(ctx).is_ok_and(|(user_name, values)| {
            mapping::user_in_step(resource, &user_name, &values, clears_empty)
        })
    }

    /// The `attributes` an account listing asks for: the match attribute
    /// (and `active` with `deactivate`); to compare accounts, also what an
    /// update sets (userName, active and every mapped attribute).
    fn listed_attributes(&self, compare: bool) -> String {
        let mut names = vec![self.config.filter_attribute.clone()];
        if compare || self.config.deprovision == Deprovision::Deactivate {
            names.push("active".into());
        }
        if compare {
            names.push("userName".into());
            names.extend(self.config.attributes.iter().map(|m| m.path.attribute()));
        }
        let mut seen = HashSet::new();
        names.retain(|n| seen.insert(n.to_ascii_lowercase()));
        names.join(",")
    }

    /// A listed resource as an account, `None` when it lacks an id or the
    /// match attribute (such an account cannot be any subject's projection,
    /// so it is left alone).
    fn remote_account(&self, resource: &Value) -> Option<RemoteAccount> {
        let api_id = mapping::resource_id(resource)?;
        let match_value = mapping::attribute_value(resource, &self.config.filter_attribute)?;
        Some(RemoteAccount {
            api_id,
            match_value: match_value.to_lowercase(),
            in_step: false,
        })
    }

    /// Reads the next page of a collection into `paging`; `None` when done.
    async fn next_page(
        &self,
        operation: &str,
        collection: &str,
        attributes: Option<&str>,
        paging: &mut Paging,
    ) -> TargetResult<Option<Vec<Value>>> {
        let Some((start, count)) = paging.next() else {
            return Ok(None);
        };
        let (start, count) = (start.to_string(), count.to_string());
        let mut pairs = vec![("startIndex", start.as_str()), ("count", count.as_str())];
        if let Some(a) = attributes {
            pairs.push(("attributes", a));
        }
        let page = self
            .get_list(
                operation,
                format!("{collection}{}", mapping::query(&pairs)),
                None,
            )
            .await?;
        paging
            .accept(page)
            .map(Some)
            .map_err(|e| permanent(operation, e))
    }

    /// Hands every resource of a collection to `each`, page by page; no page
    /// is kept once read.
    async fn for_each_resource(
        &self,
        operation: &str,
        collection: &str,
        attributes: Option<&str>,
        each: &mut (dyn FnMut(&Value) + Send),
    ) -> TargetResult<()> {
        let mut paging = Paging::new(self.config.page_size);
        while let Some(page) = self
            .next_page(operation, collection, attributes, &mut paging)
            .await?
        {
            page.iter().for_each(&mut *each);
        }
        Ok(())
    }

    /// A group's API ID by its displayName, for a create that found it existing.
    async fn find_group(&self, name: &str) -> TargetResult<Option<ApiId>> {
        const OP: &str = "scim.groups.lookup";
        let filter = mapping::eq_filter("displayName", name);
        let query = mapping::query(&[("filter", &filter), ("attributes", "displayName")]);
        let page = self.get_list(OP, format!("{GROUPS}{query}"), None).await?;
        Ok(page
            .resources
            .iter()
            .filter(|g| mapping::attribute_value(g, "displayName").as_deref() == Some(name))
            .find_map(mapping::resource_id))
    }

    /// One user with only its match attribute; `None` when the provider has no such user.
    async fn fetch_user(&self, api_id: &str) -> TargetResult<Option<Value>> {
        const OP: &str = "scim.accounts.get";
        let resp = self
            .send(
                OP,
                Method::GET,
                format!(
                    "{}{}",
                    user_path(api_id)?,
                    mapping::query(&[("attributes", &self.config.filter_attribute)])
                ),
                None,
                None,
            )
            .await?;
        match resp.status {
            200 => resp.json(OP).map(Some),
            404 => Ok(None),
            _ => Err(resp.error(OP)),
        }
    }

    /// Finds the match values of members known only by id: by listing the
    /// users (one request per page) while that takes fewer requests than
    /// asking for the members one by one, then one by one.
    async fn resolve_members(
        &self,
        ids: Vec<String>,
        out: &mut Vec<RemoteAccount>,
    ) -> TargetResult<()> {
        const OP: &str = "scim.groups.members";
        let mut wanted: HashSet<String> = ids.iter().cloned().collect();
        let mut found: BTreeMap<String, String> = BTreeMap::new();
        let mut paging = Paging::new(self.config.page_size);
        let attributes = self.config.filter_attribute.clone();
        let mut listed_all = false;
        while !wanted.is_empty() {
            if paging
                .pages_left()
                .is_some_and(|left| (wanted.len() as u64) <= left)
            {
                break;
            }
            let Some(page) = self
                .next_page(OP, USERS, Some(&attributes), &mut paging)
                .await?
            else {
                listed_all = true;
                break;
            };
            for r in &page {
                if let Some(acc) = self.remote_account(r) {
                    if wanted.remove(&acc.api_id) {
                        found.insert(acc.api_id, acc.match_value);
                    }
                }
            }
            if paging.next().is_none() {
                listed_all = true;
            }
        }
        if listed_all && !wanted.is_empty() {
            // Members that the complete user listing does not hold are
            // dangling references or hidden accounts: leaving them out means
            // they are never removed, which is the safe side.
            tracing::warn!(
                count = wanted.len(),
                "scim: group members not found among the users; left alone"
            );
        } else {
            let mut rest: Vec<&String> = wanted.iter().collect();
            rest.sort();
            for id in rest {
                // A member without the match attribute is no subject's
                // account: left out, like in the listing.
                let user = self.fetch_user(id).await?;
                let attr = &self.config.filter_attribute;
                if let Some(value) = user.and_then(|u| mapping::attribute_value(&u, attr)) {
                    found.insert(id.clone(), value.to_lowercase());
                }
            }
        }
        for id in ids {
            if let Some(match_value) = found.remove(&id) {
                out.push(RemoteAccount {
                    api_id: id,
                    match_value,
                    in_step: false,
                });
            }
        }
        Ok(())
    }

    /// Adds members with one PATCH per batch. A provider that refuses a batch
    /// because one member is already there (409 / `uniqueness`) gets the batch
    /// member by member, so that the others still get in.
    async fn add_ids(
        &self,
        group: &RemoteGroup,
        ids: &[&str],
        actor: Option<&str>,
    ) -> TargetResult<()> {
        for batch in ids.chunks(self.config.member_batch_size) {
            if self.patch_members(group, batch, true, actor).await? == Patched::AlreadySo
                && batch.len() > 1
            {
                for id in batch {
                    self.patch_members(group, &[*id], true, actor).await?;
                }
            }
        }
        Ok(())
    }

    /// Removes members with one PATCH per batch (one `remove` operation per
    /// member). A member already gone (404 / `noTarget`) is not an error; a
    /// batch refused for that reason is retried member by member, so that the
    /// others still get out. [`Removal::Absent`] when every member was gone.
    async fn remove_ids(
        &self,
        group: &RemoteGroup,
        ids: &[&str],
        actor: Option<&str>,
    ) -> TargetResult<Removal> {
        let mut outcome = Removal::Absent;
        for batch in ids.chunks(self.config.member_batch_size) {
            let mut patched = self.patch_members(group, batch, false, actor).await?;
            if patched == Patched::AlreadySo && batch.len() > 1 {
                for id in batch {
                    if self.patch_members(group, &[*id], false, actor).await? == Patched::Done {
                        patched = Patched::Done;
                    }
                }
            }
            if patched == Patched::Done {
                outcome = Removal::Removed;
            }
        }
        Ok(outcome)
    }

    /// One PATCH adding or removing members. [`Patched::AlreadySo`] when the
    /// provider refused it because a member was already in (add) or already
    /// out (remove): for a batch of several, that says nothing of the others.
    async fn patch_members(
        &self,
        group: &RemoteGroup,
        ids: &[&str],
        add: bool,
        actor: Option<&str>,
    ) -> TargetResult<Patched> {
        let (op, body) = if add {
            ("scim.groups.add_members", mapping::add_members_body(ids))
        } else {
            (
                "scim.groups.remove_member",
                mapping::remove_members_body(ids),
            )
        };
        let resp = self
            .send(
                op,
                Method::PATCH,
                group_path(&group.api_id)?,
                Some(body),
                actor,
            )
            .await?;
        let status = resp.status;
        if matches!(status, 200 | 204) {
            return Ok(Patched::Done);
        }
        let done_already = is_client_error(status) && {
            let body = answer_json(&resp, op);
            if add {
                mapping::is_uniqueness(status, &body)
            } else {
                mapping::is_absent(status, &body)
            }
        };
        if done_already {
            Ok(Patched::AlreadySo)
        } else {
            Err(resp.error(op))
        }
    }
}

/// How a membership PATCH went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patched {
    Done,
    /// Refused because a member was already in (add) or out (remove).
    AlreadySo,
}

#[async_trait]
impl TargetApi for ScimTarget {
    fn match_value(&self, subject: &str, attributes: &Attributes) -> TargetResult<String> {
        let ctx = template_context(subject, None, attributes, None, None);
        let user_name = self.user_name(&ctx, subject)?;
        let value = match &self.config.match_template {
            None => user_name.to_lowercase(),
            Some(t) => {
                let ctx = template_context(subject, None, attributes, None, Some(&user_name));
                self.render("scim.match", t, &ctx)?
            }
        };
        if value.is_empty() {
            return Err(TargetError::permanent(format!(
                "scim: the match value of subject `{subject}` renders empty (see `scim.match`)"
            )));
        }
        Ok(value)
    }

    async fn lookup_account(&self, ctx: &SubjectContext) -> TargetResult<Option<Found>> {
        const OP: &str = "scim.accounts.lookup";
        if ctx.match_value.is_empty() {
            return Err(permanent(OP, "empty match value"));
        }
        let attr = &self.config.filter_attribute;
        let filter = mapping::eq_filter(attr, &ctx.match_value);
        let page = self
            .get_list(
                OP,
                format!("{USERS}{}", mapping::query(&[("filter", &filter)])),
                ctx.actor.as_deref(),
            )
            .await?;
        // A provider that ignored the filter must not make another account
        // this subject's: what the answer shows has to match.
        let wanted = ctx.match_value.to_lowercase();
        let matching: Vec<&Value> = page
            .resources
            .iter()
            .filter(|r| {
                let values = mapping::attribute_values(r, attr);
                values.is_empty() || values.iter().any(|v| v.to_lowercase() == wanted)
            })
            .collect();
        match matching.as_slice() {
            [] => Ok(None),
            [one] => mapping::resource_id(one)
                .map(|api_id| {
                    Some(Found {
                        api_id,
                        in_step: self.in_step(one, ctx),
                    })
                })
                .ok_or_else(|| permanent(OP, "the matching account has no `id`")),
            many => Err(permanent(
                OP,
                format!(
                    "{} accounts have {attr} `{}`; refusing to pick one",
                    many.len(),
                    ctx.match_value
                ),
            )),
        }
    }

    async fn create_account(&self, ctx: &SubjectContext) -> TargetResult<Created> {
        const OP: &str = "scim.accounts.create";
        let resource = self.user_resource(ctx)?;
        let resp = self
            .send(
                OP,
                Method::POST,
                USERS.to_string(),
                Some(resource),
                ctx.actor.as_deref(),
            )
            .await?;
        created(&resp, OP)
    }

    async fn update_account(&self, api_id: &str, ctx: &SubjectContext) -> TargetResult<()> {
        const OP: &str = "scim.accounts.update";
        let mut resource = self.user_resource(ctx)?;
        let (method, body) = match self.config.update_method {
            UpdateMethod::Patch => (
                Method::PATCH,
                mapping::patch_body(mapping::replace_ops(&resource)),
            ),
            UpdateMethod::Put => {
                if let Value::Object(obj) = &mut resource {
                    obj.insert("id".into(), Value::String(api_id.to_string()));
                }
                (Method::PUT, resource)
            }
        };
        let resp = self
            .send(
                OP,
                method,
                user_path(api_id)?,
                Some(body),
                ctx.actor.as_deref(),
            )
            .await?;
        match resp.status {
            200 | 204 => Ok(()),
            _ => Err(resp.error(OP)),
        }
    }

    async fn deprovision_account(
        &self,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<Removal> {
        const OP: &str = "scim.accounts.deprovision";
        let (method, body) = match self.config.deprovision {
            Deprovision::Delete => (Method::DELETE, None),
            Deprovision::Deactivate => (Method::PATCH, Some(mapping::deactivate_body())),
        };
        let resp = self
            .send(OP, method, user_path(api_id)?, body, ctx.actor.as_deref())
            .await?;
        match resp.status {
            200 | 204 => Ok(Removal::Removed),
            404 => Ok(Removal::Absent),
            _ => Err(resp.error(OP)),
        }
    }

    async fn list_accounts(
        &self,
        desired: Option<Desired<'_>>,
    ) -> TargetResult<Vec<RemoteAccount>> {
        const OP: &str = "scim.accounts.list";
        let deactivating = self.config.deprovision == Deprovision::Deactivate;
        let attributes = self.listed_attributes(desired.is_some());
        let mut accounts = Vec::new();
        self.for_each_resource(OP, USERS, Some(&attributes), &mut |r| {
            // With `deactivate`, an inactive account is already deprovisioned:
            // listing it would have every account sync deactivate it again.
            if deactivating && !mapping::is_active(r) {
                return;
            }
            let Some(mut account) = self.remote_account(r) else {
                return;
            };
            if let Some(ctx) = desired.and_then(|d| d(&account.match_value)) {
                account.in_step = self.in_step(r, &ctx);
            }
            accounts.push(account);
        })
        .await?;
        Ok(accounts)
    }

    async fn list_groups(&self) -> TargetResult<Vec<RemoteGroup>> {
        const OP: &str = "scim.groups.list";
        let mut groups = Vec::new();
        self.for_each_resource(OP, GROUPS, Some("displayName"), &mut |g| {
            if let (Some(name), Some(api_id)) = (
                mapping::attribute_value(g, "displayName"),
                mapping::resource_id(g),
            ) {
                groups.push(RemoteGroup { name, api_id });
            }
        })
        .await?;
        Ok(groups)
    }

    async fn create_group(&self, name: &str) -> TargetResult<Option<ApiId>> {
        const OP: &str = "scim.groups.create";
        if !self.config.create_missing_groups {
            return Ok(None);
        }
        let resp = self
            .send(
                OP,
                Method::POST,
                GROUPS.to_string(),
                Some(mapping::group_body(name)),
                None,
            )
            .await?;
        let created = match created(&resp, OP)? {
            Created::New(id) => id,
            Created::AlreadyExists => None,
        };
        match created {
            Some(id) => Ok(Some(id)),
            None => match self.find_group(name).await? {
                Some(id) => Ok(Some(id)),
                None => Err(permanent(
                    OP,
                    format!("group `{name}` was created or exists, but a look-up by displayName finds nothing"),
                )),
            },
        }
    }

    async fn list_members(&self, group_id: &str) -> TargetResult<Vec<RemoteAccount>> {
        const OP: &str = "scim.groups.members";
        let resp = self
            .send(OP, Method::GET, group_path(group_id)?, None, None)
            .await?;
        if resp.status != 200 {
            return Err(resp.error(OP));
        }
        let members = mapping::parse_members(&resp.json(OP)?);
        let mut out = Vec::with_capacity(members.len());
        let mut unresolved = Vec::new();
        for m in members {
            match (self.config.member_match, m.display) {
                (MemberMatch::Display, Some(display)) => out.push(RemoteAccount {
                    api_id: m.value,
                    match_value: display.to_lowercase(),
                    in_step: false,
                }),
                _ => unresolved.push(m.value),
            }
        }
        self.resolve_members(unresolved, &mut out).await?;
        Ok(out)
    }

    async fn add_member(
        &self,
        group: &RemoteGroup,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<()> {
        self.add_ids(group, &[api_id], ctx.actor.as_deref()).await
    }

    /// Removes several members in batches.
    async fn remove_members(
        &self,
        group: &RemoteGroup,
        members: &[(ApiId, SubjectContext)],
    ) -> TargetResult<Removal> {
        let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
        let actor = members.first().and_then(|(_, c)| c.actor.as_deref());
        self.remove_ids(group, &ids, actor).await
    }

    fn member_batch_size(&self) -> usize {
        self.config.member_batch_size
    }

    async fn add_members(
        &self,
        group: &RemoteGroup,
        members: &[(ApiId, SubjectContext)],
    ) -> TargetResult<()> {
        let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
        let actor = members.first().and_then(|(_, c)| c.actor.as_deref());
        self.add_ids(group, &ids, actor).await
    }

    async fn remove_member(
        &self,
        group: &RemoteGroup,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<Removal> {
        self.remove_ids(group, &[api_id], ctx.actor.as_deref())
            .await
    }
}

#[cfg(test)]
mod tests;
