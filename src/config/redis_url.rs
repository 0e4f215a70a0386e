//! Where the shared Redis is (`--redis`, `--redis-password-file`): the URL parsed into a
//! [`RedisTarget`] at start, so a bad value stops the server with the value named, and never
//! the password in a log or an error. A `redis+sentinel://` URL names Redis Sentinels instead
//! of one server ([`Sentinels`]): the boxes ask them which server is the primary, so a
//! failover does not need a new configuration.

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

/// Redis Sentinel, from a `redis+sentinel://` URL: the sentinels that know which server is the
/// primary now. The [`RedisTarget`] parsed with it holds the database and credentials for that
/// primary (the sentinels themselves are asked without a password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentinels {
    /// The sentinels' hosts and ports [default port: 26379], asked in this order.
    pub at: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under (`sentinel monitor NAME ...`).
    pub master: String,
}

impl fmt::Display for Sentinels {
    /// The URL without credentials or database, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis+sentinel://")?;
        for (n, (host, port)) in self.at.iter().enumerate() {
            let comma = if n == 0 { "" } else { "," };
            if host.contains(':') {
                write!(f, "{comma}[{host}]:{port}")?;
            } else {
                write!(f, "{comma}{host}:{port}")?;
            }
        }
        write!(f, "/{}", self.master)
    }
}

/// Why `--redis` is refused by a build without the `redis` feature.
pub const NO_REDIS: &str =
    "this build of smolchat cannot share rooms over Redis (it was built without \
the `redis` feature, as the routers' builds are, to spare their flash); use a build with it";

/// The port of a sentinel whose URL names none.
const SENTINEL_PORT: u16 = 26379;

/// Parses `redis://[user[:password]@]host[:port][/db]` or
/// `redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/master[/db]` (user and
/// password percent-encoded; the convention of other Redis clients, as redis-rs has no URL
/// form for sentinels). For a sentinel URL the target's host and port are the first
/// sentinel's, and the [`Sentinels`] come with it. Errors name the value, with the password
/// left out.
pub fn parse_redis_url(value: &str) -> Result<(RedisTarget, Option<Sentinels>), String> {
    let shown = match (value.find("://"), value.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}…{}", &value[..scheme + 3], &value[at..])
        }
        _ => value.to_owned(),
    };
    let sentinel = value.starts_with("redis+sentinel://");
    let like = if sentinel {
        "redis+sentinel://host:26379/mymaster/0"
    } else {
        "redis://host:6379/0"
    };
    let bad = |why: &str| format!("'{shown}' is not a Redis URL like {like}: {why}");
    let rest = value
        .strip_prefix("redis://")
        .or_else(|| value.strip_prefix("redis+sentinel://"))
        .ok_or_else(|| {
            bad("it must start with redis:// or redis+sentinel:// (no TLS, no unix sockets)")
        })?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err(bad("no query or fragment, please"));
    }
    let (master, db) = match (sentinel, path.split_once('/')) {
        (false, _) => (None, path),
        (true, Some((master, db))) => (Some(master), db),
        (true, None) => (Some(path), ""),
    };
    let db = match db {
        "" => 0,
        digits => digits
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=1_000_000).contains(n))
            .ok_or_else(|| bad("the database is a number"))?,
    };
    let (credentials, hosts) = match authority.rfind('@') {
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
    let sentinels = match master {
        None => None,
        Some(master) => {
            if master.is_empty() || master.contains(|c: char| c.is_whitespace()) {
                return Err(bad("it names no master after the sentinels (…/mymaster)"));
            }
            let at = hosts
                .split(',')
                .map(|one| host_port(one, SENTINEL_PORT).map_err(&bad))
                .collect::<Result<Vec<_>, _>>()?;
            Some(Sentinels {
                at,
                master: master.to_owned(),
            })
        }
    };
    let (host, port) = match &sentinels {
        Some(sentinels) => sentinels.at[0].clone(),
        None if hosts.contains(',') => return Err(bad("several hosts need redis+sentinel://")),
        None => host_port(hosts, 6379).map_err(bad)?,
    };
    let target = RedisTarget {
        host,
        port,
        db,
        username,
        password,
    };
    Ok((target, sentinels))
}

/// `host[:port]` or `[v6]:port`; `default` when it names no port.
fn host_port(text: &str, default: u16) -> Result<(String, u16), &'static str> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed '['")?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err("it names no host");
    }
    let port = match port {
        None => default,
        Some(digits) => digits
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or("the port is a number 1-65535")?,
    };
    Ok((host.to_owned(), port))
}
