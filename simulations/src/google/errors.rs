//! Google's error body: `{"error":{"code","message","errors":[{domain,reason,message,...}],"status"}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

pub struct GErr(pub ApiError);

impl From<ApiError> for GErr {
    fn from(e: ApiError) -> Self {
        GErr(e)
    }
}

fn grpc_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        410 => "NOT_FOUND",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// Default reason/domain/message Google uses for an injected status.
pub fn injected(code: u16, reason: Option<String>, retry_after: Option<f64>) -> ApiError {
    let (default_reason, domain, message) = match code {
        400 => ("badRequest", "global", "Bad Request"),
        401 => ("authError", "global", "Invalid Credentials"),
        403 | 429 => ("rateLimitExceeded", "usageLimits", "Rate Limit Exceeded"),
        404 => ("notFound", "global", "Not Found"),
        409 => ("conflict", "global", "Conflict"),
        410 => (
            "fullSyncRequired",
            "calendar",
            "Sync token is no longer valid, a full sync is required.",
        ),
        412 => ("conditionNotMet", "global", "Precondition Failed"),
        502 => ("badGateway", "global", "Bad Gateway"),
        503 => (
            "backendError",
            "global",
            "The service is currently unavailable.",
        ),
        _ => ("backendError", "global", "Backend Error"),
    };
    let reason = reason.unwrap_or_else(|| default_reason.to_string());
    let domain = match reason.as_str() {
        "userRateLimitExceeded" | "rateLimitExceeded" | "quotaExceeded" => "usageLimits",
        "timeRangeEmpty"
        | "fullSyncRequired"
        | "updatedMinTooLongAgo"
        | "forbiddenForNonOrganizer" => "calendar",
        _ => domain,
    };
    ApiError::new(code, &reason, message)
        .domain(domain)
        .retry_after(retry_after)
}

pub fn body(e: &ApiError) -> Value {
    let mut item = Map::new();
    item.insert("domain".into(), json!(e.domain));
    item.insert("reason".into(), json!(e.reason));
    item.insert("message".into(), json!(e.message));
    if let Some((lt, l)) = e.location.as_deref() {
        item.insert("locationType".into(), json!(lt));
        item.insert("location".into(), json!(l));
    }
    json!({ "error": { "code": e.status, "message": e.message, "errors": [Value::Object(item)],
                       "status": grpc_status(e.status) } })
}

impl IntoResponse for GErr {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(body(&self.0))).into_response();
        if let Some(secs) = self.0.retry_after {
            if let Ok(v) = HeaderValue::from_str(&format_secs(secs)) {
                resp.headers_mut().insert("Retry-After", v);
            }
        }
        resp
    }
}

/// `2.128` stays fractional, `1.0` becomes `1`.
pub fn format_secs(secs: f64) -> String {
    if secs.fract() == 0.0 {
        format!("{}", secs as i64)
    } else {
        format!("{secs}")
    }
}
