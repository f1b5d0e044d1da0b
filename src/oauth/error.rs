//! The OAuth error type: RFC error codes as variants. The wire message (`error_description`)
//! is kept apart from the internal reason, which only reaches logs and the audit record.
use std::borrow::Cow;

type Text = Cow<'static, str>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthError {
    /// RFC 6749 §5.2.
    InvalidRequest(Text),
    /// RFC 6749 §5.2: 401; `WWW-Authenticate` when the client used the Authorization header.
    InvalidClient {
        header_used: bool,
        internal: Text,
    },
    InvalidGrant(Text),
    UnauthorizedClient(Text),
    UnsupportedGrantType,
    /// RFC 6749 §4.1.2.1.
    UnsupportedResponseType,
    InvalidScope(Text),
    /// RFC 8707 §2.
    InvalidTarget(Text),
    /// RFC 7009 §2.2.1.
    UnsupportedTokenType,
    /// Bad or missing admin bearer token on the admin API or `/revoke` (RFC 6750 §3.1).
    InvalidToken,
    /// Too many failed client authentications (429, `Retry-After`).
    TooManyAttempts {
        retry_after: i64,
    },
    /// The body is larger than allowed (413).
    PayloadTooLarge,
    /// A dependency is down; the client may retry (503).
    TemporarilyUnavailable(Text),
    /// A bug or an unreadable store (500); the detail is internal only.
    ServerError(Text),
    /// OpenID CIBA §11: the person has not decided yet.
    AuthorizationPending,
    /// OpenID CIBA §11: polled faster than the interval (now `interval` seconds).
    SlowDown,
    /// OpenID CIBA §11: the request expired.
    ExpiredToken,
    /// OpenID CIBA §11/§13: refused (the approver's reason, or policy).
    AccessDenied(Text),
    /// OpenID CIBA §13: `login_hint` names nobody who may approve.
    UnknownUserId(Text),
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::PayloadTooLarge => "invalid_request",
            Self::InvalidClient { .. } | Self::TooManyAttempts { .. } => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::InvalidTarget(_) => "invalid_target",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::InvalidToken => "invalid_token",
            Self::TemporarilyUnavailable(_) => "temporarily_unavailable",
            Self::ServerError(_) => "server_error",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::AccessDenied(_) => "access_denied",
            Self::UnknownUserId(_) => "unknown_user_id",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidClient { .. } | Self::InvalidToken => 401,
            Self::PayloadTooLarge => 413,
            Self::TooManyAttempts { .. } => 429,
            Self::TemporarilyUnavailable(_) => 503,
            Self::ServerError(_) => 500,
            _ => 400,
        }
    }

    /// What the client is told.
    pub fn description(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest(d)
            | Self::InvalidGrant(d)
            | Self::UnauthorizedClient(d)
            | Self::InvalidScope(d)
            | Self::InvalidTarget(d)
            | Self::TemporarilyUnavailable(d)
            | Self::AccessDenied(d)
            | Self::UnknownUserId(d) => Some(d),
            Self::AuthorizationPending => Some("the approver has not decided yet"),
            Self::SlowDown => Some("polling too fast: wait longer between requests"),
            Self::ExpiredToken => Some("the approval request expired"),
            Self::InvalidClient { .. } => Some("client authentication failed"),
            Self::UnsupportedGrantType => Some("grant_type is not supported"),
            Self::UnsupportedResponseType => {
                Some("this server supports no response_type at the authorization endpoint yet")
            }
            Self::UnsupportedTokenType => Some("token_type_hint is not supported"),
            Self::InvalidToken => Some("a valid admin bearer token is required"),
            Self::PayloadTooLarge => Some("request body too large"),
            Self::TooManyAttempts { .. } => {
                Some("too many failed authentication attempts; try again later")
            }
            Self::ServerError(_) => None,
        }
    }

    /// What the logs are told.
    pub fn internal(&self) -> &str {
        match self {
            Self::InvalidClient { internal, .. } | Self::ServerError(internal) => internal,
            other => other.description().unwrap_or(""),
        }
    }

    /// The `WWW-Authenticate` challenge, when one is due.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            Self::InvalidClient {
                header_used: true, ..
            } => Some("Basic realm=\"mandate\""),
            Self::InvalidToken => Some("Bearer realm=\"mandate\", error=\"invalid_token\""),
            _ => None,
        }
    }

    /// Seconds for `Retry-After`, when due.
    pub fn retry_after(&self) -> Option<i64> {
        match self {
            Self::TooManyAttempts { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    pub fn invalid_client(header_used: bool, internal: impl Into<Text>) -> Self {
        Self::InvalidClient {
            header_used,
            internal: internal.into(),
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "error": self.code() });
        if let Some(d) = self.description() {
            v["error_description"] = d.into();
        }
        v
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.internal())
    }
}

impl std::error::Error for OAuthError {}
