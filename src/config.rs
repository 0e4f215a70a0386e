//! Settings: defaults, the optional config file, and command-line flags, validated into one
//! [`Config`].
//!
//! The config file is "more flags": `name = value` lines named like the long flags, `#` starts a
//! comment. Both sources go through the same [`Settings::set`], so a value is checked the same
//! way wherever it comes from. Precedence: defaults, then the file, then the command line.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
  --allow-origin ORIGIN     also accept WebSockets from this origin (repeatable),
                            e.g. http://chat.example:8080
  --data-dir DIR            keep history and the session key in DIR, or 'none' for memory
                            only [default: ./data]
  --history N               messages each room keeps and replays to newcomers [default: 200]
  --passcode CODE           require this passcode to chat (visible in ps: prefer the file)
  --passcode-file FILE      read the passcode from the first line of FILE
  --secret-file FILE        key that signs session cookies [default: DIR/secret.key, made
                            at first start]
  --memory-budget SIZE      derive max-connections, queue and history from a memory size
                            such as 16MiB (flags given explicitly still win)
  --public-url URL          the address people use to reach this box, shown first on the
                            invite card and in the log, e.g. http://chat.lan:8080
  --wifi-ssid SSID          the Wi-Fi network to offer as a QR code on the invite card
  --wifi-password-file FILE read that network's password from the first line of FILE
                            (without it the network is offered as open)
  --self-test               measure this machine: start a server, load it, print figures
  --trace                   narrate room events to stdout
  --log-level LEVEL         off, error, warn, info, debug or trace [default: info;
                            also SMOLCHAT_LOG]
  --config FILE             read options from FILE (name = value lines; flags win)
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
    /// Extra origins (scheme://host[:port]) allowed to open WebSockets.
    pub allow_origins: Vec<String>,
    /// Where history and the session key live; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Messages each room keeps.
    pub history: usize,
    /// The passcode everyone must know, if any.
    pub passcode: Option<String>,
    /// Where the session-signing key is; default `data_dir/secret.key`.
    pub secret_file: Option<PathBuf>,
    /// Narrate room events to stdout.
    pub trace: bool,
    /// Log level.
    pub log_level: log::LevelFilter,
    /// How often the server pings each WebSocket (each room pings its members together).
    pub ping_interval: Duration,
    /// How long a WebSocket may stay silent (no frame, no pong) before it is dropped; noticed
    /// at the next ping, so within `pong_wait + ping_interval`.
    pub pong_wait: Duration,
    /// The URL people reach this box at (`http(s)://host[:port]`), listed first.
    pub public_url: Option<String>,
    /// The Wi-Fi network the invite card offers.
    pub wifi_ssid: Option<String>,
    /// That network's password; `None`: an open network.
    pub wifi_password: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            threads: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            queue: NonZeroUsize::new(256).expect("256 is not zero"),
            max_message_bytes: NonZeroUsize::new(4096).expect("4096 is not zero"),
            max_connections: 1000,
            allow_origins: Vec::new(),
            data_dir: Some(PathBuf::from("data")),
            history: 200,
            passcode: None,
            secret_file: None,
            trace: false,
            log_level: log::LevelFilter::Info,
            ping_interval: Duration::from_secs(30),
            pong_wait: Duration::from_secs(60),
            public_url: None,
            wifi_ssid: None,
            wifi_password: None,
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
const VALUE_OPTIONS: [(&str, &str); 16] = [
    ("addr", "--addr"),
    ("threads", "--threads"),
    ("queue", "--queue"),
    ("max-message-bytes", "--max-message-bytes"),
    ("max-connections", "--max-connections"),
    ("allow-origin", "--allow-origin"),
    ("log-level", "--log-level"),
    ("data-dir", "--data-dir"),
    ("history", "--history"),
    ("passcode", "--passcode"),
    ("passcode-file", "--passcode-file"),
    ("secret-file", "--secret-file"),
    ("memory-budget", "--memory-budget"),
    ("public-url", "--public-url"),
    ("wifi-ssid", "--wifi-ssid"),
    ("wifi-password-file", "--wifi-password-file"),
];

/// Largest accepted `--max-message-bytes`: a chat message, not a file transfer.
const MAX_MESSAGE_BYTES_LIMIT: usize = 1 << 20;
/// Largest accepted `--queue`.
const QUEUE_LIMIT: usize = 65_536;
/// Largest accepted `--threads`.
const THREADS_LIMIT: usize = 256;
/// Largest accepted `--history`.
const HISTORY_LIMIT: usize = 100_000;
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
    Ok(Command::Run(Box::new(settings.config)))
}

fn flag_error(e: pico_args::Error) -> ConfigError {
    ConfigError(e.to_string())
}

/// A [`Config`] being built from the sources in order.
#[derive(Default)]
struct Settings {
    config: Config,
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
            "secret-file" => c.secret_file = Some(PathBuf::from(value)),
            "memory-budget" => {
                let budget = Budget::derive(parse_size(value)?)?;
                c.max_connections = budget.max_connections;
                c.queue = NonZeroUsize::new(budget.queue).expect("derive keeps it positive");
                c.history = budget.history;
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

/// What `--memory-budget` derives. The model, measured with `benches/load.rs` (BENCHMARKS.md):
/// a fixed base, a cost per open connection, a cost per queued frame, a cost per kept message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Open WebSockets allowed.
    pub max_connections: usize,
    /// Frames queued per client.
    pub queue: usize,
    /// Messages kept per room.
    pub history: usize,
}

impl Budget {
    /// Resident memory of a started server, with allocator slack.
    pub const BASE_BYTES: u64 = 2 << 20;
    /// One idle WebSocket: buffers, tasks, channel, socket registration (measured ~12 KiB
    /// with glibc, less with musl), rounded up.
    pub const CONNECTION_BYTES: u64 = 16 << 10;
    /// One queued frame: its queue slot and its share of the write buffer (the frame bytes
    /// themselves are shared by every member).
    pub const QUEUED_FRAME_BYTES: u64 = 256;
    /// One kept message: the encoded frame and its ring slot.
    pub const HISTORY_ENTRY_BYTES: u64 = 320;
    /// Rooms whose history the budget makes room for.
    pub const ROOMS: u64 = 16;
    /// The smallest budget that leaves room for any chat.
    pub const MINIMUM_BYTES: u64 = 4 << 20;

    /// The limits that keep a server within `bytes`, every queue full and every ring full.
    pub fn derive(bytes: u64) -> Result<Budget, String> {
        if bytes < Self::MINIMUM_BYTES {
            return Err(format!(
                "a budget under {} MiB leaves no room to chat",
                Self::MINIMUM_BYTES >> 20
            ));
        }
        let spare = bytes - Self::BASE_BYTES;
        // A tenth for history, in up to ROOMS rooms, 20 to 200 messages each.
        let history = (spare / 10 / Self::ROOMS / Self::HISTORY_ENTRY_BYTES).clamp(20, 200);
        let spare = spare - history * Self::ROOMS * Self::HISTORY_ENTRY_BYTES;
        // Small budgets get short queues: a client 64 frames behind is too slow anyway.
        let queue: u64 = if bytes >= 64 << 20 { 256 } else { 64 };
        // A client's queue also holds its welcome and history replay.
        let per_connection = Self::CONNECTION_BYTES + (queue + history) * Self::QUEUED_FRAME_BYTES;
        let max_connections = (spare / per_connection).max(1);
        Ok(Budget {
            max_connections: max_connections as usize,
            queue: queue as usize,
            history: history as usize,
        })
    }
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
        // The model's worst case fits the budget.
        for (bytes, b) in [(16u64 << 20, small), (256 << 20, large)] {
            let worst = Budget::BASE_BYTES
                + b.history as u64 * Budget::ROOMS * Budget::HISTORY_ENTRY_BYTES
                + b.max_connections as u64
                    * (Budget::CONNECTION_BYTES
                        + (b.queue + b.history) as u64 * Budget::QUEUED_FRAME_BYTES);
            assert!(worst <= bytes, "{b:?}");
        }
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

    #[test]
    fn the_shipped_example_config_parses_to_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/smolchat.conf");
        assert_eq!(run(&["--config", path]).unwrap(), Config::default());
    }
}
