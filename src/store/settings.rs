//! Where the database is and how it is reached: the settings the store connects with. The
//! configuration fills them in (and supplies their defaults); the store only reads them.

use std::time::Duration;

use super::BackendKind;

/// What a password is replaced with in [`DatabaseUrl::redacted`].
const MASK: &str = "REDACTED";

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

    /// The URL with every password replaced, for logs, messages and `migrate`'s output:
    /// the userinfo's (`user:password@`, even when the password holds an unencoded `@`,
    /// `/` or `?`), and the value of every query parameter whose name, percent-decoded and
    /// in any case, contains `password` (`password`, `PassWord`, `sslpassword`,
    /// `pass%77ord`). A text that is not a URL (a libpq `key=value` string by mistake) is
    /// cut at its first password.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some(scheme_end) = s.find("://") else {
            return redact_conninfo(s);
        };
        let (scheme, rest) = (&s[..scheme_end + 3], &s[scheme_end + 3..]);
        let (userinfo, after) = split_userinfo(rest);
        let userinfo = userinfo.map(|u| match u.split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}@"),
            None => format!("{u}@"),
        });
        let (before_query, query) = match after.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (after, None),
        };
        let mut out = format!("{scheme}{}{before_query}", userinfo.unwrap_or_default());
        if let Some(q) = query {
            let (q, fragment) = match q.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (q, None),
            };
            out.push('?');
            out.push_str(&redact_query(q));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
        }
        out
    }

    /// The URL for sqlx's PostgreSQL driver, and the names of the query parameters taken
    /// out of it: those named like a password (any case, `sslpassword`…) but `password`
    /// itself. sqlx logs a parameter it does not know *with its value*, so none of those
    /// may reach it; none of them is one it could use.
    pub(super) fn without_unusable_secrets(&self) -> (String, Vec<String>) {
        let s = &self.0;
        let Some((base, query)) = s.split_once('?') else {
            return (s.clone(), Vec::new());
        };
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let mut dropped: Vec<String> = Vec::new();
        let mut changed = false;
        let mut after_password = false;
        let mut kept: Vec<&str> = Vec::new();
        for pair in query.split('&') {
            // A pair without `=` right after a password is a piece of it (an unencoded
            // `&`): sqlx would log it as an unknown parameter. Its "name" is secret.
            if after_password && !pair.contains('=') {
                changed = true;
                continue;
            }
            let name = decoded_name(pair);
            after_password = is_password_name(&name);
            // sqlx takes `password`, in this spelling only.
            if after_password && name != "password" {
                dropped.push(name);
                changed = true;
            } else {
                kept.push(pair);
            }
        }
        if !changed {
            return (s.clone(), dropped);
        }
        let mut url = base.to_owned();
        if !kept.is_empty() {
            url.push('?');
            url.push_str(&kept.join("&"));
        }
        if let Some(f) = fragment {
            url.push('#');
            url.push_str(f);
        }
        (url, dropped)
    }
}

/// Splits what follows `scheme://` into the userinfo (without its `@`) and the rest. The
/// authority ends at the first `/`, `?` or `#`, and its userinfo at its last `@`. When the
/// authority has a `:` but no `@` while an `@` comes later, the password probably holds an
/// unencoded `/`, `?` or `#` (a URL no driver reads as meant): everything up to the last
/// `@` is taken as the userinfo, so that no part of the password shows.
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if let Some(at) = authority.rfind('@') {
        return (Some(&rest[..at]), &rest[at + 1..]);
    }
    match rest.rfind('@') {
        Some(at) if authority.contains(':') => (Some(&rest[..at]), &rest[at + 1..]),
        _ => (None, rest),
    }
}

/// A query string with the value of every password-named parameter replaced. A pair
/// without `=` right after such a parameter is taken as part of its value (an unencoded
/// `&` in the password) and left out.
fn redact_query(query: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut in_password = false;
    for pair in query.split('&') {
        let has_value = pair.contains('=');
        if in_password && !has_value {
            continue;
        }
        in_password = is_password_name(&decoded_name(pair));
        if in_password {
            let raw_name = pair.split('=').next().unwrap_or_default();
            out.push(format!("{raw_name}={MASK}"));
        } else {
            out.push(pair.to_owned());
        }
    }
    out.join("&")
}

/// A query pair's name, percent-decoded (`+` as a space).
fn decoded_name(pair: &str) -> String {
    form_urlencoded::parse(pair.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default()
}

/// Whether a parameter's (decoded) name is a password's: it contains `password`, in any
/// case (`password`, `sslpassword`, `PassWord`).
fn is_password_name(name: &str) -> bool {
    name.to_lowercase().contains("password")
}

/// A database "URL" without `://`: shown up to its first `password` (any case), the rest
/// replaced.
fn redact_conninfo(s: &str) -> String {
    // ASCII lower-casing keeps every byte offset, so `at` is an offset into `s`.
    match s.to_ascii_lowercase().find("password") {
        Some(at) => {
            let mut end = at + "password".len();
            if s[end..].starts_with('=') {
                end += 1;
            }
            format!("{}{MASK}", &s[..end])
        }
        None => s.to_owned(),
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
    /// The write deadline, when not derived from `acquire_timeout` (see
    /// [`DatabaseSettings::write_timeout`]). Not a configuration key: the randomized fault
    /// test shortens it to run many schedules quickly.
    pub write_deadline: Option<Duration>,
    /// Faults to inject at every statement (the randomized fault test's; none otherwise).
    pub faults: crate::faults::Faults,
}

impl DatabaseSettings {
    /// How long a batch write may take before it is abandoned and its deliveries are
    /// journaled (or answered 503): a connection's wait plus half a second, at least 1.5 s.
    /// A database that hangs (a frozen server, a network partition) must not hold the
    /// sender past a second or two.
    pub fn write_timeout(&self) -> Duration {
        self.write_deadline.unwrap_or_else(|| {
            (self.acquire_timeout + Duration::from_millis(500)).max(Duration::from_millis(1500))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(url: &str) -> String {
        DatabaseUrl::new(url).redacted()
    }

    /// Asserts that `url` shows as `want`, and that none of `secrets` shows, in
    /// `redacted()` or in `Debug`.
    fn check(url: &str, want: &str, secrets: &[&str]) {
        let u = DatabaseUrl::new(url);
        assert_eq!(u.redacted(), want, "{url}");
        let debug = format!("{u:?}");
        for s in secrets {
            assert!(!u.redacted().contains(s), "{s} shows in {}", u.redacted());
            assert!(!debug.contains(s), "{s} shows in {debug}");
        }
    }

    #[test]
    fn the_userinfo_password_is_redacted() {
        check(
            "postgres://app:hunter2@db.internal:5432/calls?sslmode=require",
            "postgres://app:REDACTED@db.internal:5432/calls?sslmode=require",
            &["hunter2"],
        );
        // Percent-encoded, with an unencoded `@`, with a `:` in it.
        check(
            "postgresql://app:p%40ss%3Aw0rd@db/calls",
            "postgresql://app:REDACTED@db/calls",
            &["p%40ss", "w0rd"],
        );
        check(
            "postgres://app:p@ss:w0rd@db/calls",
            "postgres://app:REDACTED@db/calls",
            &["p@ss", "w0rd"],
        );
        // Unencoded `/` or `?` in the password: no driver reads it as meant, and nothing
        // of it shows either.
        check(
            "postgres://app:pa/ss?wd@db/calls",
            "postgres://app:REDACTED@db/calls",
            &["pa/ss", "ss?wd"],
        );
        // A user without a password, and no userinfo at all, are shown as they are.
        check("postgres://app@db/calls", "postgres://app@db/calls", &[]);
        check("postgres://db:5432/calls", "postgres://db:5432/calls", &[]);
        check("sqlite://callhook.db", "sqlite://callhook.db", &[]);
    }

    #[test]
    fn query_passwords_are_redacted_in_every_form() {
        check(
            "postgres://db/calls?password=hunter2",
            "postgres://db/calls?password=REDACTED",
            &["hunter2"],
        );
        check(
            "postgres://app@db/calls?sslmode=require&password=hunter2&application_name=x",
            "postgres://app@db/calls?sslmode=require&password=REDACTED&application_name=x",
            &["hunter2"],
        );
        // Any case.
        check(
            "postgres://db/calls?PASSWORD=hunter2&Password=hunter3",
            "postgres://db/calls?PASSWORD=REDACTED&Password=REDACTED",
            &["hunter2", "hunter3"],
        );
        // The client key's passphrase.
        check(
            "postgres://db/calls?sslcert=c.pem&sslkey=k.pem&sslpassword=k3y-pass",
            "postgres://db/calls?sslcert=c.pem&sslkey=k.pem&sslpassword=REDACTED",
            &["k3y-pass"],
        );
        // A percent-encoded name, a percent-encoded value.
        check(
            "postgres://db/calls?pass%77ord=hunter2&%73slpassword=s%65cret",
            "postgres://db/calls?pass%77ord=REDACTED&%73slpassword=REDACTED",
            &["hunter2", "s%65cret"],
        );
        // An unencoded `&` in the value; a fragment after the query.
        check(
            "postgres://db/calls?password=a&bc&sslmode=disable#frag",
            "postgres://db/calls?password=REDACTED&sslmode=disable#frag",
            &["bc"],
        );
        // Both places at once.
        check(
            "postgres://app:one@db/calls?password=two",
            "postgres://app:REDACTED@db/calls?password=REDACTED",
            &["one", "two"],
        );
    }

    #[test]
    fn a_text_that_is_not_a_url_shows_no_password() {
        assert_eq!(
            shown("host=db user=app password=hunter2 dbname=calls"),
            "host=db user=app password=REDACTED"
        );
        assert_eq!(shown("PASSWORD=x"), "PASSWORD=REDACTED");
        assert_eq!(shown("callhook.db"), "callhook.db");
    }

    #[test]
    fn sqlx_never_sees_a_password_parameter_it_would_log() {
        let (url, dropped) = DatabaseUrl::new(
            "postgres://app:pw@db/calls?password=two&sslpassword=three&PASSWORD=four&sslmode=require",
        )
        .without_unusable_secrets();
        assert_eq!(
            url,
            "postgres://app:pw@db/calls?password=two&sslmode=require"
        );
        assert_eq!(dropped, ["sslpassword", "PASSWORD"]);
        // A piece of a password after an unencoded `&` is dropped, and not named.
        let (url, dropped) =
            DatabaseUrl::new("postgres://db/calls?password=a&b-c&sslpassword=d&e&sslmode=disable")
                .without_unusable_secrets();
        assert_eq!(url, "postgres://db/calls?password=a&sslmode=disable");
        assert_eq!(dropped, ["sslpassword"]);
        let plain = "postgres://app:pw@db/calls?sslmode=require";
        let (url, dropped) = DatabaseUrl::new(plain).without_unusable_secrets();
        assert_eq!((url.as_str(), dropped.len()), (plain, 0));
    }
}
