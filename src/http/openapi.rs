//! The OpenAPI 3.1 description of every route, derived with utoipa from
//! the handlers' own request types (each module's `ApiDoc`, merged here);
//! served at `/openapi.json` and written by `calsync openapi`.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error answer: a stable machine-readable code and a message.
///
/// Codes: `bad_request` (400), `unauthorized` (401: missing, unknown or
/// revoked token), `insufficient_scope` (403: the token lacks the path's
/// scope), `admin_disabled` (403: no token can open the API),
/// `drills_disabled` (403), `not_found` (404), `quarantined` (409),
/// `rejected` (409), `payload_too_large` (413), `bad_data` (422),
/// `internal` (500), `unavailable` and `busy` (503, with `Retry-After`),
/// and the settings gates' refusals (403: `provider_not_allowed`,
/// `connection_not_allowed`, `sync_disabled`, …).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "unauthorized", "message": "missing, unknown or revoked token"}))]
pub struct ErrorBody {
    /// The stable code (see above).
    pub error: String,
    /// For people.
    pub message: String,
}

/// The error answers every authenticated route may give.
#[derive(utoipa::IntoResponses)]
pub enum AuthErrors {
    /// `bad_request`: malformed path, query or body.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `unauthorized`: missing, unknown or revoked token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `insufficient_scope` or `admin_disabled`.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// `unavailable` or `busy`: retry after `Retry-After` seconds.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "calsync",
        description = "Event-sourced calendar sync for booking platforms. `/v1/*` needs a \
                       token with the `platform` scope, `/admin/*` the `admin` scope, \
                       `/admin/drill/*` the `drills` scope (`calsync tokens create`).",
    ),
    paths(openapi_json),
    components(schemas(ErrorBody)),
    modifiers(&Security),
)]
struct BaseDoc;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = BaseDoc::openapi();
    for part in [
        super::health::ApiDoc::openapi(),
        super::metrics::ApiDoc::openapi(),
        super::webhooks::ApiDoc::openapi(),
        super::platform::ApiDoc::openapi(),
        super::connect::ApiDoc::openapi(),
        super::admin::ApiDoc::openapi(),
        super::settings::ApiDoc::openapi(),
        super::explain::ApiDoc::openapi(),
        super::changes::ApiDoc::openapi(),
        super::subscriptions::ApiDoc::openapi(),
    ] {
        doc.merge(part);
    }
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The document as pretty JSON (`calsync openapi`).
pub fn document_json() -> String {
    document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/openapi.json", get(openapi_json))
}
