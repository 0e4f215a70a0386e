//! Sharing a file into a room: the bytes are already on disk (the file store saw to that); the
//! room only receives the small description, and treats it like a message: it gets the room's
//! next id, enters the history and is broadcast in order with everything else said.
//!
//! Only someone with a seat in the room may share into it, and only the room knows who is
//! seated, so the check is an event too: asked once before an upload starts (so a stranger's
//! bytes never reach the disk) and again as the file is announced.
//!
//! In a shared room (`--redis`) the frame goes through Redis like a message, noting that this
//! box holds the file (other boxes fetch it from here: `bus::files`); the uploader's answer
//! waits until the frame comes back with its id, or is refused if it cannot be sent.

use super::{Delivery, Event, Registry, Room};
use crate::message::{timestamp, Encoded, FileRef, Outbound};
use async_channel::Sender;
use std::fmt;
use std::time::SystemTime;
#[cfg(feature = "redis")]
use {super::UNAVAILABLE, crate::bus::Offer};

/// A stored file, as the room announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// Where it is fetched from.
    pub url: String,
    /// Its cleaned name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Its type, from its first bytes.
    pub mime: String,
    /// Pixels, for images.
    pub width: Option<u32>,
    /// Pixels, for images.
    pub height: Option<u32>,
}

/// Why a file was not shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareError {
    /// The person has no seat in the room (never joined, or left).
    NotMember,
    /// The person is muted, or the room is locked: why, for them.
    Refused(String),
    /// A shared room could not send the file's frame (Redis is away): why, for them.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Unsent(String),
    /// A shared room could not confirm the file's frame went out (its answer was lost): why,
    /// for them. Redis may have kept it, so the file stays.
    Unconfirmed(String),
}

impl fmt::Display for ShareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShareError::NotMember => f.write_str("join the room before sharing into it"),
            ShareError::Refused(why) | ShareError::Unsent(why) | ShareError::Unconfirmed(why) => {
                f.write_str(why)
            }
        }
    }
}

impl std::error::Error for ShareError {}

/// Where an uploader waits for the room's answer.
pub(super) type Reply = Sender<Result<Option<Encoded>, ShareError>>;

/// The key a shared room's file frame is posted with: this and the file's id.
const FILE_KEY: &str = "file-";

/// A share on its way to the room. Without a file it only asks whether `person` is seated.
pub(super) struct Sharing {
    person: u64,
    file: Option<SharedFile>,
    reply: Reply,
}

/// The id of the file a `file` frame shares (its URL is `/files/<id>/<name>`).
pub(super) fn file_id(frame: &Encoded) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct FileFrame {
        file: FileUrl,
    }
    #[derive(serde::Deserialize)]
    struct FileUrl {
        url: String,
    }
    let frame: FileFrame = serde_json::from_slice(frame.bytes()).ok()?;
    frame.file.url.split('/').nth(2).map(str::to_owned)
}

impl Registry {
    /// Whether `person` has a seat in `room` now, and may write there.
    pub async fn may_share(&self, room: &str, person: u64) -> Result<(), ShareError> {
        self.ask(room, person, None).await.map(drop)
    }

    /// Announces `file` in `room` as shared by `person`; returns the `file` frame.
    pub async fn share(
        &self,
        room: &str,
        person: u64,
        file: SharedFile,
    ) -> Result<Encoded, ShareError> {
        match self.ask(room, person, Some(file)).await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(ShareError::NotMember),
            Err(error) => Err(error),
        }
    }

    async fn ask(
        &self,
        room: &str,
        person: u64,
        file: Option<SharedFile>,
    ) -> Result<Option<Encoded>, ShareError> {
        // A room that is not running has nobody in it.
        let events = {
            let rooms = self.shared.rooms.lock().await;
            rooms.get(room).map(|entry| entry.events.clone())
        }
        .ok_or(ShareError::NotMember)?;
        let (reply, answer) = async_channel::bounded(1);
        let sharing = Sharing {
            person,
            file,
            reply,
        };
        if events.send(Event::Share(Box::new(sharing))).await.is_err() {
            return Err(ShareError::NotMember); // The room ended meanwhile: nobody is seated.
        }
        answer.recv().await.unwrap_or(Err(ShareError::NotMember))
    }
}

impl Room {
    /// Checks the sharer's seat; stamps, keeps and broadcasts the file like a message.
    pub(super) fn share(&mut self, sharing: Sharing) {
        let Sharing {
            person,
            file,
            reply,
        } = sharing;
        let Some((&client, seat)) = self.members.iter().find(|(_, seat)| seat.person == person)
        else {
            let _ = reply.try_send(Err(ShareError::NotMember));
            return;
        };
        if let Err((_, why)) = self.may_write(seat) {
            let _ = reply.try_send(Err(ShareError::Refused(why)));
            return;
        }
        let author = seat.person;
        let Some(file) = file else {
            let _ = reply.try_send(Ok(None));
            return;
        };
        let when = timestamp(SystemTime::now());
        let frame = |id| Outbound::File {
            id,
            room: &self.name,
            name: &seat.name,
            when: &when,
            file: FileRef {
                url: &file.url,
                name: &file.name,
                size: file.size,
                mime: &file.mime,
                width: file.width,
                height: file.height,
            },
        };
        #[cfg(not(feature = "redis"))]
        let _ = client; // Only a shared room posts for the member's connection.
        #[cfg(feature = "redis")]
        if let Some(link) = &self.link {
            let frame = frame(0)
                .encode_unnumbered()
                .expect("a file frame has an id");
            let Some(id) = file.url.split('/').nth(2).map(str::to_owned) else {
                return; // Made by the web layer: always /files/<id>/<name>.
            };
            let offer = Offer {
                client,
                person: author,
                seen: self.history.last_id(),
                key: Some(format!("{FILE_KEY}{id}").into()),
                address: seat.address,
                frame,
                file: Some(id.clone().into()),
            };
            if !(link.connected() && link.post(offer).is_ok()) {
                let _ = reply.try_send(Err(ShareError::Unsent(UNAVAILABLE.into())));
                return;
            }
            self.sharing.insert(id, reply);
            return;
        }
        self.shared
            .tracer
            .trace(format_args!("File shared: {}", file.name));
        let id = self.history.last_id() + 1;
        let frame = frame(id).encode_metered(&self.shared.meter);
        self.keep(id, &frame, author);
        if let Some(seat) = self.members.values().find(|seat| seat.person == person) {
            self.tell_elsewhere(id, &seat.name, &[]);
        }
        // The uploader hears first, so its answer never waits on the broadcast's drops.
        let _ = reply.try_send(Ok(Some(frame.clone())));
        self.broadcast(frame, Delivery::Every);
    }
}

impl Room {
    /// A shared room's file frame came back from Redis with its id: its uploader, if here
    /// and waiting, gets it as the answer.
    pub(super) fn shared_back(&mut self, frame: &Encoded) {
        if let Some(reply) = file_id(frame).and_then(|id| self.sharing.remove(&id)) {
            let _ = reply.try_send(Ok(Some(frame.clone())));
        }
    }

    /// A post with `key` was not sent (`why`): if it was a file's frame, its uploader is told
    /// (and the web layer takes the file back out). False if it was not a file's.
    pub(super) fn unshared(&mut self, key: Option<&str>, why: &str) -> bool {
        let Some(id) = key.and_then(|key| key.strip_prefix(FILE_KEY)) else {
            return false;
        };
        if let Some(reply) = self.sharing.remove(id) {
            let _ = reply.try_send(Err(ShareError::Unconfirmed(why.into())));
        }
        true
    }
}
