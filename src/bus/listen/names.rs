//! Names and presence through the listener: it claims each newcomer's name (no other person
//! holds it on a live box) and releases it when its last connection here leaves, so it knows
//! who is seated here in each room and claims them all again after a lost connection (Redis
//! may have restarted, or this box's presence expired meanwhile). While there is no connection
//! a claim is granted at once: names are then checked on this box only. Every beat it renews
//! this box's presence in each room and asks whether the other boxes it knows of there still
//! renew theirs; it passes on who comes and goes on other boxes.

use super::super::keys::{self, Seen, CLAIM_SCRIPT, PRESENCE_TTL};
use super::super::{News, Somebody};
use super::Listener;
use ::redis::aio::MultiplexedConnection;
use ::redis::RedisResult;
use std::sync::Arc;

impl Listener {
    /// Runs the claim script for `name` of `person` in `room`: true if granted.
    pub(super) async fn claim(
        &self,
        room: &str,
        person: u64,
        name: &str,
        data: &mut MultiplexedConnection,
    ) -> RedisResult<bool> {
        let granted: u8 = ::redis::Script::new(CLAIM_SCRIPT)
            .key(keys::boxes_key(room))
            .key(keys::box_prefix(room) + &self.me)
            .arg(keys::box_prefix(room))
            .arg(&*self.me)
            .arg(name.to_lowercase())
            .arg(person)
            .arg(name)
            .arg(PRESENCE_TTL.as_secs())
            .arg(keys::channel(room))
            .invoke_async(data)
            .await?;
        Ok(granted == 1)
    }

    /// Claims again every name seated here in `room` (after a lost connection).
    pub(super) async fn claim_mine(
        &self,
        room: &str,
        data: &mut MultiplexedConnection,
    ) -> RedisResult<()> {
        let Some(feed) = self.feeds.get(room) else {
            return Ok(());
        };
        let mine: Vec<(u64, String)> = feed.mine.values().cloned().collect();
        for (person, name) in mine {
            if !self.claim(room, person, &name, data).await? {
                log::warn!("room {room}: {name} is here and on another box, as two people");
            }
        }
        Ok(())
    }

    /// Tells the room whether its newcomer may take the name; notes it as seated here if so.
    pub(super) async fn answer(
        &mut self,
        room: &str,
        link: u64,
        client: u64,
        person: u64,
        name: String,
        granted: bool,
    ) {
        let Some(feed) = self.feeds.get_mut(room).filter(|feed| feed.link == link) else {
            return; // The room ended; its close follows or came.
        };
        if granted {
            feed.mine.insert(name.to_lowercase(), (person, name));
        }
        let _ = feed.news.send(News::Claimed { client, granted }).await;
    }

    /// Forgets `name` as seated here in `room`; true if it was.
    pub(super) fn forget_mine(&mut self, room: &str, link: u64, name: &str) -> bool {
        let feed = self.feeds.get_mut(room).filter(|feed| feed.link == link);
        feed.is_some_and(|feed| feed.mine.remove(&name.to_lowercase()).is_some())
    }

    /// Renews this box's presence in every room it has people in, and tells each room of the
    /// other boxes whose presence has expired.
    pub(super) async fn beat(&mut self, data: &mut MultiplexedConnection) -> RedisResult<()> {
        let mut pipe = ::redis::pipe();
        let mut asked: Vec<(Arc<str>, Option<Arc<str>>)> = Vec::new();
        for (room, feed) in &self.feeds {
            if !feed.mine.is_empty() {
                pipe.cmd("EXPIRE")
                    .arg(keys::box_prefix(room) + &self.me)
                    .arg(PRESENCE_TTL.as_secs());
                asked.push((room.clone(), None));
            }
            for other in &feed.others {
                pipe.cmd("EXISTS").arg(keys::box_prefix(room) + other);
                asked.push((room.clone(), Some(other.clone())));
            }
        }
        if asked.is_empty() {
            return Ok(());
        }
        let answers: Vec<u64> = pipe.query_async(data).await?;
        let mut expired_here = Vec::new();
        for ((room, other), answer) in asked.into_iter().zip(answers) {
            match (other, answer) {
                // This box's own presence expired (a long pause, or Redis lost it): claim again.
                (None, 0) => expired_here.push(room),
                (Some(other), 0) => {
                    let Some(feed) = self.feeds.get_mut(&room) else {
                        continue;
                    };
                    feed.others.remove(&other);
                    let _ = feed.news.send(News::Gone { on: other }).await;
                }
                _ => {}
            }
        }
        for room in expired_here {
            self.claim_mine(&room, data).await?;
        }
        Ok(())
    }

    /// Somebody came or went on a box (this box's own news are already known here).
    pub(super) async fn seen(&mut self, room: &str, seen: Seen) {
        let Some(feed) = self.feeds.get_mut(room) else {
            return;
        };
        let news = match seen {
            Seen::Came { on, .. } | Seen::Went { on, .. } if *on == *self.me => return,
            Seen::Came { on, person, name } => {
                let on: Arc<str> = Arc::from(on);
                feed.others.insert(on.clone());
                News::Came(Somebody { on, person, name })
            }
            Seen::Went { on, name } => News::Went {
                on: Arc::from(on),
                name,
            },
        };
        // The room may have ended meanwhile; its close follows.
        let _ = feed.news.send(news).await;
    }

    /// `name` has no connection left in `room` here: released in Redis, and its leaving
    /// announced to the other boxes.
    pub(super) async fn release(
        &mut self,
        room: &str,
        link: u64,
        name: &str,
        data: &mut MultiplexedConnection,
    ) -> RedisResult<()> {
        if !self.forget_mine(room, link, name) {
            return Ok(());
        }
        ::redis::pipe()
            .cmd("HDEL")
            .arg(keys::box_prefix(room) + &self.me)
            .arg(name.to_lowercase())
            .ignore()
            .cmd("PUBLISH")
            .arg(keys::channel(room))
            .arg(format!("-{} {name}", self.me))
            .ignore()
            .query_async(data)
            .await
    }
}
