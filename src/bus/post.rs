//! The posting task: hands every room's posts to Redis through the posting script, over one
//! connection for the box.
//!
//! It takes whatever is queued (up to [`BATCH`]) and sends it as one pipeline, so a burst
//! costs one round trip, and posts keep the order they were queued in (a member's messages
//! stay in the order they were written). Nothing waits for the answer but this task; the
//! message comes back to every box, this one too, through the listener.
//!
//! A post Redis did not run is reported back to its room as [`News::Lost`], and the member
//! is told it was not sent. A post whose answer was lost with the connection (Redis may have
//! run it) is reported the same way; the page sends it again with the key it gave it, and the
//! script keeps one message per key, so it shows once either way.
//!
//! A post over its sender's budget across the boxes (one per address; see `keys::POST_SCRIPT`)
//! takes no id and is reported as [`News::Refused`]: however many boxes a flooder connects
//! to, together they pass on no more than one box would.

use super::keys::{self, BUDGET_PREFIX, CONNECT_WAIT, POST_SCRIPT};
use super::orders::Post;
use super::{Health, News, Settings};
use crate::message::KEY_LIFETIME_SECS;
use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, RedisResult, Script, ServerErrorKind};
use async_channel::Receiver;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Most posts sent in one pipeline.
const BATCH: usize = 64;
/// The posting script's answer for a message over its sender's budget.
const OVER_BUDGET: i64 = -1;
/// Longest a pipeline may wait for its answers before the connection counts as lost.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// Runs until every room's sender is gone (the server stopped).
pub async fn run(client: Client, posts: Receiver<Post>, settings: Settings, health: Arc<Health>) {
    let script = Script::new(POST_SCRIPT);
    let mut connection: Option<MultiplexedConnection> = None;
    // The listener's connection this one was made during.
    let mut session = 0;
    while let Ok(first) = posts.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match posts.try_recv() {
                Ok(post) => batch.push(post),
                Err(_) => break,
            }
        }
        let now = health.sessions.load(Ordering::Relaxed);
        if now != session {
            // The listener connected again since: this connection may be dead too.
            connection = None;
            session = now;
        }
        if connection.is_none() {
            match connect(&client).await {
                Ok(fresh) => connection = Some(fresh),
                Err(e) => log::warn!("redis: cannot connect to post messages: {e}"),
            }
        }
        let Some(live) = connection.as_mut() else {
            lose(batch).await;
            continue;
        };
        let answers = send(live, &script, &batch, &settings).await;
        let Some(retry) = settle(batch, answers).await else {
            connection = None;
            continue;
        };
        if retry.is_empty() {
            continue;
        }
        // Redis forgot the script (a restart, SCRIPT FLUSH): load it and send again what it
        // refused for that. Those posts did not run, so nothing is sent twice.
        if let Err(e) = script.prepare_invoke().load_async(live).await {
            log::warn!("redis: cannot load the posting script: {e}");
        }
        let answers = send(live, &script, &retry, &settings).await;
        match settle(retry, answers).await {
            None => connection = None,
            Some(still) => lose(still).await,
        }
    }
}

/// Connects, within [`CONNECT_WAIT`]; each pipeline must be answered within [`ANSWER_WAIT`].
async fn connect(client: &Client) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_WAIT))
        .set_response_timeout(Some(ANSWER_WAIT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Runs the script once per post, in one pipeline; one result per post.
async fn send(
    connection: &mut MultiplexedConnection,
    script: &Script,
    batch: &[Post],
    settings: &Settings,
) -> RedisResult<Vec<RedisResult<i64>>> {
    let mut pipe = ::redis::pipe();
    pipe.ignore_errors();
    for post in batch {
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(2)
            .arg(keys::id_key(&post.room))
            .arg(keys::log_key(&post.room))
            .arg(&post.frame.head)
            .arg(&post.frame.tail)
            .arg(post.person)
            .arg(settings.history)
            .arg(keys::channel(&post.room))
            .arg(post.seen)
            .arg(post.key.as_deref().unwrap_or(""))
            .arg(KEY_LIFETIME_SECS)
            .arg(post.address.map(|a| a.to_string()).unwrap_or_default())
            .arg(settings.per_second)
            .arg(settings.burst)
            .arg(BUDGET_PREFIX);
    }
    pipe.query_async(connection).await
}

/// Reports the posts Redis refused as lost; returns those refused for want of the script,
/// or `None` if the connection failed (every post of the batch is then reported lost).
async fn settle(
    batch: Vec<Post>,
    answers: RedisResult<Vec<RedisResult<i64>>>,
) -> Option<Vec<Post>> {
    let answers = match answers {
        Ok(answers) => answers,
        Err(e) => {
            log::warn!("redis: posting failed, reconnecting: {e}");
            lose(batch).await;
            return None;
        }
    };
    let mut noscript = Vec::new();
    let mut lost = Vec::new();
    for (post, answer) in batch.into_iter().zip(answers) {
        match answer {
            Ok(OVER_BUDGET) => {
                let refused = News::Refused {
                    client: post.client,
                    key: post.key,
                };
                // The room may have ended; then there is nobody to tell.
                let _ = post.news.send(refused).await;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                noscript.push(post)
            }
            Err(e) => {
                log::warn!("redis: a post to room {} failed: {e}", post.room);
                lost.push(post);
            }
        }
    }
    lose(lost).await;
    Some(noscript)
}

/// Tells each post's room that it did not reach Redis.
async fn lose(posts: Vec<Post>) {
    for post in posts {
        let lost = News::Lost {
            client: post.client,
            key: post.key,
        };
        // The room may have ended; then there is nobody to tell.
        let _ = post.news.send(lost).await;
    }
}
