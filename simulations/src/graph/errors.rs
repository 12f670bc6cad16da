//! Graph's error body: `{"error":{"code","message","innerError":{"request-id","date"}}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::google::errors::format_secs;

pub struct MErr(pub ApiError);

impl From<ApiError> for MErr {
    fn from(e: ApiError) -> Self {
        MErr(e)
    }
}

/// Default code/message Graph uses for an injected status.
pub fn injected(code: u16, reason: Option<String>, retry_after: Option<f64>) -> ApiError {
    let (default_code, message) = match code {
        400 => ("BadRequest", "Bad request."),
        401 => ("InvalidAuthenticationToken", "Access token has expired or is not yet valid."),
        403 => ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
        404 => ("ErrorItemNotFound", "The specified object was not found in the store."),
        409 => ("ErrorIrresolvableConflict", "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item."),
        410 => ("SyncStateNotFound", "The sync state generation is not found; the sync state may have been deleted or expired."),
        412 => ("ErrorIrresolvableConflict", "The change key passed in the request does not match the current change key for the item."),
        429 => ("TooManyRequests", "Please retry again later."),
        500 => ("generalException", "An internal server error occurred."),
        504 => ("GatewayTimeout", "The gateway timed out."),
        _ => ("serviceNotAvailable", "The service is temporarily unavailable."),
    };
    let code_s = reason.unwrap_or_else(|| default_code.to_string());
    let message = if code_s == "ApplicationThrottled" {
        "Application is over its MailboxConcurrency limit."
    } else {
        message
    };
    ApiError::new(code, &code_s, message).retry_after(retry_after)
}

/// The 4-concurrent-requests-per-mailbox limit answer.
pub fn mailbox_concurrency() -> ApiError {
    injected(429, Some("ApplicationThrottled".into()), Some(1.0))
}

impl IntoResponse for MErr {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let now = crate::error::response_now()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let request_id = crate::error::next_request_id();
        let mut inner =
            json!({ "date": now, "request-id": request_id, "client-request-id": request_id });
        if e.status == 429 {
            inner["code"] = json!("429");
            inner["status"] = json!("429");
        }
        let mut resp = (
            status,
            Json(
                json!({ "error": { "code": e.reason, "message": e.message, "innerError": inner } }),
            ),
        )
            .into_response();
        if let Some(secs) = e.retry_after {
            if let Ok(v) = HeaderValue::from_str(&format_secs(secs)) {
                resp.headers_mut().insert("Retry-After", v);
            }
        }
        resp
    }
}
