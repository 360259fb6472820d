//! The vocabulary of target failures, shared by the adapters, the HTTP
//! client and the engine: what went wrong, and whether waiting can help.
//! A leaf: it depends on nothing else in the crate.

use std::time::Duration;

/// Whether a failure may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Connect error, timeout, 5xx, 429, 401 after re-authentication: retry later.
    Transient,
    /// Other 4xx, a response that does not fit the description, configuration
    /// mismatch: retrying cannot help.
    Permanent,
}

/// A failed call to a target. Messages never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    pub class: FailureClass,
    pub message: String,
    /// HTTP status, when the target answered.
    pub status: Option<u16>,
    /// The target's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl TargetError {
    pub fn permanent(message: impl Into<String>) -> Self {
        TargetError {
            class: FailureClass::Permanent,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        TargetError {
            class: FailureClass::Transient,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    /// The one place where an HTTP status becomes a failure class
    /// (docs/operations.md, "Retries, outages and the circuit breaker"):
    /// 5xx, 429, 408 and 401/419 (after the auth layer re-authenticated once)
    /// are transient; every other status an operation did not accept is permanent.
    pub fn from_status(
        operation: &str,
        status: u16,
        body_excerpt: &str,
        retry_after: Option<Duration>,
    ) -> Self {
        let class = match status {
            408 | 429 | 401 | 419 | 500..=599 => FailureClass::Transient,
            _ => FailureClass::Permanent,
        };
        let message = if body_excerpt.is_empty() {
            format!("{operation}: target answered HTTP {status}")
        } else {
            format!("{operation}: target answered HTTP {status}: {body_excerpt}")
        };
        TargetError {
            class,
            message,
            status: Some(status),
            retry_after,
        }
    }

    /// The same decision for an authentication endpoint (token or login):
    /// there a 401 or 403 means the configured credentials are refused, which
    /// only the operator can fix, so it is permanent.
    pub fn from_credentials_status(operation: &str, status: u16) -> Self {
        let mut e = Self::from_status(operation, status, "", None);
        if matches!(status, 401 | 403) {
            e.class = FailureClass::Permanent;
        }
        e
    }

    pub fn is_transient(&self) -> bool {
        self.class == FailureClass::Transient
    }

    /// The target says it is asked too often: a 429, or any transient
    /// answer that names a time to come back (`Retry-After`, as a 503 may).
    /// Adaptive pacing slows down on it (`engine::adaptive`).
    pub fn is_throttled(&self) -> bool {
        self.status == Some(429) || (self.is_transient() && self.retry_after.is_some())
    }

    /// The target says the resource the call addressed (an account or a group,
    /// by API ID) does not exist: a cached ID may have gone stale.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

pub type TargetResult<T> = Result<T, TargetError>;
