//! Where the database is and how it is reached: the settings the store connects with. The
//! configuration fills them in (and supplies their defaults); the store only reads them.

use std::time::Duration;

use super::BackendKind;

/// A database URL whose password never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The backend this URL selects.
    pub fn backend(&self) -> BackendKind {
        BackendKind::of(&self.0)
    }
    /// The URL with any password replaced, for logs.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some(scheme_end) = s.find("://") else {
            return s.clone();
        };
        let rest = &s[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split(':').next().unwrap_or_default();
                let masked = if userinfo.contains(':') {
                    format!("{user}:REDACTED")
                } else {
                    user.to_owned()
                };
                format!("{}://{}{}", &s[..scheme_end], masked, &rest[at..])
            }
            None => s.clone(),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub pool_size: u32,
    /// Longest wait for a connection (and for a connection attempt): bounds how long a
    /// callback can hang when the database is gone.
    pub acquire_timeout: Duration,
}

impl DatabaseSettings {
    /// How long a batch write may take before it is abandoned and its deliveries are
    /// journaled (or answered 503): a connection's wait plus half a second, at least 1.5 s.
    /// A database that hangs (a frozen server, a network partition) must not hold the
    /// sender past a second or two.
    pub fn write_timeout(&self) -> Duration {
        (self.acquire_timeout + Duration::from_millis(500)).max(Duration::from_millis(1500))
    }
}
