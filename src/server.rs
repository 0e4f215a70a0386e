//! The running server: executor threads, the accept loop, and graceful shutdown.
//!
//! [`Server::start`] takes an already bound listener, so callers (main, tests) bind first and
//! know the address before anything is served. Each accepted stream is served by
//! [`crate::http`] with the tide app from [`crate::web`], on a smol executor run by
//! `--threads` named threads. [`Server::reload`] applies a re-read config while it runs.

use crate::bus::Bus;
use crate::config::Config;
use crate::files::{self, Files};
use crate::history::Store;
use crate::invite::Invite;
use crate::meter::Meter;
use crate::moderation::Moderation;
use crate::reload::{self, Reloaded};
use crate::room::{self, Keepalive, Registry};
use crate::session;
use crate::stats::{Snapshot, Stats};
use crate::trace::Tracer;
use crate::{addresses, http, shutdown, web};
use smol::future::or;
use smol::net::TcpListener;
use smol::{Executor, Timer};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long shutdown waits for clients to close before stopping the executor regardless.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A server running on its own threads.
pub struct Server {
    addr: SocketAddr,
    stats: Arc<Stats>,
    trigger: shutdown::Trigger,
    /// Closed once every connection and client task has ended.
    alive: async_channel::Receiver<()>,
    /// Closing it ends the executor threads.
    stop_threads: async_channel::Sender<()>,
    threads: Vec<JoinHandle<()>>,
    /// The history store, closed (flushed) last.
    store: Option<Arc<Store>>,
    /// Where people can reach this server.
    invite: Arc<Invite>,
    /// What a reload changes, shared with the web state.
    live: web::Live,
    /// The config running now, for telling what a reload changes.
    running: Mutex<Config>,
}

impl Server {
    /// Serves `listener` with `config` until [`Server::shutdown`]. Fails if the data
    /// directory or the session key cannot be used.
    pub fn start(listener: std::net::TcpListener, config: &Config) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let store = match &config.data_dir {
            Some(dir) => Some(Arc::new(Store::open(dir, config.history, stats.clone())?)),
            None => None,
        };
        let secret = match (&config.secret_file, &config.data_dir) {
            (Some(file), _) => session::load_or_create_secret(file)?,
            (None, Some(dir)) => session::load_or_create_secret(&dir.join("secret.key"))?,
            (None, None) => session::new_secret(),
        };
        let moderation = Arc::new(Moderation::open(
            config.data_dir.as_deref(),
            config.delete_window,
        )?);
        let files = match (&config.data_dir, config.files) {
            (Some(dir), true) => Some(Arc::new(Files::open(
                dir,
                config.max_file_bytes,
                config.files_quota,
                config
                    .file_days
                    .map(|days| Duration::from_secs(u64::from(days) * 86_400)),
            )?)),
            _ => None,
        };
        let upload_limit = files.as_ref().map_or(0, |f| f.limits().max_file_bytes);
        let listener = TcpListener::try_from(listener)?;
        let executor = Arc::new(Executor::new());
        let tracer = Arc::new(if config.trace {
            Tracer::new(io::stdout())
        } else {
            Tracer::off()
        });
        let (trigger, signal) = shutdown::channel();
        let meter = Arc::new(Meter::new(config.memory_budget));
        let (alive_tx, alive) = async_channel::bounded(1);
        let (stop_threads, threads_stop) = async_channel::bounded::<()>(1);

        let invite = Arc::new(Invite::new(addr, config));
        let sockets = addresses::Concurrent::new(config.max_sockets_per_address);
        let sign_ins = Arc::new(addresses::PerWindow::per_minute(config.sign_ins_per_minute));
        let new_rooms = Arc::new(addresses::PerWindow::per_minute(
            config.new_rooms_per_minute,
        ));
        let uploads = Arc::new(addresses::PerWindow::per_minute(config.uploads_per_minute));
        let live = web::Live::new(config, &secret, &sockets, &sign_ins, &new_rooms, &uploads);
        let directs = Arc::new(match &config.data_dir {
            Some(dir) => crate::dm::Directs::open(dir)?,
            None => crate::dm::Directs::in_memory(),
        });
        let state = web::State {
            registry: Registry::new(
                executor.clone(),
                stats.clone(),
                meter.clone(),
                tracer,
                room::Settings {
                    history: config.history,
                    store: store.clone(),
                    keepalive: Keepalive {
                        ping_interval: config.ping_interval,
                        pong_wait: config.pong_wait,
                    },
                    moderation: moderation.clone(),
                    files: files.clone(),
                    bus: match &config.redis {
                        #[cfg(feature = "redis")]
                        Some(target) => Bus::connect(
                            target,
                            config.redis_sentinels.as_ref(),
                            bus_settings(config, target, addr),
                            &executor,
                            meter.clone(),
                            moderation.clone(),
                        ),
                        // Without the `redis` feature the config refuses `--redis`.
                        _ => Bus::Local,
                    },
                },
                signal.clone(),
            ),
            stats: stats.clone(),
            live: live.clone(),
            executor: executor.clone(),
            shutdown: signal.clone(),
            alive: alive_tx,
            moderation,
            login_failures: Default::default(),
            sockets,
            sign_ins,
            new_rooms,
            uploads,
            files: files.clone(),
            invite: invite.clone(),
            directs,
        };
        if let Some(files) = files {
            executor
                .spawn(files::keep_expiring(files, signal.clone()))
                .detach();
        }
        executor
            .spawn(accept(
                listener,
                web::Endpoint::new(state),
                executor.clone(),
                signal,
                upload_limit,
            ))
            .detach();

        let (ready_tx, ready) = async_channel::bounded(config.threads.get());
        let threads = (0..config.threads.get())
            .map(|n| {
                let (executor, stop, ready) =
                    (executor.clone(), threads_stop.clone(), ready_tx.clone());
                std::thread::Builder::new()
                    .name(format!("smolchat-{n}"))
                    .spawn(move || {
                        let _ = ready.try_send(());
                        // The thread's whole life: run tasks until the stop channel closes.
                        let _ = smol::block_on(executor.run(stop.recv()));
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        // Return only once every thread runs (and carries its name), so a caller that sees
        // the server started sees all of it.
        for _ in 0..threads.len() {
            let _ = ready.recv_blocking();
        }
        Ok(Server {
            addr,
            stats,
            trigger,
            alive,
            stop_threads,
            threads,
            store,
            invite,
            live,
            running: Mutex::new(config.clone()),
        })
    }

    /// Takes what can change at run time from `config` (limits, passcodes, log level,
    /// origins; see `reload`) without dropping anyone, and logs the options that changed but
    /// need a restart. Main calls it on SIGHUP with the config file and flags read again.
    pub fn reload(&self, config: &Config) -> Reloaded {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let (merged, done) = reload::merge(&running, config);
        self.live.apply(&merged);
        log::set_max_level(merged.log_level);
        *running = merged;
        done.log();
        done
    }

    /// The base URLs people can reach the server at, best first (for the start-up log).
    pub fn urls(&self) -> &[String] {
        &self.invite.urls
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters `/healthz` shows.
    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// Stops accepting, closes every WebSocket with 1001 (going away), waits up to
    /// [`SHUTDOWN_GRACE`] for them, then stops the threads. True if every client closed in time.
    pub async fn shutdown(mut self) -> bool {
        self.trigger.fire();
        let clean = or(
            async {
                // Nothing is sent: this returns when the last holder is gone.
                let _ = self.alive.recv().await;
                true
            },
            async {
                Timer::after(SHUTDOWN_GRACE).await;
                false
            },
        )
        .await;
        self.stop_threads.close();
        for thread in self.threads.drain(..) {
            // A thread that panicked already printed why; shutdown goes on.
            let _ = thread.join();
        }
        if let Some(store) = &self.store {
            store.close();
        }
        clean
    }
}

/// Accepts connections until shutdown; each one gets a task.
async fn accept(
    listener: TcpListener,
    app: web::Endpoint,
    executor: Arc<Executor<'static>>,
    shutdown: shutdown::Signal,
    upload_limit: u64,
) {
    loop {
        let accepted = or(async { Some(listener.accept().await) }, async {
            shutdown.wait().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok((stream, peer))) => {
                // Chat frames are small; waiting to coalesce them only adds latency.
                let _ = stream.set_nodelay(true);
                let (app, shutdown) = (app.clone(), shutdown.clone());
                let endpoint = move |req| {
                    let app = app.clone();
                    async move { app.respond(req).await }
                };

                executor
                    .spawn(http::serve(stream, peer, endpoint, shutdown, upload_limit))
                    .detach();
            }
            Some(Err(error)) => {
                log::warn!("accept failed: {error}");
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
    log::info!("stopped accepting connections");
}

/// How this box, listening on `listen`, shares rooms through the Redis at `target`.
#[cfg(feature = "redis")]
fn bus_settings(
    config: &Config,
    target: &crate::config::RedisTarget,
    listen: SocketAddr,
) -> crate::bus::Settings {
    let sockets = u32::try_from(config.max_sockets_per_address).unwrap_or(u32::MAX);
    crate::bus::Settings {
        history: config.history,
        me: session::hex(&session::new_secret()[..8]),
        per_second: config.messages_per_second.get().saturating_mul(sockets),
        burst: config.message_burst.get().saturating_mul(sockets),
        url: crate::bus::box_url(listen, &target.host, target.port),
        // As long as the store keeps files; without an age, the file is removed for space
        // before long on a busy box, and a month is plenty.
        file_ttl: config.file_days.map_or(30, u64::from) * 86_400,
    }
}
