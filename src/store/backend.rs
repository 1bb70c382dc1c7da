//! Which backend a database URL names, and what each can do: the one place above the
//! backends' own modules that knows SQLite from PostgreSQL. Configuration asks it how many
//! writers a database takes and whether an outage journal can stand in for it.

/// The kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Postgres,
    Sqlite,
}

impl BackendKind {
    /// The backend a URL's scheme names: `sqlite:…`, `postgres://…` or `postgresql://…`;
    /// `None` for any other scheme.
    pub fn parse(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// The backend a URL is connected with: SQLite for `sqlite:…`, else PostgreSQL (whose
    /// driver refuses a URL it cannot read).
    pub fn of(url: &str) -> Self {
        Self::parse(url).unwrap_or(Self::Postgres)
    }

    /// Whether the database is a file in this process (SQLite) rather than a server that
    /// can be unreachable.
    pub fn is_embedded(self) -> bool {
        self == Self::Sqlite
    }

    /// The most concurrent batch writers the backend takes, if it is limited: SQLite has
    /// one writer at a time (a second one waits on the file lock, or fails with
    /// SQLITE_BUSY).
    pub fn max_writers(self) -> Option<usize> {
        match self {
            Self::Sqlite => Some(1),
            Self::Postgres => None,
        }
    }

    /// Whether the outage journal has a use: only a database behind a network can be
    /// unavailable while the process runs.
    pub fn needs_outage_journal(self) -> bool {
        !self.is_embedded()
    }
}

#[cfg(test)]
mod tests {
    use super::BackendKind;

    #[test]
    fn schemes_name_the_backend() {
        assert_eq!(
            BackendKind::parse("sqlite://callhook.db"),
            Some(BackendKind::Sqlite)
        );
        assert_eq!(
            BackendKind::parse("sqlite::memory:"),
            Some(BackendKind::Sqlite)
        );
        assert_eq!(
            BackendKind::parse("postgresql://u@h/db"),
            Some(BackendKind::Postgres)
        );
        assert_eq!(BackendKind::parse("mysql://x"), None);
        assert_eq!(BackendKind::of("mysql://x"), BackendKind::Postgres);
        assert_eq!(BackendKind::Sqlite.max_writers(), Some(1));
        assert!(BackendKind::Postgres.needs_outage_journal());
        assert!(!BackendKind::Sqlite.needs_outage_journal());
    }
}
