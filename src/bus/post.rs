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
//!
//! Behind sentinels ([`Connector::confirms`]) a post is sent only once a replica has it: the
//! pipeline ends with `WAIT`, and the script does not publish; this task publishes each post
//! a replica acknowledged, from the stream, and reports the others lost, although the primary
//! keeps them (they are delivered if a replica gets them after all; a resend with the key
//! finds them). A failover then loses nothing a member saw. A READONLY answer (the server was
//! demoted) counts as a lost connection: the next post connects to the primary anew.

use super::connect::{self, Connector, REPLICA_WAIT};
use super::keys::{self, BUDGET_PREFIX, FILE_PREFIX, POST_SCRIPT};
use super::orders::Post;
use super::{Health, News, Settings};
use crate::message::KEY_LIFETIME_SECS;
use ::redis::aio::MultiplexedConnection;
use ::redis::{ErrorKind, RedisResult, Script, ServerErrorKind};
use async_channel::Receiver;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Most posts sent in one pipeline.
const BATCH: usize = 64;
/// The posting script's answer for a message over its sender's budget.
const OVER_BUDGET: i64 = -1;
/// Longest a pipeline may wait for its answers before the connection counts as lost (more
/// than [`REPLICA_WAIT`]).
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// Publishes a kept message as the posting script would, from its entry in the stream, so
/// what every box hears is what the stream keeps (a resend found by its key publishes the
/// first frame). KEYS: the stream. ARGV: the id, the channel. Publishes nothing if the entry
/// is no longer kept.
const PUBLISH_SCRIPT: &str = r"
local entry = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-0', ARGV[1] .. '-0')[1]
if entry then
  local fields = entry[2]
  redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' ' .. fields[2] .. ' ' .. fields[4])
end
return 0
";

/// Runs until every room's sender is gone (the server stopped).
pub async fn run(
    connector: Arc<Connector>,
    posts: Receiver<Post>,
    settings: Settings,
    health: Arc<Health>,
) {
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
            match connector.connect(ANSWER_WAIT).await {
                Ok((_, fresh)) => connection = Some(fresh),
                Err(e) => log::warn!("redis: cannot connect to post messages: {e}"),
            }
        }
        let Some(live) = connection.as_mut() else {
            lose(batch).await;
            continue;
        };
        let confirm = connector.confirms();
        let answers = send(live, &script, &batch, &settings, confirm).await;
        let Some(retry) = settle(live, batch, answers, confirm).await else {
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
        let answers = send(live, &script, &retry, &settings, confirm).await;
        match settle(live, retry, answers, confirm).await {
            None => connection = None,
            Some(still) => lose(still).await,
        }
    }
}

/// Runs the script once per post, in one pipeline; one result per post, and with `confirm`
/// two more: a write, then how many replicas have everything up to it.
async fn send(
    connection: &mut MultiplexedConnection,
    script: &Script,
    batch: &[Post],
    settings: &Settings,
    confirm: bool,
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
            .arg(if confirm {
                String::new()
            } else {
                keys::channel(&post.room)
            })
            .arg(post.seen)
            .arg(post.key.as_deref().unwrap_or(""))
            .arg(KEY_LIFETIME_SECS)
            .arg(post.address.map(|a| a.to_string()).unwrap_or_default())
            .arg(settings.per_second)
            .arg(settings.burst)
            .arg(BUDGET_PREFIX)
            .arg(
                post.file
                    .as_ref()
                    .map_or(String::new(), |id| format!("{FILE_PREFIX}{id}")),
            )
            .arg(&settings.url)
            .arg(settings.file_ttl);
    }
    if let (true, Some(last)) = (confirm, batch.last()) {
        // A script that found its key wrote nothing, and WAIT covers only this connection's
        // writes: a write of nothing (INCRBY 0, replicated all the same) makes WAIT cover
        // everything before it, whoever wrote it.
        pipe.cmd("INCRBY").arg(keys::id_key(&last.room)).arg(0);
        pipe.cmd("WAIT").arg(1).arg(REPLICA_WAIT.as_millis() as u64);
    }
    pipe.query_async(connection).await
}

/// Publishes each kept post (with `confirm`, once a replica has them), in id order.
async fn publish(connection: &mut MultiplexedConnection, kept: &[(Post, i64)]) -> RedisResult<()> {
    let mut pipe = ::redis::pipe();
    for (post, id) in kept {
        pipe.cmd("EVAL")
            .arg(PUBLISH_SCRIPT)
            .arg(1)
            .arg(keys::log_key(&post.room))
            .arg(id)
            .arg(keys::channel(&post.room))
            .ignore();
    }
    pipe.query_async(connection).await
}

/// Reports the posts Redis refused as lost (or over budget), and with `confirm` those no
/// replica acknowledged; publishes the others if the script did not. Returns those refused for
/// want of the script, or `None` if the connection failed or the server takes no writes (every
/// post of the batch not kept is then reported lost).
async fn settle(
    connection: &mut MultiplexedConnection,
    batch: Vec<Post>,
    answers: RedisResult<Vec<RedisResult<i64>>>,
    confirm: bool,
) -> Option<Vec<Post>> {
    let mut answers = match answers {
        Ok(answers) => answers,
        Err(e) => {
            log::warn!("redis: posting failed, reconnecting: {e}");
            lose(batch).await;
            return None;
        }
    };
    let replicated = !confirm || {
        let replicas = answers.pop();
        answers.pop(); // The INCRBY.
        matches!(replicas, Some(Ok(1..)))
    };
    let mut noscript = Vec::new();
    let mut lost = Vec::new();
    let mut kept = Vec::new();
    let mut demoted = false;
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
            Ok(id) => kept.push((post, id)),
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                noscript.push(post)
            }
            Err(e) => {
                demoted |= connect::demoted(&e);
                log::warn!("redis: a post to room {} failed: {e}", post.room);
                lost.push(post);
            }
        }
    }
    if !replicated && !kept.is_empty() {
        log::warn!(
            "redis: no replica acknowledged {} post(s) within {REPLICA_WAIT:?}: told their senders they were not sent",
            kept.len()
        );
        lost.extend(kept.drain(..).map(|(post, _)| post));
    }
    if confirm && !kept.is_empty() {
        if let Err(e) = publish(connection, &kept).await {
            log::warn!("redis: publishing confirmed posts failed, reconnecting: {e}");
            lost.extend(kept.into_iter().map(|(post, _)| post));
            lost.extend(noscript);
            lose(lost).await;
            return None;
        }
    }
    lose(lost).await;
    if demoted {
        log::warn!("redis: the server takes no writes (a replica now?): asking again");
        lose(noscript).await;
        return None;
    }
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
