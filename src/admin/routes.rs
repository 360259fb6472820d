//! The endpoints. Every answer is JSON (but `/metrics`, Prometheus text);
//! every error is an [`ApiError`] with its status.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::broker::QueueDepth;
use super::{ApiError, Shared};
use crate::amqp::dead_letters::{list_parked, requeue_parked, ParkedEvent, RequeueOptions};
use crate::amqp::Topology;
use crate::engine::health::TargetState;
use crate::explain::{
    explain, parse_attributes, ExplainError, Explanation, Request as ExplainRequest,
};
use crate::journal::{EventResult, Filter, PageRequest, StoredEntry};
use crate::worker::status::{rfc3339, ConsumerState, MinuteRate, ProvisionerStatus};

pub fn router(_: Shared) -> Router<Shared> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/provisioners", get(list_provisioners))
        .route("/v1/provisioners/{name}", get(get_provisioner))
        .route("/v1/provisioners/{name}/pause", post(pause))
        .route("/v1/provisioners/{name}/resume", post(resume))
        .route("/v1/provisioners/{name}/cache/clear", post(clear_cache))
        .route(
            "/v1/provisioners/{name}/subjects/{subject}",
            get(explain_subject),
        )
        .route("/v1/events", get(events))
        .route("/v1/dead-letters/{name}", get(dead_letters))
        .route("/v1/dead-letters/{name}/requeue", post(requeue))
        .route("/v1/config", get(config))
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint (see /v1/openapi.json)",
    )
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// ------------------------------------------------------------- probes

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves.
    status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "alive", body = Health)))]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: every provisioner consuming with its target answering.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    ready: bool,
    /// For each provisioner that is not ready, why not.
    not_ready: BTreeMap<String, Vec<String>>,
}

/// Every provisioner connected, consuming and with its target answering;
/// or why not (paused, broker down, target down since when).
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses((status = 200, description = "ready", body = Readiness),
              (status = 503, description = "not ready, with the reasons", body = Readiness)))]
pub(super) async fn readyz(State(s): State<Shared>) -> Response {
    let not_ready: BTreeMap<String, Vec<String>> = s
        .state
        .statuses
        .iter()
        .filter_map(|p| {
            let why = p.not_ready();
            (!why.is_empty()).then(|| (p.name().to_string(), why))
        })
        .collect();
    let ready = not_ready.is_empty();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(Readiness { ready, not_ready })).into_response()
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub(super) async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.state.metrics.render(),
    )
        .into_response()
}

// ------------------------------------------------------- provisioners

/// A provisioner's target as the worker sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetView {
    up: bool,
    /// When it went down (RFC 3339), while it is down.
    down_since: Option<String>,
    /// Why, and the last probe's answer.
    reason: Option<String>,
}

/// One provisioner's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProvisionerView {
    name: String,
    /// `consuming`, `paused`, `target_down`, `broker_down`, `connecting` or `stopped`.
    state: &'static str,
    paused: bool,
    target: TargetView,
    /// Each consumed queue's consumer.
    #[schema(value_type = Object)]
    consumers: BTreeMap<String, ConsumerState>,
    /// The consumed queues and the dead-letter queue, as the broker counts
    /// them; absent when the broker cannot be asked.
    pub(super) queues: Option<Vec<QueueDepth>>,
    /// Why the broker could not be asked.
    queues_error: Option<String>,
    in_flight: usize,
    /// When the last event was applied (RFC 3339).
    last_success: Option<String>,
    /// Events settled over the last 5 minutes, per minute.
    events_per_minute: f64,
    /// Share of the last hour's settled events that were dead-lettered.
    error_rate: f64,
    /// Events per minute over the last hour, oldest first (detail view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    per_minute: Option<Vec<MinuteRateView>>,
    /// Adaptive pacing now; absent when `[pacing] adaptive = false`.
    pacing: Option<PacingView>,
}

/// What adaptive pacing allows now.
#[derive(Debug, Serialize, ToSchema)]
pub struct PacingView {
    /// Calls per second; null while nothing paces the calls (no rate limit
    /// configured and no throttling seen).
    rate: Option<f64>,
    /// Events each consumer applies at once.
    concurrency: usize,
    /// Calls the target throttled (429, or `Retry-After`) since the start.
    throttled: u64,
}

/// Events settled in one minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteRateView {
    minute: String,
    applied: u64,
    ignored: u64,
    dead_lettered: u64,
    returned: u64,
    /// Acknowledged with a later event of their subject (coalesced into it).
    coalesced: u64,
}

fn state_of(p: &ProvisionerStatus) -> &'static str {
    let consumers = p.consumers();
    if p.is_paused() {
        "paused"
    } else if !p.health().is_up() {
        "target_down"
    } else if consumers
        .values()
        .any(|c| matches!(c, ConsumerState::BrokerDown { .. }))
    {
        "broker_down"
    } else if consumers.values().all(|c| *c == ConsumerState::Stopped) {
        "stopped"
    } else if consumers
        .values()
        .any(|c| matches!(c, ConsumerState::Connecting))
    {
        "connecting"
    } else {
        "consuming"
    }
}

/// One provisioner's state, as `/v1/provisioners` and the console show it.
pub(super) async fn view(s: &Shared, p: &ProvisionerStatus, detail: bool) -> ProvisionerView {
    let config = s
        .state
        .config
        .provisioners
        .iter()
        .find(|c| c.name == p.name());
    let (queues, queues_error) = match config {
        Some(c) => {
            let topology = Topology::of(c, &s.state.config.amqp);
            let mut names = topology.consumed();
            names.push(topology.dead_letter.clone());
            match s.broker.depths(&names).await {
                Ok(d) => (Some(d), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
        None => (None, None),
    };
    let target = match p.health().state() {
        TargetState::Up => TargetView {
            up: true,
            down_since: None,
            reason: None,
        },
        TargetState::Down { since, reason } => TargetView {
            up: false,
            down_since: Some(rfc3339(unix_ms(since))),
            reason: Some(reason),
        },
    };
    let minutes = p.per_minute();
    let last5: u64 = minutes
        .iter()
        .rev()
        .take(5)
        .map(|m| m.applied + m.ignored + m.dead_lettered + m.coalesced)
        .sum();
    let hour_total: u64 = minutes
        .iter()
        .map(|m| m.applied + m.ignored + m.dead_lettered + m.coalesced)
        .sum();
    let hour_dead: u64 = minutes.iter().map(|m| m.dead_lettered).sum();
    ProvisionerView {
        name: p.name().to_string(),
        state: state_of(p),
        paused: p.is_paused(),
        target,
        consumers: p.consumers(),
        queues,
        queues_error,
        in_flight: p.in_flight(),
        last_success: p.last_success_ms().map(rfc3339),
        events_per_minute: last5 as f64 / 5.0,
        error_rate: if hour_total == 0 {
            0.0
        } else {
            hour_dead as f64 / hour_total as f64
        },
        per_minute: detail.then(|| minutes.iter().map(minute_view).collect()),
        pacing: p.provisioner().pacing().map(|pace| {
            let now = pace.snapshot();
            PacingView {
                rate: now.rate,
                concurrency: now.concurrency,
                throttled: now.throttled,
            }
        }),
    }
}

fn minute_view(m: &MinuteRate) -> MinuteRateView {
    MinuteRateView {
        minute: rfc3339(m.minute_start_ms),
        applied: m.applied,
        ignored: m.ignored,
        dead_lettered: m.dead_lettered,
        returned: m.returned,
        coalesced: m.coalesced,
    }
}

/// Every provisioner's state.
#[utoipa::path(get, path = "/v1/provisioners", tag = "provisioners",
    responses((status = 200, body = [ProvisionerView]),
              (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn list_provisioners(State(s): State<Shared>) -> Json<Vec<ProvisionerView>> {
    let mut out = Vec::new();
    for p in &s.state.statuses {
        out.push(view(&s, p, false).await);
    }
    Json(out)
}

/// One provisioner's state, with its events per minute over the last hour.
#[utoipa::path(get, path = "/v1/provisioners/{name}", tag = "provisioners",
    params(("name" = String, Path, description = "the provisioner")),
    responses((status = 200, body = ProvisionerView), (status = 404, body = ApiError),
              (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn get_provisioner(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<ProvisionerView>, ApiError> {
    let p = s.status(&name)?;
    Ok(Json(view(&s, p, true).await))
}

/// A pause or resume.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseView {
    name: String,
    paused: bool,
    /// Whether this request changed anything.
    changed: bool,
}

/// Stops consuming: every held delivery goes back to the broker, new
/// messages stay there.
#[utoipa::path(post, path = "/v1/provisioners/{name}/pause", tag = "provisioners",
    params(("name" = String, Path, description = "the provisioner")),
    responses((status = 200, body = PauseView), (status = 404, body = ApiError),
              (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn pause(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<PauseView>, ApiError> {
    let p = s.status(&name)?;
    let changed = p.pause();
    Ok(Json(PauseView {
        name,
        paused: true,
        changed,
    }))
}

/// Consumes again.
#[utoipa::path(post, path = "/v1/provisioners/{name}/resume", tag = "provisioners",
    params(("name" = String, Path, description = "the provisioner")),
    responses((status = 200, body = PauseView), (status = 404, body = ApiError),
              (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn resume(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<PauseView>, ApiError> {
    let p = s.status(&name)?;
    let changed = p.resume();
    Ok(Json(PauseView {
        name,
        paused: false,
        changed,
    }))
}

/// Caches cleared.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    name: String,
    cleared: bool,
}

/// Forgets every cached account and group ID of the provisioner (after
/// changes made on the target by hand).
#[utoipa::path(post, path = "/v1/provisioners/{name}/cache/clear", tag = "provisioners",
    params(("name" = String, Path, description = "the provisioner")),
    responses((status = 200, body = Cleared), (status = 404, body = ApiError),
              (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn clear_cache(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Cleared>, ApiError> {
    let p = s.status(&name)?;
    p.provisioner().clear_caches();
    Ok(Json(Cleared {
        name,
        cleared: true,
    }))
}

// ------------------------------------------------------------- subjects

/// What to explain of a subject.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SubjectQuery {
    /// The attributes of the plan's synthetic `add` (the journal keeps
    /// none), as a JSON object of name → list of strings. Without them, a
    /// match value built from attributes is unknown and the plan has none.
    pub(super) attributes: Option<String>,
    /// The local group of the plan's `add`; the `provision_group` by default.
    pub(super) group: Option<String>,
    /// Journal events shown: 20 by default, at most 200.
    pub(super) limit: Option<u32>,
}

/// One subject explained: its recent events and outcomes from the
/// journal, its account on the target now (one look-up), its memberships
/// in the mapped target groups, and the plan an `add` would execute now.
/// Reads the target; never writes to it.
#[utoipa::path(get, path = "/v1/provisioners/{name}/subjects/{subject}", tag = "provisioners",
    params(("name" = String, Path, description = "the provisioner"),
           ("subject" = String, Path, description = "the local subject"), SubjectQuery),
    responses((status = 200, body = Explanation), (status = 400, body = ApiError),
              (status = 404, body = ApiError),
              (status = 500, description = "the provisioner's HTTP client cannot be built", body = ApiError),
              (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn explain_subject(
    State(s): State<Shared>,
    Path((name, subject)): Path<(String, String)>,
    Query(q): Query<SubjectQuery>,
) -> Result<Json<Explanation>, ApiError> {
    explained(&s, &name, subject, q).await.map(Json)
}

/// One subject of provisioner `name` explained, as the route and the
/// console's subject page show it.
pub(super) async fn explained(
    s: &Shared,
    name: &str,
    subject: String,
    q: SubjectQuery,
) -> Result<Explanation, ApiError> {
    s.status(name)?;
    let config = s
        .state
        .config
        .provisioners
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such provisioner"))?;
    let bad_request = |e: ExplainError| ApiError::new(StatusCode::BAD_REQUEST, e.to_string());
    let attributes = q
        .attributes
        .as_deref()
        .map(parse_attributes)
        .transpose()
        .map_err(bad_request)?;
    let explainer = (s.state.explainer)(config)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let request = ExplainRequest {
        subject,
        attributes,
        group: q.group,
        limit: q.limit,
    };
    explain(&explainer, s.state.journal.as_ref(), &request)
        .await
        .map_err(bad_request)
}

// -------------------------------------------------------------- events

/// Filters and paging of `/v1/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// This provisioner only.
    pub(super) provisioner: Option<String>,
    /// This subject only (case-insensitive).
    pub(super) subject: Option<String>,
    /// This group only.
    pub(super) group: Option<String>,
    /// `applied`, `ignored`, `dead-lettered`, `returned` or `coalesced`.
    pub(super) result: Option<String>,
    /// Settled at or after (RFC 3339).
    pub(super) from: Option<String>,
    /// Settled before (RFC 3339).
    pub(super) to: Option<String>,
    /// This event only.
    pub(super) event_id: Option<String>,
    /// The journal row with this id only (the `id` of an event).
    pub(super) id: Option<i64>,
    /// From the `next_cursor` of the previous page.
    pub(super) cursor: Option<String>,
    /// Rows per page: 100 by default, at most 1,000.
    pub(super) limit: Option<u32>,
}

/// One target call an event made.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallView {
    operation: String,
    method: String,
    /// The URL as configured, never the concrete one.
    path_template: String,
    /// None when no answer came.
    status: Option<u16>,
    duration_ms: u64,
}

/// One event's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// The journal's row id.
    id: i64,
    /// When it was settled (RFC 3339).
    at: String,
    pub(super) provisioner: String,
    event_id: String,
    action: Option<String>,
    group: Option<String>,
    subject: Option<String>,
    /// `applied`, `ignored`, `dead-lettered`, `returned` or `coalesced`.
    result: String,
    detail: String,
    attempts: u32,
    api_calls: u32,
    duration_ms: u64,
    redelivered: bool,
    /// Which worker process (`host:pid`).
    worker: String,
    calls: Vec<CallView>,
}

impl From<StoredEntry> for EventView {
    fn from(s: StoredEntry) -> Self {
        let e = s.entry;
        EventView {
            id: s.id,
            at: rfc3339(u64::try_from(e.at_ms).unwrap_or(0)),
            provisioner: e.provisioner,
            event_id: e.event_id,
            action: e.action,
            group: e.group,
            subject: e.subject,
            result: e.result.to_string(),
            detail: e.detail,
            attempts: e.attempts,
            api_calls: e.api_calls,
            duration_ms: e.duration_ms,
            redelivered: e.redelivered,
            worker: e.worker,
            calls: e
                .calls
                .into_iter()
                .map(|c| CallView {
                    operation: c.operation,
                    method: c.method,
                    path_template: c.path_template,
                    status: c.status,
                    duration_ms: c.duration_ms,
                })
                .collect(),
        }
    }
}

/// A page of outcomes, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    pub(super) events: Vec<EventView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub(super) next_cursor: Option<String>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(text) = value else { return Ok(None) };
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("`{name}` is not an RFC 3339 time (e.g. 2026-12-01T09:00:00Z)"),
            )
        })?;
    Ok(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
}

/// The outcome journal, filtered, newest first, with cursor paging.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventsPage), (status = 400, body = ApiError),
              (status = 503, description = "no journal configured, or its store fails", body = ApiError),
              (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn events(
    State(s): State<Shared>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    events_page(&s, q).await.map(Json)
}

/// A page of the journal: what `/v1/events` answers and the console shows.
pub(super) async fn events_page(s: &Shared, q: EventsQuery) -> Result<EventsPage, ApiError> {
    let Some(journal) = &s.state.journal else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no journal is kept: add a [journal] table to the worker file",
        ));
    };
    let result = match q.result.as_deref() {
        None => None,
        Some(r) => Some(r.parse::<EventResult>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "`result` is one of applied, ignored, dead-lettered, returned, coalesced",
            )
        })?),
    };
    let filter = Filter {
        provisioner: q.provisioner,
        subject: q.subject,
        group: q.group,
        result,
        from_ms: time_param("from", q.from.as_deref())?,
        to_ms: time_param("to", q.to.as_deref())?,
        event_id: q.event_id,
        id: q.id,
    };
    let page = journal
        .query(
            &filter,
            &PageRequest {
                cursor: q.cursor,
                limit: q.limit,
            },
        )
        .await
        .map_err(|e| match e {
            crate::journal::JournalError::BadCursor(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "`cursor` is not one this API gave")
            }
            other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
        })?;
    Ok(EventsPage {
        events: page.entries.into_iter().map(EventView::from).collect(),
        next_cursor: page.next_cursor,
    })
}

// --------------------------------------------------------- dead letters

/// Paging of a dead-letter listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersQuery {
    /// Letters shown at most (default 100).
    limit: Option<usize>,
}

/// A provisioner's parked events.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLettersView {
    provisioner: String,
    queue: String,
    #[schema(value_type = Vec<Object>)]
    pub(super) letters: Vec<ParkedEvent>,
}

fn topology_of(s: &Shared, name: &str) -> Result<Topology, ApiError> {
    s.status(name)?;
    let config = s
        .state
        .config
        .provisioners
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such provisioner"))?;
    Ok(Topology::of(config, &s.state.config.amqp))
}

/// The parked events (they stay parked).
#[utoipa::path(get, path = "/v1/dead-letters/{name}", tag = "dead letters",
    params(("name" = String, Path, description = "the provisioner"), DeadLettersQuery),
    responses((status = 200, body = DeadLettersView), (status = 404, body = ApiError),
              (status = 503, description = "the broker cannot be reached", body = ApiError),
              (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn dead_letters(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<DeadLettersQuery>,
) -> Result<Json<DeadLettersView>, ApiError> {
    parked(&s, name, q.limit.unwrap_or(100)).await.map(Json)
}

/// Up to `limit` of a provisioner's parked events: what
/// `/v1/dead-letters/{name}` answers and the console shows.
pub(super) async fn parked(
    s: &Shared,
    name: String,
    limit: usize,
) -> Result<DeadLettersView, ApiError> {
    let topology = topology_of(s, &name)?;
    let letters = list_parked(s.broker.amqp(), &topology.dead_letter, limit)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(DeadLettersView {
        provisioner: name,
        queue: topology.dead_letter,
        letters,
    })
}

/// Which letters to requeue.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RequeueRequest {
    /// Only the letter with this event id; all when absent.
    pub(super) event_id: Option<String>,
    /// At most this many.
    pub(super) limit: Option<usize>,
    /// Apply them past the mass-deprovision guard, once.
    pub(super) allow_removals: bool,
}

/// How many letters went back.
#[derive(Debug, Serialize, ToSchema)]
pub struct Requeued {
    pub(super) requeued: usize,
}

/// Sends parked events back to where the provisioner consumes them; each is
/// removed from the dead-letter queue only once the broker has routed it.
#[utoipa::path(post, path = "/v1/dead-letters/{name}/requeue", tag = "dead letters",
    params(("name" = String, Path, description = "the provisioner")),
    request_body(content = RequeueRequest, description = "empty for all", content_type = "application/json"),
    responses((status = 200, body = Requeued), (status = 404, body = ApiError),
              (status = 400, body = ApiError),
              (status = 503, description = "the broker cannot be reached", body = ApiError),
              (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn requeue(
    State(s): State<Shared>,
    Path(name): Path<String>,
    body: Option<Json<RequeueRequest>>,
) -> Result<Json<Requeued>, ApiError> {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    requeue_letters(&s, &name, request).await.map(Json)
}

/// Sends a provisioner's parked events back: what
/// `/v1/dead-letters/{name}/requeue` and the console's requeue do.
pub(super) async fn requeue_letters(
    s: &Shared,
    name: &str,
    request: RequeueRequest,
) -> Result<Requeued, ApiError> {
    let topology = topology_of(s, name)?;
    let options = RequeueOptions {
        limit: request.limit,
        event_id: request.event_id,
        allow_removals: request.allow_removals,
    };
    if options.allow_removals {
        tracing::warn!(provisioner = %name, event_id = ?options.event_id, "requeue with allow_removals requested through the admin API");
    }
    let requeued = requeue_parked(s.broker.amqp(), &topology, &options)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Requeued { requeued })
}

// --------------------------------------------------------------- config

/// The effective configuration, secrets redacted.
#[utoipa::path(get, path = "/v1/config", tag = "config",
    responses((status = 200, description = "the configuration", body = Object),
              (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn config(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(crate::config::describe::redacted(&s.state.config))
}
