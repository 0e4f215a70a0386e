//! Where the shared Redis is (`--redis`, `--redis-password-file`): the URL parsed into a
//! [`RedisTarget`] at start, so a bad value stops the server with the value named, and never
//! the password in a log or an error.

use std::fmt;

/// Where the shared Redis is, from `--redis` (and `--redis-password-file`). Parsed here so a
/// bad value stops the server at start, with the value named.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port [default: 6379].
    pub port: u16,
    /// The database number [default: 0].
    pub db: i64,
    /// The ACL user, if any.
    pub username: Option<String>,
    /// The password, if any (from the URL or the file; the file wins).
    pub password: Option<String>,
}

impl fmt::Debug for RedisTarget {
    // Never the password: configs are logged and printed in test failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

impl fmt::Display for RedisTarget {
    /// The URL without its password, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        if let Some(user) = &self.username {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

/// Why `--redis` is refused by a build without the `redis` feature.
pub const NO_REDIS: &str =
    "this build of smolchat cannot share rooms over Redis (it was built without \
the `redis` feature, as the routers' builds are, to spare their flash); use a build with it";

/// Parses `redis://[user[:password]@]host[:port][/db]` (user and password percent-encoded).
/// Errors name the value, with the password left out.
pub fn parse_redis_url(value: &str) -> Result<RedisTarget, String> {
    let shown = match (value.find("://"), value.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("redis://…{}", &value[at..]),
        _ => value.to_owned(),
    };
    let bad = |why: &str| format!("'{shown}' is not a Redis URL like redis://host:6379/0: {why}");
    let rest = value
        .strip_prefix("redis://")
        .ok_or_else(|| bad("it must start with redis:// (no TLS, no unix sockets)"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err(bad("no query or fragment, please"));
    }
    let db = match path {
        "" => 0,
        digits => digits
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=1_000_000).contains(n))
            .ok_or_else(|| bad("the database is a number"))?,
    };
    let (credentials, host_port) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad("user and password are percent-encoded UTF-8"))
    };
    let (username, password) = match credentials {
        None => (None, None),
        Some(text) => {
            let (user, password) = match text.split_once(':') {
                Some((user, password)) => (user, Some(decode(password)?)),
                None => (text, None),
            };
            let user = Some(decode(user)?).filter(|u| !u.is_empty());
            (user, password.filter(|p| !p.is_empty()))
        }
    };
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad("it names no host"));
    }
    let port = match port {
        None => 6379,
        Some(digits) => digits
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port is a number 1-65535"))?,
    };
    Ok(RedisTarget {
        host: host.to_owned(),
        port,
        db,
        username,
        password,
    })
}
