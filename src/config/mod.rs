//! Settings: defaults, the optional config file, and command-line flags, validated into one
//! [`Config`].
//!
//! The config file is "more flags": `name = value` lines named like the long flags, `#` starts a
//! comment. Both sources go through the same [`Settings::set`], so a value is checked the same
//! way wherever it comes from. Precedence: defaults, then the file, then the command line.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod redis_url;

use redis_url::{parse_redis_url, NO_REDIS};
pub use redis_url::{RedisTarget, Sentinels};

/// The text `--help` prints.
pub const HELP: &str = "\
smolchat: a LAN chat server. Open http://<this box>:8080 in a browser.

USAGE:
  smolchat [OPTIONS]

OPTIONS:
  --addr ADDR               listen address [default: 0.0.0.0:8080; ':8080' also works]
  --threads N               executor threads [default: number of cores]
  --queue N                 messages queued per client before it counts as too slow [default: 256]
  --max-message-bytes N     largest message a client may send [default: 4096]
  --max-connections N       open WebSockets before new ones get 503 [default: 1000]
  --max-sockets-per-address N
                            open WebSockets one address may hold; more get 429 [default: 16]
  --sign-ins-per-minute N   sign-ins and name changes per address per minute [default: 10]
  --new-rooms-per-minute N  rooms one address may start per minute [default: 10]
  --uploads-per-minute N    photos and files one address may share per minute [default: 30]
  --allow-origin ORIGIN     also accept WebSockets from this origin (repeatable),
                            e.g. http://chat.example:8080
  --data-dir DIR            keep history and the session key in DIR, or 'none' for memory
                            only [default: ./data]
  --history N               messages each room keeps and replays to newcomers [default: 200]
  --passcode CODE           require this passcode to chat (visible in ps: prefer the file)
  --passcode-file FILE      read the passcode from the first line of FILE
  --admin-passcode CODE     whoever signs in with this passcode is a host and may moderate
                            (visible in ps: prefer the file) [default: no hosts]
  --admin-passcode-file FILE
                            read the admin passcode from the first line of FILE
  --delete-window DURATION  how long authors may delete their own messages, e.g. 10m,
                            90s, or 0 for never [default: 10m]
  --secret-file FILE        key that signs session cookies [default: DIR/secret.key, made
                            at first start]
  --messages-per-second N   messages one connection may post per second once its burst is
                            spent; faster senders are held back [default: 4]
  --message-burst N         messages one connection may post at once [default: 16]
  --flood-patience SECONDS  a sender held back this long without a pause is closed (1008)
                            [default: 10]
  --memory-budget SIZE      derive max-connections, queue and history from a memory size
                            such as 16MiB (flags given explicitly still win)
  --max-file-bytes SIZE     largest photo or file one may share, e.g. 25MiB [default: 25MiB]
  --files-quota SIZE        most space all shared files take together, oldest removed first
                            [default: half the free space of the data directory at start]
  --file-days N             remove shared files after N days [default: kept until evicted]
  --no-files                turn file sharing off (also off with --data-dir none)
  --public-url URL          the address people use to reach this box, shown first on the
                            invite card and in the log, e.g. http://chat.lan:8080
  --wifi-ssid SSID          the Wi-Fi network to offer as a QR code on the invite card
  --wifi-password-file FILE read that network's password from the first line of FILE
                            (without it the network is offered as open)
  --redis URL               share rooms with every box pointing at the same Redis:
                            redis://[user[:password]@]host[:port][/db] [default: none,
                            rooms are this box's alone], or, to follow a failover, the
                            sentinels: redis+sentinel://[user[:password]@]host[:26379]
                            [,host[:26379]...]/master[/db]
  --redis-password-file FILE
                            read the Redis password from the first line of FILE
  --self-test               measure this machine: start a server, load it, print figures
  --trace                   narrate room events to stdout
  --log-level LEVEL         off, error, warn, info, debug or trace [default: info;
                            also SMOLCHAT_LOG]
  --config FILE             read options from FILE (name = value lines; flags win);
                            SIGHUP reads it again (limits, passcodes, log level and
                            origins change at once; the rest need a restart)
  -h, --help                print this help
  -V, --version             print the version
";

/// Everything the server needs to run, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Executor threads.
    pub threads: NonZeroUsize,
    /// Per-client outbound queue length.
    pub queue: NonZeroUsize,
    /// Largest inbound WebSocket message, in bytes.
    pub max_message_bytes: NonZeroUsize,
    /// Open WebSockets allowed at once.
    pub max_connections: usize,
    /// Open WebSockets one address may hold at once.
    pub max_sockets_per_address: usize,
    /// Sign-ins and name changes allowed per address per minute.
    pub sign_ins_per_minute: u32,
    /// Rooms one address may start per minute (a WebSocket to a room with no running task).
    pub new_rooms_per_minute: u32,
    /// Photos and files one address may share per minute.
    pub uploads_per_minute: u32,
    /// Extra origins (scheme://host[:port]) allowed to open WebSockets.
    pub allow_origins: Vec<String>,
    /// Where history and the session key live; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Messages each room keeps.
    pub history: usize,
    /// The passcode everyone must know, if any.
    pub passcode: Option<String>,
    /// The passcode that makes a host, if any (without it there are no hosts).
    pub admin_passcode: Option<String>,
    /// How long an author may delete their own message.
    pub delete_window: Duration,
    /// Where the session-signing key is; default `data_dir/secret.key`.
    pub secret_file: Option<PathBuf>,
    /// Narrate room events to stdout.
    pub trace: bool,
    /// Log level.
    pub log_level: log::LevelFilter,
    /// Largest shared file, in bytes.
    pub max_file_bytes: u64,
    /// Most bytes all shared files may take; `None`: a share of the free space at start.
    pub files_quota: Option<u64>,
    /// Days a shared file is kept; `None`: until evicted by the quota.
    pub file_days: Option<u32>,
    /// File sharing is on (it also needs a data directory).
    pub files: bool,
    /// How often the server pings each WebSocket (each room pings its members together).
    pub ping_interval: Duration,
    /// How long a WebSocket may stay silent (no frame, no pong) before it is dropped; noticed
    /// at the next ping, so within `pong_wait + ping_interval`.
    pub pong_wait: Duration,
    /// Messages one connection may post per second, once its burst is spent.
    pub messages_per_second: NonZeroU32,
    /// Messages one connection may post at once.
    pub message_burst: NonZeroU32,
    /// How long a sender may be held back without a pause before it is closed as a flooder.
    pub flood_patience: Duration,
    /// The memory the server keeps within, admitting connections by what it holds (`None`: no
    /// limit but `max_connections`).
    pub memory_budget: Option<u64>,
    /// The URL people reach this box at (`http(s)://host[:port]`), listed first.
    pub public_url: Option<String>,
    /// The Wi-Fi network the invite card offers.
    pub wifi_ssid: Option<String>,
    /// That network's password; `None`: an open network.
    pub wifi_password: Option<String>,
    /// The Redis that rooms are shared through (`--redis`); `None`: rooms are this box's
    /// alone and nothing of the bus runs.
    /// With [`Config::redis_sentinels`] it holds the database and credentials for whichever
    /// server the sentinels name as primary, and its host and port are the first sentinel's.
    pub redis: Option<RedisTarget>,
    /// From a `redis+sentinel://` URL: the sentinels asked for the current primary at every
    /// connect (and posts wait for a replica to have them); `None`: `redis` is the one server.
    pub redis_sentinels: Option<Sentinels>,
    /// The file given with `--config`, read again on SIGHUP (see `reload`).
    pub config_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            threads: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            queue: NonZeroUsize::new(256).expect("256 is not zero"),
            max_message_bytes: NonZeroUsize::new(4096).expect("4096 is not zero"),
            max_connections: 1000,
            max_sockets_per_address: 16,
            sign_ins_per_minute: 10,
            new_rooms_per_minute: 10,
            uploads_per_minute: 30,
            allow_origins: Vec::new(),
            data_dir: Some(PathBuf::from("data")),
            history: 200,
            passcode: None,
            admin_passcode: None,
            delete_window: Duration::from_secs(600),
            secret_file: None,
            trace: false,
            log_level: log::LevelFilter::Info,
            max_file_bytes: 25 << 20,
            files_quota: None,
            file_days: None,
            files: true,
            ping_interval: Duration::from_secs(30),
            pong_wait: Duration::from_secs(60),
            messages_per_second: NonZeroU32::new(4).expect("4 is not zero"),
            message_burst: NonZeroU32::new(16).expect("16 is not zero"),
            flood_patience: Duration::from_secs(10),
            memory_budget: None,
            public_url: None,
            wifi_ssid: None,
            wifi_password: None,
            redis: None,
            redis_sentinels: None,
            config_file: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the server.
    Run(Box<Config>),
    /// Print [`HELP`].
    Help,
    /// Print the version.
    Version,
    /// Run the built-in load measurement.
    SelfTest,
}

/// A flag, config line or value that cannot be used, with where it came from.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Options that take a value: their config-file name and their flag.
const VALUE_OPTIONS: [(&str, &str); 31] = [
    ("addr", "--addr"),
    ("threads", "--threads"),
    ("queue", "--queue"),
    ("max-message-bytes", "--max-message-bytes"),
    ("max-connections", "--max-connections"),
    ("max-sockets-per-address", "--max-sockets-per-address"),
    ("sign-ins-per-minute", "--sign-ins-per-minute"),
    ("new-rooms-per-minute", "--new-rooms-per-minute"),
    ("uploads-per-minute", "--uploads-per-minute"),
    ("allow-origin", "--allow-origin"),
    ("log-level", "--log-level"),
    ("data-dir", "--data-dir"),
    ("history", "--history"),
    ("passcode", "--passcode"),
    ("passcode-file", "--passcode-file"),
    ("admin-passcode", "--admin-passcode"),
    ("admin-passcode-file", "--admin-passcode-file"),
    ("delete-window", "--delete-window"),
    ("secret-file", "--secret-file"),
    ("memory-budget", "--memory-budget"),
    ("messages-per-second", "--messages-per-second"),
    ("message-burst", "--message-burst"),
    ("flood-patience", "--flood-patience"),
    ("max-file-bytes", "--max-file-bytes"),
    ("files-quota", "--files-quota"),
    ("file-days", "--file-days"),
    ("public-url", "--public-url"),
    ("wifi-ssid", "--wifi-ssid"),
    ("wifi-password-file", "--wifi-password-file"),
    ("redis", "--redis"),
    ("redis-password-file", "--redis-password-file"),
];

/// Largest accepted `--max-message-bytes`: a chat message, not a file transfer.
const MAX_MESSAGE_BYTES_LIMIT: usize = 1 << 20;
/// Largest accepted `--queue`.
const QUEUE_LIMIT: usize = 65_536;
/// Largest accepted `--threads`.
const THREADS_LIMIT: usize = 256;
/// Largest accepted `--messages-per-second` and `--message-burst`.
const SENDER_LIMIT: usize = 10_000;
/// Largest accepted `--history`.
const HISTORY_LIMIT: usize = 100_000;
/// Largest accepted per-address limit (sockets at once, events per minute).
const PER_ADDRESS_LIMIT: usize = 1_000_000;
/// Largest accepted `--max-file-bytes`.
const MAX_FILE_BYTES_LIMIT: u64 = 4 << 30;
/// Largest accepted `--file-days`: ten years.
const FILE_DAYS_LIMIT: usize = 3650;
/// Longest accepted `--delete-window`: a day.
const DELETE_WINDOW_LIMIT: Duration = Duration::from_secs(86_400);
/// Longest passcode, in bytes.
const PASSCODE_LIMIT: usize = 256;

/// Reads the process's own arguments and `SMOLCHAT_LOG`.
pub fn from_env() -> Result<Command, ConfigError> {
    let env_level = std::env::var("SMOLCHAT_LOG").ok();
    parse(std::env::args_os().skip(1).collect(), env_level.as_deref())
}

/// Parses an argument list (without the program name); `env_level` is `SMOLCHAT_LOG`.
pub fn parse(args: Vec<OsString>, env_level: Option<&str>) -> Result<Command, ConfigError> {
    let mut args = pico_args::Arguments::from_vec(args);
    if args.contains(["-h", "--help"]) {
        return Ok(Command::Help);
    }
    if args.contains(["-V", "--version"]) {
        return Ok(Command::Version);
    }
    if args.contains("--self-test") {
        return Ok(Command::SelfTest);
    }

    let trace = args.contains("--trace");
    let no_files = args.contains("--no-files");
    let config_file: Option<PathBuf> = args
        .opt_value_from_os_str("--config", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(flag_error)?;
    let mut from_flags = Vec::new();
    for (name, flag) in VALUE_OPTIONS {
        let values: Vec<String> = args.values_from_str(flag).map_err(flag_error)?;
        for value in values {
            from_flags.push((name, value));
        }
    }
    let rest = args.finish();
    if let Some(first) = rest.first() {
        return Err(ConfigError(format!(
            "unknown argument '{}'",
            first.to_string_lossy()
        )));
    }

    let mut settings = Settings::default();
    if let Some(level) = env_level {
        settings
            .set("log-level", level)
            .map_err(|e| ConfigError(format!("SMOLCHAT_LOG: {e}")))?;
    }
    if let Some(path) = &config_file {
        settings.load_file(path)?;
    }
    // The budget sets three options; any of them given explicitly still wins over it.
    from_flags.sort_by_key(|(name, _)| *name != "memory-budget");
    // Repeatable options from the command line replace the file's list rather than extend it.
    if from_flags.iter().any(|(name, _)| *name == "allow-origin") {
        settings.config.allow_origins.clear();
    }
    for (name, value) in &from_flags {
        settings
            .set(name, value)
            .map_err(|e| ConfigError(format!("--{name}: {e}")))?;
    }
    if trace {
        settings.config.trace = true;
    }
    if no_files {
        settings.config.files = false;
    }
    settings.config.config_file = config_file;
    if let Some(password) = settings.redis_password.take() {
        match &mut settings.config.redis {
            Some(redis) => redis.password = Some(password),
            None => {
                return Err(ConfigError(
                    "--redis-password-file: there is no --redis to use it with".into(),
                ))
            }
        }
    }
    let config = settings.config;
    if config.admin_passcode.is_some() && config.admin_passcode == config.passcode {
        return Err(ConfigError(
            "the admin passcode must differ from the passcode: everyone who may chat would be a host"
                .into(),
        ));
    }
    Ok(Command::Run(Box::new(config)))
}

fn flag_error(e: pico_args::Error) -> ConfigError {
    ConfigError(e.to_string())
}

/// A [`Config`] being built from the sources in order.
#[derive(Default)]
struct Settings {
    config: Config,
    /// From `--redis-password-file`, wherever it came: put into `--redis`'s target at the end,
    /// so it wins whichever of the two was given first.
    redis_password: Option<String>,
}

impl Settings {
    /// Reads a config file; errors name the file and line.
    fn load_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        for (index, raw) in text.lines().enumerate() {
            let at = || format!("{}:{}", path.display(), index + 1);
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                return Err(ConfigError(format!(
                    "{}: expected 'name = value', found '{line}'",
                    at()
                )));
            };
            let (name, value) = (name.trim(), value.trim());
            if name == "trace" {
                self.config.trace =
                    parse_bool(value).map_err(|e| ConfigError(format!("{}: trace: {e}", at())))?;
                continue;
            }
            if name == "no-files" {
                let off = parse_bool(value)
                    .map_err(|e| ConfigError(format!("{}: no-files: {e}", at())))?;
                self.config.files = !off;
                continue;
            }
            if !VALUE_OPTIONS.iter().any(|(known, _)| *known == name) {
                return Err(ConfigError(format!("{}: unknown option '{name}'", at())));
            }
            self.set(name, value)
                .map_err(|e| ConfigError(format!("{}: {name}: {e}", at())))?;
        }
        Ok(())
    }

    /// Validates and stores one option.
    fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let c = &mut self.config;
        match name {
            "addr" => c.addr = parse_addr(value)?,
            "threads" => c.threads = parse_count(value, 1, THREADS_LIMIT)?,
            "queue" => c.queue = parse_count(value, 1, QUEUE_LIMIT)?,
            "max-message-bytes" => {
                c.max_message_bytes = parse_count(value, 16, MAX_MESSAGE_BYTES_LIMIT)?
            }
            "max-connections" => {
                c.max_connections = parse_count(value, 1, usize::MAX)?.get();
            }
            "max-sockets-per-address" => {
                c.max_sockets_per_address = parse_count(value, 1, PER_ADDRESS_LIMIT)?.get();
            }
            "sign-ins-per-minute" => {
                c.sign_ins_per_minute = parse_count(value, 1, PER_ADDRESS_LIMIT)?.get() as u32;
            }
            "new-rooms-per-minute" => {
                c.new_rooms_per_minute = parse_count(value, 1, PER_ADDRESS_LIMIT)?.get() as u32;
            }
            "uploads-per-minute" => {
                c.uploads_per_minute = parse_count(value, 1, PER_ADDRESS_LIMIT)?.get() as u32;
            }
            "allow-origin" => c.allow_origins.push(parse_origin(value)?),
            "data-dir" => {
                c.data_dir = match value {
                    "" => return Err("give a directory, or 'none'".into()),
                    "none" => None,
                    dir => Some(PathBuf::from(dir)),
                }
            }
            "history" => c.history = parse_count(value, 1, HISTORY_LIMIT)?.get(),
            "passcode" => c.passcode = Some(parse_passcode(value)?),
            "passcode-file" => {
                let text = std::fs::read_to_string(value)
                    .map_err(|e| format!("cannot read {value}: {e}"))?;
                c.passcode = Some(parse_passcode(text.lines().next().unwrap_or(""))?);
            }
            "admin-passcode" => c.admin_passcode = Some(parse_passcode(value)?),
            "admin-passcode-file" => {
                let text = std::fs::read_to_string(value)
                    .map_err(|e| format!("cannot read {value}: {e}"))?;
                c.admin_passcode = Some(parse_passcode(text.lines().next().unwrap_or(""))?);
            }
            "delete-window" => c.delete_window = parse_duration(value, DELETE_WINDOW_LIMIT)?,
            "secret-file" => c.secret_file = Some(PathBuf::from(value)),
            "memory-budget" => {
                let bytes = parse_size(value)?;
                let budget = Budget::derive(bytes)?;
                c.memory_budget = Some(bytes);
                c.max_connections = budget.max_connections;
                c.queue = NonZeroUsize::new(budget.queue).expect("derive keeps it positive");
                c.history = budget.history;
            }
            "messages-per-second" => {
                c.messages_per_second = parse_u32(value, SENDER_LIMIT)?;
            }
            "message-burst" => c.message_burst = parse_u32(value, SENDER_LIMIT)?,
            "flood-patience" => {
                let seconds = parse_count(value, 1, 3600)?.get();
                c.flood_patience = Duration::from_secs(seconds as u64);
            }
            "max-file-bytes" => {
                c.max_file_bytes = match parse_size(value)? {
                    n @ 1..=MAX_FILE_BYTES_LIMIT => n,
                    n => return Err(format!("{n} is out of range 1..={MAX_FILE_BYTES_LIMIT}")),
                }
            }
            "files-quota" => c.files_quota = Some(parse_size(value)?),
            "file-days" => {
                c.file_days = Some(parse_count(value, 1, FILE_DAYS_LIMIT)?.get() as u32);
            }
            "public-url" => c.public_url = Some(crate::invite::parse_public_url(value)?),
            "wifi-ssid" => {
                // SSIDs are 1-32 bytes (IEEE 802.11).
                if value.is_empty() || value.len() > 32 {
                    return Err("a Wi-Fi name is 1-32 bytes".into());
                }
                c.wifi_ssid = Some(value.to_owned());
            }
            "wifi-password-file" => {
                let text = std::fs::read_to_string(value)
                    .map_err(|e| format!("cannot read {value}: {e}"))?;
                // WPA passphrases are 8-63 characters; spaces inside are part of them.
                let password = text.lines().next().unwrap_or("");
                if !(8..=63).contains(&password.chars().count()) {
                    return Err(format!("the password in {value} is not 8-63 characters"));
                }
                c.wifi_password = Some(password.to_owned());
            }
            "redis" if !cfg!(feature = "redis") => return Err(NO_REDIS.into()),
            "redis" => {
                let (target, sentinels) = parse_redis_url(value)?;
                c.redis = Some(target);
                c.redis_sentinels = sentinels;
            }
            "redis-password-file" => {
                let text = std::fs::read_to_string(value)
                    .map_err(|e| format!("cannot read {value}: {e}"))?;
                let password = text.lines().next().unwrap_or("");
                if password.is_empty() {
                    return Err(format!("the first line of {value} is empty"));
                }
                self.redis_password = Some(password.to_owned());
            }
            "log-level" => {
                c.log_level = value.parse().map_err(|_| {
                    format!("'{value}' is not one of off, error, warn, info, debug, trace")
                })?
            }
            _ => return Err(format!("unknown option '{name}'")),
        }
        Ok(())
    }
}

/// Accepts `host:port`, `[v6]:port` and the book's `:port` (all interfaces).
fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    let full;
    let text = if value.starts_with(':') {
        full = format!("0.0.0.0{value}");
        &full
    } else {
        value
    };
    text.parse()
        .map_err(|_| format!("'{value}' is not an address like 0.0.0.0:8080 or :8080"))
}

fn parse_count(value: &str, min: usize, max: usize) -> Result<NonZeroUsize, String> {
    let n: usize = value
        .parse()
        .map_err(|_| format!("'{value}' is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{n} is out of range {min}..={max}"));
    }
    NonZeroUsize::new(n).ok_or_else(|| "must not be zero".to_string())
}

fn parse_u32(value: &str, max: usize) -> Result<NonZeroU32, String> {
    let n = parse_count(value, 1, max)?.get();
    Ok(NonZeroU32::new(n as u32).expect("at least 1 and at most max"))
}

/// Parses `16MiB`, `64M`, `1GiB`, `512KiB` or plain bytes.
fn parse_size(value: &str) -> Result<u64, String> {
    let text = value.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("'{value}' is not a size like 16MiB"))?;
    let unit: u64 = match text[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("'{value}' is not a size like 16MiB")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("'{value}' is too large"))
}

/// What `--memory-budget` derives. The server then admits connections by what it really holds
/// (see `meter`); these limits only keep single parts in proportion to the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Open WebSockets allowed at most: as many idle ones as fit (the meter admits fewer when
    /// they hold more).
    pub max_connections: usize,
    /// Frames queued per client.
    pub queue: usize,
    /// Messages kept per room.
    pub history: usize,
}

impl Budget {
    /// One kept message: the encoded frame and its ring slot, for a typical chat line.
    pub const HISTORY_ENTRY_BYTES: u64 = 320;
    /// Rooms whose history the budget makes room for.
    pub const ROOMS: u64 = 16;
    /// The smallest budget that leaves room for any chat.
    pub const MINIMUM_BYTES: u64 = 4 << 20;

    /// The limits for a server that keeps within `bytes`.
    pub fn derive(bytes: u64) -> Result<Budget, String> {
        use crate::meter::{BASE_BYTES, CONNECTION_BYTES};
        if bytes < Self::MINIMUM_BYTES {
            return Err(format!(
                "a budget under {} MiB leaves no room to chat",
                Self::MINIMUM_BYTES >> 20
            ));
        }
        let spare = bytes / 8 * 7 - BASE_BYTES;
        // A tenth for history, in up to ROOMS rooms, 20 to 200 messages each.
        let history = (spare / 10 / Self::ROOMS / Self::HISTORY_ENTRY_BYTES).clamp(20, 200);
        // Small budgets get short queues: a client 64 frames behind is too slow anyway.
        let queue: u64 = if bytes >= 64 << 20 { 256 } else { 64 };
        Ok(Budget {
            max_connections: (spare / CONNECTION_BYTES).max(1) as usize,
            queue: queue as usize,
            history: history as usize,
        })
    }
}

/// A duration such as `90s`, `10m`, `1h`, or a bare number of seconds; at most `limit`.
fn parse_duration(value: &str, limit: Duration) -> Result<Duration, String> {
    let value = value.trim();
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("'{value}' is not a duration like 90s, 10m or 1h")),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{value}' is not a duration like 90s, 10m or 1h"))?;
    let duration = Duration::from_secs(n.saturating_mul(scale));
    if duration > limit {
        return Err(format!("'{value}' is longer than {} s", limit.as_secs()));
    }
    Ok(duration)
}

fn parse_passcode(value: &str) -> Result<String, String> {
    let code = value.trim();
    if code.is_empty() {
        Err("the passcode is empty".into())
    } else if code.len() > PASSCODE_LIMIT {
        Err(format!(
            "the passcode is longer than {PASSCODE_LIMIT} bytes"
        ))
    } else {
        Ok(code.to_owned())
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("'{value}' is not true or false")),
    }
}

/// Normalises an origin to lowercase `scheme://host[:port]`, the form browsers send.
fn parse_origin(value: &str) -> Result<String, String> {
    let lower = value.trim_end_matches('/').to_ascii_lowercase();
    let valid = ["http://", "https://"].iter().any(|scheme| {
        lower
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    });
    if valid {
        Ok(lower)
    } else {
        Err(format!("'{value}' is not an origin like http://host:8080"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match parse(args.iter().map(OsString::from).collect(), None)? {
            Command::Run(config) => Ok(*config),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn no_flags_give_the_defaults() {
        assert_eq!(run(&[]).unwrap(), Config::default());
        assert_eq!(Config::default().addr.to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn flags_set_typed_values() {
        let c = run(&[
            "--addr",
            "127.0.0.1:9000",
            "--threads",
            "3",
            "--queue",
            "8",
            "--max-message-bytes",
            "100",
            "--max-connections",
            "5",
            "--allow-origin",
            "http://Other.Host:81/",
            "--allow-origin",
            "https://x",
            "--trace",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(c.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.threads.get(), 3);
        assert_eq!(c.queue.get(), 8);
        assert_eq!(c.max_message_bytes.get(), 100);
        assert_eq!(c.max_connections, 5);
        assert_eq!(c.allow_origins, ["http://other.host:81", "https://x"]);
        assert!(c.trace);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn sender_limits_are_set_and_checked() {
        let c = run(&[
            "--messages-per-second",
            "2",
            "--message-burst",
            "5",
            "--flood-patience",
            "30",
        ])
        .unwrap();
        assert_eq!(c.messages_per_second.get(), 2);
        assert_eq!(c.message_burst.get(), 5);
        assert_eq!(c.flood_patience, Duration::from_secs(30));
        assert!(run(&["--messages-per-second", "0"]).is_err());
        assert!(run(&["--message-burst", "x"]).is_err());
        assert!(run(&["--flood-patience", "0"]).is_err());
    }

    #[test]
    fn hosts_and_the_delete_window() {
        let file = temp_file("admin", "host code\n");
        let c = run(&[
            "--admin-passcode-file",
            file.to_str().unwrap(),
            "--delete-window",
            "90s",
        ])
        .unwrap();
        assert_eq!(c.admin_passcode.as_deref(), Some("host code"));
        assert_eq!(c.delete_window, Duration::from_secs(90));
        assert_eq!(run(&[]).unwrap().admin_passcode, None);
        assert_eq!(run(&[]).unwrap().delete_window, Duration::from_secs(600));
        for (given, secs) in [("0", 0), ("10m", 600), ("1h", 3600), ("45", 45)] {
            let c = run(&["--delete-window", given]).unwrap();
            assert_eq!(c.delete_window, Duration::from_secs(secs), "{given}");
        }
        for bad in ["10 minutes", "-1", "2d", "25h", ""] {
            assert!(run(&["--delete-window", bad]).is_err(), "{bad}");
        }
        assert!(run(&["--admin-passcode", " "]).is_err());
        let same = run(&["--passcode", "x", "--admin-passcode", "x"]).unwrap_err();
        assert!(same.to_string().contains("must differ"), "{same}");
    }

    #[test]
    fn storage_and_identity_options() {
        let c = run(&[
            "--data-dir",
            "none",
            "--history",
            "50",
            "--passcode",
            " open sesame ",
        ])
        .unwrap();
        assert_eq!((c.data_dir, c.history), (None, 50));
        assert_eq!(c.passcode.as_deref(), Some("open sesame"));
        let c = run(&[
            "--data-dir",
            "/var/lib/smolchat",
            "--secret-file",
            "/etc/key",
        ])
        .unwrap();
        assert_eq!(c.data_dir, Some(PathBuf::from("/var/lib/smolchat")));
        assert_eq!(c.secret_file, Some(PathBuf::from("/etc/key")));
        let file = temp_file("passcode", "from a file\nsecond line ignored\n");
        let c = run(&["--passcode-file", file.to_str().unwrap()]).unwrap();
        assert_eq!(c.passcode.as_deref(), Some("from a file"));
        assert!(run(&["--history", "0"]).is_err());
        assert!(run(&["--passcode", "  "]).is_err());
        assert!(run(&["--passcode-file", "/nonexistent/code"])
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512kib"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5TB").is_err());
    }

    #[test]
    fn a_memory_budget_derives_the_limits_and_explicit_flags_win() {
        let small = Budget::derive(16 << 20).unwrap();
        let large = Budget::derive(256 << 20).unwrap();
        assert!(
            small.max_connections >= 100 && small.max_connections < large.max_connections,
            "{small:?} {large:?}"
        );
        assert_eq!((small.queue, large.queue), (64, 256));
        assert!(small.history >= 20 && large.history == 200);
        // 16 MiB has room for a thousand idle connections; the meter admits by what they hold.
        assert!(small.max_connections >= 1000, "{small:?}");
        assert!(Budget::derive(1 << 20).is_err());

        let c = run(&["--memory-budget", "16MiB"]).unwrap();
        assert_eq!(
            (c.max_connections, c.queue.get(), c.history),
            (small.max_connections, 64, small.history)
        );
        let c = run(&["--queue", "10", "--memory-budget", "16MiB"]).unwrap();
        assert_eq!(
            (c.max_connections, c.queue.get()),
            (small.max_connections, 10)
        );
        assert!(run(&["--memory-budget", "1MiB"])
            .unwrap_err()
            .to_string()
            .contains("no room"));
    }

    #[test]
    fn per_address_limits_parse_and_are_checked() {
        let d = Config::default();
        assert_eq!(
            (
                d.max_sockets_per_address,
                d.sign_ins_per_minute,
                d.new_rooms_per_minute
            ),
            (16, 10, 10)
        );
        let c = run(&[
            "--max-sockets-per-address",
            "3",
            "--sign-ins-per-minute",
            "4",
            "--new-rooms-per-minute",
            "5",
        ])
        .unwrap();
        assert_eq!(
            (
                c.max_sockets_per_address,
                c.sign_ins_per_minute,
                c.new_rooms_per_minute
            ),
            (3, 4, 5)
        );
        let err = |args: &[&str]| run(args).unwrap_err().to_string();
        assert!(err(&["--max-sockets-per-address", "0"]).contains("out of range"));
        assert!(err(&["--sign-ins-per-minute", "many"]).contains("--sign-ins-per-minute"));
        assert!(err(&["--new-rooms-per-minute", "2000000"]).contains("out of range"));
        let path = temp_file("per-address", "new-rooms-per-minute = 7\n");
        let c = run(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.new_rooms_per_minute, 7);
    }

    #[test]
    fn file_sharing_options() {
        let c = run(&[]).unwrap();
        assert_eq!(
            (c.max_file_bytes, c.files_quota, c.file_days, c.files),
            (25 << 20, None, None, true)
        );
        let c = run(&[
            "--max-file-bytes",
            "10MiB",
            "--files-quota",
            "2GiB",
            "--file-days",
            "30",
            "--no-files",
        ])
        .unwrap();
        assert_eq!(
            (c.max_file_bytes, c.files_quota, c.file_days, c.files),
            (10 << 20, Some(2 << 30), Some(30), false)
        );
        let err = |args: &[&str]| run(args).unwrap_err().to_string();
        assert!(err(&["--max-file-bytes", "0"]).contains("out of range"));
        assert!(err(&["--max-file-bytes", "lots"]).contains("--max-file-bytes"));
        assert!(err(&["--file-days", "0"]).contains("out of range"));
        assert_eq!(c.uploads_per_minute, 30);
        assert_eq!(
            run(&["--uploads-per-minute", "5"])
                .unwrap()
                .uploads_per_minute,
            5
        );
        assert!(err(&["--uploads-per-minute", "0"]).contains("out of range"));
        let path = temp_file(
            "files",
            "no-files = yes\nfiles-quota = 1MiB\nuploads-per-minute = 7\n",
        );
        let c = run(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(
            (c.files, c.files_quota, c.uploads_per_minute),
            (false, Some(1 << 20), 7)
        );
    }

    #[test]
    fn invite_options() {
        let file = temp_file("wifi", "pass word;1\n");
        let c = run(&[
            "--public-url",
            "http://Chat.lan:8080/",
            "--wifi-ssid",
            "Home;Net",
            "--wifi-password-file",
            file.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(c.public_url.as_deref(), Some("http://chat.lan:8080"));
        assert_eq!(c.wifi_ssid.as_deref(), Some("Home;Net"));
        assert_eq!(c.wifi_password.as_deref(), Some("pass word;1"));
        let err = |args: &[&str]| run(args).unwrap_err().to_string();
        assert!(err(&["--public-url", "chat.lan"]).contains("--public-url"));
        assert!(err(&["--wifi-ssid", &"x".repeat(33)]).contains("1-32 bytes"));
        let short = temp_file("short", "short\n");
        assert!(err(&["--wifi-password-file", short.to_str().unwrap()]).contains("8-63"));
    }

    #[test]
    fn book_style_port_means_all_interfaces() {
        assert_eq!(
            run(&["--addr", ":8081"]).unwrap().addr.to_string(),
            "0.0.0.0:8081"
        );
    }

    #[test]
    fn help_and_version_win() {
        let parse_one = |a: &str| parse(vec![OsString::from(a)], None).unwrap();
        assert_eq!(parse_one("-h"), Command::Help);
        assert_eq!(parse_one("--help"), Command::Help);
        assert_eq!(parse_one("-V"), Command::Version);
    }

    #[test]
    fn bad_input_names_the_problem() {
        let err = |args: &[&str]| run(args).unwrap_err().to_string();
        assert!(err(&["--bogus"]).contains("unknown argument '--bogus'"));
        assert!(err(&["--queue", "abc"]).contains("--queue"));
        assert!(err(&["--queue", "0"]).contains("out of range"));
        assert!(err(&["--addr", "nowhere"]).contains("not an address"));
        assert!(err(&["--allow-origin", "example.com"]).contains("not an origin"));
        assert!(err(&["--log-level", "loud"]).contains("--log-level"));
        assert!(err(&["--threads"]).contains("--threads"));
    }

    #[test]
    fn env_level_applies_and_the_flag_wins() {
        let with_env =
            |args: &[&str]| match parse(args.iter().map(OsString::from).collect(), Some("warn")) {
                Ok(Command::Run(c)) => c.log_level,
                other => panic!("{other:?}"),
            };
        assert_eq!(with_env(&[]), log::LevelFilter::Warn);
        assert_eq!(with_env(&["--log-level", "error"]), log::LevelFilter::Error);
        assert!(parse(vec![], Some("shout"))
            .unwrap_err()
            .to_string()
            .contains("SMOLCHAT_LOG"));
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("smolchat-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("smolchat.conf");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn config_file_is_read_and_flags_win() {
        let path = temp_file(
            "win",
            "# comment\naddr = 127.0.0.1:7000\nqueue = 9 # trailing comment\n\ntrace = yes\nallow-origin = http://a\n",
        );
        let file = path.to_str().unwrap();
        let c = run(&["--config", file]).unwrap();
        assert_eq!(c.addr.port(), 7000);
        assert_eq!(c.queue.get(), 9);
        assert!(c.trace);
        assert_eq!(c.allow_origins, ["http://a"]);

        let c = run(&[
            "--config",
            file,
            "--queue",
            "3",
            "--allow-origin",
            "http://b",
        ])
        .unwrap();
        assert_eq!(c.queue.get(), 3);
        assert_eq!(c.allow_origins, ["http://b"]);
        assert_eq!(c.addr.port(), 7000);
    }

    #[test]
    fn config_file_errors_name_file_and_line() {
        let path = temp_file("bad", "queue = 4\nspeed = fast\n");
        let e = run(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("smolchat.conf:2") && e.contains("unknown option 'speed'"),
            "{e}"
        );

        let path = temp_file("noeq", "queue 4\n");
        let e = run(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains(":1") && e.contains("name = value"), "{e}");

        let e = run(&["--config", "/nonexistent/smolchat.conf"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read config file"), "{e}");
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn without_the_redis_feature_redis_is_refused_and_says_why() {
        let error = run(&["--redis", "redis://10.0.0.5"])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("--redis: "), "{error}");
        assert!(error.contains("without the `redis` feature"), "{error}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_urls_parse_and_bad_ones_are_named() {
        assert_eq!(run(&[]).unwrap().redis, None);
        let target = |url: &str| run(&["--redis", url]).unwrap().redis.unwrap();
        let plain = target("redis://10.0.0.5");
        assert_eq!(
            (
                plain.host.as_str(),
                plain.port,
                plain.db,
                plain.username,
                plain.password
            ),
            ("10.0.0.5", 6379, 0, None, None)
        );
        let full = target("redis://chat:s%40cret@redis.lan:6380/3");
        assert_eq!(
            (full.host.as_str(), full.port, full.db),
            ("redis.lan", 6380, 3)
        );
        assert_eq!(full.username.as_deref(), Some("chat"));
        assert_eq!(full.password.as_deref(), Some("s@cret"));
        // Debug and Display never show the password.
        assert!(
            !format!("{full:?}{full}").contains("cret"),
            "{full:?} {full}"
        );
        assert_eq!(full.to_string(), "redis://chat@redis.lan:6380/3");
        let only_password = target("redis://:pw@[::1]:7000/");
        assert_eq!(only_password.host, "::1");
        assert_eq!((only_password.port, only_password.username), (7000, None));
        assert_eq!(only_password.password.as_deref(), Some("pw"));

        let err = |url: &str| run(&["--redis", url]).unwrap_err().to_string();
        for bad in [
            "localhost:6379",
            "rediss://host",
            "redis://",
            "redis://host:port",
            "redis://host:0",
            "redis://host/db",
            "redis://host/0?timeout=1",
        ] {
            let e = err(bad);
            assert!(e.starts_with("--redis: '"), "{bad}: {e}");
            assert!(e.contains("not a Redis URL"), "{bad}: {e}");
        }
        // The value is named, but not its password.
        let e = err("redis://ann:hunter2@host:x");
        assert!(e.contains("host:x") && !e.contains("hunter2"), "{e}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn sentinel_urls_name_the_sentinels_and_the_master() {
        let config = run(&[
            "--redis",
            "redis+sentinel://chat:s%40cret@10.0.0.5,[::1]:26380,s3.lan:7000/chat-primary/2",
        ])
        .unwrap();
        let sentinels = config.redis_sentinels.unwrap();
        assert_eq!(
            sentinels.at,
            [
                ("10.0.0.5".to_owned(), 26379),
                ("::1".to_owned(), 26380),
                ("s3.lan".to_owned(), 7000)
            ]
        );
        assert_eq!(sentinels.master, "chat-primary");
        assert_eq!(
            sentinels.to_string(),
            "redis+sentinel://10.0.0.5:26379,[::1]:26380,s3.lan:7000/chat-primary"
        );
        let target = config.redis.unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, target.db),
            ("10.0.0.5", 26379, 2)
        );
        assert_eq!(target.username.as_deref(), Some("chat"));
        assert_eq!(target.password.as_deref(), Some("s@cret"));
        let one = run(&["--redis", "redis+sentinel://s1/m"]).unwrap();
        assert_eq!(one.redis_sentinels.unwrap().at, [("s1".to_owned(), 26379)]);
        assert_eq!(one.redis.unwrap().db, 0);
        assert_eq!(
            run(&["--redis", "redis://h"]).unwrap().redis_sentinels,
            None
        );

        let err = |url: &str| run(&["--redis", url]).unwrap_err().to_string();
        for bad in [
            "redis+sentinel://s1",
            "redis+sentinel://s1/",
            "redis+sentinel://s1,/m",
            "redis+sentinel://s1:x/m",
            "redis+sentinel://s1/m/x",
            "redis+sentinel://s1/m?x=1",
            "redis://a,b:6379/0",
        ] {
            let e = err(bad);
            assert!(e.contains("not a Redis URL"), "{bad}: {e}");
        }
        let e = err("redis+sentinel://ann:hunter2@s1:x/m");
        assert!(
            e.contains("redis+sentinel://…@s1:x/m") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[cfg(feature = "redis")]
    #[test]
    fn the_redis_password_file_wins_and_needs_redis() {
        let path = temp_file("redis-password", "from-file\nignored\n");
        let file = path.to_str().unwrap();
        for args in [
            [
                "--redis",
                "redis://:in-url@h",
                "--redis-password-file",
                file,
            ],
            [
                "--redis-password-file",
                file,
                "--redis",
                "redis://:in-url@h",
            ],
        ] {
            let redis = run(&args).unwrap().redis.unwrap();
            assert_eq!(redis.password.as_deref(), Some("from-file"));
        }
        let config = temp_file(
            "redis-conf",
            &format!("redis = redis://h:1\nredis-password-file = {file}\n"),
        );
        let redis = run(&["--config", config.to_str().unwrap()])
            .unwrap()
            .redis
            .unwrap();
        assert_eq!(
            (redis.port, redis.password.as_deref()),
            (1, Some("from-file"))
        );
        let e = run(&["--redis-password-file", file])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no --redis"), "{e}");
        let e = run(&[
            "--redis",
            "redis://h",
            "--redis-password-file",
            "/nonexistent/pw",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--redis-password-file") && e.contains("/nonexistent/pw"),
            "{e}"
        );
    }

    #[test]
    fn the_shipped_example_config_parses_to_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/smolchat.conf");
        let defaults = Config {
            config_file: Some(PathBuf::from(path)),
            ..Config::default()
        };
        assert_eq!(run(&["--config", path]).unwrap(), defaults);
    }
}
