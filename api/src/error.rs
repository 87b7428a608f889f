//! The one error type of the HTTP edge, turned into a JSON response in one place.
//!
//! Every handler and extractor returns [`AppError`]; its variants name what the client did or
//! what failed, and [`IntoResponse`] maps each to a status and `{"error": …, "message": …}`.
//! Internal causes (a DynamoDB error, a corrupt item) are logged here and never sent out.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::store::StoreError;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the body or a path parameter is malformed or fails validation.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no bearer token, or one that does not verify. The message is fixed per reason and
    /// never echoes the token.
    #[error("{0}")]
    Unauthorized(AuthError),
    /// 403: authenticated, but not allowed (inactive user, not an admin).
    #[error("{0}")]
    Forbidden(String),
    /// 404: the profile or role does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409: the write conflicts with what is stored (role exists, system role deletion).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body exceeds the configured limit.
    #[error("request body is larger than the limit")]
    PayloadTooLarge,
    /// 408: the request ran longer than `REQUEST_TIMEOUT_SECS` and was abandoned.
    #[error("request took longer than the timeout")]
    Timeout,
    /// 503: a dependency (DynamoDB) is unavailable; the client may retry.
    #[error("a dependency is unavailable")]
    Unavailable(#[source] StoreError),
    /// 500: an item this request needs does not fit the data model (written by hand or by a
    /// script). It fails only the requests that need that item, and says which attribute is at
    /// fault so the operator can repair it; the item's values are not echoed.
    #[error("{0}")]
    CorruptItem(String),
    /// 500: a bug; details are in the logs.
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl AppError {
    /// The status this error is answered with.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::CorruptItem(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the `error` field.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Timeout => "timeout",
            Self::Unavailable(_) => "unavailable",
            Self::CorruptItem(_) => "corrupt_item",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(message) => Self::Conflict(message),
            StoreError::NotFound(message) => Self::NotFound(message),
            StoreError::Invalid(message) => Self::BadRequest(message),
            err @ StoreError::Unavailable(_) => Self::Unavailable(err),
            StoreError::Corrupt { key, detail } => Self::CorruptItem(format!(
                "the stored item {key} does not fit the data model ({}); an operator must repair it",
                attribute_of(&detail)
            )),
        }
    }
}

/// The ``attribute `x` `` part of a corrupt item's detail, without the value that follows it.
fn attribute_of(detail: &str) -> &str {
    detail
        .split_once(':')
        .map_or("an attribute is malformed", |(attribute, _)| attribute)
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        // axum answers a body over the limit through the same rejection; everything else about a
        // JSON body (syntax, wrong types, missing content type) is the client's 400.
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge
        } else {
            Self::BadRequest(rejection.body_text())
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            Self::Unavailable(source) | Self::Internal(source) => {
                tracing::error!(error = %source, status = self.status().as_u16(), "request failed");
            }
            // Logged (with the value) and counted once per change where it was read.
            Self::CorruptItem(_) => {}
            _ => {}
        }
        let body = Json(json!({"error": self.code(), "message": self.to_string()}));
        (self.status(), body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_causes_are_not_sent_to_the_client() {
        let response = AppError::Internal(StoreError::Unavailable("secret detail".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 1024).await.expect("body");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("secret detail"), "{text}");
        assert!(text.contains(r#""error":"internal""#), "{text}");
    }

    #[tokio::test]
    async fn a_corrupt_item_names_its_key_and_attribute_but_not_its_value() {
        let response = AppError::from(StoreError::Corrupt {
            key: "USER#u-1".into(),
            detail: "attribute `status`: unknown variant `secret`, expected one of `active`".into(),
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 1024).await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body["error"], "corrupt_item");
        let message = body["message"].as_str().expect("message");
        assert!(
            message.contains("USER#u-1") && message.contains("`status`"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }
}
