//! Hosts' rulings through the listener: a ruling given here goes out (one script writes the
//! book entry, removes the messages and publishes it); one published by another box comes in
//! on the book's channel, is written in this box's book and handed to every room. At each
//! connection the whole book is read (seeded, the first time, with this box's own), and every
//! room checks its members, lock and announcement against it.

use super::super::keys::{self, BOOK_CHANNEL, BOOK_KEY, BOOK_SCRIPT, RULE_SCRIPT};
use super::super::{Erase, News, Ruling};
use super::Listener;
use ::redis::aio::MultiplexedConnection;
use ::redis::RedisResult;
use std::collections::HashMap;
use std::sync::Arc;

impl Listener {
    /// Tells a room that the ruling `client` gave did not reach Redis.
    pub(super) async fn unruled(&self, room: &str, link: u64, client: u64) {
        if let Some(feed) = self.feeds.get(room).filter(|feed| feed.link == link) {
            let _ = feed.news.send(News::Unruled { client }).await;
        }
    }

    /// Carries out `ruling` in Redis (the book entry, the stream) and publishes it (and, behind
    /// sentinels, waits for a replica to have it).
    pub(super) async fn rule(
        &self,
        room: &str,
        ruling: &Ruling,
        data: &mut MultiplexedConnection,
    ) -> RedisResult<()> {
        let json = serde_json::to_string(ruling).expect("a ruling serialises");
        let (erase, id) = match ruling.erase {
            Some(Erase::Message(id)) => ("message", id),
            Some(Erase::Through(id)) => ("through", id),
            None => ("", 0),
        };
        let _: u8 = ::redis::Script::new(RULE_SCRIPT)
            .key(BOOK_KEY)
            .key(keys::log_key(room))
            .arg(ruling.entry.as_deref().unwrap_or(""))
            .arg(if ruling.value.is_some() { "1" } else { "0" })
            .arg(ruling.value.as_deref().unwrap_or(""))
            .arg(erase)
            .arg(id)
            .arg(BOOK_CHANNEL)
            .arg(format!("{} {json}", self.me))
            .invoke_async(data)
            .await?;
        // Behind sentinels, a ruling no replica has would be lost with a failover: the host
        // hears it may not have reached the other boxes.
        self.replicated(room, data).await
    }

    /// Reads the whole book from Redis into this box's (seeding Redis's with this box's if no
    /// box has yet), and has every room check itself against it.
    pub(super) async fn read_book(&mut self, data: &mut MultiplexedConnection) -> RedisResult<()> {
        let script = ::redis::Script::new(BOOK_SCRIPT);
        let mut invocation = script.key(BOOK_KEY);
        for (name, value) in self.moderation.entries() {
            invocation.arg(name).arg(value);
        }
        let book: HashMap<String, String> = invocation.invoke_async(data).await?;
        let entries: Vec<(String, String)> =
            book.into_iter().filter(|(k, _)| k != "made").collect();
        for bad in self.moderation.replace(&entries) {
            log::warn!("redis: the shared book: {bad}; skipped");
        }
        self.moderation.save().await;
        self.tell_rooms(Ruling {
            anew: true,
            ..Ruling::default()
        })
        .await;
        Ok(())
    }

    /// A ruling published by a box: written in this box's book and handed to every room,
    /// unless it is this box's own (carried out already).
    pub(super) async fn ruled(&self, payload: &[u8]) {
        let text = std::str::from_utf8(payload).ok();
        let Some((on, json)) = text.and_then(|text| text.split_once(' ')) else {
            log::warn!("redis: an unreadable ruling");
            return;
        };
        if on == &*self.me {
            return;
        }
        let ruling: Ruling = match serde_json::from_str(json) {
            Ok(ruling) => ruling,
            Err(e) => {
                log::warn!("redis: an unreadable ruling from box {on}: {e}");
                return;
            }
        };
        if let Some(entry) = &ruling.entry {
            if let Err(e) = self.moderation.set_entry(entry, ruling.value.as_deref()) {
                log::warn!("redis: a ruling from box {on}: {e}");
                return;
            }
            self.moderation.save().await;
        }
        self.tell_rooms(ruling).await;
    }

    /// Hands `ruling` to every room that has its history (a room still opening reads the book
    /// as it starts).
    pub(super) async fn tell_rooms(&self, ruling: Ruling) {
        let ruling = Arc::new(ruling);
        for feed in self.feeds.values().filter(|feed| feed.last.is_some()) {
            // A room that ended meanwhile has nobody to tell.
            let _ = feed.news.send(News::Ruled(ruling.clone())).await;
        }
    }
}
