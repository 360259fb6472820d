//! The OpenAPI 3 document of the admin API, generated from the handlers'
//! annotations (utoipa), served at `/v1/openapi.json`.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::broker::QueueDepth;
use super::routes::{self, *};
use super::ApiError;
use crate::explain::{
    Account, AccountState, Explanation, History, HistoryEvent, Membership, MembershipState,
    OwnedMembership, Ownership, Plan, PlanStatus,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "provisioner admin API",
        description = "State, control, outcome journal and dead letters of a provisioner worker. Reads need the `read` role, changes the `operate` role; /healthz and /readyz need none."
    ),
    paths(
        routes::healthz,
        routes::readyz,
        routes::metrics,
        routes::list_provisioners,
        routes::get_provisioner,
        routes::pause,
        routes::resume,
        routes::clear_cache,
        routes::explain_subject,
        routes::events,
        routes::dead_letters,
        routes::requeue,
        routes::config,
        serve,
    ),
    components(schemas(
        ApiError, Health, Readiness, ProvisionerView, TargetView, PacingView, MinuteRateView, QueueDepth,
        PauseView, Cleared, EventsPage, EventView, CallView, DeadLettersView, RequeueRequest,
        Requeued, Explanation, History, HistoryEvent, Account, AccountState, Membership, Ownership, OwnedMembership,
        MembershipState, Plan, PlanStatus
    )),
    modifiers(&Credentials),
    security(("bearer" = []), ("basic" = []))
)]
struct ApiDoc;

struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "config",
    responses((status = 200, description = "OpenAPI 3", body = Object)))]
pub(super) async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(document())
}
