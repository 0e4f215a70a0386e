//! The `smolchat` binary: flags to config, logging, bind, serve until SIGINT or SIGTERM;
//! SIGHUP reads the config file and flags again and hands them to `Server::reload`.
//!
//! Run it with `cargo run --release` (serves http://0.0.0.0:8080); `smolchat --help` lists the
//! options.

#![forbid(unsafe_code)]

use async_signal::{Signal, Signals};
use smol::stream::StreamExt;
use smolchat::config::{self, Command, HELP};
use smolchat::{Config, Server};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// Exit code for bad flags or configuration.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let config = match config::from_env() {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("smolchat {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::SelfTest) => {
            return match smolchat::loadgen::self_test() {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("smolchat: self-test failed: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Err(error) => {
            eprintln!("smolchat: {error} (see smolchat --help)");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    // The logger passes everything; the level is the global one, so a reload can raise it.
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Trace)
        .format(|out, record| writeln!(out, "{:<5} {}", record.level(), record.args()))
        .init();
    log::set_max_level(config.log_level);

    // Register for signals before serving, so an early SIGTERM is not lost.
    let mut signals = match Signals::new([Signal::Term, Signal::Int, Signal::Hup]) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("smolchat: cannot listen for signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match std::net::TcpListener::bind(config.addr) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("smolchat: cannot listen on {}: {error}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(listener, &config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("smolchat: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "smolchat {} listening on http://{} ({} threads)",
        env!("CARGO_PKG_VERSION"),
        server.local_addr(),
        config.threads
    );
    for url in server.urls() {
        log::info!("reachable at {url}/");
    }
    show_invite_qr(server.urls());

    smol::block_on(async {
        while let Some(Ok(signal)) = signals.next().await {
            if signal == Signal::Hup {
                reload(&server, &config);
                continue;
            }
            log::info!("received {signal:?}, shutting down");
            break;
        }
        if !server.shutdown().await {
            log::warn!("some clients did not close in time");
        }
    });
    log::info!("bye");
    ExitCode::SUCCESS
}

/// On SIGHUP: the config file and the flags read again, as at start (flags win), for the
/// server to apply; a file that does not parse leaves everything as it is.
fn reload(server: &Server, started: &Config) {
    let Some(file) = &started.config_file else {
        log::info!("received SIGHUP: no --config file, nothing to reload");
        return;
    };
    log::info!("received SIGHUP: reading {} again", file.display());
    match config::from_env() {
        Ok(Command::Run(config)) => {
            server.reload(&config);
        }
        // The arguments are the ones the server started with, which asked to run.
        Ok(_) => {}
        Err(error) => log::error!("reload failed, keeping the running config: {error}"),
    }
}

/// Draws the first reachable URL as a QR code on stderr, when a person is looking at it (a
/// terminal, not a log file or a service manager's journal).
fn show_invite_qr(urls: &[String]) {
    let mut stderr = std::io::stderr();
    if !stderr.is_terminal() {
        return;
    }
    let Some(url) = urls.first() else { return };
    let url = format!("{url}/");
    if let Some(qr) = smolchat::invite::qr_terminal(&url) {
        // A failed write to our own terminal is not worth stopping the server for.
        let _ = writeln!(stderr, "{qr}\nScan to join: {url}");
    }
}
