//! One signal that every long-lived task watches: the accept loop, idle HTTP connections and
//! WebSocket writers. Closing a channel wakes every receiver at once, so it doubles as a
//! broadcast that nobody can miss, even a task that starts waiting after it fired.

/// Fires the shutdown; dropping it fires it too.
#[derive(Debug)]
pub struct Trigger(async_channel::Sender<()>);

/// Waits for the shutdown. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Signal(async_channel::Receiver<()>);

/// A connected trigger and signal.
pub fn channel() -> (Trigger, Signal) {
    let (tx, rx) = async_channel::bounded(1);
    (Trigger(tx), Signal(rx))
}

impl Trigger {
    /// Tells every [`Signal`] that the server is stopping.
    pub fn fire(&self) {
        self.0.close();
    }
}

impl Signal {
    /// Completes once the shutdown has fired.
    pub async fn wait(&self) {
        // Nothing is ever sent: `recv` only returns when the channel closes.
        let _ = self.0.recv().await;
    }

    /// Whether the shutdown has fired.
    pub fn fired(&self) -> bool {
        self.0.is_closed()
    }
}
