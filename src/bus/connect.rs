//! How a box finds the Redis to talk to and connects to it: the one server a `redis://` URL
//! names, or the primary that the sentinels of a `redis+sentinel://` URL name at that moment.
//!
//! Both tasks (posting, listening) come here at every connect and reconnect, so after a
//! failover their next connect reaches the new primary. A server the sentinels name that
//! answers as a replica (their news is old, or it was demoted) is refused here; a READONLY
//! answer later ([`demoted`]) counts as a lost connection in the tasks, so they ask again.
//!
//! The sentinels are asked with `SENTINEL get-master-addr-by-name` on an ordinary redis-rs
//! connection, in the order the URL lists them, the first answer winning. redis-rs's own
//! `sentinel` feature does this and more (replicas, TLS), but it made the x86-64 release binary
//! 51,584 B larger (measured), and it checks the primary on a connection of its own, with
//! timeouts we cannot set, before the task connects to it again.
//!
//! With sentinels, a post counts as sent only once a replica has it ([`Connector::confirms`],
//! `WAIT` in the posting task): Redis replicates asynchronously, and a failover promotes a
//! replica, which has only what it received.

use super::keys::CONNECT_WAIT;
use crate::config::{RedisTarget, Sentinels};
use ::redis::aio::MultiplexedConnection;
use ::redis::Value;
use ::redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind};
use ::redis::{IntoConnectionInfo, RedisConnectionInfo, RedisError, RedisResult, ServerErrorKind};
use std::sync::Mutex;
use std::time::Duration;

/// Longest a post waits for a replica to acknowledge it (`WAIT`), when posts are confirmed.
pub const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// Where the box's Redis is, and how to reach whichever server is its primary now.
pub struct Connector {
    /// The server (`redis://`), or the database and credentials for the primary.
    target: RedisTarget,
    sentinels: Option<Sentinels>,
    /// The primary the sentinels named last, to log when it changes.
    last: Mutex<Option<(String, u16)>>,
}

impl Connector {
    /// A connector for `target`, through `sentinels` if given. Connects nothing yet.
    pub fn new(target: &RedisTarget, sentinels: Option<&Sentinels>) -> Connector {
        Connector {
            target: target.clone(),
            sentinels: sentinels.cloned(),
            last: Mutex::new(None),
        }
    }

    /// Whether a post must be on a replica before it is confirmed (Redis behind sentinels:
    /// a failover keeps only what a replica had).
    pub fn confirms(&self) -> bool {
        self.sentinels.is_some()
    }

    /// A client for the primary now, and a connection to it, each request answered within
    /// `answer_wait`. With sentinels, the server they name must say it is a primary.
    pub async fn connect(
        &self,
        answer_wait: Duration,
    ) -> RedisResult<(Client, MultiplexedConnection)> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_WAIT))
            .set_response_timeout(Some(answer_wait));
        let Some(sentinels) = &self.sentinels else {
            let client = client_at(&self.target, &self.target.host, self.target.port);
            let connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            return Ok((client, connection));
        };
        let (host, port) = ask(sentinels).await?;
        let context = |e: RedisError| {
            let detail = format!("{host}:{port}, which the sentinels name as primary: {e}");
            RedisError::from((e.kind(), "cannot use the primary", detail))
        };
        let client = client_at(&self.target, &host, port);
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(context)?;
        let role: Value = ::redis::cmd("ROLE")
            .query_async(&mut connection)
            .await
            .map_err(context)?;
        if !is_primary(&role) {
            let detail = format!("{host}:{port} answers as a replica (a failover under way?)");
            return Err((ErrorKind::Io, "not the primary", detail).into());
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() != Some(&(host.clone(), port)) {
            log::info!(
                "redis: the primary of {} is {host}:{port}",
                sentinels.master
            );
            *last = Some((host, port));
        }
        Ok((client, connection))
    }
}

/// True if `error` says the server takes no writes: a replica, or a primary demoted by a
/// failover. The connection is then as good as lost: the tasks connect again.
pub fn demoted(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// Asks each sentinel in turn for the primary's address; the first that knows it wins.
async fn ask(sentinels: &Sentinels) -> RedisResult<(String, u16)> {
    let mut failures = Vec::with_capacity(sentinels.at.len());
    for (host, port) in &sentinels.at {
        match ask_one(host, *port, &sentinels.master).await {
            Ok(Some(primary)) => return Ok(primary),
            Ok(None) => failures.push(format!(
                "{host}:{port} knows no master named {}",
                sentinels.master
            )),
            Err(e) => failures.push(format!("{host}:{port}: {e}")),
        }
    }
    let detail = failures.join("; ");
    Err((ErrorKind::Io, "no sentinel named the primary", detail).into())
}

/// One sentinel's answer: the primary's address, or `None` if it monitors no such name.
async fn ask_one(host: &str, port: u16, master: &str) -> RedisResult<Option<(String, u16)>> {
    let info = ConnectionAddr::Tcp(host.to_owned(), port).into_connection_info()?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_WAIT))
        .set_response_timeout(Some(CONNECT_WAIT));
    let mut connection = Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    ::redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut connection)
        .await
}

/// `ROLE`'s answer begins with `master` on a primary.
fn is_primary(role: &Value) -> bool {
    let Value::Array(parts) = role else {
        return false;
    };
    match parts.first() {
        Some(Value::BulkString(role)) => role == b"master",
        Some(Value::SimpleString(role)) => role == "master",
        _ => false,
    }
}

/// A client for the server at `host`:`port` with `target`'s database and credentials (TCP,
/// no TLS). Connecting happens later.
fn client_at(target: &RedisTarget, host: &str, port: u16) -> Client {
    let mut redis = RedisConnectionInfo::default().set_db(target.db);
    if let Some(user) = &target.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &target.password {
        redis = redis.set_password(password);
    }
    let info: ConnectionInfo = ConnectionAddr::Tcp(host.to_owned(), port)
        .into_connection_info()
        .expect("a TCP address is a connection info")
        .set_redis_settings(redis);
    Client::open(info).expect("a connection info opens a client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_master_role_is_a_primary() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let master = Value::Array(vec![bulk("master"), Value::Int(10), Value::Array(vec![])]);
        let replica = Value::Array(vec![bulk("slave"), bulk("127.0.0.1"), Value::Int(6379)]);
        assert!(is_primary(&master));
        assert!(!is_primary(&replica));
        assert!(!is_primary(&Value::Nil));
    }
}
