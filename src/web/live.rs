//! What the web layer reads per request that a reload may change: the limits for new
//! connections, the passcodes and the session key made from them, and the allowed origins.
//!
//! They sit together in one [`Reloadable`], behind one holder ([`Live`]: a lock around an
//! `Arc`). A request takes the `Arc` once (a read lock held for a pointer copy) and then sees
//! one version of all of them, so a passcode and the key that signs its sessions never come
//! from two different reloads. A reload builds a new `Reloadable` and swaps the pointer: nobody
//! waits on it for longer than that, and connections already open keep what they started with.
//! The per-address tables are not swapped, only their limits set in place, so the counts they
//! hold (sockets open, sign-ins this minute) survive a reload.

use crate::addresses::{Concurrent, PerWindow};
use crate::client::Limits;
use crate::config::Config;
use crate::room::limits::SenderLimit;
use crate::session::Sessions;
use std::sync::{Arc, RwLock};

/// One version of what a reload may change, read per request.
pub struct Reloadable {
    /// Limits each new connection starts with (sender limits, largest message).
    pub limits: Limits,
    /// WebSockets allowed at once.
    pub max_connections: usize,
    /// Extra origins allowed to open WebSockets, lowercase `scheme://host[:port]`.
    pub allow_origins: Vec<String>,
    /// Signs and checks session cookies; its key comes from the secret and both passcodes.
    pub sessions: Sessions,
    /// The passcode, if the chat needs one.
    pub passcode: Option<String>,
    /// The passcode that makes a host, if there are hosts.
    pub admin_passcode: Option<String>,
}

impl Reloadable {
    fn new(config: &Config, secret: &[u8]) -> Reloadable {
        Reloadable {
            limits: Limits {
                queue: config.queue.get(),
                history: config.history,
                max_message_bytes: config.max_message_bytes.get(),
                sender: SenderLimit {
                    per_second: config.messages_per_second.get(),
                    burst: config.message_burst.get(),
                    patience: config.flood_patience,
                },
            },
            max_connections: config.max_connections,
            allow_origins: config.allow_origins.clone(),
            sessions: Sessions::new(
                secret,
                config.passcode.as_deref(),
                config.admin_passcode.as_deref(),
            ),
            passcode: config.passcode.clone(),
            admin_passcode: config.admin_passcode.clone(),
        }
    }
}

/// The holder of the current [`Reloadable`], and the per-address tables whose limits a reload
/// sets; cloned into the web state and kept by the server.
#[derive(Clone)]
pub struct Live {
    current: Arc<RwLock<Arc<Reloadable>>>,
    /// The session secret: a new passcode makes a new key from it.
    secret: Arc<[u8]>,
    sockets: Concurrent,
    sign_ins: Arc<PerWindow>,
    new_rooms: Arc<PerWindow>,
    uploads: Arc<PerWindow>,
}

impl Live {
    /// The holder for `config`, with the per-address tables the web state uses.
    pub fn new(
        config: &Config,
        secret: &[u8],
        sockets: &Concurrent,
        sign_ins: &Arc<PerWindow>,
        new_rooms: &Arc<PerWindow>,
        uploads: &Arc<PerWindow>,
    ) -> Live {
        Live {
            current: Arc::new(RwLock::new(Arc::new(Reloadable::new(config, secret)))),
            secret: secret.into(),
            sockets: sockets.clone(),
            sign_ins: sign_ins.clone(),
            new_rooms: new_rooms.clone(),
            uploads: uploads.clone(),
        }
    }

    /// The current version.
    pub fn get(&self) -> Arc<Reloadable> {
        // A poisoned lock still holds a whole pointer: a writer only ever swaps it.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes `config`'s values current, for every request from now on.
    pub fn apply(&self, config: &Config) {
        let next = Arc::new(Reloadable::new(config, &self.secret));
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        self.sockets.set_limit(config.max_sockets_per_address);
        self.sign_ins.set_limit(config.sign_ins_per_minute);
        self.new_rooms.set_limit(config.new_rooms_per_minute);
        self.uploads.set_limit(config.uploads_per_minute);
    }
}
