//! The one place that maps errors to HTTP statuses.

use crate::actors::SendError;
use crate::core::decide::Rejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered to an HTTP caller: a status, a stable machine-readable
/// code and a human message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }
}

impl From<SendError> for ApiError {
    fn from(err: SendError) -> Self {
        let message = err.to_string();
        match err {
            SendError::Busy { retry_after } => ApiError {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
            },
            SendError::Quarantined => ApiError::new(StatusCode::CONFLICT, "quarantined", message),
            SendError::Fenced | SendError::Stopped | SendError::Unavailable(_) => {
                ApiError::unavailable(message)
            }
            SendError::Rejected(Rejection::NotFound) => ApiError::not_found(message),
            SendError::Rejected(Rejection::Invalid(_)) => ApiError::bad_request(message),
            SendError::Rejected(_) => ApiError::new(StatusCode::CONFLICT, "rejected", message),
            SendError::BadData(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_data", message)
            }
        }
    }
}

/// A JSON body axum could not take: too large (413, the route's body
/// limit), otherwise bad input (400).
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            _ => ApiError::bad_request(message),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        if err.is_retryable() {
            ApiError::unavailable(err.to_string())
        } else {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                err.to_string(),
            )
        }
    }
}

/// The error code of an error response, for middleware (webhook metrics)
/// that must not parse bodies.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.code, "message": self.message }));
        let mut response = (self.status, body).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
