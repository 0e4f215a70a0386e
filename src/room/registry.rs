//! The registry of rooms: starts a room's task on the first join, and takes it out when the
//! room ends (under the registry's lock, so no join is lost). Ended rooms leave their history
//! behind here (memory only) or in the store, so ids keep increasing when people come back.

use super::notices::Notices;
use super::Keepalive;
use super::ROOM_EVENT_QUEUE;
use super::{ClientId, Event, JoinError, JoinRequest, Joining, MembersPage, Room, PAGE_LIMIT};
use crate::atomic::AtomicU64;
use crate::bus::Bus;
use crate::files::Files;
use crate::history::{Entry, Loaded, Ring, Store};
use crate::message::Action;
use crate::meter::Meter;
use crate::moderation::Moderation;
use crate::shutdown;
use crate::stats::Stats;
use crate::trace::Tracer;
use async_channel::{Receiver, Sender};
use smol::lock::Mutex;
use smol::Executor;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Histories of ended rooms kept in memory, the longest-ended forgotten first. With a store,
/// a forgotten history is read back from disk (long flushed by then); without, it is gone.
const DORMANT_ROOMS: usize = 256;

/// How rooms keep their history and their members.
pub struct Settings {
    /// Messages each room keeps and replays.
    pub history: usize,
    /// Where histories are saved, if anywhere.
    pub store: Option<Arc<Store>>,
    /// How members are kept alive.
    pub keepalive: Keepalive,
    /// What hosts decided: bans, mutes, locks, announcements.
    pub moderation: Arc<Moderation>,
    /// The shared files, so a removed message takes its file along.
    pub files: Option<Arc<Files>>,
    /// Where messages go and come from: this box only, or every box on the same Redis.
    pub bus: Bus,
}

/// Starts rooms on demand and hands out memberships.
#[derive(Clone)]
pub struct Registry {
    pub(super) shared: Arc<Shared>,
}

/// A running room as the registry sees it.
pub(super) struct RoomEntry {
    pub(super) events: Sender<Event>,
    /// People in the room (names counted once), published by the room for `/rooms`.
    people: Arc<AtomicUsize>,
    /// The room's name, shared by its connections' entries in `notices`.
    name: Arc<str>,
}

pub(super) struct Shared {
    pub(super) rooms: Mutex<HashMap<String, RoomEntry>>,
    /// Histories of ended rooms, in the order they ended. Kept even with a store: the disk may
    /// still be a flush behind when someone comes back a moment later.
    pub(super) dormant: std::sync::Mutex<VecDeque<(String, Ring)>>,
    pub(super) next_client: AtomicU64,
    pub(super) history: usize,
    pub(super) store: Option<Arc<Store>>,
    pub(super) stats: Arc<Stats>,
    pub(super) tracer: Arc<Tracer>,
    pub(super) executor: Arc<Executor<'static>>,
    pub(super) keepalive: Keepalive,
    pub(super) shutdown: shutdown::Signal,
    /// What the rooms' frames and queues hold, against the budget.
    pub(super) meter: Arc<Meter>,
    pub(super) moderation: Arc<Moderation>,
    pub(super) files: Option<Arc<Files>>,
    /// Every connection by person, for news from other rooms (`notices.rs`).
    pub(super) notices: Notices,
    pub(super) bus: Bus,
}

/// One client's place in one room. Dropping it leaves the room (best effort; call
/// [`Member::leave`] to be sure the room hears it).
pub struct Member {
    id: ClientId,
    room: Sender<Event>,
    left: bool,
    /// Where this connection is listed for notices, until it leaves.
    shared: Arc<Shared>,
}

impl Registry {
    /// A registry whose rooms run on `executor`, kept as `settings` say, counting in `stats`
    /// and `meter`, and letting everyone go when `shutdown` fires.
    pub fn new(
        executor: Arc<Executor<'static>>,
        stats: Arc<Stats>,
        meter: Arc<Meter>,
        tracer: Arc<Tracer>,
        settings: Settings,
        shutdown: shutdown::Signal,
    ) -> Self {
        let Settings {
            history,
            store,
            keepalive,
            moderation,
            files,
            bus,
        } = settings;
        Registry {
            shared: Arc::new(Shared {
                rooms: Mutex::new(HashMap::new()),
                dormant: std::sync::Mutex::new(VecDeque::new()),
                next_client: AtomicU64::new(1),
                history,
                store,
                stats,
                tracer,
                executor,
                keepalive,
                shutdown,
                meter,
                moderation,
                files,
                notices: Notices::default(),
                bus,
            }),
        }
    }

    /// Joins a room (starting it if needed). The room first sends a `welcome` and the history
    /// asked for, then everything said from then on.
    pub async fn join(&self, request: JoinRequest) -> Result<Member, JoinError> {
        let id = self.shared.next_client.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply) = async_channel::bounded(1);
        let listener = (
            request.person,
            request.outbox.frames.clone(),
            request.outbox.limit,
        );
        let mut rooms = self.shared.rooms.lock().await;
        let (events, room_name) = match rooms.get(&request.room) {
            Some(entry) => (entry.events.clone(), entry.name.clone()),
            None => {
                let (events, inbox) = async_channel::bounded(ROOM_EVENT_QUEUE);
                let people = Arc::new(AtomicUsize::new(0));
                let name: Arc<str> = Arc::from(request.room.as_str());
                rooms.insert(
                    request.room.clone(),
                    RoomEntry {
                        events: events.clone(),
                        people: people.clone(),
                        name: name.clone(),
                    },
                );
                self.shared.stats.room_opened();
                let room = Room::new(request.room.clone(), self.shared.clone(), people);
                self.shared.executor.spawn(room.run(inbox)).detach();
                (events, name)
            }
        };
        // The room ends only under this lock, so it is alive to receive this join.
        let joining = Joining {
            id,
            request,
            reply: reply_tx,
        };
        let _ = events.send(Event::Join(Box::new(joining))).await;
        drop(rooms);
        match reply.recv().await {
            Ok(Ok(())) => {
                let (person, frames, limit) = listener;
                let notices = &self.shared.notices;
                notices.listen(id, person, room_name, frames, limit);
                Ok(Member {
                    id,
                    room: events,
                    left: false,
                    shared: self.shared.clone(),
                })
            }
            Ok(Err(error)) => Err(error),
            // The room stopped without answering: only at shutdown.
            Err(_) => Err(JoinError::NameTaken),
        }
    }

    /// One page of a room's member list: the names after `after`, at most `limit` (capped at
    /// [`PAGE_LIMIT`]). A room nobody is in has an empty list.
    pub async fn members(&self, room: &str, after: Option<String>, limit: usize) -> MembersPage {
        let empty = MembersPage {
            people: 0,
            names: Vec::new(),
            more: false,
        };
        let events = match self.shared.rooms.lock().await.get(room) {
            Some(entry) => entry.events.clone(),
            None => return empty,
        };
        let (reply, page) = async_channel::bounded(1);
        let limit = limit.clamp(1, PAGE_LIMIT);
        let asked = events.send(Event::Members {
            after,
            limit,
            reply,
        });
        if asked.await.is_err() {
            return empty; // The room ended meanwhile.
        }
        page.recv().await.unwrap_or(empty)
    }

    /// Every connection by person: who is who in a room, news for a person, rooms' newest ids.
    pub fn notices(&self) -> &Notices {
        &self.shared.notices
    }

    /// What the server's rooms and clients hold, against the budget.
    pub fn meter(&self) -> &Arc<Meter> {
        &self.shared.meter
    }

    /// How rooms reach other boxes.
    #[cfg(feature = "redis")]
    pub fn bus(&self) -> &crate::bus::Bus {
        &self.shared.bus
    }

    /// `None` without `--redis`; otherwise whether the box is connected to Redis now.
    pub fn redis_connected(&self) -> Option<bool> {
        self.shared.bus.connected()
    }

    /// Whether `room` has a running task (a WebSocket to any other room starts a new one).
    pub async fn has_room(&self, room: &str) -> bool {
        self.shared.rooms.lock().await.contains_key(room)
    }

    /// Running rooms and how many people are in each, by name.
    pub async fn list(&self) -> Vec<(String, usize)> {
        let rooms = self.shared.rooms.lock().await;
        let mut list: Vec<(String, usize)> = rooms
            .iter()
            .map(|(name, entry)| (name.clone(), entry.people.load(Ordering::Relaxed)))
            .filter(|(_, people)| *people > 0)
            .collect();
        list.sort();
        list
    }
}

impl Member {
    /// This member's id in its room.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Forwards `text` to the room. Waits while the room's queue is full.
    pub async fn say(&self, text: String) {
        // A room outlives its members, so this only fails during shutdown, when nothing matters.
        let forward = Event::Forward {
            id: self.id,
            text: text.into_boxed_str(),
            key: None,
        };
        let _ = self.room.send(forward).await;
    }

    /// Forwards `text` with the sender's `key` for it (see `message::Inbound::SayOnce`).
    pub async fn say_once(&self, text: String, key: String) {
        let forward = Event::Forward {
            id: self.id,
            text: text.into_boxed_str(),
            key: Some(key.into_boxed_str()),
        };
        // As in `say`: this only fails during shutdown.
        let _ = self.room.send(forward).await;
    }

    /// Asks the room to carry out `action` (it checks whether this member may).
    pub async fn act(&self, action: Action) {
        let action = Box::new(action);
        let _ = self
            .room
            .send(Event::Act {
                id: self.id,
                action,
            })
            .await;
    }

    /// Leaves the room, waiting until the room has the news.
    pub async fn leave(mut self) {
        self.left = true;
        self.shared.notices.forget(self.id);
        let _ = self.room.send(Event::Leave { id: self.id }).await;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if !self.left {
            self.shared.notices.forget(self.id);
            // Best effort when a connection ends abruptly; if the queue is full the room still
            // notices at its next broadcast, because this member's frame queue is closed by then.
            let _ = self.room.try_send(Event::Leave { id: self.id });
        }
    }
}

impl Room {
    /// The room's history from before: kept in memory, or read from the store.
    pub(super) fn recall(name: &str, shared: &Shared) -> Ring {
        let mut dormant = shared.dormant.lock().expect("dormant lock");
        if let Some(at) = dormant.iter().position(|(room, _)| room == name) {
            return dormant.remove(at).expect("found just now").1;
        }
        drop(dormant);
        let loaded = match &shared.store {
            Some(store) => store.load(name).unwrap_or_else(|e| {
                log::error!("room {name}: history not loaded: {e}");
                Loaded::default()
            }),
            None => Loaded::default(),
        };
        let entries = loaded
            .entries
            .into_iter()
            .map(|entry| Entry {
                frame: entry.frame.charged_to(&shared.meter),
                ..entry
            })
            .collect();
        let ring = Ring::from_entries(shared.history, entries, loaded.last_id);
        if ring.last_id() > 0 {
            shared.notices.kept(name, ring.last_id());
        }
        ring
    }

    /// Removes the room from the registry unless a join is waiting; leaves the history behind.
    pub(super) async fn try_end(&mut self, inbox: &Receiver<Event>) -> bool {
        let mut rooms = self.shared.rooms.lock().await;
        if !inbox.is_empty() {
            return false;
        }
        rooms.remove(&self.name);
        self.shared.stats.room_closed();
        // A shared room's history is in Redis, and newer there by the time anyone comes back.
        if self.history.last_id() > 0 && self.link.is_none() {
            // Still under the registry lock: a room started for this name after us finds it.
            let history = std::mem::replace(&mut self.history, Ring::new(0));
            let mut dormant = self.shared.dormant.lock().expect("dormant lock");
            dormant.push_back((self.name.clone(), history));
            if dormant.len() > DORMANT_ROOMS {
                dormant.pop_front();
            }
        }
        true
    }
}
