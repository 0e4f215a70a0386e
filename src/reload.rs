//! Live reload: which options a running server takes from a newly read [`Config`], and which
//! need a restart.
//!
//! Taken at once, without dropping anyone: the limits (sender limits and the largest message
//! for connections opened from now on; the connection cap and the per-address limits for every
//! request from now on), both passcodes (a changed one changes the session key: whoever signed
//! in under the old one signs in again at their next page load or reconnect, while the
//! WebSockets already open stay), the log level and the allowed origins. Everything else is
//! built into the running server (the listener, the threads, the stores, the rooms' settings):
//! it keeps its running value and is reported as needing a restart. [`merge`] names every
//! option of [`Config`], so a new one cannot be added without being sorted here.

use crate::config::Config;

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Options whose new values took effect, by their flag names.
    pub applied: Vec<&'static str>,
    /// Options that changed but keep their running values until a restart.
    pub needs_restart: Vec<&'static str>,
}

impl Reloaded {
    /// Logs what happened: one line for what changed, a warning for what needs a restart.
    pub fn log(&self) {
        if self.applied.is_empty() {
            log::info!("reloaded the config: nothing to change");
        } else {
            log::info!("reloaded the config: {} changed", self.applied.join(", "));
        }
        if !self.needs_restart.is_empty() {
            log::warn!(
                "reloaded the config: {} changed but needs a restart (still running with the old value)",
                self.needs_restart.join(", ")
            );
        }
    }
}

/// The config to run with after a reload: `new`'s values where they can change now,
/// `running`'s elsewhere; and what changed.
pub fn merge(running: &Config, new: &Config) -> (Config, Reloaded) {
    // Every field, so that adding an option to Config without sorting it here fails to build.
    let Config {
        addr,
        threads,
        queue,
        max_message_bytes,
        max_connections,
        max_sockets_per_address,
        sign_ins_per_minute,
        new_rooms_per_minute,
        uploads_per_minute,
        allow_origins,
        data_dir,
        history,
        passcode,
        admin_passcode,
        delete_window,
        secret_file,
        trace,
        log_level,
        max_file_bytes,
        files_quota,
        file_days,
        files,
        ping_interval,
        pong_wait,
        messages_per_second,
        message_burst,
        flood_patience,
        memory_budget,
        public_url,
        wifi_ssid,
        wifi_password,
        redis,
        redis_sentinels,
        // The same command line names the same file: nothing to compare.
        config_file: _,
    } = new;
    let mut merged = running.clone();
    let mut done = Reloaded::default();
    macro_rules! live {
        ($($field:ident $name:literal),* $(,)?) => {$(
            if merged.$field != *$field {
                merged.$field = $field.clone();
                done.applied.push($name);
            }
        )*};
    }
    macro_rules! fixed {
        ($($field:ident $name:literal),* $(,)?) => {$(
            if merged.$field != *$field {
                done.needs_restart.push($name);
            }
        )*};
    }
    live!(
        max_message_bytes "max-message-bytes",
        max_connections "max-connections",
        max_sockets_per_address "max-sockets-per-address",
        sign_ins_per_minute "sign-ins-per-minute",
        new_rooms_per_minute "new-rooms-per-minute",
        uploads_per_minute "uploads-per-minute",
        allow_origins "allow-origin",
        passcode "passcode",
        admin_passcode "admin-passcode",
        log_level "log-level",
        messages_per_second "messages-per-second",
        message_burst "message-burst",
        flood_patience "flood-patience",
    );
    fixed!(
        addr "addr",
        threads "threads",
        queue "queue",
        data_dir "data-dir",
        history "history",
        delete_window "delete-window",
        secret_file "secret-file",
        trace "trace",
        max_file_bytes "max-file-bytes",
        files_quota "files-quota",
        file_days "file-days",
        files "no-files",
        ping_interval "ping-interval",
        pong_wait "pong-wait",
        memory_budget "memory-budget",
        public_url "public-url",
        wifi_ssid "wifi-ssid",
        wifi_password "wifi-password-file",
        redis "redis",
    );
    // A `redis+sentinel://` URL is `redis` and `redis_sentinels` together: one name to restart.
    if merged.redis_sentinels != *redis_sentinels && merged.redis == *redis {
        done.needs_restart.push("redis");
    }
    (merged, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_options_are_taken_and_the_rest_kept_and_reported() {
        let running = Config::default();
        let new = Config {
            sign_ins_per_minute: 3,
            passcode: Some("new".into()),
            history: 7,
            threads: 99.try_into().unwrap(),
            ..Config::default()
        };
        let (merged, done) = merge(&running, &new);
        assert_eq!(done.applied, ["sign-ins-per-minute", "passcode"]);
        assert_eq!(done.needs_restart, ["threads", "history"]);
        assert_eq!(merged.sign_ins_per_minute, 3);
        assert_eq!(merged.passcode.as_deref(), Some("new"));
        assert_eq!(
            (merged.history, merged.threads),
            (running.history, running.threads)
        );
        assert_eq!(merge(&merged, &merged).1, Reloaded::default());
    }
}
